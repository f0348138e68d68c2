//! The mesh in containers, on this machine's Docker Engine
//! (`python/container_check.py`): the image built from the binaries `make
//! test` built (scripts/base-image.sh, scripts/image.sh: no second build),
//! compose.yaml's five containers run as the chart runs them (uid 10001,
//! read-only root filesystem, env vars only), a RAG chat with citations
//! through the gateway container, a rolling restart of a runner (`docker
//! stop`: its streams complete, it exits 0, every other request succeeds,
//! it rejoins without a gateway restart) and `docker kill` of a runner
//! (mid-stream: an SSE error event and `[DONE]`; before its first token:
//! retried on the other runner). Needs Docker Engine with docker-compose
//! (or `docker compose`) and root for the local base image; about a minute
//! when the base image exists.

use ragmesh_tests::{bin_dir, model_dir, python_script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_in_containers_serves_rag_and_survives_stop_and_kill() {
    let bins = bin_dir().display().to_string();
    let models = model_dir();
    let stdout = python_script(
        "container_check.py",
        &["--bin-dir", &bins, "--model-dir", &models],
    )
    .await;
    println!("{stdout}");
    assert!(stdout.contains("checks passed"), "{stdout}");
}
