//! Embedder throughput and latency on the core (no transport), for
//! `bench/embedder.sh`, which runs sentence-transformers on the same
//! sentences and thread count in the same invocation.
//!
//!     cargo bench -p ragmesh-embedder --bench embed -- SENTENCES_FILE THREADS
//!
//! Prints one JSON line: sentences/s at batch 32 and single-request p50/p99.

use std::time::Instant;

// mimalloc keeps freed activation buffers for reuse; glibc returns large
// ones to the OS and page-faults them back in on every layer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ragmesh_embedder::{EmbedOptions, Embedder, EmbedderConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let file = args
        .first()
        .cloned()
        .unwrap_or_else(|| "/tmp/sent.txt".into());
    let threads: usize = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(2);
    ragmesh_embedder::server::init_threads(threads);
    let sentences: Vec<String> = std::fs::read_to_string(&file)?
        .lines()
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!sentences.is_empty(), "no sentences in {file}");
    let dir = std::path::PathBuf::from(ragmesh_embedder::server::default_model_dir_env())
        .join("all-MiniLM-L6-v2");
    let emb = Embedder::load(&EmbedderConfig::new(dir))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    // warm-up
    rt.block_on(emb.embed(sentences[..32].to_vec(), EmbedOptions::default()))?;

    let started = Instant::now();
    let mut tokens = 0;
    for batch in sentences.chunks(32) {
        tokens += rt
            .block_on(emb.embed(batch.to_vec(), EmbedOptions::default()))?
            .prompt_tokens;
    }
    let secs = started.elapsed().as_secs_f64();

    let mut lat = Vec::new();
    for s in sentences.iter().take(200) {
        let t = Instant::now();
        rt.block_on(emb.embed(vec![s.clone()], EmbedOptions::default()))?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "{{\"impl\":\"ragmesh\",\"sentences\":{},\"tokens\":{},\"threads\":{},\"sentences_per_s\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        sentences.len(),
        tokens,
        threads,
        sentences.len() as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
