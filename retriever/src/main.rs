//! `ragmesh-retriever`: parse config, open the store, serve.

use clap::Parser;

fn main() {
    ragmesh_telemetry::init_tracing();
    let args = ragmesh_retriever::server::Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(ragmesh_retriever::server::run(args)));
    if let Err(e) = result {
        eprintln!("ragmesh-retriever: error: {e:#}");
        std::process::exit(1);
    }
}
