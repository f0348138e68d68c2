//! `ragmesh-retriever`: parse config, open the store, serve.

use clap::Parser;

fn main() {
    ragmesh_telemetry::init_tracing();
    let args = ragmesh_retriever::server::Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            let out = rt.block_on(ragmesh_retriever::server::run(args));
            // acknowledged writes are already durable; give a write still
            // in progress a moment, not an unbounded wait
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            out
        });
    if let Err(e) = result {
        eprintln!("ragmesh-retriever: error: {e:#}");
        std::process::exit(1);
    }
}
