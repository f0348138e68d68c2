//! Attention alone at decode: 16 sequences (`SEQS`) of one new token each
//! against caches of `LEN` positions, all 30 layers of SmolLM2's head
//! layout (9 query heads over 3 KV heads of 64), timed per step.
//! `cargo run -p ragmesh-llm-runner --example attn_speed [LEN]`

use ragmesh_llm_runner::attention::{Heads, SeqAttn, attend};
use ragmesh_llm_runner::kv::KvCache;
use std::time::Instant;
fn main() {
    let h = Heads {
        n_head: 9,
        n_kv_head: 3,
        head_dim: 64,
    };
    let kv_dim = 192;
    let seqs_n: usize = std::env::var("SEQS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let len: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(140)
        .max(1);
    let layers = 30;
    let mut caches: Vec<KvCache> = (0..seqs_n).map(|_| KvCache::new(layers)).collect();
    for c in caches.iter_mut() {
        for l in 0..layers {
            for p in 0..len {
                let k: Vec<f32> = (0..kv_dim)
                    .map(|i| ((i * 7 + p * 3 + l) % 13) as f32 * 0.01)
                    .collect();
                c.push(l, p, 3, &k, &k);
            }
        }
    }
    let q: Vec<f32> = (0..seqs_n * 576).map(|i| (i % 17) as f32 * 0.01).collect();
    for _ in 0..10 {
        let t = Instant::now();
        let mut sink = 0.0;
        for l in 0..layers {
            let seqs: Vec<SeqAttn> = caches
                .iter()
                .enumerate()
                .map(|(i, c)| SeqAttn {
                    row: i,
                    n: 1,
                    past: len - 1,
                    kv: c.layer(l),
                })
                .collect();
            let out = attend(h, &q, &seqs);
            sink += out[0];
        }
        println!(
            "len {len}: {:.2} ms per step (30 layers) {sink}",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
