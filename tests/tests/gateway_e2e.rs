//! The gateway binary end to end, all-in-one (embedder, retriever and
//! runner in-process, real models): the OpenAI SDK, RAG with citations,
//! ingest replace/delete, the context budget, and a table of bad inputs.

use std::time::Duration;

use ragmesh_tests::{Service, assert_openai_error, python};
use serde_json::{Value, json};

const STARTUP: Duration = Duration::from_secs(180);
const PROFILE: &str = "facts-assistant";

struct Gateway {
    svc: Service,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn start(extra: &[&str]) -> Gateway {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[profile]]\nname = \"{PROFILE}\"\ncollection = \"facts\"\ntop_k = 3\ntemperature = 0.0\n"
        ),
    )
    .unwrap_or_else(|e| panic!("config: {e}"));
    let data = dir.path().join("data");
    let mut args = vec![
        "--port".to_owned(),
        "0".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--config".into(),
        cfg.display().to_string(),
        "--max-model-len".into(),
        "2048".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let svc = Service::start("ragmesh-gateway", &args, STARTUP).unwrap_or_else(|e| panic!("{e:#}"));
    Gateway {
        svc,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.svc.http_url())
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self.http.request(m, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        assert!(
            resp.headers().contains_key("x-request-id"),
            "{method} {path}: no x-request-id"
        );
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    async fn chat_model(&self) -> String {
        let models = self.ok("GET", "/v1/models", None).await;
        models["data"]
            .as_array()
            .and_then(|d| d.iter().find(|m| m["type"] == "chat"))
            .and_then(|m| m["id"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// The test corpus: one distinctive fact per document.
    async fn seed(&self) {
        self.ok("POST", "/v1/collections", Some(json!({"name": "facts"})))
            .await;
        let out = self
            .ok(
                "POST",
                "/v1/collections/facts/documents",
                Some(json!({"documents": [
                    {"id": "zorblax.md", "metadata": {"topic": "energy", "year": 2031},
                     "text": "# Zorblax reactor\n\nThe Zorblax reactor on Kepler station runs at exactly 742 kelvin. It was commissioned in 2031 by the engineer Mara Quell."},
                    {"id": "quillon.txt", "metadata": {"topic": "books", "year": 1998},
                     "text": "The Quillon library in Dunmore opens at nine in the morning on Tuesdays and keeps forty-eight thousand maps."},
                    {"id": "tessaly.txt", "metadata": {"topic": "travel", "year": 2019},
                     "text": "Tessaly ferries cross the Varn strait every forty minutes, and a crossing costs six silver marks."}
                ]})),
            )
            .await;
        assert_eq!(out["documents"], 3, "{out}");
        assert!(out["chunks"].as_u64().unwrap_or(0) >= 3, "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_chat_completions_embeddings_and_rag() {
    let gw = start(&[]);
    gw.seed().await;
    let model = gw.chat_model().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/gateway_sdk.py");
    let out = tokio::process::Command::new(python())
        .args([script, &gw.svc.http_url(), &model, PROFILE])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    assert!(
        out.status.success(),
        "SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rag_cites_the_right_document_and_ingest_replaces_and_deletes() {
    let gw = start(&[]);
    gw.seed().await;
    let q = "At what temperature does the Zorblax reactor run?";

    // retrieval alone ranks the fact first; a metadata filter excludes it
    let hits = gw
        .ok(
            "POST",
            "/v1/collections/facts/search",
            Some(json!({"query": q, "top_k": 3})),
        )
        .await;
    assert_eq!(hits["data"][0]["doc_id"], "zorblax.md", "{hits}");
    assert!(
        hits["data"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("742")
    );
    let filtered = gw
        .ok(
            "POST",
            "/v1/collections/facts/search",
            Some(json!({"query": q, "filter": {"topic": ["books", "travel"]}})),
        )
        .await;
    let docs: Vec<&str> = filtered["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|h| h["doc_id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        !docs.is_empty() && !docs.contains(&"zorblax.md"),
        "{filtered}"
    );
    let ranged = gw
        .ok(
            "POST",
            "/v1/collections/facts/search",
            Some(json!({"query": q, "filter": {"year": {"lt": 2000}}})),
        )
        .await;
    assert_eq!(ranged["data"].as_array().map(Vec::len), Some(1), "{ranged}");
    assert_eq!(ranged["data"][0]["doc_id"], "quillon.txt");

    // the profile answers with the fact and cites its document
    let msgs = json!([{"role": "user", "content": q}]);
    let r = gw
        .ok(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": PROFILE, "messages": msgs, "max_tokens": 48})),
        )
        .await;
    let msg = &r["choices"][0]["message"];
    assert_eq!(msg["citations"][0]["doc_id"], "zorblax.md", "{r}");
    assert_eq!(msg["citations"][0]["index"], 1);
    assert!(msg["citations"][0]["metadata"]["topic"] == "energy", "{r}");
    assert!(msg["content"].as_str().unwrap_or("").contains("742"), "{r}");
    assert_eq!(r["rag"]["collection"], "facts");
    // the plain model does not know it
    let model = gw.chat_model().await;
    let plain = gw
        .ok(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": model, "messages": msgs, "max_tokens": 48, "temperature": 0})),
        )
        .await;
    let plain_text = plain["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("");
    assert!(!plain_text.contains("742"), "{plain}");
    assert!(plain["choices"][0]["message"].get("citations").is_none());
    eprintln!("with RAG: {}\nwithout: {plain_text}", msg["content"]);

    // re-ingesting the id replaces its chunks
    gw.ok(
        "POST",
        "/v1/collections/facts/documents",
        Some(json!({"id": "zorblax.md", "text": "The Zorblax reactor on Kepler station was retuned and now runs at 915 kelvin."})),
    )
    .await;
    let hits = gw
        .ok(
            "POST",
            "/v1/collections/facts/search",
            Some(json!({"query": q, "top_k": 5})),
        )
        .await;
    let texts: Vec<&str> = hits["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|h| h["doc_id"] == "zorblax.md")
                .filter_map(|h| h["text"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(texts.len(), 1, "{hits}");
    assert!(
        texts[0].contains("915") && !texts[0].contains("742"),
        "{hits}"
    );

    // delete: gone from search; a second delete is 404
    let d = gw
        .ok("DELETE", "/v1/collections/facts/documents/zorblax.md", None)
        .await;
    assert_eq!(d["deleted"], true);
    let (status, v) = gw
        .call("DELETE", "/v1/collections/facts/documents/zorblax.md", None)
        .await;
    assert_eq!(status, 404, "{v}");
    let hits = gw
        .ok(
            "POST",
            "/v1/collections/facts/search",
            Some(json!({"query": q})),
        )
        .await;
    assert!(!hits.to_string().contains("zorblax.md"), "{hits}");
    let info = gw.ok("GET", "/v1/collections/facts", None).await;
    assert_eq!(info["points"], 2, "{info}");
    let list = gw.ok("GET", "/v1/collections", None).await;
    assert_eq!(list["data"][0]["name"], "facts");
    gw.ok("DELETE", "/v1/collections/facts", None).await;
    let (status, _) = gw.call("GET", "/v1/collections/facts", None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_budget_drops_lowest_ranked_chunks_and_reports_it() {
    let gw = start(&[]);
    gw.seed().await;
    // window 2048: asking for 1900 completion tokens leaves room for the
    // question and about one chunk
    let body = json!({
        "model": PROFILE, "stream": true, "max_tokens": 1900,
        "messages": [{"role": "user", "content": "Tell me about the Zorblax reactor, the Quillon library and the Tessaly ferries."}],
    });
    let mut resp = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    let mut buf = String::new();
    // the first event (the role chunk) already carries the rag summary
    while !buf.contains("\n\n") {
        match resp.chunk().await {
            Ok(Some(b)) => buf.push_str(&String::from_utf8_lossy(&b)),
            _ => break,
        }
    }
    drop(resp); // the client goes away; the runner cancels the request
    let first = buf
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .unwrap_or_default();
    let rag = &first["rag"];
    assert_eq!(rag["retrieved"], 3, "{first}");
    assert!(rag["dropped"].as_u64().unwrap_or(0) >= 1, "{first}");
    assert_eq!(
        rag["used"].as_u64().unwrap_or(9) + rag["dropped"].as_u64().unwrap_or(9),
        3,
        "{first}"
    );
    assert!(
        rag["prompt_tokens"].as_u64().unwrap_or(u64::MAX) + 1900 <= 2048,
        "{first}"
    );
    assert_eq!(
        first["citations"].as_array().map(Vec::len),
        rag["used"].as_u64().map(|u| u as usize)
    );
    // the gateway keeps serving
    let (status, _) = gw.call("GET", "/v1/models", None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_openai_errors_and_never_5xx() {
    let gw = start(&["--max-body-bytes", "65536"]);
    gw.seed().await;
    let model = gw.chat_model().await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let chat = |extra: Value| {
        let mut b = json!({"model": model, "messages": msgs});
        if let (Some(o), Value::Object(e)) = (b.as_object_mut(), extra) {
            o.extend(e);
        }
        b
    };
    let cases: Vec<(&str, &str, Value, u16)> = vec![
        ("POST", "/v1/chat/completions", json!([1, 2]), 400),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": msgs}),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": 7, "messages": msgs}),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": "gpt-9", "messages": msgs}),
            404,
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": model, "messages": []}),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": model, "messages": "hi"}),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "wizard", "content": "x"}]}),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": 5}]}),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"temperature": 5})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"temperature": "hot"})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"top_p": 0.0})),
            200,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"max_tokens": -1})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"max_tokens": 1_000_000_000_000i64})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"max_tokens": 1e300})),
            400,
        ),
        ("POST", "/v1/chat/completions", chat(json!({"n": 3})), 400),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"stream": "yes"})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"stop": 5})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"stop": vec!["a"; 17]})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"logprobs": true, "top_logprobs": 50})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"tools": [{"type": "function"}]})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"model": "all-MiniLM-L6-v2"})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"rag": {"top_k": 2}})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"rag": {"collection": "nope"}})),
            404,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"rag": {"collection": "facts", "top_k": 0}})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"rag": {"collection": "facts", "filter": {"year": {"from": 1}}}})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"rag": "facts"})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(json!({"unknown_field": {"ignored": true}, "max_tokens": 1})),
            200,
        ),
        ("POST", "/v1/completions", json!({"model": model}), 400),
        (
            "POST",
            "/v1/completions",
            json!({"model": model, "prompt": [1, 2]}),
            400,
        ),
        (
            "POST",
            "/v1/completions",
            json!({"model": PROFILE, "prompt": "x"}),
            400,
        ),
        (
            "POST",
            "/v1/completions",
            json!({"model": model, "prompt": "x", "echo": true}),
            400,
        ),
        (
            "POST",
            "/v1/completions",
            json!({"model": model, "prompt": "x", "logprobs": 9}),
            400,
        ),
        (
            "POST",
            "/v1/embeddings",
            json!({"model": "all-MiniLM-L6-v2", "input": 5}),
            400,
        ),
        (
            "POST",
            "/v1/embeddings",
            json!({"model": "all-MiniLM-L6-v2"}),
            400,
        ),
        (
            "POST",
            "/v1/embeddings",
            json!({"model": "nope", "input": "x"}),
            404,
        ),
        (
            "POST",
            "/v1/embeddings",
            json!({"model": model, "input": "x"}),
            400,
        ),
        ("POST", "/v1/collections", json!({}), 400),
        ("POST", "/v1/collections", json!({"name": "../etc"}), 400),
        ("POST", "/v1/collections", json!({"name": "facts"}), 409),
        (
            "POST",
            "/v1/collections",
            json!({"name": "x1", "distance": "manhattan"}),
            400,
        ),
        ("GET", "/v1/collections/nope", Value::Null, 404),
        ("DELETE", "/v1/collections/nope", Value::Null, 404),
        (
            "POST",
            "/v1/collections/nope/documents",
            json!({"id": "a", "text": "x"}),
            404,
        ),
        (
            "POST",
            "/v1/collections/facts/documents",
            json!({"documents": []}),
            400,
        ),
        (
            "POST",
            "/v1/collections/facts/documents",
            json!({"id": "a", "text": ""}),
            400,
        ),
        (
            "POST",
            "/v1/collections/facts/documents",
            json!({"id": "a", "text": "x", "metadata": [1, 2]}),
            400,
        ),
        (
            "DELETE",
            "/v1/collections/facts/documents/never-ingested",
            Value::Null,
            404,
        ),
        ("POST", "/v1/collections/facts/search", json!({}), 400),
        (
            "POST",
            "/v1/collections/facts/search",
            json!({"query": "x", "top_k": 100000}),
            400,
        ),
        ("GET", "/v1/models/nope", Value::Null, 404),
        ("GET", "/v1/nothing-here", Value::Null, 404),
        ("GET", "/v1/chat/completions", Value::Null, 405),
    ];
    for (method, path, body, want) in cases {
        let ctx = format!("{method} {path} {body}");
        let b = if body.is_null() { None } else { Some(body) };
        let (status, v) = gw.call(method, path, b).await;
        assert_eq!(status, want, "{ctx}: {v}");
        if want >= 400 {
            assert_openai_error(&v, &ctx);
        }
    }
    // malformed JSON, and a body past the limit
    for (body, want) in [
        (b"{\"model\": ".to_vec(), 400u16),
        (vec![b' '; 70_000], 413),
    ] {
        let resp = gw
            .http
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), want);
        let v: Value = resp.json().await.unwrap_or_default();
        assert_openai_error(&v, "raw body");
    }
    // a caller's request id is echoed
    let resp = gw
        .http
        .get(gw.url("/v1/models"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-42")
    );
    // still serving, and the corpus is intact
    let info = gw.ok("GET", "/v1/collections/facts", None).await;
    assert_eq!(info["points"], 3, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_ingests_the_docs_and_answers_with_citations() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let ingest = format!("{root}/docs,{root}/README.md");
    let gw = start(&["--demo-ingest", &ingest]);
    let r = gw
        .ok(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "ragmesh-docs", "max_tokens": 48,
                        "messages": [{"role": "user", "content": "What does make test do?"}]})),
        )
        .await;
    let cites = r["choices"][0]["message"]["citations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!cites.is_empty(), "{r}");
    assert!(
        cites
            .iter()
            .all(|c| c["doc_id"].as_str().is_some_and(|d| d.ends_with(".md"))),
        "{r}"
    );
    assert!(
        !r["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .trim()
            .is_empty(),
        "{r}"
    );
    let metrics = gw.svc.http_url() + "/metrics";
    let text = reqwest::get(metrics)
        .await
        .map(|r| r.text())
        .unwrap_or_else(|e| panic!("{e}"));
    let text = text.await.unwrap_or_default();
    for name in [
        "ragmesh_gateway_requests_total",
        "ragmesh_gateway_time_to_first_token_seconds_bucket",
        "ragmesh_gateway_rag_stage_seconds_bucket",
        "ragmesh_llm_time_to_first_token_seconds_bucket",
        "ragmesh_embedder_batch_size_bucket",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
}

#[test]
fn bad_flags_and_configs_exit_nonzero_with_one_line() {
    let bin = ragmesh_tests::bin_dir().join("ragmesh-gateway");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad_cfg = dir.path().join("bad.toml");
    std::fs::write(
        &bad_cfg,
        "[[profile]]\nname = \"x\"\ncolection = \"typo\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cfg = bad_cfg.display().to_string();
    let data = dir.path().join("d").display().to_string();
    for args in [
        vec!["--config", cfg.as_str(), "--data-dir", data.as_str()],
        vec![
            "--llm-model",
            "/nonexistent.gguf",
            "--data-dir",
            data.as_str(),
        ],
        vec!["--chunk-tokens", "400", "--data-dir", data.as_str()],
    ] {
        let out = std::process::Command::new(&bin)
            .args(&args)
            .env("RAGMESH_MODEL_DIR", ragmesh_tests::model_dir())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("ragmesh-gateway: error: "),
            "{args:?}: {err}"
        );
    }
    // a flag value clap cannot parse: its own error, naming the flag
    let out = std::process::Command::new(&bin)
        .args(["--workers", "many"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success(), "--workers many succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'many' for '--workers"), "{err}");
}
