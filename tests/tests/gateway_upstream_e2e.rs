//! External upstreams end to end: `ragmesh-stub-upstream` processes behind
//! a gateway's `[[model.upstream]]` tables. The pass-through (JSON over the
//! in-task client, SSE over reqwest), model rewrite and the upstream's own key, retries then the
//! ordered fallback (a failed target then cools down), a timeout (504),
//! nothing reachable (503), a client error passed through unretried, a
//! stream broken mid-way, and aliases.

use std::time::{Duration, Instant};

use ragmesh_tests::routing::{gateway, get_json, post, sse_content, stats, stub};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_pass_through_retry_fall_back_and_time_out() {
    let down = stub(&["--name", "down", "--status", "503"]);
    let good = stub(&["--name", "good"]);
    let slow = stub(&["--name", "slow", "--delay-ms", "3000"]);
    let picky = stub(&["--name", "picky", "--status", "400"]);
    let broken = stub(&["--name", "broken", "--chunks", "4", "--die-after", "2"]);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = format!(
        r#"
[[model]]
name = "ext"
timeout_s = 2
retries = 1
[[model.upstream]]
url = "{down}/v1"
model = "down-model"
[[model.upstream]]
url = "{good}/v1/"
model = "good-model"
api_key_env = "STUB_UPSTREAM_KEY"

[[model]]
name = "slow"
timeout_s = 1
retries = 0
[[model.upstream]]
url = "{slow}/v1"

[[model]]
name = "nowhere"
connect_timeout_ms = 500
[[model.upstream]]
url = "http://127.0.0.1:1/v1"

[[model]]
name = "picky"
[[model.upstream]]
url = "{picky}/v1"
[[model.upstream]]
url = "{good}/v1"

[[model]]
name = "broken"
[[model.upstream]]
url = "{broken}/v1"

[aliases]
"gpt-4o-mini" = "ext"
"#,
        down = down.http_url(),
        good = good.http_url(),
        slow = slow.http_url(),
        picky = picky.http_url(),
        broken = broken.http_url(),
    );
    // api_key_env names the variable holding the upstream's key
    let gw = gateway(
        &dir,
        &config,
        &[],
        &[("STUB_UPSTREAM_KEY", "upstream-secret")],
    );
    let http = reqwest::Client::new();
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}],
               "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required",
               "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"not": {}}}}})
    };

    // JSON through the alias: the first target fails twice (1 + retries),
    // the second answers; what reached it is the client's body with the
    // model rewritten, the upstream's key, and the request id
    let (status, _, body) = post(
        &http,
        format!("{}/v1/chat/completions", gw.http_url()),
        chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from good.");
    assert_eq!(stats(&http, &down).await["calls"], 2);
    let seen = stats(&http, &good).await;
    assert_eq!(seen["last_body"]["model"], "good-model");
    assert_eq!(
        seen["last_body"]["tools"][0]["function"]["name"], "f",
        "passed through untouched"
    );
    // a schema ragmesh would refuse is the upstream's to judge
    assert_eq!(
        seen["last_body"]["response_format"]["json_schema"]["schema"],
        json!({"not": {}})
    );
    assert_eq!(seen["last_body"]["tool_choice"], "required");
    assert_eq!(
        seen["last_auth"], "Bearer upstream-secret",
        "never the client's key"
    );
    assert_eq!(seen["last_request_id"], "trace-me-42");

    // SSE passes through chunk by chunk
    let (status, ctype, body) = post(
        &http,
        format!("{}/v1/chat/completions", gw.http_url()),
        chat("ext", true),
    )
    .await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let (text, done, error) = sse_content(body.as_str().unwrap_or_default());
    assert_eq!(
        (text.as_str(), done, error),
        ("Hello from good.", true, None)
    );

    // legacy completions too
    let (status, _, body) = post(
        &http,
        format!("{}/v1/completions", gw.http_url()),
        json!({"model": "ext", "prompt": "x"}),
    )
    .await;
    assert_eq!(
        (status, body["choices"][0]["text"].clone()),
        (200, json!("Hello from good."))
    );

    // the failed target cools down: later calls did not retry it first
    assert_eq!(stats(&http, &down).await["calls"], 2);

    // a client error from the upstream is the client's: as is, no retry,
    // no fallback
    let (status, _, body) = post(
        &http,
        format!("{}/v1/chat/completions", gw.http_url()),
        chat("picky", false),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["message"], "picky says 400");
    assert_eq!(stats(&http, &picky).await["calls"], 1);

    // too slow: 504 after the timeout, in OpenAI's error shape
    let t = Instant::now();
    let (status, _, body) = post(
        &http,
        format!("{}/v1/chat/completions", gw.http_url()),
        chat("slow", false),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(2900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(body["error"]["code"], "backend_timeout");

    // nothing listening: 503 naming the target, with Retry-After
    let r = http
        .post(format!("{}/v1/chat/completions", gw.http_url()))
        .json(&chat("nowhere", false))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("127.0.0.1:1"), "{msg}");

    // a stream that breaks off ends with an error event, not a hang
    let (status, _, body) = post(
        &http,
        format!("{}/v1/chat/completions", gw.http_url()),
        chat("broken", true),
    )
    .await;
    assert_eq!(status, 200);
    let (text, done, error) = sse_content(body.as_str().unwrap_or_default());
    assert!(!done && error.is_some(), "{body}");
    assert!(!text.is_empty(), "the chunks before the break arrive");

    // retrieval cannot ride on an upstream; the listing shows the routes
    let (status, _, body) = post(
        &http,
        format!("{}/v1/chat/completions", gw.http_url()),
        json!({"model": "ext", "messages": [{"role": "user", "content": "q"}], "rag": {"collection": "c"}}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].clone()),
        (400, json!("rag"))
    );
    let models = get_json(&http, format!("{}/v1/models", gw.http_url())).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    for want in ["ext", "slow", "gpt-4o-mini"] {
        assert!(ids.contains(&want), "{ids:?}");
    }
}

