//! Traces end to end (issue 18), real processes on loopback: the gateway,
//! the embedder, the retriever and two runner replicas as separate
//! processes, exporting to a real OTLP receiver of the test's own
//! (`ragmesh_tests::otlp`: gRPC, and HTTP/protobuf for the embedder).
//! RAG chats (whole and streamed), an embeddings call and a chat with an
//! incoming `traceparent`; then: one trace per request spanning all four
//! services, the runner's generation under the gateway's, the GenAI
//! attributes equal to the response (token counts = `usage`), the caller's
//! trace kept, JSON log lines carrying the trace and span ids. A second
//! gateway exports to a closed port: its requests succeed and its
//! dropped-spans counter rises. `promtool check metrics` passes on every
//! service's `/metrics`, and the runners' `vllm:` gauges move as requests
//! queue.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ragmesh_tests::otlp::{Receiver, Span};
use ragmesh_tests::routing::{get_json, metric, metrics_of, stub};
use ragmesh_tests::services::{self, STARTUP};
use ragmesh_tests::{Service, promtool_check};
use serde_json::{Value, json};

const RUNNER_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";
const EMBED_MODEL: &str = "all-MiniLM-L6-v2";
const KEY: &str = "sk-trace-test-key";
const INCOMING_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const INCOMING_PARENT: &str = "b7ad6b7169203331";
/// The trace of the call to the external upstream.
const UPSTREAM_TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
/// The trace a client of the embedder's own HTTP API sends.
const EMBEDDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn start(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
    Service::start_env(bin, args, env, STARTUP).unwrap_or_else(|e| panic!("{bin}: {e:#}"))
}

fn otel_env<'a>(endpoint: &'a str, protocol: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
    ]
}

/// A runner replica with one compute thread and one sequence, so a few
/// concurrent requests queue.
fn runner(env: &[(&str, &str)]) -> Service {
    services::runner_env("0", &["--threads", "1", "--max-sequences", "1"], env)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    rid: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, String) {
    let mut req = http
        .post(url)
        .bearer_auth(KEY)
        .header("x-request-id", rid)
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{rid}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The usage and id of a streamed answer (`include_usage`).
fn stream_usage(sse: &str) -> (Value, String, String) {
    let mut usage = Value::Null;
    let (mut id, mut finish) = (String::new(), String::new());
    for data in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(i) = v["id"].as_str() {
            id = i.to_owned();
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = f.to_owned();
        }
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
    }
    (usage, id, finish)
}

/// The gateway's server span of the request with id `rid`.
fn request_span<'a>(spans: &'a [Span], rid: &str) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.service == "ragmesh-gateway" && s.kind == 2 && s.str("request_id") == Some(rid))
}

fn in_trace<'a>(spans: &'a [Span], trace: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.trace_id == trace).collect()
}

/// Whether `ancestor` is on `span`'s parent chain.
fn descends(spans: &[&Span], span: &Span, ancestor: &Span) -> bool {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let mut cur = span;
    for _ in 0..64 {
        if cur.parent_span_id == ancestor.span_id {
            return true;
        }
        match by_id.get(cur.parent_span_id.as_str()) {
            Some(p) => cur = p,
            None => return false,
        }
    }
    false
}

fn one<'a>(spans: &[&'a Span], service: &str, name: &str) -> &'a Span {
    let found: Vec<&&Span> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {service} span '{name}' in the trace; have: {:?}",
        spans
            .iter()
            .map(|s| format!("{}:{}", s.service, s.name))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// The GenAI attributes of a chat span agree with the answer.
