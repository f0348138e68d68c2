//! The query string of OpenAI's list endpoints: `limit`, `after`,
//! `before`, `order`, plus the endpoint's own filters.

use std::collections::HashMap;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;

use crate::error::{ApiResult, bad_request};
use crate::files::uploads::Paging;

pub type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The query's parameters (a malformed query string is a 400).
pub fn params(q: Params) -> ApiResult<HashMap<String, String>> {
    q.map(|Query(m)| m)
        .map_err(|e| bad_request(format!("invalid query string: {}", e.body_text()), "query"))
}

/// `limit` in `1..=max` (default `default`), `order` `asc` or `desc`
/// (default `desc`, newest first), `after` / `before` cursors.
pub fn paging(p: &HashMap<String, String>, default: usize, max: usize) -> ApiResult<Paging> {
    let limit = match p.get("limit") {
        None => default,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                bad_request(format!("limit must be an integer from 1 to {max}"), "limit")
            })?,
    };
    let ascending = match p.get("order").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(bad_request("order must be 'asc' or 'desc'", "order")),
    };
    Ok(Paging {
        limit,
        after: p.get("after").filter(|s| !s.is_empty()).cloned(),
        before: p.get("before").filter(|s| !s.is_empty()).cloned(),
        ascending,
    })
}
