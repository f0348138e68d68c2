//! The engine's decode step alone, without the scheduler: `n` sequences of
//! one new token each (greedy), from a short prompt to `LEN` positions,
//! for 1 and 16 sequences, their steps in turn. Prints median and mean step times and the
//! per-token ratio `16 · t(1) / t(16)`, the figure the 16-stream
//! target rests on, with medians that ride out a noisy neighbour.
//! `cargo run --release -p ragmesh-llm-runner --example step_speed MODEL [LEN]`

use std::time::Instant;

use ragmesh_llm_runner::kv::KvCache;
use ragmesh_llm_runner::linear::Kernel;
use ragmesh_llm_runner::model::{Llama, SeqBatch};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// `n` sequences decoding: their caches and next tokens.
struct Run {
    caches: Vec<KvCache>,
    next: Vec<Vec<u32>>,
    times: Vec<f64>,
}

impl Run {
    fn new(m: &Llama, n: usize, len: usize) -> Self {
        let c = &m.cfg;
        let caches = (0..n)
            .map(|_| {
                let mut k = KvCache::new(c.n_layer);
                k.reserve(c.n_kv_head * c.head_dim, len + 1);
                k
            })
            .collect();
        // eight prompt tokens each, different per sequence
        let next = (0..n)
            .map(|i| (0..8).map(|j| 100 + (i * 31 + j * 7) as u32).collect())
            .collect();
        Self {
            caches,
            next,
            times: Vec::new(),
        }
    }

    fn step(&mut self, m: &Llama) -> anyhow::Result<()> {
        let prompt = self.caches[0].is_empty();
        let mut batch: Vec<SeqBatch<'_>> = self
            .caches
            .iter_mut()
            .zip(&self.next)
            .map(|(cache, t)| SeqBatch {
                tokens: t,
                cache,
                logits: true,
            })
            .collect();
        let t = Instant::now();
        let out = m.forward(&mut batch)?;
        if !prompt {
            self.times.push(t.elapsed().as_secs_f64());
        }
        for (i, nx) in self.next.iter_mut().enumerate() {
            *nx = vec![argmax(out.get(i).unwrap_or_default())];
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: step_speed MODEL [LEN]"))?;
    let len: usize = args.next().map_or(Ok(136), |s| s.parse())?;
    let kernel = Kernel::from_env().unwrap_or_default();
    let (m, _) = Llama::load(std::path::Path::new(&path), kernel)?;
    // 1 and 16 sequences step by step in turn, so a neighbour's burst
    // lands on both
    let (mut one, mut many) = (Run::new(&m, 1, len), Run::new(&m, 16, len));
    while one.caches[0].len() < len {
        one.step(&m)?;
        many.step(&m)?;
    }
    let stat = |mut t: Vec<f64>| {
        let mean = t.iter().sum::<f64>() / t.len() as f64;
        t.sort_by(f64::total_cmp);
        (t[t.len() / 2] * 1e3, mean * 1e3)
    };
    let (m1, a1) = stat(one.times);
    let (m16, a16) = stat(many.times);
    println!(
        "1 seq: median {m1:.2} ms mean {a1:.2} | 16 seqs: median {m16:.2} ms mean {a16:.2} | ratio median {:.2} mean {:.2}",
        16.0 * m1 / m16,
        16.0 * a1 / a16
    );
    Ok(())
}
