//! The hostile suite (issue 23): well over a hundred malformed, oversized and
//! adversarial requests across every route of one all-in-one gateway, while
//! a prober times `/health` and the gateway's RSS is sampled from `/proc`.
//! Asserted: no 5xx ever; every refusal is an OpenAI error body (hyper's
//! own 431 for a header flood has none: it is written before any handler
//! runs); requests that must be refused are 4xx; `/health` answers within
//! 200 ms throughout; RSS stays within what the configured limits allow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ragmesh_tests::gateway;
use ragmesh_tests::rss_bytes;
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq)]
enum Want {
    /// Must be refused with a 4xx.
    Refused,
    /// Odd but legal: any non-5xx (an answer or a refusal).
    NotServerError,
}

struct Case {
    name: String,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    want: Want,
}

fn case(name: &str, method: &'static str, path: &str, body: Vec<u8>, want: Want) -> Case {
    Case {
        name: name.to_owned(),
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body,
        want,
    }
}

/// A route with a valid body and the member that carries its main input.
struct Route {
    path: &'static str,
    valid: Value,
    text_field: &'static str,
    number_field: Option<&'static str>,
}

fn routes(model: &str) -> Vec<Route> {
    vec![
        Route {
            path: "/v1/chat/completions",
            valid: json!({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}),
            text_field: "model",
            number_field: Some("max_tokens"),
        },
        Route {
            path: "/v1/completions",
            valid: json!({"model": model, "max_tokens": 1, "prompt": "hi"}),
            text_field: "prompt",
            number_field: Some("max_tokens"),
        },
        Route {
            path: "/v1/responses",
            valid: json!({"model": model, "max_output_tokens": 1, "input": "hi"}),
            text_field: "input",
            number_field: Some("max_output_tokens"),
        },
        Route {
            path: "/v1/embeddings",
            valid: json!({"input": "hi"}),
            text_field: "input",
            number_field: Some("dimensions"),
        },
        Route {
            path: "/v1/collections",
            valid: json!({"name": "hostile_ok"}),
            text_field: "name",
            number_field: None,
        },
        Route {
            path: "/v1/collections/hz/documents",
            valid: json!({"documents": [{"id": "d", "text": "hello there"}]}),
            text_field: "documents",
            number_field: None,
        },
        Route {
            path: "/v1/collections/hz/search",
            valid: json!({"query": "hello", "top_k": 2}),
            text_field: "query",
            number_field: Some("top_k"),
        },
    ]
}

fn with(v: &Value, key: &str, raw: &str) -> Vec<u8> {
    // splice raw JSON text (which may be invalid on purpose) in as `key`
    let mut m = v.as_object().cloned().unwrap_or_default();
    m.remove(key);
    let rest = serde_json::to_string(&Value::Object(m)).unwrap_or_default();
    let inner = rest.trim_start_matches('{').trim_end_matches('}');
    let sep = if inner.is_empty() { "" } else { "," };
    format!("{{{inner}{sep}\"{key}\":{raw}}}").into_bytes()
}

