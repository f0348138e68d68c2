//! `ragmesh-embedder`: parse config, build the core, serve the transports.

// mimalloc keeps freed activation buffers for reuse; glibc returns large
// ones to the OS and page-faults them back in on every layer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() {
    ragmesh_telemetry::init_tracing();
    let args = ragmesh_embedder::server::Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            let out = rt.block_on(ragmesh_embedder::server::run(args));
            // a drain that hit its deadline may leave blocking work
            // behind: do not wait for it
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            out
        });
    if let Err(e) = result {
        // One readable line, non-zero exit.
        eprintln!("ragmesh-embedder: error: {e:#}");
        std::process::exit(1);
    }
}
