//! The real `ragmesh-embedder` binary on loopback, driven over gRPC (tonic
//! client), HTTP (reqwest) and the official OpenAI Python SDK.

use ragmesh_proto::v1::EmbedRequest;
use ragmesh_proto::v1::embedder_client::EmbedderClient;
use ragmesh_tests::services::embedder;
use ragmesh_tests::{assert_openai_error, python_script};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_embed_info_health_and_errors() {
    let svc = embedder(&[]);
    let mut client = EmbedderClient::connect(svc.grpc_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = client
        .embed(EmbedRequest {
            texts: vec!["hello world".into(), "".into()],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(r.embeddings.len(), 2);
    assert_eq!(r.embeddings[0].values.len(), 384);
    assert_eq!(r.model, "all-MiniLM-L6-v2");
    assert_eq!(r.usage.map(|u| u.prompt_tokens), Some(4 + 2));

    let info = client
        .info(ragmesh_proto::v1::EmbedderInfoRequest {})
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(
        (
            info.dimensions,
            info.max_input_tokens,
            info.pooling.as_str()
        ),
        (384, 256, "mean")
    );

    let channel = tonic::transport::Endpoint::from_shared(svc.grpc_url())
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut health = HealthClient::new(channel);
    let h = health
        .check(HealthCheckRequest {
            service: "ragmesh.v1.Embedder".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(h.status, 1, "SERVING");

    let cases = [
        (EmbedRequest::default(), tonic::Code::InvalidArgument),
        (
            EmbedRequest {
                texts: vec!["x".into()],
                model: "gpt-4".into(),
                ..Default::default()
            },
            tonic::Code::NotFound,
        ),
        (
            EmbedRequest {
                texts: vec!["word ".repeat(400)],
                truncate: Some(false),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
        ),
    ];
    for (req, code) in cases {
        let err = client
            .embed(req)
            .await
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(err.code(), code, "{err:?}");
        assert!(!err.message().is_empty());
    }
    // still serving after the errors
    assert!(
        client
            .embed(EmbedRequest {
                texts: vec!["ok".into()],
                ..Default::default()
            })
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_embeddings_and_bad_input() {
    let svc = embedder(&["--max-body-bytes", "65536"]);
    let base = svc.http_url();
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/embeddings");

    let ok: Value = http
        .post(&url)
        .json(&json!({"model": "all-MiniLM-L6-v2", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok["object"], "list");
    assert_eq!(ok["data"][1]["index"], 1);
    assert_eq!(
        ok["data"][0]["embedding"].as_array().map(Vec::len),
        Some(384)
    );

    let big = "x".repeat(70_000);
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "empty list",
            json!({"model": "all-MiniLM-L6-v2", "input": []}).to_string(),
            400,
        ),
        (
            "non-string item",
            json!({"model": "all-MiniLM-L6-v2", "input": ["a", 1]}).to_string(),
            400,
        ),
        (
            "object input",
            json!({"model": "all-MiniLM-L6-v2", "input": {"a": 1}}).to_string(),
            400,
        ),
        (
            "missing input",
            json!({"model": "all-MiniLM-L6-v2"}).to_string(),
            400,
        ),
        ("invalid json", "{\"input\": [".to_string(), 400),
        ("not an object", "[1,2]".to_string(), 400),
        (
            "wrong dimensions",
            json!({"model": "all-MiniLM-L6-v2", "input": "a", "dimensions": 512}).to_string(),
            400,
        ),
        (
            "bad encoding",
            json!({"model": "all-MiniLM-L6-v2", "input": "a", "encoding_format": "int8"})
                .to_string(),
            400,
        ),
        (
            "unknown model",
            json!({"model": "text-embedding-3-large", "input": "a"}).to_string(),
            404,
        ),
        (
            "body over limit",
            json!({"model": "all-MiniLM-L6-v2", "input": big}).to_string(),
            413,
        ),
    ];
    for (name, body, status) in cases {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.status().as_u16(), status, "{name}");
        let v: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: body not JSON: {e}"));
        assert_openai_error(&v, "embedder");
    }

    let health = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(health.status().is_success());
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    for name in [
        "ragmesh_embedder_requests_total",
        "ragmesh_embedder_batch_size_bucket",
        "ragmesh_embedder_queue_depth",
        "ragmesh_embedder_request_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk() {
    let svc = embedder(&[]);
    python_script("embeddings_sdk.py", &[&svc.http_url()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_429_and_resource_exhausted_then_recovers() {
    let svc = embedder(&["--max-concurrent-requests", "2"]);
    let url = format!("{}/v1/embeddings", svc.http_url());
    let http = reqwest::Client::new();
    let heavy: Vec<String> = (0..32)
        .map(|i| format!("{i} {}", "load ".repeat(120)))
        .collect();
    let calls = (0..12).map(|_| {
        let http = http.clone();
        let url = url.clone();
        let body = json!({"model": "all-MiniLM-L6-v2", "input": heavy});
        tokio::spawn(async move { http.post(url).json(&body).send().await })
    });
    let mut rejected = 0;
    let mut served = 0;
    for r in futures_join(calls).await {
        let resp = r.unwrap_or_else(|e| panic!("{e}"));
        match resp.status().as_u16() {
            200 => served += 1,
            429 => {
                assert_eq!(
                    resp.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                let v: Value = resp.json().await.unwrap_or_default();
                assert_openai_error(&v, "embedder");
                rejected += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(
        rejected > 0 && served > 0,
        "served {served}, rejected {rejected}"
    );

    // gRPC sees the same bound as RESOURCE_EXHAUSTED
    let mut client = EmbedderClient::connect(svc.grpc_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let calls = (0..12).map(|_| {
        let mut c = client.clone();
        let texts = heavy.clone();
        tokio::spawn(async move {
            c.embed(EmbedRequest {
                texts,
                ..Default::default()
            })
            .await
        })
    });
    let codes: Vec<tonic::Code> = futures_join(calls)
        .await
        .into_iter()
        .map(|r| r.err().map(|s| s.code()).unwrap_or(tonic::Code::Ok))
        .collect();
    assert!(codes.contains(&tonic::Code::ResourceExhausted), "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, tonic::Code::Ok | tonic::Code::ResourceExhausted))
    );

    // and keeps serving
    let r = client
        .embed(EmbedRequest {
            texts: vec!["after".into()],
            ..Default::default()
        })
        .await;
    assert!(r.is_ok(), "{r:?}");
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap_or_else(|e| panic!("join: {e}")));
    }
    out
}

#[test]
fn bad_flags_exit_nonzero_with_one_line() {
    let out = std::process::Command::new(ragmesh_tests::bin_dir().join("ragmesh-embedder"))
        .args([
            "--model",
            "/nonexistent/model-dir",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ragmesh-embedder: error:") && last.contains("/nonexistent/model-dir"),
        "{stderr}"
    );
}
