//! The load figures autoscalers and the gateway read go back to zero when
//! the runner is idle (issue 23: they kept the last request's sequence).

mod common;

use std::time::{Duration, Instant};

use ragmesh_llm_runner::GenerateRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_return_to_zero_after_requests_finish() {
    let g = common::generator();
    let mut r = GenerateRequest::prompt("The sea is", 8);
    r.sampling.temperature = 0.0;
    let out = common::run(g, r).await;
    assert!(out.completion_tokens > 0);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let load = g.load_figures();
        if load.running == 0 && load.kv_tokens_used == 0 && load.waiting == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "idle runner still reports {} running, {} KV tokens used",
            load.running,
            load.kv_tokens_used
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_past_the_deadline_is_refused_as_overloaded() {
    // its own engine: one slot, a one-second queue deadline
    let mut cfg = common::config();
    cfg.max_sequences = 1;
    cfg.max_queue_wait = Duration::from_secs(1);
    let g = ragmesh_llm_runner::Generator::load(cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut long = GenerateRequest::prompt("The sea is", 1500);
    long.ignore_eos = true;
    let _busy = g.generate(long).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let mut rx = g
        .generate(GenerateRequest::prompt("Hello", 4))
        .unwrap_or_else(|e| panic!("{e}"));
    match rx.recv().await {
        Some(ragmesh_llm_runner::Event::Error(ragmesh_llm_runner::GenError::Overloaded {
            message,
            retry_after,
        })) => {
            assert!(message.contains("waited"), "{message}");
            // nothing has finished yet: the estimate's floor
            assert_eq!(retry_after, Duration::from_secs(1));
        }
        other => panic!("expected Overloaded after the deadline, got {other:?}"),
    }
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}
