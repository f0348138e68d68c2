//! The all-in-one gateway's answers to bad input: a table of malformed
//! requests (OpenAI error JSON, the right status, never a 5xx) and bad
//! flags or configs (a non-zero exit with one readable line).

use ragmesh_tests::assert_openai_error;
use ragmesh_tests::gateway::{PROFILE, start};
use serde_json::{Value, json};

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
