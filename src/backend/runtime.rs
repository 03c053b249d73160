//! Loads the ONNX Runtime shared library at run time (`ort`'s `load-dynamic`).
//!
//! The library comes from the pinned `onnxruntime` PyPI wheel in the project's virtual environment,
//! so nothing is downloaded at build time. A missing or too old library is a start-up error with a
//! message saying where we looked and what to do, never a panic.

use std::path::{Path, PathBuf};

use ort::environment::Environment;

/// Where `make` installs the wheel, relative to the project root.
const VENV_SITE_PACKAGES: &str = ".venv/lib";
const WHEEL_LIBRARY_DIR: &str = "site-packages/onnxruntime/capi";
const LIBRARY_STEM: &str = "libonnxruntime.so";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "no ONNX Runtime library given and none found under {searched}; pass --ort-library PATH or set \
         ORT_DYLIB_PATH (`make run` installs onnxruntime==1.31.1 into .venv and sets it)"
    )]
    NotFound { searched: String },
    #[error("ONNX Runtime library {0} does not exist")]
    Missing(PathBuf),
    #[error("cannot load ONNX Runtime: {0}")]
    Load(String),
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(String),
}

/// A loaded ONNX Runtime library and the environment every session is created in.
#[derive(Clone)]
pub struct OrtRuntime {
    environment: Environment,
    library: PathBuf,
}

impl std::fmt::Debug for OrtRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtRuntime").field("library", &self.library).finish_non_exhaustive()
    }
}

impl OrtRuntime {
    /// Loads the library at `library`, or, when `None`, the one in the project's `.venv`: under
    /// the working directory, or above the executable (`target/release/spikeserve` finds the
    /// checkout's `.venv`).
    pub fn load(library: Option<&Path>) -> Result<Self, RuntimeError> {
        let library = match library {
            Some(path) if path.is_file() => path.to_path_buf(),
            Some(path) => return Err(RuntimeError::Missing(path.to_path_buf())),
            None => find_near_project()?,
        };
        let builder = ort::init_from(&library).map_err(|e| RuntimeError::Load(e.to_string()))?;
        let environment =
            builder.with_name("spikeserve").build().map_err(|e| RuntimeError::Environment(e.to_string()))?;
        tracing::info!(library = %library.display(), "loaded ONNX Runtime");
        Ok(Self { environment, library })
    }

    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    pub fn library(&self) -> &Path {
        &self.library
    }
}

fn find_near_project() -> Result<PathBuf, RuntimeError> {
    let from_cwd = find_in_venv(Path::new("."));
    if from_cwd.is_ok() {
        return from_cwd;
    }
    let exe = std::env::current_exe().ok();
    exe.iter().flat_map(|e| e.ancestors().skip(1)).find_map(|dir| find_in_venv(dir).ok()).ok_or_else(|| {
        from_cwd.err().unwrap_or(RuntimeError::NotFound { searched: VENV_SITE_PACKAGES.into() })
    })
}

/// Finds `libonnxruntime.so.*` inside `<root>/.venv/lib/python*/site-packages/onnxruntime/capi`.
fn find_in_venv(root: &Path) -> Result<PathBuf, RuntimeError> {
    let lib_dir = root.join(VENV_SITE_PACKAGES);
    let searched = lib_dir.join("python*").join(WHEEL_LIBRARY_DIR).display().to_string();
    let not_found = || RuntimeError::NotFound { searched: searched.clone() };
    let pythons = std::fs::read_dir(&lib_dir).map_err(|_| not_found())?;
    let mut candidates: Vec<PathBuf> = pythons
        .flatten()
        .map(|entry| entry.path().join(WHEEL_LIBRARY_DIR))
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|files| files.flatten().map(|f| f.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(LIBRARY_STEM) && n.len() > LIBRARY_STEM.len())
        })
        .collect();
    // The versioned file (libonnxruntime.so.1.31.1) sorts after a bare symlink, if any.
    candidates.sort();
    candidates.pop().ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_a_clear_error() {
        let err = OrtRuntime::load(Some(Path::new("/nonexistent/libonnxruntime.so.1.31.1"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ONNX Runtime library /nonexistent/libonnxruntime.so.1.31.1 does not exist"
        );
    }

    #[test]
    fn venv_search_reports_where_it_looked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = find_in_venv(dir.path()).unwrap_err();
        assert!(err.to_string().contains("site-packages/onnxruntime/capi"), "{err}");
    }

    #[test]
    fn venv_search_finds_the_wheel_library() {
        let dir = tempfile::tempdir().expect("tempdir");
        let capi = dir.path().join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).expect("mkdir");
        std::fs::write(capi.join("libonnxruntime.so.1.31.1"), b"").expect("write");
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"").expect("write");
        let found = find_in_venv(dir.path()).expect("found");
        assert!(found.ends_with("capi/libonnxruntime.so.1.31.1"), "{}", found.display());
    }
}
