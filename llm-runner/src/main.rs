//! `ragmesh-llm-runner`: parse config, load the model, serve.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    ragmesh_telemetry::init_tracing();
    let args = ragmesh_llm_runner::server::Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            let out = rt.block_on(ragmesh_llm_runner::server::run(args));
            // a drain that hit its deadline may leave blocking work
            // behind: do not wait for it
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            out
        });
    if let Err(e) = result {
        eprintln!("ragmesh-llm-runner: error: {e:#}");
        std::process::exit(1);
    }
}
