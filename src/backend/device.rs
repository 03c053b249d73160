//! Where a model runs: the CPU, or a CUDA GPU through ONNX Runtime's CUDA execution provider.

use std::fmt;
use std::str::FromStr;

use ort::environment::Environment;
use ort::ep::{ExecutionProvider, CUDA};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::SessionBuilder;
use ort::session::Session;

use super::row_gather;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(i32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|n| *n >= 0)
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {other:?}; expected \"cpu\", \"cuda\" or \"cuda:N\"")),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "device {device} was asked for, but this ONNX Runtime library has no CUDA execution provider \
         (install the onnxruntime-gpu==1.31.1 wheel with its CUDA 13 / cuDNN 9 libraries and point \
         --ort-library at it); refusing to fall back to the CPU"
    )]
    CudaUnavailable { device: Device },
    #[error(
        "device {device} was asked for, but ONNX Runtime's CUDA provider cannot load {library} (put the \
         CUDA 13 / cuDNN 9 libraries of the nvidia-* wheels on LD_LIBRARY_PATH); refusing to fall back \
         to the CPU"
    )]
    CudaLibraryMissing { device: Device, library: String },
    #[error("cannot use device {device}: {message}")]
    Register { device: Device, message: String },
}

/// The shared library named in ONNX Runtime's "Failed to load library ... with error: libX.so.N:
/// cannot open shared object file" message, if that is what the message says.
fn missing_library(message: &str) -> Option<&str> {
    let (_, after) = message.split_once("with error: ")?;
    let (library, reason) = after.split_once(':')?;
    (reason.contains("cannot open shared object file") && !library.trim().is_empty()).then(|| library.trim())
}

impl Device {
    /// Checks that the loaded ONNX Runtime library can run on this device.
    pub fn check_available(self) -> Result<(), DeviceError> {
        match self {
            Self::Cpu => Ok(()),
            Self::Cuda(_) => {
                let available = CUDA::is_available()
                    .map_err(|e| DeviceError::Register { device: self, message: e.to_string() })?;
                if available {
                    Ok(())
                } else {
                    Err(DeviceError::CudaUnavailable { device: self })
                }
            }
        }
    }

    /// The memory a step session's slot states live in: the device's own (GPU memory for CUDA), so
    /// that only frames and outputs cross between host and device.
    pub fn memory_info(self) -> Result<MemoryInfo<'static>, DeviceError> {
        let (device, ordinal) = match self {
            Self::Cpu => (AllocationDevice::CPU, 0),
            Self::Cuda(ordinal) => (AllocationDevice::CUDA, ordinal),
        };
        MemoryInfo::new(device, ordinal, AllocatorType::Device, MemoryType::Default)
            .map_err(|e| DeviceError::Register { device: self, message: e.to_string() })
    }

    /// Checks that a session can be opened on this device: for CUDA, that the provider and the CUDA
    /// libraries it needs load and find the device (a tiny graph is opened there). Run once at start-up,
    /// so that a missing library is one line, not one refusal per model.
    pub fn check_usable(self, environment: &Environment) -> Result<(), DeviceError> {
        if self == Self::Cpu {
            return Ok(());
        }
        let register = |message: String| match missing_library(&message) {
            Some(library) => DeviceError::CudaLibraryMissing { device: self, library: library.to_owned() },
            None => DeviceError::Register { device: self, message },
        };
        let builder = Session::builder(environment).map_err(|e| register(e.to_string()))?;
        self.configure(builder)
            .and_then(|mut builder| {
                builder
                    .commit_from_memory(&row_gather::gather_graph(&[vec![1]]))
                    .map_err(|e| DeviceError::Register { device: self, message: e.to_string() })
            })
            .map(drop)
            .map_err(|error| match error {
                DeviceError::Register { message, .. } => register(message),
                other => other,
            })
    }

    /// Registers the device's execution provider on `builder`. A CUDA device that cannot be used
    /// is an error, never a silent fall-back to the CPU.
    pub fn configure(self, builder: SessionBuilder) -> Result<SessionBuilder, DeviceError> {
        match self {
            Self::Cpu => Ok(builder),
            Self::Cuda(ordinal) => {
                self.check_available()?;
                let provider = CUDA::default().with_device_id(ordinal).build().error_on_failure();
                builder
                    .with_execution_providers([provider])
                    .map_err(|e| DeviceError::Register { device: self, message: e.to_string() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("cuda".parse(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(Device::Cuda(3)));
        assert!("cuda:-1".parse::<Device>().is_err());
        assert!("tpu".parse::<Device>().unwrap_err().contains("expected \"cpu\", \"cuda\" or \"cuda:N\""));
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn names_the_library_the_cuda_provider_could_not_load() {
        // ONNX Runtime 1.31.1's message with the onnxruntime-gpu wheel and no CUDA libraries.
        let message = "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 \
            onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : \
            Failed to load library /x/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: \
            cannot open shared object file: No such file or directory";
        assert_eq!(missing_library(message), Some("libcublasLt.so.13"));
        assert_eq!(missing_library("CUDA failure 100: no CUDA-capable device is detected"), None);
        let error =
            DeviceError::CudaLibraryMissing { device: Device::Cuda(0), library: "libcublasLt.so.13".into() };
        assert!(error.to_string().contains("cannot load libcublasLt.so.13"), "{error}");
    }
}
