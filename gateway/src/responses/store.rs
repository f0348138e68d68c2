//! Stored responses: the response object and its input items, one record
//! per response in the retriever's object store (durable before the
//! response is acknowledged, per tenant, shared by every gateway replica,
//! as files and vector stores are). A record past the retention
//! (`--response-retention-days`) reads as absent and is deleted when
//! next read.

use serde::{Deserialize, Serialize};

use super::types::{InputItem, OutputItem, ResponseObject};
use crate::error::{ApiError, ApiResult, bad_request, not_found};
use crate::files::ids;
use crate::files::store::{self, Objects};
use ragmesh_retriever::objects::Expect;

pub const RESPONSE: &str = "response";

/// Responses a conversation may chain through `previous_response_id`.
pub const MAX_CHAIN: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResponse {
    pub response: ResponseObject,
    /// This response's own input (not its predecessors').
    pub input: Vec<InputItem>,
    /// Unix seconds after which the record is gone.
    pub expires_at: u64,
}

pub fn not_found_response(id: &str) -> ApiError {
    not_found(
        format!(
            "No response found with id '{}'",
            id.chars().take(80).collect::<String>()
        ),
        Some("response_id"),
        "not_found",
    )
}

pub async fn put(o: &Objects, tenant: &str, r: &StoredResponse) -> ApiResult<()> {
    store::put(o, tenant, RESPONSE, &r.response.id, r, Expect::Any)
        .await
        .map(|_| ())
}

/// The record, or a 404 (unknown, another tenant's, deleted, expired).
pub async fn get(o: &Objects, tenant: &str, id: &str) -> ApiResult<StoredResponse> {
    if !ids::plausible(id) {
        return Err(not_found_response(id));
    }
    let Some(r) = store::get::<StoredResponse>(o, tenant, RESPONSE, id).await? else {
        return Err(not_found_response(id));
    };
    if r.value.expires_at <= crate::state::unix_now() {
        let _ = store::delete(o, tenant, RESPONSE, id).await;
        return Err(not_found_response(id));
    }
    Ok(r.value)
}

pub async fn delete(o: &Objects, tenant: &str, id: &str) -> ApiResult<()> {
    get(o, tenant, id).await?;
    if store::delete(o, tenant, RESPONSE, id).await? {
        Ok(())
    } else {
        Err(not_found_response(id))
    }
}

/// The conversation before a response: the input and output messages of
/// `previous` and of each response it continues, oldest first, as
/// `(role, text)` turns. A missing link is a 404 naming
/// `previous_response_id`.
pub async fn history(
    o: &Objects,
    tenant: &str,
    previous: &str,
) -> ApiResult<Vec<(String, String)>> {
    let mut chain = Vec::new();
    let mut next = Some(previous.to_owned());
    while let Some(id) = next {
        if chain.len() >= MAX_CHAIN {
            return Err(bad_request(
                format!("the conversation chains more than {MAX_CHAIN} responses; start a new one"),
                "previous_response_id",
            ));
        }
        let r = get(o, tenant, &id).await.map_err(|e| match e {
            ApiError::NotFound { .. } => not_found(
                format!(
                    "Previous response with id '{}' not found",
                    id.chars().take(80).collect::<String>()
                ),
                Some("previous_response_id"),
                "not_found",
            ),
            other => other,
        })?;
        next = r.response.previous_response_id.clone();
        chain.push(r);
    }
    let mut turns = Vec::new();
    for r in chain.iter().rev() {
        for item in &r.input {
            turns.push((role(&item.role).to_owned(), item.text()));
        }
        for out in &r.response.output {
            if let OutputItem::Message(m) = out {
                let text: String = m.content.iter().map(|c| c.text.as_str()).collect();
                turns.push(("assistant".to_owned(), text));
            }
        }
    }
    Ok(turns)
}

/// The chat role a Responses role is answered as.
pub fn role(r: &str) -> &str {
    match r {
        "developer" | "system" => "system",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::responses::types::{InputPart, TextConfig, TextFormat};

    fn stored(id: &str, previous: Option<&str>, expires_at: u64) -> StoredResponse {
        let response = ResponseObject {
            id: id.into(),
            object: "response".into(),
            created_at: 1,
            status: "completed".into(),
            completed_at: Some(1),
            error: None,
            incomplete_details: None,
            instructions: None,
            max_output_tokens: None,
            model: "m".into(),
            output: vec![OutputItem::Message(super::super::types::OutputMessage {
                id: format!("msg_{id}"),
                role: "assistant".into(),
                status: "completed".into(),
                content: vec![super::super::types::OutputText::new(
                    format!("answer {id}"),
                    Vec::new(),
                )],
            })],
            parallel_tool_calls: true,
            previous_response_id: previous.map(str::to_owned),
            store: true,
            temperature: None,
            top_p: None,
            text: TextConfig {
                format: TextFormat::of(&Default::default()),
            },
            tool_choice: "auto".into(),
            tools: Vec::new(),
            truncation: "disabled".into(),
            usage: None,
            metadata: serde_json::Map::new(),
            rag: None,
        };
        StoredResponse {
            response,
            input: vec![InputItem {
                id: format!("in_{id}"),
                kind: "message".into(),
                role: "developer".into(),
                status: "completed".into(),
                content: vec![InputPart {
                    kind: "input_text".into(),
                    text: format!("question {id}"),
                    annotations: None,
                    logprobs: None,
                }],
            }],
            expires_at,
        }
    }

    #[tokio::test]
    async fn chains_expiry_and_tenants() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let disk = ragmesh_retriever::objects::DiskObjects::open(dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        let o: Objects = Arc::new(disk);
        let later = crate::state::unix_now() + 3600;
        for r in [
            stored("resp_a", None, later),
            stored("resp_b", Some("resp_a"), later),
            stored("resp_old", None, 5),
        ] {
            put(&o, "t1", &r).await.unwrap_or_else(|e| panic!("{e}"));
        }
        // oldest first, roles as the chat sees them
        let turns = history(&o, "t1", "resp_b").await.unwrap_or_default();
        let want: Vec<(String, String)> = [
            ("system", "question resp_a"),
            ("assistant", "answer resp_a"),
            ("system", "question resp_b"),
            ("assistant", "answer resp_b"),
        ]
        .iter()
        .map(|(r, t)| ((*r).to_owned(), (*t).to_owned()))
        .collect();
        assert_eq!(turns, want);
        // past its retention: absent, and gone from the store
        assert!(matches!(
            get(&o, "t1", "resp_old").await,
            Err(ApiError::NotFound { .. })
        ));
        let raw = store::get::<StoredResponse>(&o, "t1", RESPONSE, "resp_old").await;
        assert!(matches!(raw, Ok(None)));
        // another tenant: a 404 naming previous_response_id
        let e = history(&o, "t2", "resp_b").await.err();
        assert_eq!(
            e.as_ref().and_then(ApiError::param),
            Some("previous_response_id")
        );
        // a deleted link breaks the chain with a 404
        delete(&o, "t1", "resp_a")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            history(&o, "t1", "resp_b").await,
            Err(ApiError::NotFound { .. })
        ));
    }
}
