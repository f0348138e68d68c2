//! Issue 23's defects, one regression test each, driven over real sockets
//! against the all-in-one gateway: what an attacker or a careless client
//! sends, and what the gateway must answer. Every test is bounded in count
//! and time.

use std::time::{Duration, Instant};

use ragmesh_tests::gateway::{self, Gateway, chat_model_in, request};
use ragmesh_tests::{assert_openai_error, rss_bytes};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `bytes` on a new connection and reads until the server closes
/// it or `wait` passes; returns what was read.
async fn raw(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let mut tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tcp.write_all(bytes).await.unwrap_or_else(|e| panic!("{e}"));
    read_for(&mut tcp, wait).await.0
}

/// Reads for up to `wait`: the text, and whether the server closed.
async fn read_for(tcp: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

fn status_of(http: &str) -> u16 {
    http.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body_of(http: &str) -> Value {
    let body = http.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // a chunked answer: take the JSON between the braces
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    serde_json::from_str(body.get(start..end).unwrap_or("")).unwrap_or(Value::Null)
}

/// `/health` answers 200 within `ms` milliseconds.
async fn health_within(g: &Gateway, ms: u64) {
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_millis(ms.max(1) * 10),
        g.http.get(g.url("/health")).send(),
    )
    .await;
    let ok = matches!(&r, Ok(Ok(resp)) if resp.status() == 200);
    let took = t.elapsed();
    assert!(
        ok && took <= Duration::from_millis(ms),
        "/health took {took:?} (ok: {ok})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transport_defects_are_answered_at_once() {
    let g = gateway::start(&["--http-header-timeout-s", "2", "--http-body-timeout-s", "2"]);
    let addr = g.addr();

    // defect 9: a malformed chunked body is a 400, not "exceeds the limit"
    let resp = raw(
        &addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
          transfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_openai_error(&body_of(&resp), "malformed chunked body");

    // defect 10: an oversized Content-Length with Expect: 100-continue is a
    // 413 at once, never `100 Continue`
    let t = Instant::now();
    let resp = raw(
        &addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
          content-length: 100000000\r\nexpect: 100-continue\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(!resp.contains("100 Continue"), "{resp}");
    assert_eq!(status_of(&resp), 413, "{resp}");
    // the body was never read, so the connection closes: the answer says
    // so, and a pooling client does not reuse it
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );

    // a body that stops arriving is a 408 after --http-body-timeout-s
    let resp = raw(
        &addr,
        b"POST /v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"input\":",
        Duration::from_secs(6),
    )
    .await;
    assert_eq!(status_of(&resp), 408, "{resp}");

    // defect 6: slow headers and idle connections are closed by the
    // header timeout (2 s here), and /health answers meanwhile
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(&addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tcp.write_all(b"GET /health HTTP/1.1\r\nho")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        slow.push(tcp);
    }
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(
            TcpStream::connect(&addr)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    health_within(&g, 200).await;
    let t = Instant::now();
    for tcp in slow.iter_mut().chain(idle.iter_mut()) {
        // a byte a second keeps no connection alive past the timeout
        let _ = tcp.write_all(b"s").await;
        let (_, closed) = read_for(tcp, Duration::from_secs(6)).await;
        assert!(
            closed,
            "a slow or idle connection still open after {:?}",
            t.elapsed()
        );
    }
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());

    // content types that are not JSON are refused on JSON routes
    let resp = g
        .http
        .post(g.url("/v1/embeddings"))
        .header("content-type", "text/plain")
        .body(r#"{"input": "a"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 415);
    // open mode: a web page's cross-site request and a rebound Host get 403
    for (name, value) in [("origin", "https://evil.example"), ("host", "evil.example")] {
        let resp = g
            .http
            .post(g.url("/v1/embeddings"))
            .header(name, value)
            .json(&json!({"input": "a"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 403, "{name}: {value}");
    }
    let resp = g
        .http
        .post(g.url("/v1/embeddings"))
        .header("origin", "http://localhost:3000")
        .json(&json!({"input": "a"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200, "a loopback origin is allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503_and_health_recovers() {
    let g = gateway::start(&["--max-connections", "8", "--http-header-timeout-s", "3"]);
    let addr = g.addr();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            TcpStream::connect(&addr)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = raw(
        &addr,
        b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(status_of(&resp), 503, "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("retry-after: 1"),
        "{resp}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    health_within(&g, 200).await;
}

/// The rate-limited key of the keyed test.
const KEY: &str = "limited-key-123";

/// Opens a connection that sends a request head declaring `length` body
/// bytes and then one byte of body: the request holds its admission slot
/// and its share of the body budget while the gateway waits for the rest.
async fn stalled_body(addr: &str, length: usize) -> TcpStream {
    let mut tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n{{"
    );
    tcp.write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_budget_and_request_cap_answer_429_with_retry_after() {
    let g = gateway::start(&[
        "--max-body-bytes",
        "1048576",
        "--max-inflight-body-bytes",
        "1048576",
        "--max-concurrent-requests",
        "2",
    ]);
    let addr = g.addr();
    let embed = |http: reqwest::Client, url: String| async move {
        request(&http, "POST", &url, None, Some(json!({"input": "hi"}))).await
    };
    // one request declaring the whole budget holds it while it reads
    let a = stalled_body(&addr, 1 << 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, headers, v) = embed(g.http.clone(), g.url("/v1/embeddings")).await;
    assert_eq!(status, 429, "{v}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("request bodies")),
        "{v}"
    );
    // two stalled requests with small bodies take both admission slots
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = stalled_body(&addr, 10).await;
    let c = stalled_body(&addr, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, headers, v) = request(&g.http, "GET", &g.url("/v1/models"), None, None).await;
    assert_eq!(status, 429, "{v}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("in flight")),
        "{v}"
    );
    // both freed when their clients leave
    drop((a, c));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, v) = embed(g.http.clone(), g.url("/v1/embeddings")).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {status} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sha(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_routes_need_a_key_and_refusals_spend_no_rate_tokens() {
    let config = format!(
        "[[key]]\nname = \"limited\"\ntenant = \"a\"\nsha256 = \"{}\"\nrate_per_minute = 1\nburst = 4\nmax_concurrent = 1\n",
        sha(KEY)
    );
    let g = gateway::start_config(&[], &config);
    // defect 11: no route discovery without a key
    for (method, path) in [
        ("GET", "/v1/nope"),
        ("POST", "/v1/models"),
        ("GET", "/admin"),
    ] {
        let (status, _, v) = request(&g.http, method, &g.url(path), None, None).await;
        assert_eq!(status, 401, "{method} {path}: {v}");
        assert_openai_error(&v, path);
    }
    let keyed = |path: &str| {
        let (http, url) = (g.http.clone(), g.url(path));
        async move { request(&http, "GET", &url, Some(KEY), None).await }
    };
    // an unmatched route authenticates but spends no rate token
    let (status, _, _) = keyed("/v1/nope").await;
    assert_eq!(status, 404, "with a key the route is simply missing");
    // Defect 8: hold the one concurrency slot with a stream, get refused
    // three times for concurrency, then a request still has a rate token
    // (burst 4: /v1/models, the stream, and the last request take three;
    // before the fix the refusals took the rest).
    let model = chat_model_in(&keyed("/v1/models").await.2);
    let stream = g
        .http
        .post(g.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(
            &json!({"model": model, "stream": true, "max_tokens": 2000, "ignore_eos": true,
                      "messages": [{"role": "user", "content": "Count to a thousand."}]}),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stream.status().as_u16(), 200);
    for _ in 0..3 {
        let (status, headers, v) = keyed("/v1/models").await;
        assert_eq!(status, 429, "{v}");
        assert!(headers.contains_key("retry-after"));
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("in flight")),
            "{v}"
        );
    }
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, v) = keyed("/v1/models").await;
        if status == 200 {
            break; // the refusals spent no token
        }
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            msg.contains("in flight") && Instant::now() < deadline,
            "after three concurrency refusals: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_conflict_and_mixed_numbers_filter_together() {
    let g = gateway::start(&[]);
    // defect 1: one create wins, the rest are 409, and no body names a path
    let data = g.data_dir().display().to_string();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (g.http.clone(), g.url("/v1/collections"));
            tokio::spawn(async move {
                request(&http, "POST", &url, None, Some(json!({"name": "race0"}))).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, _, v) = t.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !v.to_string().contains(&data),
            "a body names the data dir: {v}"
        );
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        19,
        "{statuses:?}"
    );
    // creates racing deletes: only 200/404/409
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let http = g.http.clone();
            let (create, delete) = (g.url("/v1/collections"), g.url("/v1/collections/race1"));
            tokio::spawn(async move {
                if i % 2 == 0 {
                    request(&http, "POST", &create, None, Some(json!({"name": "race1"}))).await
                } else {
                    request(&http, "DELETE", &delete, None, None).await
                }
            })
        })
        .collect();
    for t in tasks {
        let (status, _, v) = t.await.unwrap_or_else(|e| panic!("{e}"));
        assert!([200, 404, 409].contains(&status), "{status}: {v}");
        assert!(!v.to_string().contains(&data), "{v}");
    }

    // defects 4 and 12: integers, floats and a u64 of one key filter
    g.ok("POST", "/v1/collections", Some(json!({"name": "nums"})))
        .await;
    g.ok(
        "POST",
        "/v1/collections/nums/documents",
        Some(json!({"documents": [
            {"id": "one", "text": "the first reading", "metadata": {"num": 1}},
            {"id": "two", "text": "the second reading", "metadata": {"num": 2.5}},
            {"id": "big", "text": "the largest reading", "metadata": {"big": u64::MAX}}
        ]})),
    )
    .await;
    let hits = |filter: Value| {
        let g = &g;
        async move {
            let v = g
                .ok(
                    "POST",
                    "/v1/collections/nums/search",
                    Some(json!({"query": "reading", "top_k": 5, "filter": filter})),
                )
                .await;
            let mut ids: Vec<String> = v["data"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .filter_map(|h| h["doc_id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            ids.sort();
            ids
        }
    };
    assert_eq!(hits(json!({"num": {"gte": 2}})).await, ["two"]);
    assert_eq!(hits(json!({"num": 2.5})).await, ["two"]);
    assert_eq!(hits(json!({"num": [1, 2.5]})).await, ["one", "two"]);
    assert_eq!(hits(json!({"big": u64::MAX})).await, ["big"]);
    // a string under a numeric key is refused at ingest, naming the key
    let (status, v) = g
        .call(
            "POST",
            "/v1/collections/nums/documents",
            Some(json!({"documents": [{"id": "s", "text": "x", "metadata": {"num": "three"}}]})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("num"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_inputs_neither_freeze_the_gateway_nor_grow_its_memory() {
    let g = gateway::start(&[]);
    g.ok("POST", "/v1/collections", Some(json!({"name": "big"})))
        .await;
    let pid = g.svc.child.id();
    let model = g.chat_model().await;

    // defect 3: a 7 MB ingest answers at once (limits before work)
    let t = Instant::now();
    let (status, v) = g
        .call(
            "POST",
            "/v1/collections/big/documents",
            Some(json!({"documents": [{"id": "big7", "text": "word ".repeat(1_468_006)}]})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("chunks"),
        "{v}"
    );

    // defect 2: a run without separators is chunked by the character bound
    let out = g
        .ok(
            "POST",
            "/v1/collections/big/documents",
            Some(json!({"documents": [{"id": "run", "text": "a".repeat(20_000)}]})),
        )
        .await;
    assert!(out["chunks"].as_u64().unwrap_or(0) >= 10, "{out}");
    let found = g
        .ok(
            "POST",
            "/v1/collections/big/search",
            Some(json!({"query": "aaaa", "top_k": 50})),
        )
        .await;
    for hit in found["data"].as_array().cloned().unwrap_or_default() {
        let n = hit["text"].as_str().map_or(0, |t| t.chars().count());
        assert!(n <= 1600, "a chunk of {n} characters");
    }

    // two 7 MB chats and a 7 MB RAG question: answered, /health unharmed
    let baseline = rss_bytes(pid);
    let huge = "a".repeat(7_000_000);
    let mut tasks = Vec::new();
    for m in [model.as_str(), model.as_str(), gateway::PROFILE] {
        let (http, url) = (g.http.clone(), g.url("/v1/chat/completions"));
        let body =
            json!({"model": m, "max_tokens": 4, "messages": [{"role": "user", "content": huge}]});
        tasks.push(tokio::spawn(async move {
            request(&http, "POST", &url, None, Some(body)).await
        }));
    }
    for _ in 0..5 {
        health_within(&g, 200).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        let (status, _, v) = t.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(status == 400 || status == 404, "{status}: {v}");
        assert_openai_error(&v, "7 MB chat");
    }

    // defect 7: ten 6.9 MB bodies whose bulk is an unknown field
    let junk = format!("[{}0]", "0,".repeat(3_450_000));
    let body = format!(
        r#"{{"model":"{model}","max_tokens":1,"messages":[{{"role":"user","content":"hi"}}],"junk":{junk}}}"#
    );
    let mut peak = 0u64;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (http, url, body) = (g.http.clone(), g.url("/v1/chat/completions"), body.clone());
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    while tasks.iter().any(|t| !t.is_finished()) {
        peak = peak.max(rss_bytes(pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        let status = t.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or(0);
        assert!(status == 200 || status == 429, "{status}");
    }
    let grew = peak.saturating_sub(baseline);
    assert!(
        grew < 400 << 20,
        "RSS grew by {} MB for 10 × 6.9 MB bodies",
        grew >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_gauges_return_to_zero_when_idle() {
    let g = gateway::start(&[]);
    let model = g.chat_model().await;
    g.ok(
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]})),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = g
            .http
            .get(g.url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        let gauge = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let running = gauge("ragmesh_llm_num_requests_running");
        let kv = gauge("ragmesh_llm_kv_cache_usage_perc");
        if running == Some(0.0) && kv.is_none_or(|k| k == 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "idle gateway reports running {running:?}, KV usage {kv:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refused_before_its_first_token_is_a_429() {
    let g = gateway::start(&["--max-sequences", "1", "--max-queue-wait-s", "1"]);
    let model = g.chat_model().await;
    let chat = |max_tokens: u32| {
        json!({"model": model, "stream": true, "max_tokens": max_tokens, "ignore_eos": true,
               "messages": [{"role": "user", "content": "Count to a thousand."}]})
    };
    // one request served first, so the runner knows how long a slot is
    // held: a refusal's Retry-After is computed from it, not a constant
    let t = Instant::now();
    let (status, _, v) = request(
        &g.http,
        "POST",
        &g.url("/v1/chat/completions"),
        None,
        Some(
            json!({"model": model, "max_tokens": 100, "ignore_eos": true,
                    "messages": [{"role": "user", "content": "Count to a thousand."}]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let served = t.elapsed();
    // the one slot, busy for longer than the queue deadline
    let busy = g
        .http
        .post(g.url("/v1/chat/completions"))
        .json(&chat(1500))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(busy.status().as_u16(), 200);
    // queued past the deadline: an HTTP 429, not a 200 stream with an error
    let (status, headers, v) = request(
        &g.http,
        "POST",
        &g.url("/v1/chat/completions"),
        None,
        Some(chat(4)),
    )
    .await;
    assert_eq!(status, 429, "{v}");
    assert_openai_error(&v, "queue deadline");
    // the refused request and the one ahead of it, one slot, each holding
    // it for about the first request's time
    let retry: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {headers:?}"));
    // the slot was held for the client's wall time less the HTTP and
    // tokenizer overhead (well under 0.25 s)
    let secs = served.as_secs_f64();
    let least = (2.0 * (secs - 0.25)).ceil().max(1.0) as u64;
    let most = (2.0 * secs).ceil() as u64 + 1;
    assert!(
        (least..=most).contains(&retry),
        "Retry-After {retry} s after a {served:?} request (expected {least}..={most})"
    );
    drop(busy);
}
