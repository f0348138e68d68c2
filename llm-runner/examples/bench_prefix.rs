//! Prefix-cache benchmark (run by `bench/prefix_cache.sh`): the same
//! workloads with `--prefix-cache` off and on, one after the other in one
//! invocation, through the `Generator` core.
//!
//! - a 10-turn chat in which every turn resends the whole history (a long
//!   system prompt, then the turns): time to first token per turn;
//! - 16 such sessions at once, 5 turns each: aggregate output tokens/s and
//!   the median time to first token.
//!
//! Every turn generates exactly `ANSWER` tokens (`ignore_eos`) so both
//! modes do the same work; the answers are the model's own (greedy), so
//! the history is what a chat client would send back. Prints one JSON line.
//!
//! Usage: `bench_prefix MODEL.gguf [turns] [sessions]`.

use std::time::Instant;

use ragmesh_llm_runner::{Event, GenerateRequest, Generator, GeneratorConfig, Input};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ANSWER: usize = 24;

/// About 300 tokens of instructions, the same for every session (as a RAG
/// profile's fixed instruction block).
fn system_prompt() -> String {
    (1..=10)
        .map(|i| {
            format!("Rule {i}: answer briefly, cite the harbour ledger, and never invent a pier number or a fee. ")
        })
        .collect()
}

/// One turn: the time to its first token and the answer's text.
async fn turn(g: &Generator, history: &[(String, String)]) -> anyhow::Result<(f64, String, usize)> {
    let mut req = GenerateRequest::prompt("", ANSWER as i64);
    req.input = Input::Chat(history.to_vec());
    req.ignore_eos = true;
    let t0 = Instant::now();
    let mut rx = g.generate(req)?;
    let (mut ttft, mut text) = (None, String::new());
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta { text: t, .. } => {
                ttft.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                text.push_str(&t);
            }
            Event::Done { cached_tokens, .. } => {
                return Ok((ttft.unwrap_or_default(), text, cached_tokens));
            }
            Event::Error(e) => anyhow::bail!("{e}"),
        }
    }
    anyhow::bail!("the stream ended without Done")
}

/// A session of `turns` turns; per turn (ttft, cached tokens).
async fn session(g: &Generator, id: usize, turns: usize) -> anyhow::Result<Vec<(f64, usize)>> {
    let mut history = vec![("system".to_owned(), system_prompt())];
    let mut out = Vec::with_capacity(turns);
    for t in 0..turns {
        history.push((
            "user".into(),
            format!(
                "Session {id}, question {t}: which pier takes ships on day {}?",
                t + id
            ),
        ));
        let (ttft, answer, cached) = turn(g, &history).await?;
        history.push(("assistant".into(), answer));
        out.push((ttft, cached));
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn measure(
    model: &str,
    cache: bool,
    turns: usize,
    sessions: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut cfg = GeneratorConfig::new(model);
    cfg.prefix_cache = cache;
    let g: &'static Generator = Box::leak(Box::new(Generator::load(cfg)?));
    // warm-up: page the weights in
    turn(g, &[("user".into(), "Hello.".into())]).await?;
    // one long chat, alone
    let chat = session(g, 0, turns).await?;
    // many at once, fewer turns each
    let t0 = Instant::now();
    let handles: Vec<_> = (1..=sessions)
        .map(|i| tokio::spawn(session(g, i, 5)))
        .collect();
    let mut ttfts = Vec::new();
    let mut cached = 0;
    for h in handles {
        for (t, c) in h.await?? {
            ttfts.push(t);
            cached += c;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let tokens = sessions * 5 * ANSWER;
    Ok(serde_json::json!({
        "prefix_cache": cache,
        "chat_ttft_ms": chat.iter().map(|(t, _)| (t * 1e4).round() / 10.0).collect::<Vec<_>>(),
        "chat_cached_tokens": chat.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        "sessions": sessions,
        "sessions_tok_s": (tokens as f64 / wall * 10.0).round() / 10.0,
        "sessions_ttft_p50_ms": (median(ttfts) * 1e4).round() / 10.0,
        "sessions_cached_tokens": cached,
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .get(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bench_prefix MODEL.gguf [turns] [sessions]"))?;
    let turns = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let sessions = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
    let off = measure(model, false, turns, sessions).await?;
    let on = measure(model, true, turns, sessions).await?;
    println!("{}", serde_json::json!({"off": off, "on": on}));
    Ok(())
}