/// The upstream restarts on the same port: connections pooled to the old
/// process are dropped, not failed on, so with no retries configured every
/// call still answers 200 (the in-task HTTP/1 client's pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_upstream_is_reconnected_without_errors() {
    let first = stub(&["--name", "again"]);
    let addr = first.addr("http");
    let port = addr.rsplit(':').next().unwrap_or_default().to_owned();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = format!(
        "[[model]]\nname = \"again\"\nretries = 0\n[[model.upstream]]\nurl = \"http://{addr}/v1\"\n"
    );
    // a one-thread runtime (`--workers 1`) serves the same
    let gw = gateway(&dir, &config, &["--workers", "1"], &[]);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", gw.http_url());
    let body = json!({"model": "again", "messages": [{"role": "user", "content": "hi"}]});
    let calls = |n: usize| {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            // concurrent calls, so the pool holds several connections
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let (http, url, body) = (http.clone(), url.clone(), body.clone());
                    tokio::spawn(async move { post(&http, url, body).await })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap_or_else(|e| panic!("{e}")));
            }
            out
        }
    };
    for (status, text, _) in calls(6).await {
        assert_eq!(status, 200, "{text}");
    }
    drop(first);
    let second = stub(&["--name", "again", "--port", &port]);
    for round in 0..3 {
        for (status, text, v) in calls(6).await {
            assert_eq!(status, 200, "round {round}: {text}");
            assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
        }
    }
    assert!(stats(&http, &second).await["calls"].as_u64() >= Some(18));
}

/// `/v1/responses` to an upstream model is passed through as sent (tools
/// the gateway itself would refuse included), JSON and SSE alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_pass_through_to_an_upstream() {
    let good = stub(&["--name", "good", "--chunks", "3"]);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = format!(
        "[[model]]\nname = \"ext\"\n[[model.upstream]]\nurl = \"{}/v1\"\nmodel = \"good-model\"\n",
        good.http_url()
    );
    let gw = gateway(&dir, &config, &[], &[]);
    let http = reqwest::Client::new();
    let body = |stream: bool| {
        json!({"model": "ext", "input": "hi", "stream": stream,
               "tools": [{"type": "web_search_preview"}], "previous_response_id": "resp_elsewhere"})
    };
    let (status, _, r) = post(
        &http,
        format!("{}/v1/responses", gw.http_url()),
        body(false),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "response");
    assert_eq!(r["output"][0]["content"][0]["text"], "Hello from good.");
    let seen = stats(&http, &good).await;
    assert_eq!(seen["last_body"]["model"], "good-model");
    assert_eq!(seen["last_body"]["tools"][0]["type"], "web_search_preview");
    assert_eq!(seen["last_body"]["previous_response_id"], "resp_elsewhere");
    let resp = http
        .post(format!("{}/v1/responses", gw.http_url()))
        .json(&body(true))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap_or_default();
    let deltas: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["delta"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(deltas, "Hello from good.", "{text}");
    assert!(text.contains("event: response.output_text.delta"), "{text}");
}
