//! `ragmesh-otlp-receiver`: the tests' OTLP trace receiver
//! (`ragmesh_tests::otlp`) as a process, for the tracing overhead
//! benchmark (bench/gateway_overhead.py): it counts the spans it is sent
//! (gRPC and HTTP/protobuf) and keeps none. Prints
//! `ragmesh-otlp-receiver listening grpc=ADDR http=ADDR`, then, on SIGTERM
//! or SIGINT, `spans=N` and exits 0. Flag: `--port P` (gRPC; 0: any).

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut port = 0u16;
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().map(|v| v.parse::<u16>())) {
            ("--port", Some(Ok(p))) => port = p,
            _ => {
                eprintln!("ragmesh-otlp-receiver: usage: ragmesh-otlp-receiver [--port P]");
                std::process::exit(2);
            }
        }
    }
    let mut rx = match ragmesh_tests::otlp::Receiver::start_with(port, true).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ragmesh-otlp-receiver: error: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "ragmesh-otlp-receiver listening grpc={} http={}",
        rx.addr, rx.http_addr
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ragmesh-otlp-receiver: error: {e}");
            std::process::exit(1);
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("spans={}", rx.count());
    rx.stop().await;
}
