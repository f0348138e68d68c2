//! OpenAI's Responses API through the real gateway: the official Python
//! SDK over a vector store of real documents (`tests/python/
//! responses_sdk.py`), stored responses surviving kill -9, and a stream
//! whose runner dies mid-answer ending with `response.failed`.

use ragmesh_tests::gateway::{PROFILE, chat_model_in, start};
use ragmesh_tests::python_script;
use serde_json::{Value, json};

const KEY_A: &str = "resp-key-alpha-0001";
const KEY_B: &str = "resp-key-bravo-0002";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_responses_with_file_search() {
    let keys = format!("ta={KEY_A},tb={KEY_B}");
    let gw = start(&["--api-keys", &keys]);
    let fixtures = format!("{}/fixtures/documents", env!("CARGO_MANIFEST_DIR"));
    let out = python_script(
        "responses_sdk.py",
        &[&gw.svc.http_url(), KEY_A, KEY_B, &fixtures, PROFILE],
    )
    .await;
    assert!(out.contains("responses_sdk: ok"), "{out}");
}

/// The `data:` payloads of an SSE body, each parsed (a truncated event
/// fails the parse).
fn events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("cut event {d:?}: {e}")))
        .collect()
}

/// Stored responses, whole and streamed, and a chain through
/// `previous_response_id`, are all there after kill -9 and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_survive_a_crash() {
    let mut gw = start(&[]);
    let model = gw.chat_model().await;
    let first = gw
        .ok(
            "POST",
            "/v1/responses",
            Some(json!({"model": model, "input": "Say hi.", "max_output_tokens": 6, "temperature": 0})),
        )
        .await;
    let streamed = gw
        .http
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": model, "input": "Name a fruit.", "max_output_tokens": 6, "stream": true,
                      "previous_response_id": first["id"]}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let evs = events(&streamed);
    let done = evs
        .last()
        .filter(|e| e["type"] == "response.completed" || e["type"] == "response.incomplete")
        .unwrap_or_else(|| panic!("no final event: {streamed}"));
    let second = done["response"].clone();
    gw.crash_and_restart();
    for r in [&first, &second] {
        let id = r["id"].as_str().unwrap_or_default();
        let got = gw.ok("GET", &format!("/v1/responses/{id}"), None).await;
        assert_eq!(got["output"], r["output"], "{id}");
        assert_eq!(got["usage"], r["usage"], "{id}");
        let items = gw
            .ok("GET", &format!("/v1/responses/{id}/input_items"), None)
            .await;
        assert_eq!(items["data"].as_array().map(Vec::len), Some(1), "{items}");
    }
    // the conversation goes on from the stored chain
    let third = gw
        .ok(
            "POST",
            "/v1/responses",
            Some(
                json!({"model": model, "input": "Another.", "max_output_tokens": 4,
                        "previous_response_id": second["id"]}),
            ),
        )
        .await;
    assert_eq!(third["previous_response_id"], second["id"]);
    assert!(
        third["usage"]["input_tokens"].as_u64() > second["usage"]["input_tokens"].as_u64(),
        "{third}"
    );
}

/// A streamed response whose runner is killed (kill -9) mid-answer ends
/// with `response.failed`; no event is cut, none claims completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_runner_dies_ends_with_response_failed() {
    use ragmesh_tests::routing::{gateway_over_runners, runner};
    let mut r = runner("0");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let gw = gateway_over_runners(&dir, &[&r]);
    let http = reqwest::Client::new();
    let models: Value = http
        .get(format!("{}/v1/models", gw.http_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let model = chat_model_in(&models);
    let mut resp = http
        .post(format!("{}/v1/responses", gw.http_url()))
        .json(
            &json!({"model": model, "stream": true, "max_output_tokens": 1500, "ignore_eos": true,
                      "input": "Write a long story about a lighthouse."}),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    while !text.contains("response.output_text.delta") {
        match resp.chunk().await {
            Ok(Some(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("stream ended before its first delta: {other:?}\n{text}"),
        }
    }
    let _ = r.child.kill();
    loop {
        match resp.chunk().await {
            Ok(Some(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            Ok(None) => break,
            Err(e) => panic!("the stream broke instead of ending: {e}\n{text}"),
        }
    }
    let evs = events(&text);
    let last = evs.last().cloned().unwrap_or_default();
    assert_eq!(last["type"], "response.failed", "{text}");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "server_error", "{last}");
    assert!(
        evs.iter().all(|e| e["type"] != "response.completed"),
        "{text}"
    );
    let seq: Vec<u64> = evs
        .iter()
        .filter_map(|e| e["sequence_number"].as_u64())
        .collect();
    assert_eq!(seq, (0..evs.len() as u64).collect::<Vec<_>>());
}
