//! Subcommands that talk to a running server (the binary's edge: errors are `anyhow`).

pub mod access;
pub mod bench;
pub mod infer;
pub mod soak;