fn cases(model: &str) -> Vec<Case> {
    use Want::*;
    let mut out = Vec::new();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let seven_mb = format!("\"{}\"", "x".repeat(7 << 20));
    for r in routes(model) {
        let p = r.path;
        let valid = serde_json::to_vec(&r.valid).unwrap_or_default();
        let half = valid[..valid.len() / 2].to_vec();
        let t = r.text_field;
        for (name, body, want) in [
            ("not JSON", b"hello".to_vec(), Refused),
            ("truncated JSON", half, Refused),
            ("empty body", Vec::new(), Refused),
            ("array root", b"[]".to_vec(), Refused),
            ("string root", b"\"x\"".to_vec(), Refused),
            ("null root", b"null".to_vec(), Refused),
            ("NaN literal", with(&r.valid, t, "NaN"), Refused),
            (
                "trailing garbage",
                [valid.clone(), b" }".to_vec()].concat(),
                Refused,
            ),
            ("main field a number", with(&r.valid, t, "5"), Refused),
            ("main field an object", with(&r.valid, t, "{}"), Refused),
            ("main field 1e400", with(&r.valid, t, "1e400"), Refused),
            (
                "main field nested 10,000 deep",
                with(&r.valid, t, &deep),
                Refused,
            ),
            ("lone surrogate", with(&r.valid, t, "\"\\ud800\""), Refused),
            (
                "invalid UTF-8",
                [
                    b"{\"".to_vec(),
                    t.as_bytes().to_vec(),
                    b"\":\"\xff\xfe\"}".to_vec(),
                ]
                .concat(),
                Refused,
            ),
            (
                "NUL in a string",
                with(&r.valid, t, "\"a\\u0000b\""),
                NotServerError,
            ),
            (
                "unknown 7 MB member",
                with(&r.valid, "junk", &seven_mb),
                NotServerError,
            ),
            (
                "unknown deep member",
                with(&r.valid, "junk", &deep),
                Refused,
            ),
            (
                "duplicate keys",
                [b"{\"a\":1,\"a\":2,".to_vec(), valid[1..].to_vec()].concat(),
                NotServerError,
            ),
        ] {
            out.push(case(&format!("{p}: {name}"), "POST", p, body, want));
        }
        if let Some(n) = r.number_field {
            for raw in [
                "-1",
                "1e400",
                "18446744073709551616",
                "1.5",
                "\"3\"",
                "true",
                "[]",
            ] {
                out.push(case(
                    &format!("{p}: {n} = {raw}"),
                    "POST",
                    p,
                    with(&r.valid, n, raw),
                    Refused,
                ));
            }
        }
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            out.push(Case {
                name: format!("{p}: content type {ct}"),
                method: "POST",
                path: p.to_owned(),
                content_type: Some(ct),
                body: valid.clone(),
                want: Refused,
            });
        }
        out.push(case(
            &format!("{p}: wrong method"),
            "PUT",
            p,
            valid.clone(),
            Refused,
        ));
    }
    // names and ids: path traversal, odd bytes, lengths
    for name in [
        "../etc",
        "..",
        "a/b",
        "a b",
        "é",
        "",
        &"n".repeat(65),
        "a\u{0}b",
        "CON",
    ] {
        let want = if name == "CON" {
            NotServerError
        } else {
            Refused
        };
        out.push(case(
            &format!("create collection {name:?}"),
            "POST",
            "/v1/collections",
            serde_json::to_vec(&json!({"name": name})).unwrap_or_default(),
            want,
        ));
    }
    for path in [
        "/v1/collections/..%2F..%2Fetc/documents",
        "/v1/collections/%2e%2e/search",
        "/v1/collections/hz/documents/..%2F..%2Fx",
        "/v1/collections/%00",
        "/v1/collections/hz%20x",
        "/v1/models/..%2F..%2Fetc%2Fpasswd",
        "/v1/nope",
        "/v1/collections/hz/documents/a/b/../../c",
    ] {
        let method = if path.contains("/documents/") {
            "DELETE"
        } else if path.ends_with("search") || path.ends_with("documents") {
            "POST"
        } else {
            "GET"
        };
        out.push(case(
            &format!("{method} {path}"),
            method,
            path,
            b"{\"query\":\"x\",\"documents\":[]}".to_vec(),
            Refused,
        ));
    }
    // Files and Vector Stores: forms, ids, filters, limits
    let form = |boundary: &str, parts: &str| -> Case {
        Case {
            name: String::new(),
            method: "POST",
            path: "/v1/files".into(),
            content_type: None,
            body: parts.replace("{b}", boundary).into_bytes(),
            want: Refused,
        }
    };
    let many_parts: String = (0..100)
        .map(|i| format!("--{{b}}\r\nContent-Disposition: form-data; name=\"p{i}\"\r\n\r\nx\r\n"))
        .collect::<String>()
        + "--{b}--\r\n";
    for (name, ct, body) in [
        ("upload: JSON instead of a form", Some("application/json"), "{\"purpose\":\"assistants\"}".to_owned()),
        ("upload: form without a boundary", Some("multipart/form-data"), "x".to_owned()),
        ("upload: garbage form", Some("multipart/form-data; boundary=zz"), "not a form at all".to_owned()),
        (
            "upload: no file part",
            Some("multipart/form-data; boundary=zz"),
            "--zz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n--zz--\r\n".to_owned(),
        ),
        (
            "upload: no purpose",
            Some("multipart/form-data; boundary=zz"),
            "--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello\r\n--zz--\r\n".to_owned(),
        ),
        (
            "upload: purpose batch",
            Some("multipart/form-data; boundary=zz"),
            "--zz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello\r\n--zz--\r\n".to_owned(),
        ),
        (
            "upload: empty file",
            Some("multipart/form-data; boundary=zz"),
            "--zz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n\r\n--zz--\r\n".to_owned(),
        ),
        ("upload: 100 parts", Some("multipart/form-data; boundary=zz"), many_parts.replace("{b}", "zz")),
    ] {
        let mut c = form("zz", &body);
        c.name = name.to_owned();
        c.content_type = ct;
        out.push(c);
    }
    for (method, path) in [
        ("GET", "/v1/files/..%2F..%2Fetc%2Fpasswd"),
        ("GET", "/v1/files/%00/content"),
        ("DELETE", "/v1/files/file-nope"),
        ("GET", "/v1/vector_stores/..%2Fx"),
        ("DELETE", "/v1/vector_stores/vs_nope"),
        ("GET", "/v1/vector_stores/vs_nope/files/..%2F..%2Fx"),
        ("GET", "/v1/vector_stores/vs_nope/file_batches/%2e%2e/files"),
        ("GET", "/v1/files?limit=0"),
        ("GET", "/v1/files?order=sideways"),
        ("GET", "/v1/vector_stores?limit=1000000"),
        ("GET", "/v1/responses/..%2F..%2Fetc%2Fpasswd"),
        ("GET", "/v1/responses/resp_nope/input_items?limit=0"),
        ("DELETE", "/v1/responses/resp_nope"),
        ("GET", "/v1/responses/%00"),
    ] {
        out.push(case(
            &format!("{method} {path}"),
            method,
            path,
            Vec::new(),
            Refused,
        ));
    }
    let deep_filter = (0..10).fold(
        json!({"type": "eq", "key": "k", "value": 1}),
        |f, _| json!({"type": "or", "filters": [f]}),
    );
    for (name, path, body) in [
        (
            "store: static chunks of 10,000",
            "/v1/vector_stores",
            json!({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 10000, "chunk_overlap_tokens": 0}}}),
        ),
        (
            "store: overlap past half",
            "/v1/vector_stores",
            json!({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150}}}),
        ),
        (
            "store: 17 metadata keys",
            "/v1/vector_stores",
            json!({"metadata": (0..17).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
        ),
        (
            "store: metadata value a number",
            "/v1/vector_stores",
            json!({"metadata": {"k": 1}}),
        ),
        (
            "store: expires after 0 days",
            "/v1/vector_stores",
            json!({"expires_after": {"anchor": "last_active_at", "days": 0}}),
        ),
        (
            "store: 501 file ids",
            "/v1/vector_stores",
            json!({"file_ids": (0..501).map(|i| format!("file-{i}")).collect::<Vec<_>>()}),
        ),
        (
            "store: name a number",
            "/v1/vector_stores",
            json!({"name": 5}),
        ),
        (
            "search: missing store",
            "/v1/vector_stores/vs_nope/search",
            json!({"query": "x"}),
        ),
        (
            "attach: file id traversal",
            "/v1/vector_stores/vs_nope/files",
            json!({"file_id": "../../etc/passwd"}),
        ),
        (
            "batch: no files",
            "/v1/vector_stores/vs_nope/file_batches",
            json!({"file_ids": []}),
        ),
        (
            "response: previous id traversal",
            "/v1/responses",
            json!({"model": model, "input": "x", "previous_response_id": "../../etc/passwd"}),
        ),
        (
            "response: 17 vector stores",
            "/v1/responses",
            json!({"model": model, "input": "x", "tools": [{"type": "file_search",
                   "vector_store_ids": (0..17).map(|i| format!("vs_{i}")).collect::<Vec<_>>()}]}),
        ),
        (
            "response: filter nested 10 deep",
            "/v1/responses",
            json!({"model": model, "input": "x", "tools": [{"type": "file_search",
                   "vector_store_ids": ["vs_x"], "filters": deep_filter.clone()}]}),
        ),
        (
            "response: 1,025 input items",
            "/v1/responses",
            json!({"model": model, "input": vec![json!({"role": "user", "content": "x"}); 1025]}),
        ),
        (
            "response: unknown tool",
            "/v1/responses",
            json!({"model": model, "input": "x", "tools": [{"type": "computer_use_preview"}]}),
        ),
    ] {
        out.push(case(
            name,
            "POST",
            path,
            serde_json::to_vec(&body).unwrap_or_default(),
            Refused,
        ));
    }
    out.push(case(
        "store search: filter nested 10 deep",
        "POST",
        "/v1/vector_stores/{vs}/search",
        serde_json::to_vec(&json!({"query": "x", "filters": deep_filter})).unwrap_or_default(),
        Refused,
    ));
    for (name, body) in [
        ("store search: 11 queries", json!({"query": vec!["q"; 11]})),
        (
            "store search: 1,000 results",
            json!({"query": "q", "max_num_results": 1000}),
        ),
        (
            "store search: in over objects",
            json!({"query": "q", "filters": {"type": "in", "key": "k", "value": [{}]}}),
        ),
        (
            "store search: unknown operator",
            json!({"query": "q", "filters": {"type": "like", "key": "k", "value": "%"}}),
        ),
        (
            "store search: threshold 2",
            json!({"query": "q", "ranking_options": {"score_threshold": 2}}),
        ),
        ("store search: empty query", json!({"query": ""})),
    ] {
        out.push(case(
            name,
            "POST",
            "/v1/vector_stores/{vs}/search",
            serde_json::to_vec(&body).unwrap_or_default(),
            Refused,
        ));
    }
    // filters over mixed and wrong types
    for f in [
        json!({"num": {"gte": "a"}}),
        json!({"num": {}}),
        json!({"num": {"gte": 1, "between": 2}}),
        json!({"num": [1, "a"]}),
        json!({"num": []}),
        json!({"num": null}),
        json!({"must_not": 5}),
        json!({"a.b": 1}),
        json!({"k": {"gte": 1e308, "lte": -1e308}}),
        json!([1]),
        json!("x"),
    ] {
        let want = if f == json!({"k": {"gte": 1e308, "lte": -1e308}}) {
            NotServerError
        } else {
            Refused
        };
        out.push(case(
            &format!("search filter {f}"),
            "POST",
            "/v1/collections/hz/search",
            serde_json::to_vec(&json!({"query": "hello", "filter": f})).unwrap_or_default(),
            want,
        ));
    }
    for (name, body) in [
        (
            "ingest: metadata not an object",
            json!({"documents": [{"id": "m", "text": "t", "metadata": 5}]}),
        ),
        (
            "ingest: document id empty",
            json!({"documents": [{"id": "", "text": "t"}]}),
        ),
        (
            "ingest: text a number",
            json!({"documents": [{"id": "x", "text": 5}]}),
        ),
        (
            "ingest: 1,001 documents",
            json!({"documents": (0..1001).map(|i| json!({"id": i.to_string(), "text": "t"})).collect::<Vec<_>>()}),
        ),
        (
            "chat: 100,000 messages",
            json!({"model": model, "messages": vec![json!({"role": "user", "content": "hi"}); 100_000]}),
        ),
        (
            "chat: unknown role",
            json!({"model": model, "messages": [{"role": "root", "content": "hi"}]}),
        ),
        (
            "chat: rag with a bad top_k",
            json!({"model": model, "rag": {"collection": "hz", "top_k": 1_000_000}, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "chat: rag on a missing collection",
            json!({"model": model, "rag": {"collection": "../x"}, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "chat: temperature NaN-like",
            json!({"model": model, "temperature": 1e308, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "embeddings: 10,000 inputs of 1 KB",
            json!({"input": vec!["y".repeat(1024); 10_000]}),
        ),
    ] {
        let path = if name.starts_with("ingest") {
            "/v1/collections/hz/documents"
        } else if name.starts_with("chat") {
            "/v1/chat/completions"
        } else {
            "/v1/embeddings"
        };
        let want = if name.starts_with("embeddings") {
            NotServerError
        } else {
            Refused
        };
        out.push(case(
            name,
            "POST",
            path,
            serde_json::to_vec(&body).unwrap_or_default(),
            want,
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_suite_gets_no_5xx_and_health_stays_fast() {
    const BODY_BUDGET: u64 = 64 << 20;
    let g = gateway::start(&[
        "--max-inflight-body-bytes",
        &BODY_BUDGET.to_string(),
        "--http-header-timeout-s",
        "5",
    ]);
    g.ok("POST", "/v1/collections", Some(json!({"name": "hz"})))
        .await;
    let model = g.chat_model().await;
    let pid = g.svc.child.id();
    let baseline = rss_bytes(pid);

    let done = Arc::new(AtomicBool::new(false));
    let worst_health_ms = Arc::new(AtomicU64::new(0));
    let peak_rss = Arc::new(AtomicU64::new(baseline));
    let prober = {
        let (done, worst, peak) = (done.clone(), worst_health_ms.clone(), peak_rss.clone());
        let (http, url) = (g.http.clone(), g.url("/health"));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(5), http.get(&url).send()).await,
                    Ok(Ok(r)) if r.status() == 200
                );
                let ms = if ok {
                    t.elapsed().as_millis() as u64
                } else {
                    u64::MAX
                };
                worst.fetch_max(ms, Ordering::Relaxed);
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let (_, vs) = g
        .call(
            "POST",
            "/v1/vector_stores",
            Some(json!({"name": "hostile"})),
        )
        .await;
    let vs = vs["id"].as_str().unwrap_or_default().to_owned();
    let mut all = cases(&model);
    for c in &mut all {
        c.path = c.path.replace("{vs}", &vs);
    }
    assert!(all.len() >= 120, "only {} cases", all.len());
    let mut failures = Vec::new();
    for c in &all {
        let m = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = g.http.request(m, g.url(&c.path)).body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let resp = match tokio::time::timeout(Duration::from_secs(120), req.send()).await {
            Ok(Ok(r)) => r,
            other => {
                failures.push(format!("{}: no answer ({other:?})", c.name));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 500 {
            failures.push(format!(
                "{}: {status} {}",
                c.name,
                text.chars().take(200).collect::<String>()
            ));
        } else if c.want == Want::Refused && !(400..500).contains(&status) {
            failures.push(format!("{}: expected a 4xx, got {status}", c.name));
        } else if status >= 400 {
            let e = &v["error"];
            let shaped = e["message"].as_str().is_some_and(|m| !m.is_empty())
                && e["type"].is_string()
                && e.get("param").is_some()
                && e.get("code").is_some();
            if !shaped {
                failures.push(format!(
                    "{}: {status} without an OpenAI error body: {text:.200}",
                    c.name
                ));
            }
        }
    }
    // a header flood: hyper refuses it before any handler (431, no body)
    let mut flood = g.http.get(g.url("/v1/models"));
    for i in 0..200 {
        flood = flood.header(format!("x-flood-{i}"), "v".repeat(100));
    }
    // (an error is the connection closed on it: also a refusal)
    if let Ok(r) = flood.send().await {
        assert!(r.status().is_client_error(), "header flood: {}", r.status());
    }
    done.store(true, Ordering::Relaxed);
    let _ = prober.await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    let worst = worst_health_ms.load(Ordering::Relaxed);
    assert!(
        worst <= 200,
        "/health took up to {worst} ms during the suite"
    );
    let grew = peak_rss.load(Ordering::Relaxed).saturating_sub(baseline);
    // the body budget plus what parsing and one model forward hold
    assert!(
        grew < BODY_BUDGET * 4 + (256 << 20),
        "RSS grew by {} MB (body budget {} MB)",
        grew >> 20,
        BODY_BUDGET >> 20
    );
    println!(
        "hostile suite: {} cases, worst /health {worst} ms, RSS +{} MB",
        all.len(),
        grew >> 20
    );
}
