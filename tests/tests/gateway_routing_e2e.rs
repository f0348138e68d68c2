//! Routing end to end, real processes on loopback:
//! - two `ragmesh-llm-runner` replicas behind one model name in a mesh
//!   gateway: calls spread over both; one is killed (kill -9) and calls keep
//!   succeeding (those not yet started go to the survivor); restarted on
//!   its port, it takes calls again;
//! - external upstreams (`ragmesh-stub-upstream` processes): the reqwest
//!   pass-through (JSON and SSE), model rewrite and the upstream's own key,
//!   retries then the ordered fallback (a failed target then cools
//!   down), a timeout (504), nothing reachable
//!   (503), a client error passed through unretried, a stream broken
//!   mid-way, and aliases.

use std::time::{Duration, Instant};

use ragmesh_tests::Service;
use serde_json::{Value, json};

const STARTUP: Duration = Duration::from_secs(180);

fn stub(args: &[&str]) -> Service {
    let mut a = vec!["--port", "0"];
    a.extend_from_slice(args);
    Service::start("ragmesh-stub-upstream", &a, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn runner(port: &str) -> Service {
    let model = format!(
        "{}/SmolLM2-135M-Instruct.Q4_1.gguf",
        ragmesh_tests::model_dir()
    );
    Service::start(
        "ragmesh-llm-runner",
        &[
            "--model",
            &model,
            "--grpc-port",
            port,
            "--http-port",
            "0",
            "--host",
            "127.0.0.1",
            "--threads",
            "1",
        ],
        STARTUP,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn gateway(dir: &tempfile::TempDir, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Service {
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("config: {e}"));
    let data = dir.path().join("data");
    let (cfg, data) = (cfg.display().to_string(), data.display().to_string());
    let mut args = vec!["--port", "0", "--data-dir", &data, "--config", &cfg];
    args.extend_from_slice(extra);
    Service::start_env("ragmesh-gateway", &args, env, STARTUP).unwrap_or_else(|e| panic!("{e:#}"))
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, String, Value) {
    let r = http
        .post(url)
        .header("authorization", "Bearer client-secret")
        .header("x-request-id", "trace-me-42")
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = r.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, ctype, json)
}

async fn stats(http: &reqwest::Client, s: &Service) -> Value {
    http.get(format!("{}/stats", s.http_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("stats: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("stats json: {e}"))
}

/// The content of an SSE chat stream, and whether it ended with [DONE].
fn sse_content(body: &str) -> (String, bool, Option<Value>) {
    let mut text = String::new();
    let mut done = false;
    let mut error = None;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        if v.get("error").is_some() {
            error = Some(v["error"].clone());
        }
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
    }
    (text, done, error)
}

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
               "tools": [{"type": "function", "function": {"name": "f"}}]})
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
    let models: Value = http
        .get(format!("{}/v1/models", gw.http_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or(Value::Null);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    for want in ["ext", "slow", "gpt-4o-mini"] {
        assert!(ids.contains(&want), "{ids:?}");
    }
}

/// A service's Prometheus text.
async fn metrics_of(http: &reqwest::Client, svc: &Service) -> String {
    http.get(format!("{}/metrics", svc.http_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

async fn generation_tokens(http: &reqwest::Client, runner: &Service) -> f64 {
    metrics_of(http, runner)
        .await
        .lines()
        .find(|l| l.starts_with("ragmesh_llm_generation_tokens_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_replicas_balance_and_survive_a_kill() {
    let mut r1 = runner("0");
    let r2 = runner("0");
    let r1_port = r1
        .addr("grpc")
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let endpoints = format!("{},{}", r1.grpc_url(), r2.grpc_url());
    let gw = gateway(
        &dir,
        "",
        &[
            "--runner-endpoints",
            &endpoints,
            "--mesh-probe-interval-ms",
            "200",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", gw.http_url());
    let ask = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "temperature": 0, "max_tokens": 6,
                     "messages": [{"role": "user", "content": "Name a colour."}]});
    let (status, _, first) = post(&http, url.clone(), ask.clone()).await;
    assert_eq!(status, 200, "{first}");
    let answer = first["choices"][0]["message"]["content"].clone();

    // four at once: least-outstanding puts two on each replica
    let calls = (0..4).map(|_| post(&http, url.clone(), ask.clone()));
    for (status, _, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["choices"][0]["message"]["content"], answer,
            "same greedy answer on both"
        );
    }
    let (t1, t2) = (
        generation_tokens(&http, &r1).await,
        generation_tokens(&http, &r2).await,
    );
    assert!(t1 > 0.0 && t2 > 0.0, "both replicas served: {t1} / {t2}");

    // kill -9 one replica: every call still succeeds, on the survivor
    let _ = r1.child.kill();
    let _ = r1.child.wait();
    for i in 0..4 {
        let (status, _, body) = post(&http, url.clone(), ask.clone()).await;
        assert_eq!(status, 200, "call {i} after the kill: {body}");
        assert_eq!(body["choices"][0]["message"]["content"], answer);
    }
    let streamed = http
        .post(url.clone())
        .json(&json!({"model": "SmolLM2-135M-Instruct.Q4_1", "temperature": 0, "max_tokens": 6, "stream": true,
                      "messages": [{"role": "user", "content": "Name a colour."}]}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(streamed.status().as_u16(), 200);
    let (text, done, error) = sse_content(&streamed.text().await.unwrap_or_default());
    assert_eq!((json!(text), done, error), (answer.clone(), true, None));

    // restarted on its port, the replica takes calls again
    let r1 = runner(&r1_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while generation_tokens(&http, &r1).await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the restarted replica never got a call"
        );
        let calls = (0..2).map(|_| post(&http, url.clone(), ask.clone()));
        for (status, _, body) in futures::future::join_all(calls).await {
            assert_eq!(status, 200, "{body}");
        }
    }
}

/// The gateway as the mesh's front pod: embedder, retriever and runner are
/// separate processes reached over gRPC; the gateway loads no model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_gateway_runs_rag_over_remote_stages() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let embedder = Service::start(
        "ragmesh-embedder",
        &[
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--host",
            "127.0.0.1",
        ],
        STARTUP,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let store = dir.path().join("retriever");
    let store = store.display().to_string();
    let retriever = Service::start(
        "ragmesh-retriever",
        &[
            "--data-dir",
            &store,
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--host",
            "127.0.0.1",
        ],
        STARTUP,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let runner = runner("0");
    let gw = gateway(
        &dir,
        "[[profile]]\nname = \"facts\"\ncollection = \"facts\"\ntop_k = 2\ntemperature = 0.0\n",
        &[
            "--embedder-endpoints",
            &embedder.grpc_url(),
            "--retriever-endpoints",
            &retriever.grpc_url(),
            "--runner-endpoints",
            &runner.grpc_url(),
            // nothing is loaded in-process: these paths do not exist
            "--llm-model",
            "none",
            "--embed-model",
            "/nonexistent/embedder",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", gw.http_url());

    // embeddings through the gateway equal the embedder's own
    let (status, _, ours) = post(
        &http,
        url("/v1/embeddings"),
        json!({"input": "Kepler station", "model": "all-MiniLM-L6-v2"}),
    )
    .await;
    assert_eq!(status, 200, "{ours}");
    let theirs: Value = http
        .post(format!("{}/v1/embeddings", embedder.http_url()))
        .json(&json!({"input": "Kepler station"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(ours["data"][0]["embedding"], theirs["data"][0]["embedding"]);

    // ingest (chunked with the embedder's tokenizer fetched over gRPC),
    // stored in the retriever process, answered by the runner process
    let (status, _, _) = post(&http, url("/v1/collections"), json!({"name": "facts"})).await;
    assert_eq!(status, 200);
    let (status, _, out) = post(
        &http,
        url("/v1/collections/facts/documents"),
        json!({"documents": [
            {"id": "zorblax.md", "text": "# Zorblax reactor\n\nThe Zorblax reactor on Kepler station runs at exactly 742 kelvin."},
            {"id": "quillon.txt", "text": "The Quillon library in Dunmore opens at nine in the morning on Tuesdays."}
        ]}),
    )
    .await;
    assert_eq!((status, out["documents"].clone()), (200, json!(2)), "{out}");
    let (status, _, answer) = post(
        &http,
        url("/v1/chat/completions"),
        json!({"model": "facts", "max_tokens": 24,
               "messages": [{"role": "user", "content": "At what temperature does the Zorblax reactor run?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["citations"][0]["doc_id"], "zorblax.md",
        "{answer}"
    );
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("742"), "{text}");
    // the retriever process holds the data
    let count = metrics_of(&http, &retriever).await;
    assert!(
        count.contains("ragmesh_retriever_upserted_points_total"),
        "upserts reached the retriever"
    );
}
