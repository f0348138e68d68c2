//! The gateway binary end to end, all-in-one (embedder, retriever and
//! runner in-process, real models): the OpenAI SDK, RAG with citations,
//! ingest replace/delete, the context budget and demo mode. Bad input is
//! in `gateway_errors_e2e.rs`.

use ragmesh_tests::gateway::{PROFILE, request, start};
use ragmesh_tests::python_script;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_chat_completions_embeddings_and_rag() {
    let gw = start(&[]);
    gw.seed().await;
    let model = gw.chat_model().await;
    python_script("gateway_sdk.py", &[&gw.svc.http_url(), &model, PROFILE]).await;
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

/// The question `make run` prints (`gateway/src/demo.rs`, `QUESTION`),
/// and words its answer must contain.
const DEMO_QUESTION: &str = "What does make test do?";
const DEMO_ANSWER_WORDS: [&str; 2] = ["make test", "runs"];

/// True if some run of `n` words occurs twice in `text` (the RAG quality
/// benchmark's definition of a degenerate answer).
fn repeats_a_run(text: &str, n: usize) -> bool {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut seen = std::collections::HashSet::new();
    words.windows(n).any(|w| !seen.insert(w.to_vec()))
}

/// The first run as `make run` gives it: the demo's own question answered
/// from the docs with a citation and without looping, then a mix of
/// successful requests that leaves no WARN or ERROR in the log and one
/// INFO line per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_answers_its_question_with_a_citation_and_logs_quietly() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let ingest = format!("{root}/docs,{root}/README.md");
    let gw = ragmesh_tests::gateway::start_logged(&["--demo-ingest", &ingest]);
    let r = gw
        .ok(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "ragmesh-docs", "max_tokens": 96,
                        "messages": [{"role": "user", "content": DEMO_QUESTION}]})),
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
    let answer = r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_lowercase();
    for w in DEMO_ANSWER_WORDS {
        assert!(answer.contains(w), "answer lacks '{w}': {r}");
    }
    let cited = (1..=cites.len()).any(|i| answer.contains(&format!("[{i}]")));
    assert!(cited, "the answer cites no source: {r}");
    assert!(!repeats_a_run(&answer, 6), "the answer loops: {r}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");

    // a mix of successful requests; each is one INFO line, nothing louder
    let model = gw.chat_model().await;
    let mix = [
        ("GET", "/v1/models", None),
        (
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": model, "max_tokens": 8, "stream": true,
                        "messages": [{"role": "user", "content": "Hi"}]})),
        ),
        (
            "POST",
            "/v1/completions",
            Some(json!({"model": model, "max_tokens": 4, "prompt": "One, two,"})),
        ),
        (
            "POST",
            "/v1/embeddings",
            Some(json!({"model": "all-MiniLM-L6-v2", "input": ["a", "b"]})),
        ),
        (
            "POST",
            "/v1/collections/ragmesh-docs/search",
            Some(json!({"query": "profiles", "top_k": 2})),
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "ragmesh-docs", "max_tokens": 16,
                        "messages": [{"role": "user", "content": "What is a RAG profile?"}]})),
        ),
    ];
    for (method, path, body) in &mix {
        gw.ok(method, path, body.clone()).await;
    }
    let log = std::fs::read_to_string(gw.log_path()).unwrap_or_default();
    // start-up may warn (open mode says so once); serving must not
    let serving = log
        .find("gateway serving")
        .unwrap_or_else(|| panic!("no start line:\n{log}"));
    let log = &log[serving..];
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        loud.is_empty(),
        "warnings or errors logged:\n{}",
        loud.join("\n")
    );
    let requests = log
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains(" request ") && l.contains("status=200"))
        .count();
    // the chat model lookup is one more GET /v1/models
    assert_eq!(requests, mix.len() + 2, "one INFO line per request:\n{log}");
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

/// The runner's prefix cache through the API: the same conversation sent
/// again reuses its prompt's KV, says so in `usage`, and answers the same;
/// another tenant sending it reuses nothing (the cache is salted per
/// tenant, so a hit cannot tell one tenant what another asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_conversation_is_served_from_the_prefix_cache() {
    const A: &str = "prefix-key-alpha-0001";
    const B: &str = "prefix-key-bravo-0002";
    let gw = start(&["--api-keys", &format!("ta={A},tb={B}")]);
    let url = gw.url("/v1/chat/completions");
    let models = request(&gw.http, "GET", &gw.url("/v1/models"), Some(A), None)
        .await
        .2;
    let model = ragmesh_tests::gateway::chat_model_in(&models);
    let body = json!({"model": model, "max_tokens": 12, "temperature": 0,
        "messages": [{"role": "system", "content": "You answer in one short sentence about harbours and ships, and you never invent numbers."},
                     {"role": "user", "content": "What is a harbour for?"}]});
    let ask = |key: &'static str| {
        let (http, url, body) = (gw.http.clone(), url.clone(), body.clone());
        async move {
            let (status, _, v) = request(&http, "POST", &url, Some(key), Some(body)).await;
            assert_eq!(status, 200, "{v}");
            v
        }
    };
    let cached = |r: &Value| r["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64();
    let first = ask(A).await;
    assert_eq!(cached(&first), Some(0), "{first}");
    // tenant B, the same conversation: nothing of A's is reused
    let other = ask(B).await;
    assert_eq!(cached(&other), Some(0), "{other}");
    let second = ask(A).await;
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    let hit = cached(&second).unwrap_or(0);
    assert!(hit >= 16 && hit < prompt && hit % 16 == 0, "{second}");
    for r in [&other, &second] {
        assert_eq!(
            first["choices"][0]["message"]["content"],
            r["choices"][0]["message"]["content"]
        );
    }
    let metrics = gw
        .http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vllm:prefix_cache_hits_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}
