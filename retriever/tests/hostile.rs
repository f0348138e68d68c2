//! Races and filter values found by probing the retriever as an attacker
//! would (issue 23): concurrent creates and deletes of one name, numbers
//! of mixed kinds in filters, type clashes at ingest. Each failed before
//! its fix.

use std::sync::Arc;

use ragmesh_retriever::{
    Chunk, Condition, Distance, EdgeBackend, MetaFilter, Retriever, RetrieverError,
};
use serde_json::{Map, Value, json};

fn edge(dir: &std::path::Path) -> Retriever {
    Retriever::new(Arc::new(
        EdgeBackend::open(dir).unwrap_or_else(|e| panic!("open edge: {e}")),
    ))
}

fn chunk(id: &str, meta: Value) -> Chunk {
    let metadata: Map<String, Value> = match meta {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Chunk {
        id: id.into(),
        doc_id: id.into(),
        text: format!("text of {id}"),
        vector: vec![1.0, 0.0, 0.0, 0.0],
        metadata,
    }
}

fn must(c: Condition) -> MetaFilter {
    MetaFilter {
        must: vec![c],
        must_not: vec![],
    }
}

fn eq(key: &str, value: Value) -> MetaFilter {
    must(Condition::Equals {
        key: key.into(),
        value,
    })
}

/// No error text may name a file: the data directory is the operator's.
fn assert_no_path(e: &RetrieverError, dir: &std::path::Path) {
    let text = e.to_string();
    assert!(
        !text.contains(&*dir.to_string_lossy()) && !text.contains("/wal"),
        "error names a path: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_name_give_one_success_and_conflicts() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let r = edge(dir.path());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(
                async move { r.create_collection("t", "race0", 4, Distance::Cosine).await },
            )
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap_or_else(|e| panic!("{e}")) {
            Ok(_) => created += 1,
            Err(e @ (RetrieverError::AlreadyExists(_) | RetrieverError::Conflict(_))) => {
                assert_no_path(&e, dir.path());
                refused += 1;
            }
            Err(e) => panic!("a racing create failed instead of being refused: {e}"),
        }
    }
    assert_eq!((created, refused), (1, 19));
    let info = r.describe_collection("t", "race0").await;
    assert_eq!(info.map(|i| i.points).ok(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_racing_deletes_end_in_ok_not_found_or_conflict() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let r = edge(dir.path());
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    r.create_collection("t", "race1", 4, Distance::Cosine)
                        .await
                        .map(|_| ())
                } else {
                    r.delete_collection("t", "race1").await
                }
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap_or_else(|e| panic!("{e}")) {
            Ok(()) => ok += 1,
            Err(
                e @ (RetrieverError::AlreadyExists(_)
                | RetrieverError::Conflict(_)
                | RetrieverError::NotFound(_)),
            ) => assert_no_path(&e, dir.path()),
            Err(e) => panic!("a create/delete race failed instead of being refused: {e}"),
        }
    }
    assert!(ok >= 1, "at least the first create succeeds");
    // whatever the interleaving, the name ends usable: delete if there,
    // then create and write
    let _ = r.delete_collection("t", "race1").await;
    r.create_collection("t", "race1", 4, Distance::Cosine)
        .await
        .unwrap_or_else(|e| panic!("create after the race: {e}"));
    let n = r
        .upsert("t", "race1", vec![chunk("a", json!({}))], true)
        .await;
    assert_eq!(n.ok(), Some(1));
    // and a restart finds it, with no staging directory left behind
    drop(r);
    let r = edge(dir.path());
    assert_eq!(
        r.count("t", "race1", MetaFilter::default()).await.ok(),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_and_floats_of_one_key_filter_together() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let r = edge(dir.path());
    let ok = |e: Result<usize, RetrieverError>| e.unwrap_or_else(|e| panic!("{e}"));
    ok(r.create_collection("t", "nums", 4, Distance::Cosine)
        .await
        .map(|_| 0));
    // the first value seen is an integer: the index must still hold floats
    ok(
        r.upsert("t", "nums", vec![chunk("one", json!({"num": 1}))], true)
            .await,
    );
    ok(
        r.upsert("t", "nums", vec![chunk("two5", json!({"num": 2.5}))], true)
            .await,
    );
    ok(r.upsert(
        "t",
        "nums",
        vec![chunk("big", json!({"big": u64::MAX}))],
        true,
    )
    .await);
    let count = |f: MetaFilter| {
        let r = r.clone();
        async move {
            r.count("t", "nums", f)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let range = |gte: f64| {
        must(Condition::Range {
            key: "num".into(),
            gt: None,
            gte: Some(gte),
            lt: None,
            lte: None,
        })
    };
    assert_eq!(count(range(2.0)).await, 1, "gte 2 finds the 2.5");
    assert_eq!(count(range(0.5)).await, 2);
    assert_eq!(count(eq("num", json!(2.5))).await, 1, "float equality");
    assert_eq!(count(eq("num", json!(1))).await, 1, "integer equality");
    assert_eq!(count(eq("num", json!(1.0))).await, 1, "1.0 is 1");
    let any = must(Condition::AnyOf {
        key: "num".into(),
        values: vec![json!(1), json!(2.5), json!(7)],
    });
    assert_eq!(count(any).await, 2, "one-of over mixed numbers");
    assert_eq!(
        count(eq("big", json!(u64::MAX))).await,
        1,
        "a u64 that ingest stored can be filtered on"
    );
    let not_one = MetaFilter {
        must: vec![],
        must_not: vec![Condition::Equals {
            key: "num".into(),
            value: json!(1),
        }],
    };
    assert_eq!(count(not_one).await, 2, "must_not on a number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_of_another_kind_under_an_indexed_key_is_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let r = edge(dir.path());
    r.create_collection("t", "kinds", 4, Distance::Cosine)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = r
        .upsert("t", "kinds", vec![chunk("a", json!({"lang": "en"}))], true)
        .await;
    assert_eq!(first.ok(), Some(1));
    match r
        .upsert("t", "kinds", vec![chunk("b", json!({"lang": 5}))], true)
        .await
    {
        Err(RetrieverError::InvalidArgument(m)) => {
            assert!(m.contains("metadata.lang") && m.contains("strings"), "{m}")
        }
        other => panic!("expected a 400 naming the key, got {other:?}"),
    }
    // within one batch too, and nothing of the batch is written
    let batch = vec![
        chunk("c", json!({"flag": true})),
        chunk("d", json!({"flag": "yes"})),
    ];
    assert!(matches!(
        r.upsert("t", "kinds", batch, true).await,
        Err(RetrieverError::InvalidArgument(_))
    ));
    assert_eq!(
        r.count("t", "kinds", MetaFilter::default()).await.ok(),
        Some(1)
    );
}
