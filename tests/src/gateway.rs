//! The all-in-one gateway as the e2e tests start it (`gateway_e2e`,
//! `gateway_errors_e2e`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::Service;

const STARTUP: Duration = Duration::from_secs(180);
/// The RAG profile every gateway started here serves.
pub const PROFILE: &str = "facts-assistant";

/// An all-in-one gateway on loopback, with its own data directory and a
/// config holding [`PROFILE`] over the `facts` collection.
pub struct Gateway {
    pub svc: Service,
    pub http: reqwest::Client,
    /// The flags it was started with (a restart reuses them).
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Starts the gateway binary with `extra` flags.
pub fn start(extra: &[&str]) -> Gateway {
    start_with(extra, "", false)
}

/// As [`start`], with the gateway's log written to [`Gateway::log_path`]
/// under its default log filter.
pub fn start_logged(extra: &[&str]) -> Gateway {
    start_with(extra, "", true)
}

/// As [`start`], with `config` (TOML tables, e.g. `[[key]]`) added to the
/// config file.
pub fn start_config(extra: &[&str], config: &str) -> Gateway {
    start_with(extra, config, false)
}

fn start_with(extra: &[&str], config: &str, logged: bool) -> Gateway {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[profile]]\nname = \"{PROFILE}\"\ncollection = \"facts\"\ntop_k = 3\ntemperature = 0.0\n{config}"
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
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let svc = if logged {
        Service::start_logged("ragmesh-gateway", &argv, &dir.path().join(LOG), STARTUP)
    } else {
        Service::start("ragmesh-gateway", &argv, STARTUP)
    };
    let svc = svc.unwrap_or_else(|e| panic!("{e:#}"));
    Gateway {
        svc,
        http: reqwest::Client::new(),
        args,
        _dir: dir,
    }
}

const LOG: &str = "gateway.log";

impl Gateway {
    /// The log file of a gateway started with [`start_logged`].
    pub fn log_path(&self) -> std::path::PathBuf {
        self._dir.path().join(LOG)
    }

    /// SIGKILL, then the same binary with the same flags on the same data
    /// directory (on a new port).
    pub fn crash_and_restart(&mut self) {
        self.svc
            .child
            .kill()
            .unwrap_or_else(|e| panic!("SIGKILL: {e}"));
        let _ = self.svc.child.wait();
        let argv: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.svc =
            Service::start("ragmesh-gateway", &argv, STARTUP).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The gateway's data directory (`--data-dir`).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// The gateway's `host:port`.
    pub fn addr(&self) -> String {
        self.svc.addr("http")
    }

    /// The gateway's address with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.svc.http_url())
    }

    /// Status and JSON (or the text as a JSON string); every answer must
    /// carry `x-request-id`.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, headers, v) = request(&self.http, method, &self.url(path), None, body).await;
        assert!(
            headers.contains_key("x-request-id"),
            "{method} {path}: no x-request-id"
        );
        (status, v)
    }

    /// `call`, asserting 200.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    /// The first chat model `/v1/models` lists.
    pub async fn chat_model(&self) -> String {
        chat_model_in(&self.ok("GET", "/v1/models", None).await)
    }

    /// The test corpus: one distinctive fact per document.
    pub async fn seed(&self) {
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

/// The first chat model of a `/v1/models` answer.
pub fn chat_model_in(models: &Value) -> String {
    models["data"]
        .as_array()
        .and_then(|d| d.iter().find(|m| m["type"] == "chat"))
        .and_then(|m| m["id"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// One HTTP call with an optional JSON body and bearer key: the status,
/// the headers, and the body as JSON (or the text as a JSON string).
pub async fn request(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = http.request(m, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, v)
}