fn assert_genai(span: &Span, model: &str, id: &str, usage: &Value, finish: &str) {
    let ctx = format!("{} {:?}", span.name, span.attrs);
    assert_eq!(span.str("gen_ai.operation.name"), Some("chat"), "{ctx}");
    assert_eq!(span.str("gen_ai.request.model"), Some(model), "{ctx}");
    assert_eq!(
        span.str("gen_ai.response.model"),
        Some(RUNNER_MODEL),
        "{ctx}"
    );
    assert_eq!(span.str("gen_ai.provider.name"), Some("ragmesh"), "{ctx}");
    assert_eq!(span.str("gen_ai.response.id"), Some(id), "{ctx}");
    assert_eq!(span.int("gen_ai.request.max_tokens"), Some(12), "{ctx}");
    assert_eq!(span.int("gen_ai.request.seed"), Some(7), "{ctx}");
    assert_eq!(
        span.attr("gen_ai.request.temperature")
            .and_then(Value::as_f64),
        Some(0.0),
        "{ctx}"
    );
    assert_eq!(
        span.int("gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64(),
        "{ctx}"
    );
    assert_eq!(
        span.int("gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64(),
        "{ctx}"
    );
    assert_eq!(
        span.attr("gen_ai.response.finish_reasons"),
        Some(&json!([finish])),
        "{ctx}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_cover_every_hop_with_genai_attributes() {
    let rx = Receiver::start(0)
        .await
        .unwrap_or_else(|e| panic!("receiver: {e}"));
    let (grpc, http_ep) = (rx.endpoint(), rx.http_endpoint());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let embedder = services::embedder_env(&[], &otel_env(&http_ep, "http/protobuf"));
    let retriever =
        services::retriever_env(&dir.path().join("retriever"), &otel_env(&grpc, "grpc"));
    let r1 = runner(&otel_env(&grpc, "grpc"));
    let r2 = runner(&otel_env(&grpc, "grpc"));
    // an external OpenAI-compatible upstream, served as model "zero"
    let stub = stub(&[]);
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[profile]]\nname = \"facts\"\ncollection = \"facts\"\ntop_k = 2\n\
             [[model]]\nname = \"zero\"\nretries = 0\n[[model.upstream]]\nurl = \"{}/v1\"\n",
            stub.http_url()
        ),
    )
    .unwrap_or_else(|e| panic!("config: {e}"));
    let runners = format!("{},{}", r1.grpc_url(), r2.grpc_url());
    let (emb_url, ret_url) = (embedder.grpc_url(), retriever.grpc_url());
    let gw_data = dir.path().join("gw").display().to_string();
    let cfg = cfg.display().to_string();
    let keys = format!("acme={KEY}");
    let mesh_args = |data: &str| {
        vec![
            "--port".to_owned(),
            "0".into(),
            "--data-dir".into(),
            data.to_owned(),
            "--config".into(),
            cfg.clone(),
            "--api-keys".into(),
            keys.clone(),
            "--embedder-endpoints".into(),
            emb_url.clone(),
            "--retriever-endpoints".into(),
            ret_url.clone(),
            "--runner-endpoints".into(),
            runners.clone(),
            "--llm-model".into(),
            "none".into(),
            "--embed-model".into(),
            "/nonexistent/embedder".into(),
        ]
    };
    let args = mesh_args(&gw_data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = dir.path().join("gateway.log");
    let mut env = otel_env(&grpc, "grpc");
    env.push(("RAGMESH_LOG_FORMAT", "json"));
    env.push(("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"));
    let gw = Service::start_env_logged("ragmesh-gateway", &args, &env, &log, STARTUP)
        .unwrap_or_else(|e| panic!("gateway: {e:#}"));
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", gw.http_url());

    // a collection to retrieve from
    let (s, out) = post(
        &http,
        &url("/v1/collections"),
        "setup-1",
        &[],
        json!({"name": "facts"}),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    let (s, out) = post(
        &http,
        &url("/v1/collections/facts/documents"),
        "setup-2",
        &[],
        json!({"documents": [
            {"id": "zorblax.md", "text": "# Zorblax reactor\n\nThe Zorblax reactor on Kepler station runs at exactly 742 kelvin."},
            {"id": "quillon.txt", "text": "The Quillon library in Dunmore opens at nine in the morning on Tuesdays."}
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{out}");

    let ask = |stream: bool| {
        json!({"model": "facts", "max_tokens": 12, "temperature": 0, "seed": 7, "stream": stream,
               "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "At what temperature does the Zorblax reactor run?"}]})
    };
    let (s, whole) = post(
        &http,
        &url("/v1/chat/completions"),
        "rag-whole",
        &[],
        ask(false),
    )
    .await;
    assert_eq!(s, 200, "{whole}");
    let whole = json_of(&whole);
    let (s, sse) = post(
        &http,
        &url("/v1/chat/completions"),
        "rag-stream",
        &[],
        ask(true),
    )
    .await;
    assert_eq!(s, 200, "{sse}");
    let (stream_usage, stream_id, stream_finish) = stream_usage(&sse);
    assert!(
        stream_usage["completion_tokens"].as_i64() > Some(0),
        "{sse}"
    );
    let (s, emb) = post(
        &http,
        &url("/v1/embeddings"),
        "emb",
        &[],
        json!({"model": EMBED_MODEL, "input": "Kepler station"}),
    )
    .await;
    assert_eq!(s, 200, "{emb}");
    let traceparent = format!("00-{INCOMING_TRACE}-{INCOMING_PARENT}-01");
    let (s, tp) = post(
        &http,
        &url("/v1/chat/completions"),
        "with-parent",
        &[("traceparent", &traceparent)],
        json!({"model": RUNNER_MODEL, "max_tokens": 4,
               "messages": [{"role": "user", "content": "Say hi."}]}),
    )
    .await;
    assert_eq!(s, 200, "{tp}");

    // the upstream gets the trace: its traceparent names the gateway's
    // attempt span
    let upstream_parent = format!("00-{UPSTREAM_TRACE}-{INCOMING_PARENT}-01");
    let (s, up) = post(
        &http,
        &url("/v1/chat/completions"),
        "upstream",
        &[("traceparent", &upstream_parent)],
        json!({"model": "zero", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 200, "{up}");
    let seen = get_json(&http, format!("{}/stats", stub.http_url())).await;
    let forwarded = seen["last_traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        forwarded.starts_with(&format!("00-{UPSTREAM_TRACE}-")) && forwarded.ends_with("-01"),
        "traceparent sent upstream: {seen}"
    );

    // a malformed traceparent is ignored: the request is served, as a new trace
    let (s, bad_tp) = post(
        &http,
        &url("/v1/chat/completions"),
        "bad-parent",
        &[("traceparent", "00-not-a-trace-01")],
        json!({"model": "zero", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 200, "{bad_tp}");

    // a client of the embedder's own HTTP API, with its trace
    let resp = http
        .post(format!("{}/v1/embeddings", embedder.http_url()))
        .header(
            "traceparent",
            format!("00-{EMBEDDER_TRACE}-00f067aa0ba902b7-01"),
        )
        .json(&json!({"input": "Kepler station"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("embedder: {e}"));
    assert_eq!(resp.status(), 200);

    // every span of those requests arrives (batches every 100 ms)
    let complete = |spans: &[Span]| {
        let direct = spans.iter().any(|s| {
            s.service == "ragmesh-embedder" && s.trace_id == EMBEDDER_TRACE && s.kind == 2
        });
        let upstream = spans
            .iter()
            .any(|s| s.trace_id == UPSTREAM_TRACE && s.name == "chat zero" && s.kind == 3);
        direct
            && upstream
            && request_span(spans, "bad-parent").is_some()
            && ["rag-whole", "rag-stream", "emb", "with-parent"]
                .iter()
                .all(|rid| {
                    request_span(spans, rid).is_some_and(|g| {
                        let t = in_trace(spans, &g.trace_id);
                        let has = |svc: &str| t.iter().any(|s| s.service == svc);
                        match *rid {
                            "emb" => has("ragmesh-embedder"),
                            "with-parent" => t.iter().any(|s| {
                                s.service == "ragmesh-llm-runner"
                                    && s.attrs.contains_key("gen_ai.usage.output_tokens")
                            }),
                            _ => {
                                has("ragmesh-embedder")
                                    && has("ragmesh-retriever")
                                    && t.iter().any(|s| {
                                        s.service == "ragmesh-llm-runner"
                                            && s.attrs.contains_key("gen_ai.usage.output_tokens")
                                    })
                                    && t.iter().any(|s| {
                                        s.name == "chat facts"
                                            && s.attrs.contains_key("gen_ai.usage.output_tokens")
                                    })
                            }
                        }
                    })
                })
    };
    let spans = rx.wait_for(Duration::from_secs(30), complete).await;
    assert!(
        complete(&spans),
        "not every span arrived within 30 s; got {} spans: {:?}",
        spans.len(),
        spans
            .iter()
            .map(|s| format!("{}:{}:{}", s.service, s.name, s.trace_id))
            .collect::<Vec<_>>()
    );

    // the RAG chats: one trace over the four services, the runner's
    // generation under the gateway's chat span, attributes = the answer
    let usage = whole["usage"].clone();
    let id = whole["id"].as_str().unwrap_or_default().to_owned();
    let finish = whole["choices"][0]["finish_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for (rid, usage, id, finish) in [
        ("rag-whole", &usage, id.as_str(), finish.as_str()),
        (
            "rag-stream",
            &stream_usage,
            stream_id.as_str(),
            stream_finish.as_str(),
        ),
    ] {
        let g = request_span(&spans, rid).unwrap_or_else(|| panic!("{rid}: no server span"));
        assert_eq!(g.name, "POST /v1/chat/completions", "{rid}");
        assert_eq!(g.int("http.response.status_code"), Some(200), "{rid}");
        assert_eq!(g.str("tenant"), Some("acme"), "{rid}");
        assert_eq!(
            g.parent_span_id, "",
            "{rid}: a root span when the caller sent no traceparent"
        );
        let t = in_trace(&spans, &g.trace_id);
        let services: HashSet<&str> = t.iter().map(|s| s.service.as_str()).collect();
        for svc in [
            "ragmesh-gateway",
            "ragmesh-embedder",
            "ragmesh-retriever",
            "ragmesh-llm-runner",
        ] {
            assert!(
                services.contains(svc),
                "{rid}: no {svc} span in {services:?}"
            );
        }
        let chat = one(&t, "ragmesh-gateway", "chat facts");
        assert_eq!(
            chat.kind, 3,
            "{rid}: the gateway's chat span is a client span"
        );
        assert!(descends(&t, chat, g), "{rid}: chat under the request");
        assert_genai(chat, "facts", id, usage, finish);
        let gen_name = format!("chat {RUNNER_MODEL}");
        let gen_span = one(&t, "ragmesh-llm-runner", &gen_name);
        assert!(
            descends(&t, gen_span, chat),
            "{rid}: the runner's generation is a child of the gateway's chat"
        );
        assert_genai(gen_span, RUNNER_MODEL, id, usage, finish);
        let events: Vec<&str> = gen_span.events.iter().map(|(n, _)| n.as_str()).collect();
        for e in ["queued", "first_token", "done"] {
            assert!(events.contains(&e), "{rid}: runner span events {events:?}");
        }
        let server = t
            .iter()
            .find(|s| s.service == "ragmesh-llm-runner" && s.kind == 2)
            .unwrap_or_else(|| panic!("{rid}: no runner server span"));
        let attempt = t
            .iter()
            .find(|s| s.span_id == server.parent_span_id)
            .unwrap_or_else(|| {
                panic!("{rid}: the runner's server span has no parent in the trace")
            });
        assert_eq!(
            (attempt.service.as_str(), attempt.kind),
            ("ragmesh-gateway", 3),
            "{rid}: the gateway's client span is the parent"
        );
        let search = one(&t, "ragmesh-gateway", "search facts");
        assert_eq!(
            search.int("rag.top_k"),
            Some(2),
            "{rid}: {:?}",
            search.attrs
        );
        assert!(
            search.int("rag.hits") >= Some(1),
            "{rid}: {:?}",
            search.attrs
        );
        let remote_search = one(&t, "ragmesh-retriever", "search facts");
        assert!(
            descends(&t, remote_search, search),
            "{rid}: the retriever's search under the gateway's"
        );
        let build = one(&t, "ragmesh-gateway", "prompt_build");
        assert!(
            build.int("rag.chunks_used") >= Some(1),
            "{rid}: {:?}",
            build.attrs
        );
        let embed = one(&t, "ragmesh-embedder", &format!("embeddings {EMBED_MODEL}"));
        assert_eq!(
            embed.int("gen_ai.embeddings.dimension.count"),
            Some(384),
            "{rid}"
        );
    }

    // message contents, opted in on this gateway: the prompt as the model
    // got it (with the retrieved chunk) and the answer
    let g = request_span(&spans, "rag-whole").unwrap_or_else(|| panic!("no server span"));
    let t = in_trace(&spans, &g.trace_id);
    let chat = one(&t, "ragmesh-gateway", "chat facts");
    let input: Value = serde_json::from_str(chat.str("gen_ai.input.messages").unwrap_or("null"))
        .unwrap_or_default();
    assert!(input.to_string().contains("742 kelvin"), "{input}");
    let output: Value = serde_json::from_str(chat.str("gen_ai.output.messages").unwrap_or("null"))
        .unwrap_or_default();
    assert_eq!(
        output[0]["parts"][0]["content"], whole["choices"][0]["message"]["content"],
        "{output}"
    );
    // (not opted in on the runners)
    let gen_span = one(&t, "ragmesh-llm-runner", &format!("chat {RUNNER_MODEL}"));
    assert!(gen_span.attr("gen_ai.input.messages").is_none());

    // the embeddings call
    let g = request_span(&spans, "emb").unwrap_or_else(|| panic!("emb: no server span"));
    let t = in_trace(&spans, &g.trace_id);
    let e = one(&t, "ragmesh-gateway", &format!("embeddings {EMBED_MODEL}"));
    assert_eq!(e.str("gen_ai.operation.name"), Some("embeddings"));
    assert_eq!(e.int("gen_ai.embeddings.dimension.count"), Some(384));
    assert_eq!(
        e.int("gen_ai.usage.input_tokens"),
        json_of(&emb)["usage"]["prompt_tokens"].as_i64()
    );
    one(&t, "ragmesh-embedder", &format!("embeddings {EMBED_MODEL}"));

    // the caller's trace is kept, its span the parent
    let g = request_span(&spans, "with-parent").unwrap_or_else(|| panic!("no server span"));
    assert_eq!(g.trace_id, INCOMING_TRACE);
    assert_eq!(g.parent_span_id, INCOMING_PARENT);
    let t = in_trace(&spans, INCOMING_TRACE);
    let chat = one(&t, "ragmesh-gateway", &format!("chat {RUNNER_MODEL}"));
    let tp = json_of(&tp);
    assert_eq!(
        chat.int("gen_ai.usage.output_tokens"),
        tp["usage"]["completion_tokens"].as_i64()
    );
    assert!(
        t.iter().any(|s| s.service == "ragmesh-llm-runner"),
        "the runner joined the caller's trace"
    );

    // the upstream attempt: a client span to the stub, the parent of what
    // the stub received
    let t = in_trace(&spans, UPSTREAM_TRACE);
    let attempt = t
        .iter()
        .find(|s| s.name == "chat zero" && s.kind == 3)
        .unwrap_or_else(|| panic!("no upstream attempt span"));
    assert_eq!(attempt.str("gen_ai.provider.name"), Some("openai"));
    assert_eq!(attempt.str("server.address"), Some("127.0.0.1"));
    assert_eq!(attempt.int("upstream.attempt"), Some(0));
    assert_eq!(
        forwarded,
        format!("00-{UPSTREAM_TRACE}-{}-01", attempt.span_id),
        "the upstream's parent is the attempt span"
    );
    let g = request_span(&spans, "bad-parent").unwrap_or_else(|| panic!("no bad-parent span"));
    assert_eq!(
        g.parent_span_id, "",
        "a malformed traceparent starts a new trace"
    );
    assert_eq!(g.trace_id.len(), 32);

    // the embedder's HTTP API continues its caller's trace
    let direct: Vec<&Span> = in_trace(&spans, EMBEDDER_TRACE);
    let server = one(&direct, "ragmesh-embedder", "POST /v1/embeddings");
    assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(server.int("http.response.status_code"), Some(200));

    // JSON logs: the access line of a request carries its trace and span
    // ids, request id, tenant and key name, and never the key
    let g = request_span(&spans, "rag-whole").unwrap_or_else(|| panic!("no server span"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains(KEY), "the key is never logged");
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "request" && v["request_id"] == "rag-whole")
        .unwrap_or_else(|| panic!("no JSON access line for rag-whole in:\n{text}"));
    assert_eq!(line["trace_id"], g.trace_id.as_str(), "{line}");
    assert_eq!(line["span_id"], g.span_id.as_str(), "{line}");
    assert_eq!(line["tenant"], "acme", "{line}");
    assert_eq!(line["key_name"], "env-0", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");

    // the vllm: gauges move as requests queue (one sequence per runner,
    // six concurrent streams over two runners)
    let long = json!({"model": RUNNER_MODEL, "max_tokens": 48, "temperature": 0, "stream": true,
                      "messages": [{"role": "user", "content": "Count from one to twenty in words."}]});
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let (http, u, body) = (http.clone(), url("/v1/chat/completions"), long.clone());
            tokio::spawn(async move { post(&http, &u, &format!("queue-{i}"), &[], body).await.0 })
        })
        .collect();
    let waiting = format!("vllm:num_requests_waiting{{model_name=\"{RUNNER_MODEL}\"}}");
    let running = format!("vllm:num_requests_running{{model_name=\"{RUNNER_MODEL}\"}}");
    let in_flight = format!("ragmesh_gateway_requests_in_flight{{model=\"{RUNNER_MODEL}\"}}");
    let (mut max_waiting, mut max_running, mut max_in_flight) = (0.0f64, 0.0f64, 0.0f64);
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < until && !calls.iter().all(|c| c.is_finished()) {
        for r in [&r1, &r2] {
            max_waiting = max_waiting.max(metric(&http, r, &waiting).await.unwrap_or(0.0));
            max_running = max_running.max(metric(&http, r, &running).await.unwrap_or(0.0));
        }
        max_in_flight = max_in_flight.max(metric(&http, &gw, &in_flight).await.unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in calls {
        assert_eq!(c.await.unwrap_or(0), 200);
    }
    // the gateway's in-flight gauge counted the streams and let them go
    assert!(
        max_in_flight >= 2.0,
        "{in_flight} peaked at {max_in_flight}"
    );
    assert_eq!(
        metric(&http, &gw, &in_flight).await,
        Some(0.0),
        "{in_flight} after"
    );
    assert!(
        max_waiting >= 1.0 && max_running >= 1.0,
        "vllm: gauges seen: waiting {max_waiting}, running {max_running}"
    );
    for r in [&r1, &r2] {
        let kv = format!("vllm:kv_cache_usage_perc{{model_name=\"{RUNNER_MODEL}\"}}");
        let v = metric(&http, r, &kv).await;
        assert!(v.is_some_and(|v| (0.0..=1.0).contains(&v)), "{kv} = {v:?}");
    }

    // promtool: every service's /metrics
    for (name, svc) in [
        ("gateway", &gw),
        ("embedder", &embedder),
        ("retriever", &retriever),
        ("runner", &r1),
    ] {
        let text = metrics_of(&http, svc).await;
        if let Err(report) = promtool_check(&text) {
            panic!("promtool check metrics on the {name}'s /metrics:\n{report}");
        }
    }

    // a gateway whose collector is unreachable: requests succeed, spans
    // are dropped and counted
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| format!("http://{a}"))
        .unwrap_or_else(|e| panic!("port: {e}"));
    let gw2_data = dir.path().join("gw2").display().to_string();
    let args2 = mesh_args(&gw2_data);
    let args2: Vec<&str> = args2.iter().map(String::as_str).collect();
    let gw2 = start("ragmesh-gateway", &args2, &otel_env(&closed, "grpc"));
    let u2 = format!("{}/v1/chat/completions", gw2.http_url());
    for i in 0..3 {
        let (s, body) = post(&http, &u2, &format!("lost-{i}"), &[], ask(false)).await;
        assert_eq!(s, 200, "with the collector away: {body}");
    }
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let series = "ragmesh_otel_spans_dropped_total{reason=\"export_failed\"}";
    let mut dropped = 0.0;
    while std::time::Instant::now() < until {
        dropped = metric(&http, &gw2, series).await.unwrap_or(0.0);
        if dropped > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(dropped > 0.0, "{series} = {dropped}");
}

/// Settings that cannot work stop a binary at start with one line: an
/// OTLP protocol it does not speak, a log format it does not know.
#[test]
fn bad_telemetry_settings_exit_with_one_line() {
    let bin = ragmesh_tests::bin_dir().join("ragmesh-gateway");
    for (args, env, needle) in [
        (
            vec!["--llm-model", "none", "--port", "0"],
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported",
        ),
        (vec!["--log-format", "yaml"], vec![], "--log-format"),
        (
            vec!["--llm-model", "none"],
            vec![("RAGMESH_LOG_FORMAT", "xml")],
            "xml",
        ),
    ] {
        let out = std::process::Command::new(&bin)
            .args(&args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} started");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
        if needle.starts_with("OTEL") {
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        }
    }
}
