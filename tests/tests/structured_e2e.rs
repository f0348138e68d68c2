//! Structured outputs and tool calling through the real all-in-one
//! gateway, driven by the official OpenAI Python SDK
//! (`tests/python/structured_sdk.py`): `parse()` with Pydantic models,
//! `json_object`, tool calls (required, named, auto, streamed and not, a
//! full round trip), a RAG profile with a schema, and the 400s of bad
//! schemas and tool messages.

use ragmesh_tests::gateway::{PROFILE, start};
use ragmesh_tests::python_script;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_structured_outputs_and_tools() {
    // no keys: the seeding helper calls without one
    let gw = start(&[]);
    gw.seed().await;
    let model = gw.chat_model().await;
    let out = python_script(
        "structured_sdk.py",
        &[&gw.svc.http_url(), "unused", &model, PROFILE],
    )
    .await;
    assert!(out.contains("structured_sdk: ok"), "{out}");
}
