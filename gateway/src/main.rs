use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    ragmesh_telemetry::init_tracing();
    let args = ragmesh_gateway::config::Args::parse();
    if let Err(e) = ragmesh_gateway::server::run(args).await {
        eprintln!("ragmesh-gateway: error: {e:#}");
        std::process::exit(1);
    }
}
