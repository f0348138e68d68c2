//! The runner against llama.cpp on the same GGUF (fixture written by
//! `bench/reference/llama_reference.py`): tokenizer ids must match exactly;
//! the chat template + tokenizer must produce llama.cpp's prompt ids; and
//! greedy decoding must reproduce llama.cpp's first 32 tokens.
//!
//! The divergence rule: our matmuls run on dequantised f32 weights (GEMM)
//! while llama.cpp quantises activations to 8 bits, so logits differ in the
//! second or third decimal. A greedy run may therefore part from the
//! reference only at a step where llama.cpp's own two best logits are
//! within [`NEAR_TIE`] of each other (a near-tie that rounding decides);
//! everything before that step must match exactly, and after it nothing is
//! compared. Because that leaves little of some runs compared (this small
//! quantized model meets near-ties early), a teacher-forced test also feeds
//! llama.cpp's own 32 tokens through our model and requires our argmax to
//! agree at every step where llama.cpp is decisive.

mod common;

use ragmesh_llm_runner::{GenerateRequest, Input};
use serde_json::Value;

const NEAR_TIE: f64 = 0.5;

fn fixture() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/llama-SmolLM2-135M-Instruct-Q4_1.json"
    );
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

fn messages(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m[0].as_str().unwrap_or_default().to_owned(),
                        m[1].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let g = common::generator();
    let f = fixture();
    let cases = f["tokenizer"].as_array().cloned().unwrap_or_default();
    assert!(cases.len() >= 8);
    for c in cases {
        let text = c["text"].as_str().unwrap_or_default();
        let ours = g
            .tokenize(&Input::Prompt(text.into()), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ours, ids(&c["ids"]), "token ids differ for {text:?}");
        // and the ids decode back to the text
        if !text.contains("<|") {
            assert_eq!(g.tokenizer().decode(&ours), text);
        }
    }
}

#[test]
fn chat_template_renders_llama_cpp_prompt() {
    let g = common::generator();
    for case in fixture()["greedy"].as_array().cloned().unwrap_or_default() {
        let ours = g
            .tokenize(&Input::Chat(messages(&case["messages"])), true)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ours, ids(&case["prompt_ids"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_decode_matches_llama_cpp() {
    let g = common::generator();
    let mut report = Vec::new();
    for case in fixture()["greedy"].as_array().cloned().unwrap_or_default() {
        let want = ids(&case["greedy_ids"]);
        let gaps: Vec<f64> = case["top2_gaps"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let mut req = GenerateRequest::prompt("", want.len() as i64);
        req.input = Input::Chat(messages(&case["messages"]));
        let out = common::run(g, req).await;
        // the reference stops at EOS, which we report as finish, not an id
        let exact = want
            .iter()
            .zip(&out.ids)
            .take_while(|(a, b)| a == b)
            .count();
        let stopped_together = exact == out.ids.len() && want.len() == exact + 1;
        report.push(format!("{exact}/{}", want.len()));

        if exact < want.len() && !stopped_together {
            let gap = gaps.get(exact).copied().unwrap_or(f64::INFINITY);
            assert!(
                gap < NEAR_TIE,
                "diverged from llama.cpp at token {exact} where its top-2 gap is {gap:.3} (not a near-tie): ours {:?}, llama.cpp {:?}",
                &out.ids[..out.ids.len().min(exact + 3)],
                &want[..want.len().min(exact + 3)]
            );
        }
    }
    eprintln!("exact greedy prefix per prompt: {}", report.join(", "));
}

#[test]
fn teacher_forced_argmax_agrees_where_llama_cpp_is_decisive() {
    use ragmesh_llm_runner::kv::KvCache;
    use ragmesh_llm_runner::model::{Llama, SeqBatch};
    let (model, _) = Llama::load(&common::model_path(), common::config().kernel)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut checked, mut near_ties) = (0, 0);
    for case in fixture()["greedy"].as_array().cloned().unwrap_or_default() {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["greedy_ids"]);
        let gaps: Vec<f64> = case["top2_gaps"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let mut cache = KvCache::new(model.cfg.n_layer);
        let mut feed = prompt.clone();
        for (i, &w) in want.iter().enumerate() {
            let logits = model
                .forward(&mut [SeqBatch {
                    tokens: &feed,
                    cache: &mut cache,
                    logits: true,
                }])
                .unwrap_or_else(|e| panic!("{e}"));
            let logits = logits.get(0).unwrap_or_default();
            let ours = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(t, _)| t as u32);
            if gaps[i] >= NEAR_TIE {
                assert_eq!(
                    ours, w,
                    "step {i}: llama.cpp picks {w} by a margin of {:.2}, we pick {ours}",
                    gaps[i]
                );
                checked += 1;
            } else {
                near_ties += 1;
            }
            feed = vec![w];
        }
    }
    eprintln!("{checked} decisive steps agree; {near_ties} near-ties not compared");
    assert!(checked >= 60, "too few decisive steps compared ({checked})");
}
