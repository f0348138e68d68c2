//! The mesh end to end, real processes on loopback:
//! - two `ragmesh-llm-runner` replicas behind one model name: calls spread
//!   over both; one is killed (kill -9) and calls keep succeeding (those
//!   not yet started go to the survivor); restarted on its port, it takes
//!   calls again;
//! - the gateway as the mesh's front pod: embedder, retriever and runner
//!   as separate processes over gRPC, no model loaded in the gateway.

use std::time::{Duration, Instant};

use ragmesh_tests::Service;
use ragmesh_tests::routing::{
    gateway, gateway_over_runners, metric, metrics_of, post, runner, sse_content,
};
use ragmesh_tests::services;
use serde_json::{Value, json};

async fn generation_tokens(http: &reqwest::Client, runner: &Service) -> f64 {
    metric(http, runner, "ragmesh_llm_generation_tokens_total")
        .await
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
    let gw = gateway_over_runners(&dir, &[&r1, &r2]);
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
    let embedder = services::embedder(&[]);
    let retriever = services::retriever(&dir.path().join("retriever"));
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
    let (_, _, theirs) = post(
        &http,
        format!("{}/v1/embeddings", embedder.http_url()),
        json!({"input": "Kepler station"}),
    )
    .await;
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
    // a schema and a tool call travel in the gRPC contract: the remote
    // runner enforces them (after retrieval, on the RAG profile)
    let ask =
        json!([{"role": "user", "content": "At what temperature does the Zorblax reactor run?"}]);
    let (status, _, shaped) = post(
        &http,
        url("/v1/chat/completions"),
        json!({"model": "facts", "max_tokens": 120, "messages": ask,
               "response_format": {"type": "json_schema", "json_schema": {"name": "fact", "strict": true,
                   "schema": {"type": "object", "properties": {"kelvin": {"type": "integer"}, "place": {"type": "string"}},
                              "required": ["kelvin", "place"]}}}}),
    )
    .await;
    assert_eq!(status, 200, "{shaped}");
    let text = shaped["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        v["kelvin"].is_i64() && v["place"].is_string() && v.as_object().map_or(0, |o| o.len()) == 2,
        "{text}"
    );
    let (status, _, called) = post(
        &http,
        url("/v1/chat/completions"),
        json!({"model": "facts", "max_tokens": 120, "messages": ask, "tool_choice": "required",
               "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
                   "type": "object", "properties": {"reactor": {"type": "string"}}, "required": ["reactor"]}}}]}),
    )
    .await;
    assert_eq!(status, 200, "{called}");
    assert_eq!(
        called["choices"][0]["finish_reason"], "tool_calls",
        "{called}"
    );
    let call = &called["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "lookup", "{called}");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {called}"));
    assert!(args["reactor"].is_string(), "{called}");
    // the retriever process holds the data
    let count = metrics_of(&http, &retriever).await;
    assert!(
        count.contains("ragmesh_retriever_upserted_points_total"),
        "upserts reached the retriever"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

async fn waiting_for(http: &reqwest::Client, gw: &Service, model: &str) -> f64 {
    let series = format!("ragmesh_gateway_requests_waiting_for_replica{{model=\"{model}\"}}");
    metric(http, gw, &series).await.unwrap_or(-1.0)
}

/// A runner pool scaled to zero (KEDA `minReplicaCount: 0`): the gateway
/// starts without it, a request for it waits (counted in the gauge that
/// wakes the pool) and is answered once a replica comes up; a pool that
/// stays at zero past its wait is a 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_scaled_to_zero_waits_for_its_first_replica() {
    let (port, never) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cfg = format!(
        "[[model]]\nname = \"standby\"\nrunners = [\"http://127.0.0.1:{port}\"]\nscale_from_zero_wait_s = 120\n\n\
         [[model]]\nname = \"asleep\"\nrunners = [\"http://127.0.0.1:{never}\"]\nscale_from_zero_wait_s = 2\n"
    );
    let gw = gateway(&dir, &cfg, &["--mesh-probe-interval-ms", "200"], &[]);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", gw.http_url());
    let ask = |model: &str| {
        json!({"model": model, "temperature": 0, "max_tokens": 4,
               "messages": [{"role": "user", "content": "Name a colour."}]})
    };

    // stays at zero: a 503 with Retry-After once its wait is over
    let t = Instant::now();
    let resp = http
        .post(&url)
        .json(&ask("asleep"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(waiting_for(&http, &gw, "asleep").await, 0.0);

    // a request waits, counted, until a replica comes up; then back to zero
    // (the replica's address stays known, unreachable): the next request
    // waits again, and the next replica answers it
    let mut replica: Option<Service> = None;
    for round in ["the first replica", "after scaling back up"] {
        drop(replica.take());
        let waiting = {
            let (http, url, body) = (http.clone(), url.clone(), ask("standby"));
            tokio::spawn(async move { post(&http, url, body).await })
        };
        let t = Instant::now();
        while waiting_for(&http, &gw, "standby").await < 1.0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{round}: the wait is never counted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        replica = Some(runner(&port.to_string()));
        let (status, _, body) = waiting
            .await
            .unwrap_or_else(|e| panic!("request task: {e}"));
        assert_eq!(status, 200, "{round}: {body}");
        assert_eq!(body["model"], "standby", "{round}: {body}");
        assert_eq!(waiting_for(&http, &gw, "standby").await, 0.0, "{round}");
    }
}

/// `--runner-routing prefix` over two runner replicas: every turn of a
/// conversation reaches the replica that cached its earlier turns (each
/// turn after the first is served mostly from the prefix cache), while
/// different conversations spread over both; `session` pins by
/// `x-session-id` alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_routing_keeps_a_conversation_on_its_cache() {
    let (r1, r2) = (runner("0"), runner("0"));
    let eps = format!("{},{}", r1.grpc_url(), r2.grpc_url());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let gw = gateway(
        &dir,
        "",
        &["--runner-endpoints", &eps, "--runner-routing", "prefix"],
        &[],
    );
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", gw.http_url());
    let mut cached_after_first = Vec::new();
    for c in 0..12 {
        // a system prompt of its own per conversation: another replica
        // could reuse at most the template's first block of it
        let mut msgs = vec![json!({"role": "system", "content": format!(
            "Conversation {c}: you are the harbour master of port number {c}. Answer in a few words and never invent fees.")})];
        for t in 0..3 {
            msgs.push(
                json!({"role": "user", "content": format!("Question {t}: which pier is free?")}),
            );
            let body = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "temperature": 0, "max_tokens": 6,
                              "messages": msgs});
            let (status, _, r) = post(&http, url.clone(), body).await;
            assert_eq!(status, 200, "{r}");
            if t > 0 {
                let cached = r["usage"]["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap_or(0);
                cached_after_first.push(cached);
            }
            msgs.push(json!({"role": "assistant",
                             "content": r["choices"][0]["message"]["content"].clone()}));
        }
    }
    assert!(
        cached_after_first.iter().all(|&c| c >= 32),
        "a later turn missed its conversation's cache: {cached_after_first:?}"
    );
    // the twelve conversations did not all land on one replica (odds 1 in
    // 2,048 for a fair hash)
    let (t1, t2) = (
        generation_tokens(&http, &r1).await,
        generation_tokens(&http, &r2).await,
    );
    assert!(
        t1 > 0.0 && t2 > 0.0,
        "one replica took every conversation: {t1} / {t2}"
    );

    // by session: unrelated requests of one session meet one replica
    let dir2 = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let gw2 = gateway(
        &dir2,
        "",
        &["--runner-endpoints", &eps, "--runner-routing", "session"],
        &[],
    );
    for session in ["sess-7", "sess-8", "sess-9"] {
        let before = (
            generation_tokens(&http, &r1).await,
            generation_tokens(&http, &r2).await,
        );
        for q in [
            "Name a colour.",
            "Name a fruit.",
            "Name a river.",
            "Name a bird.",
        ] {
            let r = http
                .post(format!("{}/v1/chat/completions", gw2.http_url()))
                .header("x-session-id", session)
                .json(
                    &json!({"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 4,
                              "messages": [{"role": "user", "content": q}]}),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.status(), 200);
        }
        let after = (
            generation_tokens(&http, &r1).await,
            generation_tokens(&http, &r2).await,
        );
        let moved = (after.0 > before.0, after.1 > before.1);
        assert!(
            moved == (true, false) || moved == (false, true),
            "session {session} was served by both replicas: {before:?} -> {after:?}"
        );
    }
}
