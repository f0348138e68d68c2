//! Every response body of the gateway's OpenAI routes (JSON, each SSE
//! chunk type, errors) validated against OpenAI's published OpenAPI
//! schemas, vendored in `tests/fixtures/openai-openapi/` (source and
//! commit named there). The checks are in `python/schema_conformance.py`.

use ragmesh_tests::gateway::{PROFILE, start};
use ragmesh_tests::python_script;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_validates_against_openais_schemas() {
    // a small body limit: the 413 body is read whole, not cut off by a reset
    let gw = start(&["--max-body-bytes", "65536"]);
    gw.seed().await;
    let model = gw.chat_model().await;
    let stdout = python_script(
        "schema_conformance.py",
        &[&gw.svc.http_url(), &model, PROFILE],
    )
    .await;
    assert!(stdout.contains("every body valid"), "{stdout}");
}
