//! OpenAI's Files and Vector Stores API through the real all-in-one
//! gateway, driven by the official Python SDK with real Markdown, HTML,
//! PDF and DOCX files (`tests/python/files_sdk.py`): uploads, stores,
//! asynchronous attach with `upload_and_poll` / `create_and_poll`, search
//! with compound filters, attributes, typed errors, every body validated
//! against OpenAI's schemas, and two tenants that never see each other's
//! objects on any route.

use ragmesh_tests::gateway::start;
use ragmesh_tests::python_script;

const KEY_A: &str = "files-key-alpha-0001";
const KEY_B: &str = "files-key-bravo-0002";
const MAX_FILE_BYTES: &str = "200000";

fn fixtures() -> String {
    format!("{}/fixtures/documents", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_files_and_vector_stores() {
    let keys = format!("ta={KEY_A},tb={KEY_B}");
    let gw = start(&["--api-keys", &keys, "--max-file-bytes", MAX_FILE_BYTES]);
    let out = python_script(
        "files_sdk.py",
        &[
            &gw.svc.http_url(),
            KEY_A,
            KEY_B,
            &fixtures(),
            MAX_FILE_BYTES,
        ],
    )
    .await;
    assert!(out.contains("files_sdk: ok"), "{out}");
    // each attach outcome is counted: the suite completes at least five
    // files and fails the broken and the scanned PDF
    let http = reqwest::Client::new();
    let count = |outcome: &'static str| {
        let (http, svc) = (&http, &gw.svc);
        async move {
            let series = format!("ragmesh_gateway_attached_files_total{{outcome=\"{outcome}\"}}");
            ragmesh_tests::routing::metric(http, svc, &series)
                .await
                .unwrap_or(0.0)
        }
    };
    assert!(count("completed").await >= 5.0);
    assert_eq!(count("failed").await, 2.0);
}

/// kill -9 the all-in-one gateway while a file batch is being processed
/// (one file at a time); restarted on the same data directory, every
/// acknowledged file is intact and every attached file is resumed to its
/// end, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_survive_a_crash_during_a_batch() {
    let mut gw = start(&["--attach-concurrency", "1"]);
    let state = python_script(
        "files_phases.py",
        &["upload", &gw.svc.http_url(), &fixtures()],
    )
    .await;
    gw.crash_and_restart();
    let out = python_script(
        "files_phases.py",
        &["verify", &gw.svc.http_url(), &fixtures(), state.trim()],
    )
    .await;
    assert!(out.contains("verify: ok"), "{out}");
}

/// Two gateway replicas over one retriever (and one embedder, one
/// runner): a file uploaded through one is attached and searched through
/// the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_shared_by_gateway_replicas() {
    use ragmesh_tests::routing::{gateway, runner};
    use ragmesh_tests::services;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let embedder = services::embedder(&[]);
    let retriever = services::retriever(&dir.path().join("retriever"));
    let runner = runner("0");
    let endpoints = [
        "--embedder-endpoints".to_owned(),
        embedder.grpc_url(),
        "--retriever-endpoints".into(),
        retriever.grpc_url(),
        "--runner-endpoints".into(),
        runner.grpc_url(),
        "--llm-model".into(),
        "none".into(),
        "--embed-model".into(),
        "/nonexistent/embedder".into(),
    ];
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let (d1, d2) = (
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
    );
    let gw1 = gateway(&d1, "", &endpoints, &[]);
    let gw2 = gateway(&d2, "", &endpoints, &[]);
    let out = python_script(
        "files_phases.py",
        &["mesh", &gw1.http_url(), &gw2.http_url(), &fixtures()],
    )
    .await;
    assert!(out.contains("mesh: ok"), "{out}");
}
