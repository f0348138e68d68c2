//! The retriever contract, run against every backend: the embedded Qdrant
//! Edge backend always; the Qdrant-server backend when `QDRANT_URL` names a
//! reachable server (e.g. `QDRANT_URL=http://127.0.0.1:6334`), otherwise
//! those tests print why they were skipped. Each run uses its own collection
//! prefix and deletes what it created.

use std::sync::Arc;

use ragmesh_retriever::{
    Chunk, Condition, Distance, EdgeBackend, Fusion, MetaFilter, QdrantBackend, QdrantConfig,
    Retriever, RetrieverError, SearchQuery,
};
use serde_json::{Map, Value, json};

fn chunk(id: &str, doc: &str, text: &str, v: [f32; 4], meta: Value) -> Chunk {
    let metadata: Map<String, Value> = match meta {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Chunk {
        id: id.into(),
        doc_id: doc.into(),
        text: text.into(),
        vector: v.to_vec(),
        metadata,
    }
}

fn query(v: [f32; 4], k: usize) -> SearchQuery {
    SearchQuery {
        vector: v.to_vec(),
        text: String::new(),
        filter: MetaFilter::default(),
        top_k: k,
        score_threshold: None,
        fusion: Fusion::Dense,
    }
}

fn edge(dir: &std::path::Path) -> Retriever {
    Retriever::new(Arc::new(
        EdgeBackend::open(dir).unwrap_or_else(|e| panic!("open edge: {e}")),
    ))
}

/// A retriever on the Qdrant server at `QDRANT_URL`, or `None` (printed).
async fn qdrant(test: &str) -> Option<Retriever> {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("SKIPPED {test}: QDRANT_URL is not set (see docs/operations.md)");
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let cfg = QdrantConfig {
        url,
        api_key: std::env::var("QDRANT_API_KEY").ok(),
        prefix: format!("rmtest{nanos}"),
        ..QdrantConfig::default()
    };
    let b = QdrantBackend::connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("QDRANT_URL is set but: {e}"));
    Some(Retriever::new(Arc::new(b)))
}

