//! gRPC transport: `ragmesh.v1.Retriever` over the core. Converts proto
//! messages to core types with [`crate::wire`] (malformed JSON metadata and
//! filters are INVALID_ARGUMENT) and maps `RetrieverError` once.

use ragmesh_proto::v1 as pb;
use ragmesh_proto::v1::retriever_server::{Retriever as RetrieverRpc, RetrieverServer};
use serde_json::Value;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::RetrieverError;
use crate::retriever::Retriever;
use crate::types::{Chunk, Fusion, SearchQuery};
use crate::wire::{distance_from, filter_from, info_to, invalid, metadata_from};

pub struct RetrieverGrpc {
    core: Retriever,
}

impl RetrieverGrpc {
    pub fn server(core: Retriever, max_message_bytes: usize) -> RetrieverServer<Self> {
        RetrieverServer::new(Self { core })
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(usize::MAX)
    }
}

impl From<RetrieverError> for Status {
    fn from(e: RetrieverError) -> Self {
        let msg = e.to_string();
        match e {
            RetrieverError::InvalidArgument(_) => Status::invalid_argument(msg),
            RetrieverError::NotFound(_) => Status::not_found(msg),
            RetrieverError::AlreadyExists(_) => Status::already_exists(msg),
            RetrieverError::Conflict(_) => Status::aborted(msg),
            RetrieverError::Unavailable(_) => Status::unavailable(msg),
            RetrieverError::Backend(_) => Status::internal(msg),
        }
    }
}

fn count_request(method: &'static str, status: &Result<impl Sized, Status>) {
    let code = match status {
        Ok(_) => "Ok".to_owned(),
        Err(s) => format!("{:?}", s.code()),
    };
    metrics::counter!(crate::metrics::REQUESTS, "method" => method, "code" => code).increment(1);
}

#[tonic::async_trait]
impl RetrieverRpc for RetrieverGrpc {
    async fn create_collection(
        &self,
        request: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let r = request.into_inner();
        let out = async {
            let distance = distance_from(r.distance)?;
            let info = self
                .core
                .create_collection(&r.tenant, &r.name, r.dimensions as usize, distance)
                .await?;
            Ok(Response::new(info_to(info)))
        }
        .await;
        count_request("CreateCollection", &out);
        out
    }

    async fn list_collections(
        &self,
        request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .core
            .list_collections(&r.tenant)
            .await
            .map(|c| {
                Response::new(pb::ListCollectionsResponse {
                    collections: c.into_iter().map(info_to).collect(),
                })
            })
            .map_err(Status::from);
        count_request("ListCollections", &out);
        out
    }

    async fn describe_collection(
        &self,
        request: Request<pb::DescribeCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let r = request.into_inner();
        let out = self
            .core
            .describe_collection(&r.tenant, &r.name)
            .await
            .map(|i| Response::new(info_to(i)))
            .map_err(Status::from);
        count_request("DescribeCollection", &out);
        out
    }

    async fn delete_collection(
        &self,
        request: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .core
            .delete_collection(&r.tenant, &r.name)
            .await
            .map(|()| Response::new(pb::DeleteCollectionResponse { deleted: true }))
            .map_err(Status::from);
        count_request("DeleteCollection", &out);
        out
    }

    async fn upsert(
        &self,
        request: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        let r = request.into_inner();
        let out = async {
            let chunks = r
                .chunks
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    Ok(Chunk {
                        metadata: metadata_from(&c.metadata_json, &format!("chunks[{i}]"))?,
                        id: c.id,
                        doc_id: c.doc_id,
                        text: c.text,
                        vector: c.vector,
                    })
                })
                .collect::<Result<Vec<_>, Status>>()?;
            let n = self
                .core
                .upsert(&r.tenant, &r.collection, chunks, r.replace_documents)
                .await?;
            Ok(Response::new(pb::UpsertResponse {
                upserted: u32::try_from(n).unwrap_or(u32::MAX),
            }))
        }
        .await;
        count_request("Upsert", &out);
        out
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let r = request.into_inner();
        let span = tracing::info_span!(
            "search",
            otel.name = %format!("search {}", r.collection),
            db.collection.name = %r.collection,
            rag.top_k = i64::from(r.top_k),
            rag.hybrid = r.fusion == pb::Fusion::HybridRrf as i32,
            rag.hits = tracing::field::Empty,
        );
        let out = async {
            let fusion = match pb::Fusion::try_from(r.fusion) {
                Ok(pb::Fusion::Unspecified | pb::Fusion::Dense) => Fusion::Dense,
                Ok(pb::Fusion::HybridRrf) => Fusion::HybridRrf,
                Err(_) => return Err(invalid(format!("unknown fusion {}", r.fusion))),
            };
            let query = SearchQuery {
                vector: r.vector,
                text: r.query_text,
                filter: filter_from(r.filter)?,
                top_k: r.top_k as usize,
                score_threshold: r.score_threshold,
                fusion,
            };
            let hits = self.core.search(&r.tenant, &r.collection, query).await?;
            tracing::Span::current().record("rag.hits", hits.len() as i64);
            Ok(Response::new(pb::SearchResponse {
                chunks: hits
                    .into_iter()
                    .map(|h| pb::ScoredChunk {
                        id: h.id,
                        doc_id: h.doc_id,
                        text: h.text,
                        metadata_json: Value::Object(h.metadata).to_string(),
                        score: h.score,
                    })
                    .collect(),
            }))
        }
        .instrument(span.clone())
        .await;
        if let Err(s) = &out {
            ragmesh_telemetry::otel::genai::error(
                &span,
                ragmesh_telemetry::otel::genai::grpc_code(s.code()),
            );
        }
        count_request("Search", &out);
        out
    }

    async fn delete_document(
        &self,
        request: Request<pb::DeleteDocumentRequest>,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .core
            .delete_document(&r.tenant, &r.collection, &r.doc_id)
            .await
            .map(|deleted| Response::new(pb::DeleteDocumentResponse { deleted }))
            .map_err(Status::from);
        count_request("DeleteDocument", &out);
        out
    }

    async fn count(
        &self,
        request: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let r = request.into_inner();
        let out = async {
            let filter = filter_from(r.filter)?;
            let count = self.core.count(&r.tenant, &r.collection, filter).await?;
            Ok(Response::new(pb::CountResponse { count }))
        }
        .await;
        count_request("Count", &out);
        out
    }
}
