//! Generates the ragmesh.v1 tonic clients and servers at build time.
//! protoc comes from the `protoc-bin-vendored` crate, so a build needs no
//! system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "ragmesh/v1/embedder.proto",
        "ragmesh/v1/retriever.proto",
        "ragmesh/v1/objects.proto",
        "ragmesh/v1/llm_runner.proto",
    ];
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &files, &["."])?;
    Ok(())
}
