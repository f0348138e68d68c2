//! Graceful drain of the real binaries on SIGTERM, on loopback:
//! - a runner replica behind the gateway is stopped while it streams: it
//!   turns not ready at once, its stream completes, new calls go to the
//!   other replica, and it exits 0 within its grace period;
//! - the gateway is stopped while a stream outlives its grace period: the
//!   stream ends with an SSE error event and `[DONE]` (never a cut JSON
//!   line), and the gateway exits 0;
//! - `/ready` and `/health` on every leaf binary.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use ragmesh_tests::Service;
use ragmesh_tests::routing::{gateway, gateway_over_runners, metric, post, sse_content};
use ragmesh_tests::services;
use serde_json::{Value, json};

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(status.success(), "kill -TERM failed");
}

/// Polls for the exit; `None` if still running after `within`.
fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

async fn status_of(http: &reqwest::Client, url: String) -> u16 {
    match http.get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn running(http: &reqwest::Client, runner: &Service) -> f64 {
    metric(http, runner, "ragmesh_llm_num_requests_running")
        .await
        .unwrap_or(0.0)
}

/// Starts a chat stream and returns the response once its first content
/// chunk has arrived, with the text read so far.
async fn open_stream(
    http: &reqwest::Client,
    url: &str,
    max_tokens: u32,
) -> (reqwest::Response, String) {
    let body = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "stream": true, "max_tokens": max_tokens,
                      "ignore_eos": true, "temperature": 0,
                      "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}]});
    let mut resp = http
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("stream: {e}"));
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    while sse_content(&text).0.is_empty() {
        match resp.chunk().await {
            Ok(Some(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("stream ended before its first token: {other:?}\n{text}"),
        }
    }
    (resp, text)
}

async fn read_rest(mut resp: reqwest::Response, mut text: String) -> String {
    loop {
        match resp.chunk().await {
            Ok(Some(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            Ok(None) => return text,
            Err(e) => panic!("stream broke: {e}\n{text}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_runner_finishes_its_stream_and_exits_0() {
    let grace = ["--shutdown-grace-s", "60"];
    let r1 = services::runner("0", &grace);
    let r2 = services::runner("0", &grace);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let gw = gateway_over_runners(&dir, &[&r1, &r2]);
    let http = reqwest::Client::new();
    let chat = format!("{}/v1/chat/completions", gw.http_url());
    for r in [&r1, &r2] {
        assert_eq!(
            status_of(&http, format!("{}/ready", r.http_url())).await,
            200
        );
    }

    let (stream, head) = open_stream(&http, &chat, 800).await;
    // the replica streaming it is the one to stop
    let (mut busy, idle) = if running(&http, &r1).await >= 1.0 {
        (r1, r2)
    } else {
        (r2, r1)
    };
    assert_eq!(running(&http, &busy).await, 1.0, "one replica streams");
    sigterm(&busy.child);
    let t = Instant::now();
    // not ready at once, while alive and still streaming
    let mut ready = 200;
    while ready == 200 && t.elapsed() < Duration::from_secs(5) {
        ready = status_of(&http, format!("{}/ready", busy.http_url())).await;
    }
    assert_eq!(ready, 503, "/ready of a draining runner");
    assert_eq!(
        running(&http, &busy).await,
        1.0,
        "the stream is still running during the drain"
    );
    assert_eq!(
        status_of(&http, format!("{}/health", busy.http_url())).await,
        200,
        "a draining runner is alive"
    );

    // new calls meanwhile succeed (on the other replica)
    let ask = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 4,
                     "messages": [{"role": "user", "content": "Name a colour."}]});
    for _ in 0..3 {
        let (status, _, body) = post(&http, chat.clone(), ask.clone()).await;
        assert_eq!(status, 200, "during the drain: {body}");
    }

    let all = read_rest(stream, head).await;
    let (_, done, error) = sse_content(&all);
    assert!(
        done && error.is_none(),
        "the drained stream completes: {all}"
    );
    let finished: Vec<Value> = all
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["choices"][0]["finish_reason"] == "length")
        .collect();
    assert_eq!(finished.len(), 1, "one finish_reason chunk: {all}");

    // its last stream done, a runner exits at once, long before its grace
    let exit = wait_exit(&mut busy.child, Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the runner exits 0 once drained: {exit:?}"
    );
    let (status, _, body) = post(&http, chat.clone(), ask.clone()).await;
    assert_eq!(status, 200, "after the exit: {body}");
    let t = Instant::now();
    while running(&http, &idle).await > 0.0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        running(&http, &idle).await,
        0.0,
        "the survivor is idle again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_the_gateways_grace_ends_with_an_error_event_and_done() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut gw = gateway(&dir, "", &["--shutdown-grace-s", "2"], &[]);
    let http = reqwest::Client::new();
    assert_eq!(
        status_of(&http, format!("{}/ready", gw.http_url())).await,
        200
    );
    let chat = format!("{}/v1/chat/completions", gw.http_url());
    // far longer than the grace period
    let (stream, head) = open_stream(&http, &chat, 4000).await;
    sigterm(&gw.child);
    let t = Instant::now();
    let all = read_rest(stream, head).await;
    let took = t.elapsed();
    let (_, done, error) = sse_content(&all);
    let error = error.unwrap_or_else(|| panic!("no error event: {all}"));
    assert_eq!(error["code"], "server_shutting_down", "{error}");
    assert!(done, "[DONE] after the error event: {all}");
    // every data line is whole JSON or [DONE]
    for d in all.lines().filter_map(|l| l.strip_prefix("data: ")) {
        assert!(
            d == "[DONE]" || serde_json::from_str::<Value>(d).is_ok(),
            "cut line: {d}"
        );
    }
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(30),
        "ended at the deadline: {took:?}"
    );
    let exit = wait_exit(&mut gw.child, Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "gateway exit: {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_binaries_answer_ready_and_health_and_exit_0_on_sigterm() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut all = vec![
        (
            "embedder",
            services::embedder(&["--shutdown-grace-s", "120"]),
        ),
        ("retriever", services::retriever(data.path())),
    ];
    let http = reqwest::Client::new();
    for (name, svc) in &mut all {
        for path in ["/health", "/ready"] {
            let status = status_of(&http, format!("{}{path}", svc.http_url())).await;
            assert_eq!(status, 200, "{name} {path}");
        }
        sigterm(&svc.child);
        // idle: exits at once, long before its grace (120 s; 30 s)
        let exit = wait_exit(&mut svc.child, Duration::from_secs(10));
        assert!(exit.is_some_and(|s| s.success()), "{name} exit: {exit:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_during_start_up_ends_the_process_at_once() {
    // a mesh gateway waiting (up to --mesh-wait-s) for a runner that never
    // comes: SIGTERM ends it there, as the default action would
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let data = dir.path().display().to_string();
    let mut child = Command::new(ragmesh_tests::bin_dir().join("ragmesh-gateway"))
        .args([
            "--port",
            "0",
            "--data-dir",
            &data,
            "--llm-model",
            "none",
            "--runner-endpoints",
            "http://127.0.0.1:9",
            "--mesh-wait-s",
            "300",
        ])
        .env("RAGMESH_MODEL_DIR", ragmesh_tests::model_dir())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "still starting (waiting for the runner)"
    );
    sigterm(&child);
    let exit = wait_exit(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    assert!(exit.is_some_and(|s| s.success()), "exit: {exit:?}");
}
