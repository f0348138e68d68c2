//! Runner benchmark (run by `bench/llm_runner.sh`): prompt processing of a
//! 512-token prompt, single-stream decode, and aggregate decode at 1, 4
//! and 16 concurrent streams, through the `Generator` core. Prints one
//! JSON line for `bench/llm_runner.sh`.
//!
//! Usage: `bench_runner MODEL.gguf [decode_tokens] [rounds]` (3 rounds;
//! each figure is the median over them).

use std::time::Instant;

use ragmesh_llm_runner::{Event, GenerateRequest, Generator, GeneratorConfig};

// the runner binary's allocator, so the figures are the served ones (glibc
// maps each step's large buffers fresh and faults their pages back in)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A plain-text prompt of about `n` tokens (no template).
fn prompt_of(g: &Generator, n: usize) -> anyhow::Result<String> {
    let base = "The quick brown fox jumps over the lazy dog while the river runs to the sea. ";
    let ids = g.tokenize(
        &ragmesh_llm_runner::Input::Prompt(base.repeat(n / 8 + 2)),
        false,
    )?;
    Ok(g.tokenizer().decode(&ids[..n.min(ids.len())]))
}

/// One request of `max` tokens; returns each token's arrival in seconds
/// after `t0`.
async fn run(g: &Generator, prompt: &str, max: usize, t0: Instant) -> anyhow::Result<Vec<f64>> {
    // fixed output lengths (vLLM's benchmarks do the same): a stream that
    // met an end token early would leave the batch and shrink it
    let mut req = GenerateRequest::prompt(prompt, max as i64);
    req.ignore_eos = true;
    let mut rx = g.generate(req)?;
    let mut arrivals = Vec::with_capacity(max);
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta { .. } => arrivals.push(t0.elapsed().as_secs_f64()),
            Event::Done { .. } => break,
            Event::Error(e) => anyhow::bail!("{e}"),
        }
    }
    anyhow::ensure!(!arrivals.is_empty(), "a stream ended without a token");
    Ok(arrivals)
}

/// Decode tokens/s of streams started together: the tokens that arrived
/// after every stream had its first one, over that window (llama.cpp's
/// batched-bench `S_TG`: prompt processing and the first token, which the
/// prefill step produces, are outside it). With one stream this is the
/// single-stream decode figure, so the two compare like for like.
fn decode_rate(streams: &[Vec<f64>]) -> anyhow::Result<f64> {
    anyhow::ensure!(
        streams.iter().all(|a| a.len() > 1),
        "a stream ended after its first token"
    );
    let start = streams.iter().map(|a| a[0]).fold(f64::MIN, f64::max);
    let end = streams
        .iter()
        .flat_map(|a| a.last())
        .fold(f64::MIN, |m, &t| m.max(t));
    // an empty window would print `inf`, which the bench script's JSON
    // parser rejects without saying why
    anyhow::ensure!(end > start, "no decode window: every token arrived at once");
    let tokens = streams.iter().flatten().filter(|&&t| t > start).count();
    Ok(tokens as f64 / (end - start))
}

/// Concurrent streams of the aggregate figures.
const STREAMS: [usize; 3] = [1, 4, 16];

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bench_runner MODEL [tokens] [rounds]"))?;
    let decode: usize = args.next().map_or(Ok(128), |s| s.parse())?;
    let reps: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    anyhow::ensure!(reps > 0, "at least one round");
    let mut cfg = GeneratorConfig::new(&model);
    cfg.max_model_len = 2048;
    if let Some(k) = ragmesh_llm_runner::linear::Kernel::from_env() {
        cfg.kernel = k;
    }
    let g = Generator::load(cfg)?;
    // warm-up
    run(&g, "Hello", 4, Instant::now()).await?;

    let long = prompt_of(&g, 512)?;
    let n_prompt = g
        .tokenize(&ragmesh_llm_runner::Input::Prompt(long.clone()), false)?
        .len();
    // every figure is the median of `reps` rounds, the rounds interleaved
    // (this machine's neighbours move single runs by ±20%)
    let mut prefills = Vec::new();
    let mut singles = Vec::new();
    let mut aggregates: Vec<Vec<f64>> = vec![Vec::new(); STREAMS.len()];
    let mut outputs: Vec<Vec<f64>> = vec![Vec::new(); STREAMS.len()];
    let short = "Once upon a time";
    for _ in 0..reps {
        let ttft = run(&g, &long, 1, Instant::now()).await?[0];
        prefills.push(n_prompt as f64 / ttft);
        let one = run(&g, short, decode, Instant::now()).await?;
        singles.push(decode_rate(&[one])?);
        for (k, &streams) in STREAMS.iter().enumerate() {
            let t0 = Instant::now();
            let tasks: Vec<_> = (0..streams)
                .map(|i| {
                    let g = g.clone();
                    let p = format!("{short} number {i}");
                    tokio::spawn(async move { run(&g, &p, decode, t0).await })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await??);
            }
            let elapsed = t0.elapsed().as_secs_f64();
            aggregates[k].push(decode_rate(&all)?);
            outputs[k].push(all.iter().map(Vec::len).sum::<usize>() as f64 / elapsed);
        }
    }
    let (prefill, single) = (median(&prefills), median(&singles));
    let by_streams = |figures: &[Vec<f64>]| {
        STREAMS
            .iter()
            .zip(figures)
            .map(|(&s, v)| format!("\"{s}\":{:.1}", median(v)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let runs = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    eprintln!(
        "rounds: single [{}], 16 streams [{}]",
        runs(&singles),
        runs(&aggregates[STREAMS.len() - 1])
    );
    // `aggregate`: decode tokens/s (see `decode_rate`); `output`: every
    // token over the whole wall time, prompt processing included (vLLM's
    // "output throughput")
    println!(
        "{{\"engine\":\"ragmesh\",\"prompt_tokens\":{n_prompt},\"prefill_tok_s\":{prefill:.1},\"decode_tok_s\":{single:.1},\"aggregate\":{{{}}},\"output\":{{{}}}}}",
        by_streams(&aggregates),
        by_streams(&outputs)
    );
    Ok(())
}
