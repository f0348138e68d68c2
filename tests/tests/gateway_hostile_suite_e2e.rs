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

    let all = cases(&model);
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
