//! `/v1/responses`: create (JSON or server-sent events), retrieve, delete,
//! and the input items of a stored response. An external upstream model
//! is passed through as sent. The core is [`crate::responses`].

use std::convert::Infallible;

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Json, Response};
use futures::StreamExt;

use super::front::{self, Incoming};
use super::paging::{Params, paging, params};
use crate::auth::Caller;
use crate::error::{ApiResult, bad_request};
use crate::files::uploads::page;
use crate::metrics as m;
use crate::responses::request::CreateResponse;
use crate::responses::types::{Deleted, InputItemList, Sequenced};
use crate::responses::{run, store};
use crate::state::{AppState, Target};
use crate::upstream::{Endpoint, forward};

const ROUTE: &str = "responses";

pub async fn create(State(st): State<AppState>, req: Request) -> Response {
    const LARGE: [&str; 6] = [
        "input",
        "instructions",
        "tools",
        "metadata",
        "include",
        "text",
    ];
    let r = front::handle(&st, req, "chat", &LARGE, |i| create_inner(&st, i)).await;
    m::reply(ROUTE, r)
}

async fn create_inner(st: &AppState, i: Incoming) -> ApiResult<Response> {
    if let Target::Upstream(up) = &i.target {
        let stream = crate::fields::opt_bool(&i.body, "stream")?.unwrap_or(false);
        return forward(up, Endpoint::Responses, &i.body, stream, &i.request_id).await;
    }
    let (id, item_id) = run::new_ids();
    let mut req = CreateResponse::parse(&i.body, item_id)?;
    req.session = i.session;
    // the parsed request is all that is needed from here: the body's
    // budget is released
    drop(i.body);
    let stream = req.params.stream;
    let pending = run::start(st, i.tenant, i.model, i.target, id, req, i.started, i.span).await?;
    if !stream {
        return Ok(Json(run::collect(pending).await?).into_response());
    }
    // a refusal before the first token is still an HTTP status
    let mut pending = pending;
    pending.first_event().await?;
    let mut seq = 0u64;
    let events = run::events(pending, st.lifecycle.clone()).map(move |ev| {
        let n = seq;
        seq += 1;
        let data = serde_json::to_string(&Sequenced {
            event: &ev,
            sequence_number: n,
        })
        .unwrap_or_default();
        Ok::<_, Infallible>(Sse::default().event(ev.name()).data(data))
    });
    Ok(axum::response::Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    let r = async {
        let p = params(q)?;
        if p.get("stream").is_some_and(|s| s == "true") {
            return Err(bad_request(
                "streaming a stored response again is not supported",
                "stream",
            ));
        }
        let rec = store::get(&st.objects, &caller.tenant, &id).await?;
        Ok(Json(rec.response))
    }
    .await;
    m::reply(ROUTE, r)
}

pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        store::delete(&st.objects, &caller.tenant, &id).await?;
        Ok(Json(Deleted {
            id,
            object: "response",
            deleted: true,
        }))
    }
    .await;
    m::reply(ROUTE, r)
}

pub async fn input_items(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    let r = async {
        let p = params(q)?;
        let paging = paging(&p, 20, 100)?;
        let rec = store::get(&st.objects, &caller.tenant, &id).await?;
        let l = page(rec.input, |i| &i.id, &paging);
        Ok(Json(InputItemList {
            object: "list",
            first_id: l.first_id.unwrap_or_default(),
            last_id: l.last_id.unwrap_or_default(),
            data: l.data,
            has_more: l.has_more,
        }))
    }
    .await;
    m::reply(ROUTE, r)
}
