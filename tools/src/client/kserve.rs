//! The KServe v2 (Open Inference Protocol) inference calls, as every server that speaks it takes
//! them: `POST /v2/models/{model}/infer` (JSON) and `inference.GRPCInferenceService/ModelInfer`. One
//! client for spikeserve's `/v2` door and for Triton, so both see the same requests.

use serde_json::Value;
use spikeserve::api::grpc::inference_pb as pb;
use spikeserve::api::grpc::inference_pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::Status;

use super::access::{with_authorization, ClientAccess};

/// `ModelInfer` on one channel (cheap to clone).
#[derive(Clone)]
pub struct KServeGrpc {
    client: GrpcInferenceServiceClient<Channel>,
    authorization: Option<MetadataValue<Ascii>>,
}

impl KServeGrpc {
    pub async fn connect(access: &ClientAccess, address: &str) -> anyhow::Result<Self> {
        let channel = access.grpc_channel(address).await?;
        let client = GrpcInferenceServiceClient::new(channel).max_decoding_message_size(64 << 20);
        Ok(Self { client, authorization: access.grpc_authorization()? })
    }

    pub async fn infer(&self, request: pb::ModelInferRequest) -> Result<pb::ModelInferResponse, Status> {
        let mut client = self.client.clone();
        Ok(client.model_infer(with_authorization(request, self.authorization.as_ref())).await?.into_inner())
    }
}

/// The timesteps and exit reason of a JSON answer (its `timesteps` and `exit_reason` outputs).
pub fn json_answer(body: &Value) -> Result<(u64, String), String> {
    let outputs = body["outputs"].as_array().ok_or("answer without outputs")?;
    let first = |name: &str| {
        outputs.iter().find(|o| o["name"] == name).map(|o| &o["data"][0]).filter(|v| !v.is_null())
    };
    let timesteps = first("timesteps").and_then(Value::as_u64).ok_or("answer without timesteps")?;
    let reason = first("exit_reason").and_then(Value::as_str).unwrap_or("unknown").to_owned();
    Ok((timesteps, reason))
}

/// The timesteps and exit reason of a gRPC answer, from its raw output contents (as Triton and
/// spikeserve send them) or, failing those, its typed contents.
pub fn grpc_answer(response: &pb::ModelInferResponse) -> Result<(u64, String), String> {
    let index = |name: &str| response.outputs.iter().position(|o| o.name == name);
    let raw = |i: usize| response.raw_output_contents.get(i).map(Vec::as_slice);
    let i = index("timesteps").ok_or("answer without timesteps")?;
    let timesteps = match raw(i) {
        Some(bytes) if bytes.len() >= 8 => {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[..8]);
            i64::from_le_bytes(word)
        }
        _ => response.outputs[i]
            .contents
            .as_ref()
            .and_then(|c| c.int64_contents.first().copied())
            .ok_or("answer without timesteps")?,
    };
    let reason = index("exit_reason")
        .and_then(|i| match raw(i) {
            // BYTES: each element is its length (u32, little-endian) and its bytes.
            Some(bytes) if bytes.len() >= 4 => {
                let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                bytes.get(4..4 + len).map(|b| String::from_utf8_lossy(b).into_owned())
            }
            _ => response.outputs[i]
                .contents
                .as_ref()
                .and_then(|c| c.bytes_contents.first())
                .map(|b| String::from_utf8_lossy(b).into_owned()),
        })
        .unwrap_or_else(|| "unknown".into());
    Ok((u64::try_from(timesteps).map_err(|_| "negative timesteps")?, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_read_from_named_outputs() {
        let body = json!({"outputs": [
            {"name": "class_index", "datatype": "INT64", "shape": [1], "data": [3]},
            {"name": "timesteps", "datatype": "INT64", "shape": [1], "data": [2]},
            {"name": "exit_reason", "datatype": "BYTES", "shape": [1], "data": ["confident"]}]});
        assert_eq!(json_answer(&body), Ok((2, "confident".into())));
        assert!(json_answer(&json!({"error": "x"})).is_err());
        let output = |name: &str| pb::model_infer_response::InferOutputTensor {
            name: name.into(),
            ..Default::default()
        };
        let response = pb::ModelInferResponse {
            outputs: vec![output("exit_reason"), output("timesteps")],
            raw_output_contents: vec![
                [&8u32.to_le_bytes()[..], b"deadline"].concat(),
                5i64.to_le_bytes().to_vec(),
            ],
            ..Default::default()
        };
        assert_eq!(grpc_answer(&response), Ok((5, "deadline".into())));
    }
}
