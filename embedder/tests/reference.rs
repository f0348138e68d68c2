//! The embedder against sentence-transformers: the fixture holds reference
//! vectors computed by `bench/reference/embeddings.py` on the same model
//! files. Needs the default model (`make test` fetches it).

use std::path::PathBuf;

use ragmesh_embedder::{EmbedError, EmbedOptions, Embedder, EmbedderConfig};
use serde_json::Value;

fn model_path() -> PathBuf {
    PathBuf::from(ragmesh_embedder::server::default_model_dir_env()).join("all-MiniLM-L6-v2")
}

fn load() -> Embedder {
    let path = model_path();
    match Embedder::load(&EmbedderConfig::new(&path)) {
        Ok(e) => e,
        Err(e) => panic!(
            "cannot load {}: {e} (run scripts/fetch-models.sh)",
            path.display()
        ),
    }
}

struct Fixture {
    sentences: Vec<String>,
    token_counts: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/embeddings-all-MiniLM-L6-v2.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture JSON: {e}"));
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap_or_else(|| panic!("fixture lacks {k}"))
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let embeddings = v["embeddings"]
        .as_array()
        .unwrap_or_else(|| panic!("fixture lacks embeddings"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap_or_else(|| panic!("bad row"))
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                .collect()
        })
        .collect();
    let token_counts = v["token_counts"]
        .as_array()
        .unwrap_or_else(|| panic!("fixture lacks token_counts"))
        .iter()
        .map(|x| x.as_u64().unwrap_or(0) as usize)
        .collect();
    Fixture {
        sentences: strings("sentences"),
        token_counts,
        embeddings,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

#[test]
fn matches_sentence_transformers_reference() {
    let fx = fixture();
    assert!(fx.sentences.len() >= 20);
    let emb = load();
    let out = rt()
        .block_on(emb.embed(fx.sentences.clone(), EmbedOptions::default()))
        .unwrap_or_else(|e| panic!("embed: {e}"));
    assert_eq!(out.vectors.len(), fx.sentences.len());
    assert_eq!(
        out.prompt_tokens,
        fx.token_counts.iter().sum::<usize>(),
        "token usage"
    );
    for (i, (got, want)) in out.vectors.iter().zip(&fx.embeddings).enumerate() {
        assert_eq!(got.len(), 384);
        let c = cosine(got, want);
        assert!(c >= 0.999, "sentence {i} {:?}: cosine {c}", fx.sentences[i]);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised by default");
    }
}

#[test]
fn one_at_a_time_equals_batched() {
    let fx = fixture();
    let emb = load();
    let rt = rt();
    for (i, s) in fx.sentences.iter().enumerate().step_by(5) {
        let one = rt
            .block_on(emb.embed(vec![s.clone()], EmbedOptions::default()))
            .unwrap_or_else(|e| panic!("embed: {e}"));
        let c = cosine(&one.vectors[0], &fx.embeddings[i]);
        assert!(c >= 0.999, "sentence {i} alone: cosine {c}");
    }
}

#[test]
fn concurrent_callers_share_forward_passes() {
    let emb = load();
    let rt = rt();
    let sentences: Vec<String> = (0..32)
        .map(|i| format!("caller number {i} asks a question"))
        .collect();
    let alone: Vec<Vec<f32>> = sentences
        .iter()
        .map(|s| {
            rt.block_on(emb.embed(vec![s.clone()], EmbedOptions::default()))
                .unwrap_or_else(|e| panic!("{e}"))
                .vectors
                .remove(0)
        })
        .collect();
    let (passes_before, _) = emb.batch_counters();
    let together: Vec<Vec<f32>> = rt.block_on(async {
        let calls = sentences.iter().map(|s| {
            let e = emb.clone();
            let s = s.clone();
            tokio::spawn(async move { e.embed(vec![s], EmbedOptions::default()).await })
        });
        let mut out = Vec::new();
        for r in futures::future::join_all(calls).await {
            let r = r
                .unwrap_or_else(|e| panic!("join: {e}"))
                .unwrap_or_else(|e| panic!("{e}"));
            out.push(r.vectors.into_iter().next().unwrap_or_default());
        }
        out
    });
    let (passes_after, _) = emb.batch_counters();
    let passes = passes_after - passes_before;
    assert!(
        passes < 32 / 2,
        "32 concurrent callers took {passes} forward passes: not batched"
    );
    for (a, b) in alone.iter().zip(&together) {
        assert!(cosine(a, b) > 0.99999, "batched result differs from single");
    }
}

#[test]
fn truncation_and_options() {
    let emb = load();
    let rt = rt();
    let long = "word ".repeat(400);
    let err = rt.block_on(emb.embed(
        vec![long.clone()],
        EmbedOptions {
            truncate: Some(false),
            ..Default::default()
        },
    ));
    assert!(matches!(err, Err(EmbedError::Invalid { .. })), "{err:?}");
    let ok = rt
        .block_on(emb.embed(vec![long], EmbedOptions::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.prompt_tokens, 256);
    let raw = rt
        .block_on(emb.embed(
            vec!["not normalised".into()],
            EmbedOptions {
                normalize: Some(false),
                ..Default::default()
            },
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let norm: f32 = raw.vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 0.01,
        "normalize=false left norm {norm}"
    );
    assert!(matches!(
        rt.block_on(emb.embed(vec![], EmbedOptions::default())),
        Err(EmbedError::Invalid { .. })
    ));
    assert!(
        emb.check_model("sentence-transformers/all-MiniLM-L6-v2")
            .is_ok()
    );
    assert!(matches!(
        emb.check_model("gpt-4"),
        Err(EmbedError::UnknownModel(_))
    ));
}

#[test]
fn missing_model_is_a_readable_error() {
    let err = Embedder::load(&EmbedderConfig::new("/nonexistent/model")).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("/nonexistent/model") && msg.contains("fetch-models"),
        "{msg}"
    );
}
