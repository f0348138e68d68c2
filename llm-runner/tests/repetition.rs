//! Repetition control on the real model: `stop_on_repeat` ends a looping
//! answer at its first repeated sentence (the repeat never sent), and
//! `repetition_penalty` changes what greedy decoding picks.

mod common;

use ragmesh_llm_runner::{FinishReason, GenerateRequest, Input};

/// A prompt the model answers greedily by writing one line again and
/// again ("Abe a poem, a sea of dreams," to `max_tokens`).
const LOOPING: &str = "Write a poem about the sea.";

fn chat(q: &str, n: i64) -> GenerateRequest {
    let mut r = GenerateRequest::prompt("", n);
    r.input = Input::Chat(vec![("user".into(), q.into())]);
    r
}

/// Sentences of at least 3 words, normalised as the guard compares them.
fn sentences(text: &str) -> Vec<String> {
    text.split_inclusive(['.', '!', '?', '\n'])
        .map(|s| {
            s.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| s.split(' ').count() >= 3)
        .collect()
}

fn has_repeat(text: &str) -> bool {
    let s = sentences(text);
    s.iter().enumerate().any(|(i, a)| s[..i].contains(a))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_on_repeat_ends_a_loop_before_the_repeat() {
    let g = common::generator();
    let free = common::run(g, chat(LOOPING, 64)).await;
    assert!(
        has_repeat(&free.text),
        "the prompt no longer loops; pick another: {:?}",
        free.text
    );
    let mut r = chat(LOOPING, 64);
    r.stop_on_repeat = true;
    let guarded = common::run(g, r).await;
    assert_eq!(guarded.finish, FinishReason::Stop, "{:?}", guarded.text);
    assert!(!has_repeat(&guarded.text), "{:?}", guarded.text);
    assert!(!guarded.text.trim().is_empty());
    // the same greedy tokens up to the stop: the guarded text is the start
    // of the free one, cut before the repeated sentence
    assert!(
        free.text.starts_with(&guarded.text),
        "{:?} vs {:?}",
        guarded.text,
        free.text
    );
    assert!(
        guarded.text.len() < free.text.len(),
        "nothing was cut: {:?}",
        guarded.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repetition_penalty_changes_greedy_choices() {
    let g = common::generator();
    let base = common::run(g, chat(LOOPING, 64)).await;
    // the profiles' default
    let mut strong = chat(LOOPING, 64);
    strong.sampling.repetition_penalty = 1.1;
    let strong = common::run(g, strong).await;
    assert_ne!(strong.ids, base.ids, "a penalty of 1.1 changed nothing");
    // the looping line does not come back under the penalty
    assert!(
        has_repeat(&base.text) && !has_repeat(&strong.text),
        "{:?} vs {:?}",
        strong.text,
        base.text
    );
}
