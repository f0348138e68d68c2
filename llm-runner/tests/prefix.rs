//! Automatic prefix caching on the real model: a request sharing a long
//! prefix with a finished or running one prefills only the rest, and
//! every output is token for token what the same request gives with
//! caching off, also when a small KV budget evicts cached prefixes while
//! others run.

mod common;

use ragmesh_llm_runner::{Event, GenerateRequest, Generator, GeneratorConfig};

fn load(prefix_cache: bool, tweak: impl FnOnce(&mut GeneratorConfig)) -> &'static Generator {
    let mut c = common::config();
    c.prefix_cache = prefix_cache;
    tweak(&mut c);
    Box::leak(Box::new(
        Generator::load(c).unwrap_or_else(|e| panic!("{e}")),
    ))
}

/// About 300 tokens of invented harbour rules.
fn preamble(topic: &str) -> String {
    (1..=12)
        .map(|i| {
            format!(
                "Rule {i} of the {topic} harbour: a ship arriving on day {i} pays {} silver marks and moors at pier {}.\n",
                i * 3,
                i % 5
            )
        })
        .collect()
}

async fn wait_for(ok: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if ok() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    ok()
}

fn ask(preamble: &str, q: &str, n: i64) -> GenerateRequest {
    GenerateRequest::prompt(&format!("{preamble}Question: {q}\nAnswer:"), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_prefix_is_reused_and_outputs_are_unchanged() {
    let on = load(true, |_| {});
    let off = load(false, |_| {});
    let p = preamble("Quellmouth");
    let first = common::run(on, ask(&p, "What does a ship pay on day 4?", 24)).await;
    assert_eq!(first.cached_tokens, 0, "nothing cached yet");
    assert!(first.prompt_tokens >= 300, "{}", first.prompt_tokens);
    // a different question after the same preamble: only the suffix is
    // prefilled
    let second = common::run(on, ask(&p, "Which pier is used on day 7?", 24)).await;
    assert!(
        second.cached_tokens >= 288 && second.cached_tokens % 16 == 0,
        "{} of {} prompt tokens cached",
        second.cached_tokens,
        second.prompt_tokens
    );
    assert!(second.cached_tokens < second.prompt_tokens);
    let cold = common::run(off, ask(&p, "Which pier is used on day 7?", 24)).await;
    assert_eq!(cold.cached_tokens, 0);
    assert_eq!(second.ids, cold.ids, "a cache hit changed the output");
    // the very same prompt again: all of it but the partial last block
    let repeat = common::run(on, ask(&p, "Which pier is used on day 7?", 24)).await;
    assert!(
        repeat.cached_tokens + 16 >= repeat.prompt_tokens,
        "{} of {}",
        repeat.cached_tokens,
        repeat.prompt_tokens
    );
    assert_eq!(repeat.ids, second.ids);
    // the first question again: its own blocks are still cached beside
    // the second's (they share the preamble's), all but the partial last
    let again = common::run(on, ask(&p, "What does a ship pay on day 4?", 24)).await;
    assert!(
        again.cached_tokens + 16 >= again.prompt_tokens,
        "{} of {}",
        again.cached_tokens,
        again.prompt_tokens
    );
    assert_eq!(again.ids, first.ids);
    // the finished sequences' caches are kept right after their last event
    let kept = wait_for(|| on.load_figures().cached_blocks >= 18).await;
    assert!(kept, "{:?}", on.load_figures());
}

/// Requests arriving while one with the same preamble runs hold its
/// blocks: each prefills only its question, the KV gauge counts the
/// shared blocks once, and every output (the running one's too) equals
/// the same request's with caching off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_sequences_share_their_prefix_blocks() {
    let on = load(true, |_| {});
    let off = load(false, |_| {});
    let p = preamble("Saltreach");
    let mut long = ask(&p, "Recite every rule.", 160);
    long.ignore_eos = true;
    let mut first = on.generate(long.clone()).unwrap_or_else(|e| panic!("{e}"));
    // its first token: its prompt is in its blocks, registered
    let Some(Event::Delta {
        token_ids: first_ids,
        ..
    }) = first.recv().await
    else {
        panic!("no first token")
    };
    let questions = [
        "What does a ship pay on day 5?",
        "Which pier is used on day 2?",
        "What does a ship pay on day 10?",
    ];
    let mut rxs = Vec::new();
    for q in questions {
        let mut rx = on
            .generate(ask(&p, q, 24))
            .unwrap_or_else(|e| panic!("{e}"));
        let Some(Event::Delta { token_ids, .. }) = rx.recv().await else {
            panic!("{q}: no first token")
        };
        rxs.push((q, token_ids, rx));
    }
    // all four hold their prompts now
    let load = on.load_figures();
    let mut prompts = 0;
    for (q, head, rx) in rxs {
        let mut got = common::collect(rx).await;
        got.ids.splice(0..0, head);
        assert!(
            got.cached_tokens >= 288,
            "{q}: {} of {} prompt tokens cached while the first ran",
            got.cached_tokens,
            got.prompt_tokens
        );
        prompts += got.prompt_tokens;
        let alone = common::run(off, ask(&p, q, 24)).await;
        assert_eq!(got.ids, alone.ids, "{q}: a shared block changed the output");
    }
    let mut rest = common::collect(first).await;
    prompts += rest.prompt_tokens;
    // the three later prompts share 288+ positions each with the first:
    // held once, the gauge stays below the prompts' sum by that much
    // (the first has generated at most 160 tokens, the others 24)
    assert!(
        load.running >= 2 && load.kv_tokens_used + 3 * 288 <= prompts + 160 + 3 * 24,
        "shared blocks counted more than once: {load:?}, prompts {prompts}"
    );
    let alone = common::run(off, long).await;
    rest.ids.splice(0..0, first_ids);
    assert_eq!(
        rest.ids, alone.ids,
        "sharing its blocks changed the first output"
    );
}

/// Twelve requests over three shared preambles, six at a time, with a KV
/// budget that holds only a few of them: cached prefixes are evicted
/// while others run and are reused, and each output equals the same
/// request run alone with caching off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_under_a_small_budget_never_corrupts_an_output() {
    let on = load(true, |c| {
        c.kv_cache_tokens = 2048;
        c.max_sequences = 4;
    });
    let off = load(false, |_| {});
    let preambles = ["Quellmouth", "Varn", "Dunmore"].map(preamble);
    let questions = [
        "What does a ship pay on day 2?",
        "Which pier is used on day 9?",
        "What does a ship pay on day 11?",
        "Which pier is used on day 3?",
    ];
    let mut reqs = Vec::new();
    for q in questions {
        for p in &preambles {
            reqs.push(ask(p, q, 16));
        }
    }
    let mut cached = 0;
    for wave in reqs.chunks(6) {
        let runs: Vec<_> = wave
            .iter()
            .map(|r| tokio::spawn(common::run(on, r.clone())))
            .collect();
        for (r, h) in wave.iter().zip(runs) {
            let got = h.await.unwrap_or_else(|e| panic!("{e}"));
            let alone = common::run(off, r.clone()).await;
            assert_eq!(got.ids, alone.ids, "output changed under eviction");
            cached += got.cached_tokens;
        }
    }
    assert!(cached >= 288, "the cache was never hit ({cached} tokens)");
    let load = on.load_figures();
    assert!(
        load.cached_blocks * 16 <= 2048,
        "kept more than the budget: {load:?}"
    );
}
