//! The real `ragmesh-retriever` binary: gRPC contract, bad input, and a
//! crash test (SIGKILL mid-ingest, restart on the same data directory,
//! every acknowledged point back intact).

use std::time::{Duration, Instant};

use ragmesh_proto::v1 as pb;
use ragmesh_proto::v1::retriever_client::RetrieverClient;
use ragmesh_tests::Service;
use ragmesh_tests::services::retriever;
use tonic::transport::Channel;

const DIMS: usize = 8;

async fn client(svc: &Service) -> RetrieverClient<Channel> {
    RetrieverClient::connect(svc.grpc_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A deterministic vector for chunk `i` of batch `b`, unique per chunk.
fn vector(b: usize, i: usize) -> Vec<f32> {
    (0..DIMS)
        .map(|d| {
            ((b * 131 + i * 17 + d * 7) % 97) as f32 / 97.0 + if d == i % DIMS { 1.0 } else { 0.0 }
        })
        .collect()
}

fn batch(b: usize, n: usize) -> pb::UpsertRequest {
    pb::UpsertRequest {
        tenant: "t".into(),
        collection: "crash".into(),
        chunks: (0..n)
            .map(|i| pb::Chunk {
                id: format!("b{b}#{i}"),
                doc_id: format!("b{b}"),
                text: format!("batch {b} chunk {i}"),
                vector: vector(b, i),
                metadata_json: format!("{{\"batch\": {b}}}"),
            })
            .collect(),
        replace_documents: false,
    }
}

fn eq_filter(key: &str, json: &str) -> Option<pb::Filter> {
    Some(pb::Filter {
        must: vec![pb::Condition {
            key: key.into(),
            r#match: Some(pb::condition::Match::EqualsJson(json.into())),
        }],
        must_not: vec![],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_upserts_survive_sigkill() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    const PER_BATCH: usize = 50;
    let mut svc = retriever(data.path());
    let mut c = client(&svc).await;
    c.create_collection(pb::CreateCollectionRequest {
        tenant: "t".into(),
        name: "crash".into(),
        dimensions: DIMS as u32,
        distance: pb::Distance::Cosine as i32,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Upsert in a loop; kill -9 at a pseudo-random moment 0.3-1.5 s in.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let kill_at = Duration::from_millis(300 + u64::from(nanos % 1200));
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        let started = Instant::now();
        for b in 0..10_000 {
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
            match c.upsert(batch(b, PER_BATCH)).await {
                Ok(_) => acked.push(b),
                Err(_) => break, // the server is gone
            }
        }
        acked
    });
    tokio::time::sleep(kill_at).await;
    svc.child.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}")); // SIGKILL on Unix
    let _ = svc.child.wait();
    let acked = writer.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the kill at {kill_at:?}"
    );
    drop(svc);

    let svc = retriever(data.path());
    let mut c = client(&svc).await;
    let total = c
        .count(pb::CountRequest {
            tenant: "t".into(),
            collection: "crash".into(),
            filter: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .count;
    let acked_points = (acked.len() * PER_BATCH) as u64;
    eprintln!(
        "kill at {kill_at:?}: {acked_points} points acknowledged, {total} present after restart"
    );
    // The batch in flight at the kill may or may not have been applied.
    assert!(
        total >= acked_points && total <= acked_points + PER_BATCH as u64,
        "{total} points after restart, {acked_points} acknowledged"
    );
    for &b in &acked {
        let n = c
            .count(pb::CountRequest {
                tenant: "t".into(),
                collection: "crash".into(),
                filter: eq_filter("batch", &b.to_string()),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner()
            .count;
        assert_eq!(n, PER_BATCH as u64, "batch {b} incomplete after restart");
    }
    // intact: exact-vector search finds the chunk with its text and metadata
    for &b in acked.iter().step_by((acked.len() / 10).max(1)) {
        let i = b % PER_BATCH;
        let hits = c
            .search(pb::SearchRequest {
                tenant: "t".into(),
                collection: "crash".into(),
                vector: vector(b, i),
                top_k: 1,
                filter: eq_filter("batch", &b.to_string()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner()
            .chunks;
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].id, format!("b{b}#{i}"));
        assert_eq!(hits[0].text, format!("batch {b} chunk {i}"));
        assert!(hits[0].metadata_json.contains(&format!("\"batch\":{b}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bad_input_gets_status_and_service_keeps_serving() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let svc = retriever(data.path());
    let mut c = client(&svc).await;
    let create = |name: &str, dims: u32| pb::CreateCollectionRequest {
        tenant: "t".into(),
        name: name.into(),
        dimensions: dims,
        distance: 0,
    };
    c.create_collection(create("kb", DIMS as u32))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let code =
        |r: Result<tonic::Response<pb::CollectionInfo>, tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(c.create_collection(create("kb", DIMS as u32)).await),
        Some(tonic::Code::AlreadyExists)
    );
    assert_eq!(
        code(c.create_collection(create("../etc", 8)).await),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(c.create_collection(create("zero", 0)).await),
        Some(tonic::Code::InvalidArgument)
    );
    let mut bad_distance = create("d", 8);
    bad_distance.distance = 99;
    assert_eq!(
        code(c.create_collection(bad_distance).await),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        c.describe_collection(pb::DescribeCollectionRequest {
            tenant: "t".into(),
            name: "nope".into()
        })
        .await
        .err()
        .map(|s| s.code()),
        Some(tonic::Code::NotFound)
    );

    let upsert_code = |r: Result<tonic::Response<pb::UpsertResponse>, tonic::Status>| {
        r.err().map(|s| {
            assert!(!s.message().is_empty());
            s.code()
        })
    };
    let mut b = batch(0, 3);
    b.collection = "kb".into();
    let mut wrong_dim = b.clone();
    wrong_dim.chunks[1].vector.push(0.0);
    assert_eq!(
        upsert_code(c.upsert(wrong_dim).await),
        Some(tonic::Code::InvalidArgument)
    );
    let mut nan = b.clone();
    nan.chunks[0].vector[0] = f32::NAN;
    assert_eq!(
        upsert_code(c.upsert(nan).await),
        Some(tonic::Code::InvalidArgument)
    );
    let mut bad_meta = b.clone();
    bad_meta.chunks[0].metadata_json = "{not json".into();
    assert_eq!(
        upsert_code(c.upsert(bad_meta).await),
        Some(tonic::Code::InvalidArgument)
    );
    let mut oversized = batch(1, ragmesh_retriever::MAX_BATCH + 1);
    oversized.collection = "kb".into();
    assert_eq!(
        upsert_code(c.upsert(oversized).await),
        Some(tonic::Code::InvalidArgument)
    );
    let mut unknown = b.clone();
    unknown.collection = "missing".into();
    assert_eq!(
        upsert_code(c.upsert(unknown).await),
        Some(tonic::Code::NotFound)
    );

    let search = |filter| pb::SearchRequest {
        tenant: "t".into(),
        collection: "kb".into(),
        vector: vector(0, 0),
        top_k: 3,
        filter,
        ..Default::default()
    };
    let malformed = Some(pb::Filter {
        must: vec![pb::Condition {
            key: "batch".into(),
            r#match: None,
        }],
        must_not: vec![],
    });
    let err = c.search(search(malformed)).await.err().map(|s| s.code());
    assert_eq!(err, Some(tonic::Code::InvalidArgument));
    let err = c
        .search(search(eq_filter("batch", "{oops")))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(err, Some(tonic::Code::InvalidArgument));

    // still serving, data consistent: nothing from the rejected calls landed
    c.upsert(b).await.unwrap_or_else(|e| panic!("{e}"));
    let n = c
        .count(pb::CountRequest {
            tenant: "t".into(),
            collection: "kb".into(),
            filter: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .count;
    assert_eq!(n, 3);
    let hits = c
        .search(search(eq_filter("batch", "0")))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(hits.chunks.first().map(|h| h.id.as_str()), Some("b0#0"));

    let metrics = reqwest::get(format!("{}/metrics", svc.http_url()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    for name in [
        "ragmesh_retriever_requests_total",
        "ragmesh_retriever_search_duration_seconds_bucket",
        "ragmesh_retriever_upsert_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
}
