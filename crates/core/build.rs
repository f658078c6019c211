//! Generates the KMS v2 and v1beta1 gRPC code from `proto/` at build time.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs no system
//! package; a `PROTOC` in the environment wins, for distributions that ship their own.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protos = [
        root.join("kms/v2/api.proto"),
        root.join("kms/v1beta1/api.proto"),
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &[root])?;
    Ok(())
}
