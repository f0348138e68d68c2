//! Helpers of the routing tests (gateway_upstream_e2e, gateway_mesh_e2e):
//! starting the stub upstream, runners and a configured gateway, and
//! reading their answers.

use std::time::Duration;

use serde_json::Value;

use crate::Service;

pub use crate::services::STARTUP;

pub fn stub(args: &[&str]) -> Service {
    let mut a = vec!["--port", "0"];
    a.extend_from_slice(args);
    Service::start("ragmesh-stub-upstream", &a, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A runner replica on `port` ("0": any), one compute thread.
pub fn runner(port: &str) -> Service {
    crate::services::runner(port, &["--threads", "1"])
}

pub fn gateway(
    dir: &tempfile::TempDir,
    config: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Service {
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("config: {e}"));
    let data = dir.path().join("data");
    let (cfg, data) = (cfg.display().to_string(), data.display().to_string());
    let mut args = vec!["--port", "0", "--data-dir", &data, "--config", &cfg];
    args.extend_from_slice(extra);
    Service::start_env("ragmesh-gateway", &args, env, STARTUP).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A gateway with no config over `runners` (a pool of replicas of one
/// model), probing them every 200 ms.
pub fn gateway_over_runners(dir: &tempfile::TempDir, runners: &[&Service]) -> Service {
    let endpoints: Vec<String> = runners.iter().map(|r| r.grpc_url()).collect();
    let endpoints = endpoints.join(",");
    gateway(
        dir,
        "",
        &[
            "--runner-endpoints",
            &endpoints,
            "--mesh-probe-interval-ms",
            "200",
        ],
        &[],
    )
}

pub async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, String, Value) {
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

/// `GET url` as JSON (`null` when the body is not JSON).
pub async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get: {e}"))
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// The stub upstream's `/stats`.
pub async fn stats(http: &reqwest::Client, s: &Service) -> Value {
    get_json(http, format!("{}/stats", s.http_url())).await
}

/// The content of an SSE chat stream, and whether it ended with [DONE].
pub fn sse_content(body: &str) -> (String, bool, Option<Value>) {
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

/// A service's Prometheus text.
pub async fn metrics_of(http: &reqwest::Client, svc: &Service) -> String {
    http.get(format!("{}/metrics", svc.http_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// The value of `series` (a metric name, or a name with its labels as
/// Prometheus prints them) in a service's `/metrics`, if it is there.
pub async fn metric(http: &reqwest::Client, svc: &Service, series: &str) -> Option<f64> {
    metrics_of(http, svc).await.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        if !rest.starts_with([' ', '{']) {
            return None;
        }
        l.split_whitespace().last()?.parse().ok()
    })
}
