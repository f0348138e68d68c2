//! Each service binary started on loopback with ephemeral ports, for the
//! end-to-end tests (one place for the flags every test passes).

use std::path::Path;
use std::time::Duration;

use crate::Service;

/// Generous: model loading on a busy 2-core CI machine.
pub const STARTUP: Duration = Duration::from_secs(180);

fn start<'a>(
    bin: &str,
    mut args: Vec<&'a str>,
    extra: &[&'a str],
    env: &[(&str, &str)],
) -> Service {
    args.extend_from_slice(extra);
    Service::start_env(bin, &args, env, STARTUP).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `ragmesh-embedder` with the default model.
pub fn embedder(extra: &[&str]) -> Service {
    embedder_env(extra, &[])
}

/// As [`embedder`], with extra environment variables.
pub fn embedder_env(extra: &[&str], env: &[(&str, &str)]) -> Service {
    let base = vec![
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--host",
        "127.0.0.1",
    ];
    start("ragmesh-embedder", base, extra, env)
}

/// `ragmesh-retriever` on the embedded engine, storing under `data`.
pub fn retriever(data: &Path) -> Service {
    retriever_env(data, &[])
}

/// As [`retriever`], with extra environment variables.
pub fn retriever_env(data: &Path, env: &[(&str, &str)]) -> Service {
    let dir = data.display().to_string();
    let base = vec![
        "--data-dir",
        &dir,
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--host",
        "127.0.0.1",
    ];
    start("ragmesh-retriever", base, &[], env)
}

/// `ragmesh-llm-runner` with the default GGUF on `grpc_port` ("0": any).
pub fn runner(grpc_port: &str, extra: &[&str]) -> Service {
    runner_env(grpc_port, extra, &[])
}

/// As [`runner`], with extra environment variables.
pub fn runner_env(grpc_port: &str, extra: &[&str], env: &[(&str, &str)]) -> Service {
    let model = format!("{}/SmolLM2-135M-Instruct.Q4_1.gguf", crate::model_dir());
    let base = vec![
        "--model",
        &model,
        "--grpc-port",
        grpc_port,
        "--http-port",
        "0",
        "--host",
        "127.0.0.1",
    ];
    start("ragmesh-llm-runner", base, extra, env)
}
