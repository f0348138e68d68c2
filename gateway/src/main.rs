use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = ragmesh_gateway::config::Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.workers > 0 {
        rt.worker_threads(args.workers);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ragmesh-gateway: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        ragmesh_telemetry::init_tracing();
        if let Err(e) = ragmesh_gateway::server::run(args).await {
            eprintln!("ragmesh-gateway: error: {e:#}");
            std::process::exit(1);
        }
    });
}
