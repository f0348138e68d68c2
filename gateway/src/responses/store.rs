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
