//! Continuous batching is real and invisible: concurrent greedy requests
//! give exactly what each gives alone, they share forward passes, and a
//! dropped stream frees its slot at the next step.

mod common;

use std::time::{Duration, Instant};

use ragmesh_llm_runner::{Event, FinishReason, GenerateRequest, Input};

fn chat(q: &str, n: i64) -> GenerateRequest {
    let mut r = GenerateRequest::prompt("", n);
    r.input = Input::Chat(vec![("user".into(), q.into())]);
    r
}

/// A generator of the test's own, alive for the test binary (spawned tasks
/// need `'static`).
fn own_generator() -> &'static ragmesh_llm_runner::Generator {
    Box::leak(Box::new(
        ragmesh_llm_runner::Generator::load(common::config()).unwrap_or_else(|e| panic!("{e}")),
    ))
}

const QUESTIONS: [&str; 8] = [
    "What is the capital of France?",
    "Name a fruit that is yellow.",
    "What is 2 + 2?",
    "Write one word about the sea.",
    "Who wrote Hamlet?",
    "What colour is grass?",
    "Say hello in German.",
    "What is the opposite of cold?",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_outputs_equal_solo_outputs_and_share_steps() {
    // its own generator: the step counters must count only these requests
    let g = own_generator();
    let mut alone = Vec::new();
    for q in QUESTIONS {
        alone.push(common::run(g, chat(q, 24)).await);
    }
    let before = g.stats();
    let tasks: Vec<_> = QUESTIONS
        .iter()
        .map(|q| tokio::spawn(common::run(g, chat(q, 24))))
        .collect();
    let mut together = Vec::new();
    for t in tasks {
        together.push(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let after = g.stats();
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.ids, b.ids, "request {i} differs when batched");
        assert_eq!(a.text, b.text);
        assert_eq!(a.finish, b.finish);
    }
    let steps = after.steps - before.steps;
    let shared = after.shared_steps - before.shared_steps;
    let tokens: usize = together.iter().map(|o| o.completion_tokens).sum();
    eprintln!(
        "{tokens} tokens in {steps} steps ({shared} shared), up to {} sequences per step",
        after.max_sequences_in_step
    );
    assert!(
        after.max_sequences_in_step >= 4,
        "never batched 4+ sequences"
    );
    assert!(
        (steps as usize) < tokens / 2,
        "{steps} steps for {tokens} tokens: not decoded together"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_frees_the_slot_within_a_step() {
    // its own generator: Load must not see the other tests' sequences
    let g = own_generator();
    let mut rx = g
        .generate(chat("Tell me a very long story about dragons.", 400))
        .unwrap_or_else(|e| panic!("{e}"));
    // wait for a few tokens
    let mut seen = 0;
    while seen < 3 {
        match rx.recv().await {
            Some(Event::Delta { .. }) => seen += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(g.load_figures().running >= 1);
    assert!(g.load_figures().kv_tokens_used > 0);
    drop(rx);
    let t = Instant::now();
    while g.load_figures().running > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "slot not freed after the stream was dropped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(g.load_figures().kv_tokens_used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_seeds_lengths_and_usage() {
    let g = common::generator();
    // max_tokens → length, usage counts
    let out = common::run(g, chat("Count from one to twenty in words.", 5)).await;
    assert_eq!(out.finish, FinishReason::Length);
    assert_eq!(out.completion_tokens, 5);
    assert!(out.prompt_tokens > 10);
    // a stop sequence cuts the text before it and finishes with `stop`
    let full = common::run(g, chat("Count from one to twenty in words.", 30)).await;
    // the stop: three characters of the greedy text, the first ones from
    // the second third on that occur nowhere earlier (whatever the model
    // writes, words or digits), so the expected text is what precedes them
    let chars: Vec<(usize, char)> = full.text.char_indices().collect();
    assert!(chars.len() >= 9, "too short to test stops: {:?}", full.text);
    let (at, stop) = (chars.len() / 3..chars.len() - 3)
        .map(|i| {
            let end = chars.get(i + 3).map_or(full.text.len(), |c| c.0);
            (chars[i].0, full.text[chars[i].0..end].to_owned())
        })
        .find(|(at, s)| full.text.find(s.as_str()) == Some(*at))
        .unwrap_or_else(|| panic!("no stop candidate in {:?}", full.text));
    let expected = &full.text[..at];
    let mut r = chat("Count from one to twenty in words.", 30);
    r.stop = vec![stop.clone().into_bytes()];
    let out = common::run(g, r).await;
    assert_eq!(out.finish, FinishReason::Stop);
    assert_eq!(out.text, expected, "stop {stop:?}");
    // same seed → same sample; temperature sampling differs from greedy
    let sampled = |seed| {
        let mut r = chat("Invent a name for a cat.", 12);
        r.sampling.temperature = 1.0;
        r.sampling.seed = Some(seed);
        r
    };
    let a = common::run(g, sampled(42)).await;
    let b = common::run(g, sampled(42)).await;
    assert_eq!(a.ids, b.ids);
    // ignore_eos: a reply that ends early runs on to max_tokens, its
    // greedy prefix unchanged and no end-token text in the output
    let short = common::run(g, chat("What is 2 + 2?", 64)).await;
    assert_eq!(short.finish, FinishReason::Stop, "{:?}", short.text);
    let mut r = chat("What is 2 + 2?", short.completion_tokens as i64 + 8);
    r.ignore_eos = true;
    let long = common::run(g, r).await;
    assert_eq!(long.finish, FinishReason::Length);
    assert_eq!(long.completion_tokens, short.completion_tokens + 8);
    assert!(long.text.starts_with(&short.text), "{:?}", long.text);
    assert!(!long.text.contains("<|im_end|>"), "{:?}", long.text);
}

/// A decode step split by sequences (9 sequences on 2 threads: parts of 5
/// and 4, see `Llama::forward`) gives each sequence the logits it gets
/// decoded alone, to the bit, and stores the same cache.
#[test]
fn a_step_split_by_sequences_equals_each_sequence_alone() {
    use ragmesh_llm_runner::kv::KvCache;
    use ragmesh_llm_runner::model::{Llama, SPLIT_ROWS, SeqBatch};
    let (model, _) = Llama::load(&common::model_path(), common::config().kernel)
        .unwrap_or_else(|e| panic!("{e}"));
    let n = 9;
    assert!(n >= 2 * SPLIT_ROWS, "the step would not be split");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // prompts of different lengths, prefilled one by one, twice
    let prompt =
        |i: usize| -> Vec<u32> { (0..3 + i).map(|j| (100 + 37 * i + 11 * j) as u32).collect() };
    let prefill = |model: &Llama| -> Vec<KvCache> {
        (0..n)
            .map(|i| {
                let mut c = KvCache::new(model.cfg.n_layer);
                let mut b = [SeqBatch {
                    tokens: &prompt(i),
                    cache: &mut c,
                    logits: false,
                }];
                model.forward(&mut b).unwrap_or_else(|e| panic!("{e}"));
                c
            })
            .collect()
    };
    let (mut split, mut alone) = (prefill(&model), prefill(&model));
    let next: Vec<[u32; 1]> = (0..n).map(|i| [200 + 13 * i as u32]).collect();
    let together = pool.install(|| {
        let mut batch: Vec<SeqBatch<'_>> = split
            .iter_mut()
            .zip(&next)
            .map(|(cache, t)| SeqBatch {
                tokens: t,
                cache,
                logits: true,
            })
            .collect();
        model.forward(&mut batch).unwrap_or_else(|e| panic!("{e}"))
    });
    for (i, (cache, t)) in alone.iter_mut().zip(&next).enumerate() {
        let one = pool.install(|| {
            model
                .forward(&mut [SeqBatch {
                    tokens: t,
                    cache,
                    logits: true,
                }])
                .unwrap_or_else(|e| panic!("{e}"))
        });
        let (a, b) = (
            one.get(0).unwrap_or_default(),
            together.get(i).unwrap_or_default(),
        );
        assert_eq!(a.len(), model.cfg.vocab_size);
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "sequence {i}: logits differ when the step is split"
        );
        assert_eq!(cache.len(), split[i].len());
        for layer in 0..model.cfg.n_layer {
            assert!(
                cache.layer(layer) == split[i].layer(layer),
                "sequence {i}, layer {layer}: cache differs"
            );
        }
    }
}
