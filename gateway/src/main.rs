//! `ragmesh-gateway`, and a multi-call binary: called by the name of one of
//! the other three (`ragmesh-embedder`, `ragmesh-retriever`,
//! `ragmesh-llm-runner`, e.g. through a symlink) it is that service. The
//! gateway links every stage for the all-in-one mode anyway, so the
//! container image ships this one binary and three links instead of four
//! binaries that repeat the same code (docs/kubernetes.md, "The image").

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let called = std::env::args_os().next().and_then(|a| {
        std::path::Path::new(&a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    match called.as_deref() {
        Some("ragmesh-embedder") => ragmesh_embedder::server::main(),
        Some("ragmesh-retriever") => ragmesh_retriever::server::main(),
        Some("ragmesh-llm-runner") => ragmesh_llm_runner::server::main(),
        _ => {}
    }
    let args = ragmesh_gateway::config::Args::parse();
    let workers = args.workers;
    let log = args.log.log_format;
    ragmesh_telemetry::service_main(
        "ragmesh-gateway",
        log,
        workers,
        std::time::Duration::from_secs(1),
        move || ragmesh_gateway::server::run(args),
    )
}