fn ok<T>(r: Result<T, RetrieverError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn corpus() -> Vec<Chunk> {
    vec![
        chunk(
            "a#0",
            "a",
            "the quick brown fox",
            [1.0, 0.0, 0.0, 0.0],
            json!({"lang": "en", "year": 2020}),
        ),
        chunk(
            "a#1",
            "a",
            "jumps over the lazy dog",
            [0.9, 0.1, 0.0, 0.0],
            json!({"lang": "en", "year": 2021}),
        ),
        chunk(
            "b#0",
            "b",
            "der schnelle braune fuchs",
            [0.0, 1.0, 0.0, 0.0],
            json!({"lang": "de", "year": 2022}),
        ),
        chunk(
            "c#0",
            "c",
            "kubernetes schedules pods onto nodes",
            [0.0, 0.0, 1.0, 0.0],
            json!({"lang": "en", "year": 2023}),
        ),
    ]
}

async fn contract(r: Retriever) {
    // collections
    let info = ok(r.create_collection("t1", "docs", 4, Distance::Cosine).await);
    assert_eq!((info.dimensions, info.points), (4, 0));
    assert!(matches!(
        r.create_collection("t1", "docs", 4, Distance::Cosine).await,
        Err(RetrieverError::AlreadyExists(_))
    ));
    for bad in ["", "a/b", "../x", "sp ace"] {
        assert!(matches!(
            r.create_collection("t1", bad, 4, Distance::Cosine).await,
            Err(RetrieverError::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        r.create_collection("t1", "zero", 0, Distance::Cosine).await,
        Err(RetrieverError::InvalidArgument(_))
    ));

    // upsert + count + describe
    assert_eq!(ok(r.upsert("t1", "docs", corpus(), true).await), 4);
    assert_eq!(ok(r.count("t1", "docs", MetaFilter::default()).await), 4);
    assert_eq!(ok(r.describe_collection("t1", "docs").await).points, 4);
    let listed = ok(r.list_collections("t1").await);
    assert_eq!(
        listed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["docs"]
    );

    // dense top-k, payload round trip, threshold
    let hits = ok(r
        .search("t1", "docs", query([1.0, 0.05, 0.0, 0.0], 2))
        .await);
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["a#0", "a#1"]
    );
    assert_eq!(hits[0].doc_id, "a");
    assert_eq!(hits[0].text, "the quick brown fox");
    assert_eq!(hits[0].metadata["year"], json!(2020));
    assert!(hits[0].score > hits[1].score);
    let mut q = query([1.0, 0.0, 0.0, 0.0], 10);
    q.score_threshold = Some(0.5);
    let hits = ok(r.search("t1", "docs", q).await);
    assert_eq!(hits.len(), 2, "threshold keeps only the two close chunks");

    // metadata filters: equality, one-of, range, must_not
    let mut q = query([1.0, 0.0, 0.0, 0.0], 10);
    q.filter.must.push(Condition::Equals {
        key: "lang".into(),
        value: json!("de"),
    });
    let hits = ok(r.search("t1", "docs", q).await);
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["b#0"]
    );
    let mut f = MetaFilter::default();
    f.must.push(Condition::Range {
        key: "year".into(),
        gt: None,
        gte: Some(2021.0),
        lt: Some(2023.0),
        lte: None,
    });
    assert_eq!(ok(r.count("t1", "docs", f).await), 2);
    let mut f = MetaFilter::default();
    f.must.push(Condition::AnyOf {
        key: "lang".into(),
        values: vec![json!("de"), json!("fr")],
    });
    assert_eq!(ok(r.count("t1", "docs", f).await), 1);
    let mut f = MetaFilter::default();
    f.must_not.push(Condition::Equals {
        key: "lang".into(),
        value: json!("en"),
    });
    assert_eq!(ok(r.count("t1", "docs", f).await), 1);

    // hybrid: BM25 finds the keyword match even when the dense vector points elsewhere
    let mut q = query([1.0, 0.0, 0.0, 0.0], 3);
    q.text = "kubernetes pods".into();
    q.fusion = Fusion::HybridRrf;
    let hits = ok(r.search("t1", "docs", q).await);
    assert!(
        hits.iter().any(|h| h.id == "c#0"),
        "hybrid lost the BM25 hit: {hits:?}"
    );
    let dense_only = ok(r.search("t1", "docs", query([1.0, 0.0, 0.0, 0.0], 2)).await);
    assert!(!dense_only.iter().any(|h| h.id == "c#0"));

    // re-upserting a document replaces all its chunks
    let replacement = vec![chunk(
        "a#0",
        "a",
        "a rewritten single chunk",
        [0.5, 0.5, 0.0, 0.0],
        json!({}),
    )];
    ok(r.upsert("t1", "docs", replacement, true).await);
    assert_eq!(ok(r.count("t1", "docs", MetaFilter::default()).await), 3);
    let hits = ok(r.search("t1", "docs", query([0.5, 0.5, 0.0, 0.0], 1)).await);
    assert_eq!(hits[0].text, "a rewritten single chunk");

    // delete a document
    assert_eq!(ok(r.delete_document("t1", "docs", "b").await), 1);
    assert_eq!(ok(r.delete_document("t1", "docs", "b").await), 0);
    assert_eq!(ok(r.count("t1", "docs", MetaFilter::default()).await), 2);

    // bad input: each an error, the collection still consistent afterwards
    let bad_dim = vec![Chunk {
        vector: vec![1.0; 5],
        ..corpus().remove(0)
    }];
    assert!(matches!(
        r.upsert("t1", "docs", bad_dim, false).await,
        Err(RetrieverError::InvalidArgument(_))
    ));
    let nan = vec![chunk("n#0", "n", "x", [f32::NAN, 0.0, 0.0, 0.0], json!({}))];
    assert!(matches!(
        r.upsert("t1", "docs", nan, false).await,
        Err(RetrieverError::InvalidArgument(_))
    ));
    let big: Vec<Chunk> = (0..ragmesh_retriever::MAX_BATCH + 1)
        .map(|i| chunk(&format!("x#{i}"), "x", "x", [1.0, 0.0, 0.0, 0.0], json!({})))
        .collect();
    assert!(matches!(
        r.upsert("t1", "docs", big, false).await,
        Err(RetrieverError::InvalidArgument(_))
    ));
    assert!(matches!(
        r.upsert("t1", "nope", corpus(), false).await,
        Err(RetrieverError::NotFound(_))
    ));
    assert!(matches!(
        r.search("t1", "docs", query([1.0, 0.0, 0.0, 0.0], 0)).await,
        Err(RetrieverError::InvalidArgument(_))
    ));
    let mut q = query([1.0, 0.0, 0.0, 0.0], 3);
    q.vector.push(1.0);
    assert!(matches!(
        r.search("t1", "docs", q).await,
        Err(RetrieverError::InvalidArgument(_))
    ));
    let mut f = MetaFilter::default();
    f.must.push(Condition::Equals {
        key: "lang".into(),
        value: json!({"$ne": 1}),
    });
    assert!(matches!(
        r.count("t1", "docs", f).await,
        Err(RetrieverError::InvalidArgument(_))
    ));
    assert_eq!(ok(r.count("t1", "docs", MetaFilter::default()).await), 2);

    // delete the collection
    ok(r.delete_collection("t1", "docs").await);
    assert!(matches!(
        r.describe_collection("t1", "docs").await,
        Err(RetrieverError::NotFound(_))
    ));
    assert!(matches!(
        r.delete_collection("t1", "docs").await,
        Err(RetrieverError::NotFound(_))
    ));
}

async fn tenancy(r: Retriever) {
    ok(r.create_collection("alice", "kb", 4, Distance::Cosine)
        .await);
    ok(r.upsert("alice", "kb", corpus(), true).await);
    // bob cannot see alice's collection at all
    assert!(matches!(
        r.describe_collection("bob", "kb").await,
        Err(RetrieverError::NotFound(_))
    ));
    assert!(matches!(
        r.search("bob", "kb", query([1.0, 0.0, 0.0, 0.0], 5)).await,
        Err(RetrieverError::NotFound(_))
    ));
    assert!(matches!(
        r.delete_document("bob", "kb", "a").await,
        Err(RetrieverError::NotFound(_))
    ));
    assert!(matches!(
        r.delete_collection("bob", "kb").await,
        Err(RetrieverError::NotFound(_))
    ));
    assert!(ok(r.list_collections("bob").await).is_empty());
    // bob's own collection of the same name is a different one
    ok(r.create_collection("bob", "kb", 4, Distance::Cosine).await);
    ok(r.upsert(
        "bob",
        "kb",
        vec![chunk(
            "a#0",
            "a",
            "bob's text",
            [1.0, 0.0, 0.0, 0.0],
            json!({"tenant": "alice"}),
        )],
        true,
    )
    .await);
    // a filter naming alice's tenant only addresses bob's own metadata
    let mut f = MetaFilter::default();
    f.must.push(Condition::Equals {
        key: "tenant".into(),
        value: json!("alice"),
    });
    assert_eq!(ok(r.count("bob", "kb", f).await), 1);
    let hits = ok(r.search("bob", "kb", query([1.0, 0.0, 0.0, 0.0], 10)).await);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].text, "bob's text");
    // bob deleting doc "a" leaves alice's doc "a" alone
    assert_eq!(ok(r.delete_document("bob", "kb", "a").await), 1);
    assert_eq!(ok(r.count("alice", "kb", MetaFilter::default()).await), 4);
    ok(r.delete_collection("bob", "kb").await);
    assert_eq!(ok(r.count("alice", "kb", MetaFilter::default()).await), 4);
    ok(r.delete_collection("alice", "kb").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_contract() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    contract(edge(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_tenancy() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    tenancy(edge(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_contract() {
    if let Some(r) = qdrant("qdrant_contract").await {
        contract(r).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_tenancy() {
    if let Some(r) = qdrant("qdrant_tenancy").await {
        tenancy(r).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_reopens_with_data_and_serves_concurrently() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    {
        let r = edge(dir.path());
        ok(r.create_collection("t", "kb", 4, Distance::Cosine).await);
        // concurrent upserts and searches on one shard (flush/lock safety)
        let mut tasks = Vec::new();
        for w in 0..8 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    let id = format!("w{w}#{i}");
                    let c = chunk(
                        &id,
                        &format!("w{w}"),
                        "text",
                        [1.0, w as f32, i as f32, 0.5],
                        json!({}),
                    );
                    ok(r.upsert("t", "kb", vec![c], false).await);
                    ok(r.search("t", "kb", query([1.0, 0.0, 0.0, 0.0], 3)).await);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(ok(r.count("t", "kb", MetaFilter::default()).await), 160);
    }
    let r = edge(dir.path());
    assert_eq!(ok(r.count("t", "kb", MetaFilter::default()).await), 160);
    let info = ok(r.describe_collection("t", "kb").await);
    assert_eq!((info.dimensions, info.distance), (4, Distance::Cosine));
}
