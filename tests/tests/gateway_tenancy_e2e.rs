//! API keys and tenants through the real gateway: no key or a wrong key is
//! 401, one tenant never reads or writes another's collections (404, the
//! same answer as a missing one), and a key's rate limit answers 429 with
//! `Retry-After` without touching other keys.

use std::time::Duration;

use ragmesh_tests::Service;
use ragmesh_tests::gateway::request;
use serde_json::{Value, json};

const KEY_A: &str = "key-alpha-0001";
const KEY_B: &str = "key-bravo-0002";
const KEY_C: &str = "key-charlie-0003";
const KEY_D: &str = "key-delta-0004";

struct Gw {
    svc: Service,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Gw {
    async fn call(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, Option<String>) {
        let url = format!("{}{path}", self.svc.http_url());
        let (status, headers, v) = request(&self.http, method, &url, key, body).await;
        let retry = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, v, retry)
    }
}

fn sha256_hex(s: &str) -> String {
    // the test computes the hash with the system tool, as an operator would
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(s.as_bytes())?;
            }
            c.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn start() -> Gw {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let hash = sha256_hex(KEY_C);
    assert_eq!(hash.len(), 64, "sha256sum output: {hash}");
    let hash_d = sha256_hex(KEY_D);
    let cfg = dir.path().join("keys.toml");
    std::fs::write(
        &cfg,
        format!("[[key]]\nname = \"limited\"\ntenant = \"tc\"\nsha256 = \"{hash}\"\nrate_per_minute = 6\nburst = 3\n\n[[key]]\nname = \"one-at-a-time\"\ntenant = \"td\"\nsha256 = \"{hash_d}\"\nmax_concurrent = 1\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("data").display().to_string();
    let keys = format!("ta={KEY_A},tb={KEY_B}");
    let cfg = cfg.display().to_string();
    let args = [
        "--port",
        "0",
        "--data-dir",
        &data,
        "--config",
        &cfg,
        "--api-keys",
        &keys,
    ];
    let svc = Service::start("ragmesh-gateway", &args, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e:#}"));
    Gw {
        svc,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tenants_and_limits() {
    let gw = start();

    // authentication
    for (key, path) in [
        (None, "/v1/models"),
        (Some("wrong-key-123"), "/v1/models"),
        (None, "/v1/collections"),
    ] {
        let (status, v, _) = gw.call(key, "GET", path, None).await;
        assert_eq!(status, 401, "{key:?} {path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
    }
    let (status, _, _) = gw.call(None, "GET", "/health", None).await;
    assert_eq!(status, 200, "/health needs no key");

    // tenant A owns "docs"
    let a = Some(KEY_A);
    let b = Some(KEY_B);
    assert_eq!(
        gw.call(a, "POST", "/v1/collections", Some(json!({"name": "docs"})))
            .await
            .0,
        200
    );
    let doc = json!({"id": "secret.md", "text": "Project Nightjar launches on the fourth of May."});
    assert_eq!(
        gw.call(
            a,
            "POST",
            "/v1/collections/docs/documents",
            Some(doc.clone())
        )
        .await
        .0,
        200
    );

    // tenant B sees nothing of it, on every endpoint, and gets A's 404
    let q = json!({"query": "When does Project Nightjar launch?"});
    let chat = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "When does Nightjar launch?"}],
                      "rag": {"collection": "docs"}});
    for (method, path, body) in [
        ("GET", "/v1/collections/docs", None),
        ("POST", "/v1/collections/docs/documents", Some(doc.clone())),
        ("POST", "/v1/collections/docs/search", Some(q.clone())),
        ("DELETE", "/v1/collections/docs/documents/secret.md", None),
        ("POST", "/v1/chat/completions", Some(chat.clone())),
        ("DELETE", "/v1/collections/docs", None),
    ] {
        let (status, v, _) = gw.call(b, method, path, body).await;
        assert_eq!(status, 404, "B {method} {path}: {v}");
        assert!(!v.to_string().contains("Nightjar"), "{v}");
    }
    let (_, list, _) = gw.call(b, "GET", "/v1/collections", None).await;
    assert_eq!(list["data"], json!([]), "{list}");

    // B's own "docs" is a different collection
    assert_eq!(
        gw.call(b, "POST", "/v1/collections", Some(json!({"name": "docs"})))
            .await
            .0,
        200
    );
    let other = json!({"id": "secret.md", "text": "Tenant B keeps its own notes about ferries."});
    assert_eq!(
        gw.call(b, "POST", "/v1/collections/docs/documents", Some(other))
            .await
            .0,
        200
    );
    let (_, hits, _) = gw
        .call(b, "POST", "/v1/collections/docs/search", Some(q.clone()))
        .await;
    assert!(!hits.to_string().contains("Nightjar"), "{hits}");
    // A's data is untouched by all of that
    let (_, hits, _) = gw
        .call(a, "POST", "/v1/collections/docs/search", Some(q))
        .await;
    assert!(
        hits["data"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("Nightjar"),
        "{hits}"
    );
    let (status, r, _) = gw.call(a, "POST", "/v1/chat/completions", Some(chat)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["choices"][0]["message"]["citations"][0]["doc_id"],
        "secret.md"
    );

    // key C: a burst of 3, then 429 with Retry-After; A unaffected
    let c = Some(KEY_C);
    for i in 0..3 {
        let (status, v, _) = gw.call(c, "GET", "/v1/models", None).await;
        assert_eq!(status, 200, "request {i}: {v}");
    }
    let (status, v, retry) = gw.call(c, "GET", "/v1/models", None).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let secs: u64 = retry.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    assert!((1..=10).contains(&secs), "Retry-After {retry:?}");
    assert_eq!(gw.call(a, "GET", "/v1/models", None).await.0, 200);
    assert_eq!(gw.call(b, "GET", "/v1/models", None).await.0, 200);

    // key D: one request in flight; an open stream holds the slot until it ends
    let mut stream = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.svc.http_url()))
        .bearer_auth(KEY_D)
        .json(
            &json!({"model": "SmolLM2-135M-Instruct.Q4_1", "stream": true, "max_tokens": 24,
                      "messages": [{"role": "user", "content": "Count to twenty."}]}),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stream.status().as_u16(), 200);
    let _ = stream.chunk().await;
    let (status, v, retry) = gw.call(Some(KEY_D), "GET", "/v1/models", None).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    while let Ok(Some(_)) = stream.chunk().await {}
    drop(stream);
    let mut freed = false;
    for _ in 0..50 {
        if gw.call(Some(KEY_D), "GET", "/v1/models", None).await.0 == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the slot was not released after the stream ended");
}
