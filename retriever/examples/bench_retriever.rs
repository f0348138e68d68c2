//! Retriever benchmark (run by `bench/retriever.sh`): ingest N chunks of
//! 384-d vectors into the embedded Qdrant Edge backend through the
//! `Retriever` core, build the HNSW index, then measure search latency and
//! recall@10 against exact brute force computed in the same run, without and
//! with a metadata filter (every search is tenant-scoped).
//!
//! Data: a Gaussian mixture (1,000 centres, unit-normalised), which is
//! closer to sentence embeddings than uniform noise; queries are perturbed
//! copies of stored points. Deterministic (fixed seed).
//!
//! Usage: `bench_retriever [points] [queries]` (defaults 100000, 500).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ragmesh_retriever::{
    Chunk, Condition, Distance, EdgeBackend, Fusion, MetaFilter, Retriever, SearchQuery,
};
use serde_json::{Map, json};

const DIMS: usize = 384;
const K: usize = 10;
const GROUPS: u64 = 10;

/// splitmix64: enough randomness for synthetic data, no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

fn dataset(points: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..1000)
        .map(|_| (0..DIMS).map(|_| rng.normal()).collect())
        .collect();
    (0..points)
        .map(|_| {
            let c = &centres[(rng.next() % centres.len() as u64) as usize];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.35 * rng.normal()).collect();
            normalise(&mut v);
            v
        })
        .collect()
}

/// Exact top-k by cosine (vectors are unit length, so a dot product) over
/// the points `keep` admits, split over the available cores.
fn brute_force(data: &[Vec<f32>], q: &[f32], keep: impl Fn(usize) -> bool + Sync) -> Vec<usize> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = data.len().div_ceil(threads);
    let mut all: Vec<(f32, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let keep = &keep;
                s.spawn(move || {
                    let mut best: Vec<(f32, usize)> = Vec::with_capacity(K + 1);
                    let end = ((t + 1) * per).min(data.len());
                    for (i, v) in data.iter().enumerate().take(end).skip(t * per) {
                        if !keep(i) {
                            continue;
                        }
                        let d: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                        if best.len() < K || d > best[best.len() - 1].0 {
                            best.push((d, i));
                            best.sort_by(|a, b| b.0.total_cmp(&a.0));
                            best.truncate(K);
                        }
                    }
                    best
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    all.into_iter().take(K).map(|(_, i)| i).collect()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

struct Run {
    p50: f64,
    p99: f64,
    qps: f64,
    recall: f64,
    exact_ms: f64,
}

async fn measure(
    r: &Retriever,
    data: &[Vec<f32>],
    queries: &[(usize, Vec<f32>)],
    group: Option<u64>,
) -> anyhow::Result<Run> {
    let filter = match group {
        Some(g) => MetaFilter {
            must: vec![Condition::Equals {
                key: "group".into(),
                value: json!(g),
            }],
            must_not: vec![],
        },
        None => MetaFilter::default(),
    };
    let mut lat = Vec::with_capacity(queries.len());
    let mut found = Vec::with_capacity(queries.len());
    let started = Instant::now();
    for (_, q) in queries {
        let t = Instant::now();
        let hits = r
            .search(
                "bench",
                "kb",
                SearchQuery {
                    vector: q.clone(),
                    text: String::new(),
                    filter: filter.clone(),
                    top_k: K,
                    score_threshold: None,
                    fusion: Fusion::Dense,
                },
            )
            .await?;
        lat.push(t.elapsed());
        found.push(hits);
    }
    let qps = queries.len() as f64 / started.elapsed().as_secs_f64();
    lat.sort();
    let t = Instant::now();
    let mut hit = 0usize;
    for ((_, q), hits) in queries.iter().zip(&found) {
        let exact = brute_force(data, q, |i| group.is_none_or(|g| i as u64 % GROUPS == g));
        hit += exact
            .iter()
            .filter(|i| hits.iter().any(|h| h.id == format!("c{i}")))
            .count();
    }
    let exact_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
    Ok(Run {
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        qps,
        recall: hit as f64 / (queries.len() * K) as f64,
        exact_ms,
    })
}

fn report(label: &str, r: &Run) {
    println!(
        "{label:<34} p50 {:>6.2} ms  p99 {:>6.2} ms  {:>7.0} q/s  recall@10 {:.4}  | exact brute force {:>6.2} ms/query ({:.1}x the p50)",
        r.p50,
        r.p99,
        r.qps,
        r.recall,
        r.exact_ms,
        r.exact_ms / r.p50
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let points: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let nq: usize = args.next().map_or(Ok(500), |s| s.parse())?;
    let mut rng = Rng(0x5EED);
    let data = dataset(points, &mut rng);
    let queries: Vec<(usize, Vec<f32>)> = (0..nq)
        .map(|_| {
            let i = (rng.next() % points as u64) as usize;
            let mut q: Vec<f32> = data[i].iter().map(|x| x + 0.02 * rng.normal()).collect();
            normalise(&mut q);
            (i, q)
        })
        .collect();

    let dir = tempfile::tempdir()?;
    let backend = Arc::new(EdgeBackend::open_with(dir.path(), None)?);
    let r = Retriever::new(backend.clone());
    r.create_collection("bench", "kb", DIMS, Distance::Cosine)
        .await?;

    let batch = 1000;
    let t = Instant::now();
    for start in (0..points).step_by(batch) {
        let chunks = (start..(start + batch).min(points))
            .map(|i| {
                let mut metadata = Map::new();
                metadata.insert("group".into(), json!(i as u64 % GROUPS));
                Chunk {
                    id: format!("c{i}"),
                    doc_id: format!("d{}", i / 8),
                    text: format!(
                        "chunk {i} of document {} in group {}",
                        i / 8,
                        i as u64 % GROUPS
                    ),
                    vector: data[i].clone(),
                    metadata,
                }
            })
            .collect();
        r.upsert("bench", "kb", chunks, false).await?;
    }
    let ingest = t.elapsed();
    println!(
        "ingest: {points} points (batches of {batch}, each flushed before ack) in {:.1} s = {:.0} points/s",
        ingest.as_secs_f64(),
        points as f64 / ingest.as_secs_f64()
    );

    let before = measure(&r, &data, &queries[..nq.min(100)], None).await?;
    report("before indexing (plain scan)", &before);

    let t = Instant::now();
    backend.optimize_now("bench", "kb").await?;
    println!("index build (optimize): {:.1} s", t.elapsed().as_secs_f64());

    let all = measure(&r, &data, &queries, None).await?;
    report("HNSW, tenant-scoped", &all);
    let filtered = measure(&r, &data, &queries, Some(3)).await?;
    report("HNSW, tenant + metadata (10%)", &filtered);
    let wal: u64 = std::fs::read_dir(dir.path())?
        .flatten()
        .filter_map(|t| std::fs::read_dir(t.path()).ok())
        .flatten()
        .flatten()
        .filter_map(|c| std::fs::read_dir(c.path().join("wal")).ok())
        .flatten()
        .flatten()
        .filter_map(|f| f.metadata().ok().map(|m| m.len()))
        .sum();
    println!(
        "WAL on disk after ingest: {:.0} MiB",
        wal as f64 / 1048576.0
    );
    Ok(())
}
