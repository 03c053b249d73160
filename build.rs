//! Generates the gRPC code from `proto/` with protox (no protoc binary needed), and keeps the
//! descriptor set for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] =
    &["anytime/v1/anytime.proto", "inference/grpc_service.proto", "inference/model_config.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Hand-written, with a faster decoder for its packed columns (src/api/grpc/event_columns.rs).
        .extern_path(".spikeserve.anytime.v1.Events", "crate::api::grpc::event_columns::Events")
        .compile_fds(descriptors)?;
    Ok(())
}
