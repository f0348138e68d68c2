#![allow(dead_code)] // each test binary uses a different part
//! Shared set-up for the runner's tests: the default model from the model
//! cache (`make test` fetches it) and one loaded generator per test binary.

use std::path::PathBuf;
use std::sync::OnceLock;

use ragmesh_llm_runner::{Event, FinishReason, GenerateRequest, Generator, GeneratorConfig};

pub fn model_path() -> PathBuf {
    let dir = std::env::var("RAGMESH_MODEL_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ragmesh/models",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    PathBuf::from(dir).join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn config() -> GeneratorConfig {
    let mut c = GeneratorConfig::new(model_path());
    c.max_waiting = 64;
    if let Some(k) = ragmesh_llm_runner::linear::Kernel::from_env() {
        c.kernel = k;
    }
    c
}

pub fn generator() -> &'static Generator {
    static G: OnceLock<Generator> = OnceLock::new();
    G.get_or_init(|| {
        Generator::load(config()).unwrap_or_else(|e| panic!("load {}: {e}", model_path().display()))
    })
}

pub struct Output {
    pub text: String,
    pub ids: Vec<u32>,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
    /// Function calls reassembled: `(name, arguments)` by index.
    pub calls: Vec<(String, String)>,
}

/// Runs a request to the end.
pub async fn run(g: &Generator, req: GenerateRequest) -> Output {
    collect(g.generate(req).unwrap_or_else(|e| panic!("generate: {e}"))).await
}

/// Reads a request's events to the end.
pub async fn collect(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Output {
    let (mut text, mut ids) = (String::new(), Vec::new());
    let mut calls: Vec<(String, String)> = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta {
                text: t,
                token_ids,
                tool_calls,
                ..
            } => {
                text.push_str(&t);
                ids.extend(token_ids);
                for c in tool_calls {
                    match calls.get_mut(c.index as usize) {
                        Some(call) => call.1.push_str(&c.arguments),
                        None => calls.push((c.name, c.arguments)),
                    }
                }
            }
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => {
                return Output {
                    text,
                    ids,
                    finish,
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                    calls,
                };
            }
            Event::Error(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("stream ended without Done")
}
