//! Creating a response. The conversation (the stored predecessors'
//! turns, `instructions`, the new input) goes through the same
//! [`crate::answer::answer`] as chat completions, with a `file_search`
//! tool as its retrieval (every listed vector store searched, hits merged
//! by score). Its event stream becomes the Response object ([`collect`])
//! or the Responses stream events ([`events`]). A stored response is
//! written before it is acknowledged: before the JSON body is sent, or
//! before `response.completed`.
//!
//! Citations: each chunk in the prompt is numbered as the template shows
//! it (`[1]`, `[2]`, …); a marker the model writes becomes a
//! `file_citation` annotation at that character position. When the model
//! writes none, every file the prompt drew on is cited once at the end of
//! the text, best-ranked first, so the answer still names its sources.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::BoxStream;
use ragmesh_llm_runner::{Event, FinishReason};
use ragmesh_retriever::ScoredChunk;

use super::request::CreateResponse;
use super::store::{self, StoredResponse};
use super::types::{
    FileCitation, FileSearchCall, IncompleteDetails, OutputItem, OutputMessage, OutputText,
    ResponseError, ResponseObject, SearchResult, StreamEvent, TextConfig, TextFormat, Usage,
};
use crate::answer::{AnswerRequest, Plan, Question};
use crate::error::{ApiError, ApiResult, bad_request, from_gen, not_found};
use crate::files::{ids, stores, uploads};
use crate::metrics as m;
use crate::openai::output::{Kind, Meta};
use crate::rag::profile::RagSpec;
use crate::state::{AppState, Target};

/// A response whose generation has started.
pub struct Pending {
    st: AppState,
    tenant: Arc<str>,
    /// The response as announced: `in_progress`, no output yet.
    pub response: ResponseObject,
    search: Option<FileSearchCall>,
    /// The files of the chunks in the prompt, in prompt order.
    sources: Vec<(String, String)>,
    input: Vec<super::types::InputItem>,
    message_id: String,
    events: BoxStream<'static, Event>,
    meta: Meta,
}

/// The id of a new response and of its `i`-th input item (ordered as
/// given, so the items page in order).
pub fn new_ids() -> (String, impl Fn(usize) -> String) {
    let id = ids::new("resp_");
    let stem = id.trim_start_matches("resp_").to_owned();
    (id, move |i| format!("msg_{stem}{i:04}"))
}

/// Everything up to the first generated event: the conversation, the
/// search, admission at the runner.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    st: &AppState,
    tenant: Arc<str>,
    model: String,
    target: Target,
    id: String,
    req: CreateResponse,
    started: Instant,
    span: tracing::Span,
) -> ApiResult<Pending> {
    let mut plan = Plan::new(st, target, None)?;
    let mut tool = None;
    if let Some(fs) = &req.file_search {
        for vs in &fs.tool.vector_store_ids {
            let r = stores::live(st, &tenant, vs).await.map_err(|e| match e {
                ApiError::NotFound { .. } => not_found(
                    format!("tools: no vector store found with id '{vs}'"),
                    Some("tools"),
                    "not_found",
                ),
                ApiError::Invalid { message, .. } => {
                    bad_request(format!("tools: {message}"), "tools")
                }
                other => other,
            })?;
            stores::touch(st, &tenant, r).await;
        }
        if !req.search_disabled {
            let ids = &fs.tool.vector_store_ids;
            let template = plan
                .profile
                .as_ref()
                .map_or_else(|| st.builtin_template.clone(), |p| p.spec.template.clone());
            let t = fs.tool.ranking_options.score_threshold;
            plan.retrieval = Some(RagSpec {
                collection: ids[0].clone(),
                top_k: fs.tool.max_num_results,
                score_threshold: (t > 0.0).then_some(t),
                hybrid: false,
                filter: fs.filter.clone(),
                template,
            });
            plan.also_search = ids[1..].to_vec();
        }
        tool = Some(fs.tool.clone());
    }
    let searching = plan.retrieval.is_some();
    let mut turns = Vec::new();
    if let Some(i) = &req.instructions {
        turns.push(("system".to_owned(), i.clone()));
    }
    if let Some(prev) = &req.previous_response_id {
        turns.extend(store::history(&st.objects, &tenant, prev).await?);
    }
    for item in &req.input {
        turns.push((store::role(&item.role).to_owned(), item.text()));
    }
    let query = turns
        .iter()
        .rev()
        .find(|(r, _)| r == "user")
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let answered = crate::answer::answer(
        st,
        AnswerRequest {
            tenant: tenant.clone(),
            model: model.clone(),
            plan,
            question: Question::Chat(turns),
            params: req.params.clone(),
            shape: crate::openai::request::Shape {
                format: req.format.clone(),
                ..Default::default()
            },
            id_prefix: "resp",
            session: req.session.clone(),
        },
        span,
    )
    .await
    // the chat core names the conversation `messages`; here it is `input`
    .map_err(|e| match e {
        ApiError::Invalid {
            message,
            param: Some("messages"),
            code,
        } => ApiError::Invalid {
            message,
            param: Some("input"),
            code,
        },
        other => other,
    })?;
    let used = &answered.retrieved[..answered.used];
    let mut names = Names::default();
    let mut sources = Vec::with_capacity(used.len());
    for c in used {
        sources.push((c.doc_id.clone(), names.of(st, &tenant, c).await));
    }
    let search = if searching && tool.is_some() && !req.search_disabled {
        let mut results = None;
        if req.include_results {
            let mut out = Vec::with_capacity(answered.retrieved.len());
            for c in &answered.retrieved {
                out.push(SearchResult {
                    file_id: c.doc_id.clone(),
                    filename: names.of(st, &tenant, c).await,
                    score: c.score.clamp(0.0, 1.0),
                    text: c.text.clone(),
                    attributes: c.metadata.clone(),
                });
            }
            results = Some(out);
        }
        Some(FileSearchCall {
            id: id.replacen("resp_", "fs_", 1),
            status: "completed".into(),
            queries: vec![query],
            results,
        })
    } else {
        None
    };
    let response = ResponseObject {
        id: id.clone(),
        object: "response".into(),
        created_at: crate::state::unix_now(),
        status: "in_progress".into(),
        completed_at: None,
        error: None,
        incomplete_details: None,
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        model: model.clone(),
        output: Vec::new(),
        parallel_tool_calls: true,
        previous_response_id: req.previous_response_id.clone(),
        store: req.store,
        temperature: req.params.temperature,
        top_p: Some(req.params.top_p),
        text: TextConfig {
            format: TextFormat::of(&req.format),
        },
        tool_choice: if req.search_disabled { "none" } else { "auto" }.into(),
        tools: tool.into_iter().collect(),
        truncation: "disabled".into(),
        usage: None,
        metadata: req.metadata.clone(),
        rag: answered.rag.clone(),
    };
    let meta = Meta {
        id: id.clone(),
        created: response.created_at,
        model,
        kind: Kind::Chat,
        include_usage: true,
        logprobs: false,
        citations: None,
        rag: None,
        started,
    };
    Ok(Pending {
        st: st.clone(),
        tenant,
        message_id: id.replacen("resp_", "msg_", 1),
        response,
        search,
        sources,
        input: req.input,
        events: answered.events,
        meta,
    })
}

/// File names by file id, looked up once per request.
#[derive(Default)]
struct Names(std::collections::HashMap<String, String>);

impl Names {
    /// The file's name; for a chunk that is not a file's (a collection
    /// behind a RAG profile), its `filename` or `source` metadata, else
    /// its document id.
    async fn of(&mut self, st: &AppState, tenant: &str, c: &ScoredChunk) -> String {
        if let Some(n) = self.0.get(&c.doc_id) {
            return n.clone();
        }
        let name = match uploads::get(&st.objects, tenant, &c.doc_id).await {
            Ok(f) => f.filename,
            Err(_) => ["filename", "source"]
                .iter()
                .find_map(|k| c.metadata.get(*k).and_then(|v| v.as_str()))
                .unwrap_or(&c.doc_id)
                .to_owned(),
        };
        self.0.insert(c.doc_id.clone(), name.clone());
        name
    }
}

/// `file_citation` annotations for `text` (see the module docs).
pub fn annotate(text: &str, sources: &[(String, String)]) -> Vec<FileCitation> {
    let cite = |(file_id, filename): &(String, String), index| FileCitation {
        kind: "file_citation".into(),
        file_id: file_id.clone(),
        filename: filename.clone(),
        index,
    };
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            let digits: String = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            let close = i + 1 + digits.len();
            if !digits.is_empty() && chars.get(close) == Some(&']') {
                if let Some(s) = digits
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|n| sources.get(n))
                {
                    out.push(cite(s, i));
                }
                i = close;
            }
        }
        i += 1;
    }
    if out.is_empty() {
        let mut seen = HashSet::new();
        for s in sources {
            if seen.insert(&s.0) {
                out.push(cite(s, chars.len()));
            }
        }
    }
    out
}

impl Pending {
    /// Waits for the runner's first event, so a request refused at the
    /// runner (a queue deadline) is answered with its HTTP status (429),
    /// not a stream that fails.
    pub async fn first_event(&mut self) -> ApiResult<()> {
        let events = std::mem::replace(&mut self.events, futures::stream::empty().boxed());
        self.events = crate::openai::output::first_or_error(events).await?;
        Ok(())
    }

    fn message(&self, status: &str, text: String, annotations: Vec<FileCitation>) -> OutputItem {
        OutputItem::Message(OutputMessage {
            id: self.message_id.clone(),
            role: "assistant".into(),
            status: status.into(),
            content: vec![OutputText::new(text, annotations)],
        })
    }

    /// The final response: the search, the message, usage and status.
    fn finish(&self, text: String, finish: FinishReason, usage: Usage) -> ResponseObject {
        let annotations = annotate(&text, &self.sources);
        let incomplete = finish == FinishReason::Length;
        let mut r = self.response.clone();
        r.status = if incomplete {
            "incomplete"
        } else {
            "completed"
        }
        .into();
        r.incomplete_details = incomplete.then(|| IncompleteDetails {
            reason: "max_output_tokens".into(),
        });
        r.completed_at = (!incomplete).then(crate::state::unix_now);
        r.output = self
            .search
            .clone()
            .map(OutputItem::FileSearchCall)
            .into_iter()
            .collect();
        r.output.push(self.message(
            if incomplete {
                "incomplete"
            } else {
                "completed"
            },
            text,
            annotations,
        ));
        r.usage = Some(usage);
        r
    }

    /// The response as failed, with what is known of the output.
    fn failed(&self, e: &ApiError, text: String) -> ResponseObject {
        let mut r = self.response.clone();
        r.status = "failed".into();
        r.error = Some(ResponseError {
            code: match e {
                ApiError::RateLimited { .. } => "rate_limit_exceeded",
                _ => "server_error",
            }
            .into(),
            message: e.message().to_owned(),
        });
        r.output = self
            .search
            .clone()
            .map(OutputItem::FileSearchCall)
            .into_iter()
            .collect();
        if !text.is_empty() {
            r.output.push(self.message("incomplete", text, Vec::new()));
        }
        r
    }
}

/// Stores `r` with its request's input, when the request asked for it.
/// (A free function over the fields it needs: a future holding `&Pending`
/// would hold its event stream, which is not `Sync`.)
async fn keep(
    st: &AppState,
    tenant: &str,
    input: &[super::types::InputItem],
    r: &ResponseObject,
) -> ApiResult<()> {
    if !r.store {
        return Ok(());
    }
    let rec = StoredResponse {
        response: r.clone(),
        input: input.to_vec(),
        expires_at: r.created_at.saturating_add(st.response_retention_s),
    };
    store::put(&st.objects, tenant, &rec).await
}

/// The whole response (non-streaming), stored first when asked.
pub async fn collect(mut p: Pending) -> ApiResult<ResponseObject> {
    let mut text = String::new();
    let mut first = true;
    while let Some(ev) = p.events.next().await {
        match ev {
            Event::Delta { text: t, .. } => {
                if first {
                    first = false;
                    m::first_token(&p.meta);
                }
                text.push_str(&t);
            }
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => {
                m::finished(&p.meta, prompt_tokens, completion_tokens);
                let usage = Usage::new(prompt_tokens, completion_tokens, cached_tokens);
                let r = p.finish(text, finish, usage);
                keep(&p.st, &p.tenant, &p.input, &r).await?;
                return Ok(r);
            }
            Event::Error(e) => {
                // stored as failed, as a stream that fails is
                let e = from_gen(e);
                let _ = keep(&p.st, &p.tenant, &p.input, &p.failed(&e, text)).await;
                return Err(e);
            }
        }
    }
    Err(crate::error::internal(
        "the runner ended the stream without finishing",
    ))
}

/// The Responses stream events of `p` (see the module docs), ending with
/// `response.completed`, `response.incomplete` or `response.failed`. The
/// events of the search (done before generation) come first; an error
/// after the first event ends the stream with `response.failed`, and a
/// shutdown's grace period with an `error` event, so no client reads a
/// truncated stream.
pub fn events(
    mut p: Pending,
    lifecycle: ragmesh_telemetry::Lifecycle,
) -> impl futures::Stream<Item = StreamEvent> + Send + 'static {
    async_stream::stream! {
        yield StreamEvent::Created { response: p.response.clone() };
        yield StreamEvent::InProgress { response: p.response.clone() };
        let mut index = 0;
        if let Some(call) = p.search.clone() {
            let item_id = call.id.clone();
            let mut started = call.clone();
            started.status = "in_progress".into();
            started.results = None;
            yield StreamEvent::ItemAdded { output_index: 0, item: OutputItem::FileSearchCall(started) };
            yield StreamEvent::SearchInProgress { output_index: 0, item_id: item_id.clone() };
            yield StreamEvent::Searching { output_index: 0, item_id: item_id.clone() };
            yield StreamEvent::SearchCompleted { output_index: 0, item_id };
            yield StreamEvent::ItemDone { output_index: 0, item: OutputItem::FileSearchCall(call) };
            index = 1;
        }
        let item_id = p.message_id.clone();
        let mut opened = p.message("in_progress", String::new(), Vec::new());
        if let OutputItem::Message(m) = &mut opened {
            m.content.clear();
        }
        yield StreamEvent::ItemAdded { output_index: index, item: opened };
        yield StreamEvent::PartAdded {
            item_id: item_id.clone(),
            output_index: index,
            content_index: 0,
            part: OutputText::new(String::new(), Vec::new()),
        };
        let mut text = String::new();
        let mut first = true;
        let cut = lifecycle.deadline();
        tokio::pin!(cut);
        loop {
            let next = tokio::select! {
                ev = p.events.next() => Some(ev),
                () = &mut cut => None,
            };
            let Some(next) = next else {
                yield StreamEvent::Error {
                    code: Some("server_shutting_down".into()),
                    message: "the server is shutting down and its grace period is over; retry the request".into(),
                    param: None,
                };
                break;
            };
            match next {
                Some(Event::Delta { text: t, .. }) => {
                    if first {
                        first = false;
                        m::first_token(&p.meta);
                    }
                    text.push_str(&t);
                    yield StreamEvent::TextDelta {
                        item_id: item_id.clone(),
                        output_index: index,
                        content_index: 0,
                        delta: t,
                        logprobs: Vec::new(),
                    };
                }
                Some(Event::Done { finish, prompt_tokens, completion_tokens, cached_tokens }) => {
                    m::finished(&p.meta, prompt_tokens, completion_tokens);
                    let usage = Usage::new(prompt_tokens, completion_tokens, cached_tokens);
                    let r = p.finish(text.clone(), finish, usage);
                    let message = r.output.last().cloned();
                    let part = match &message {
                        Some(OutputItem::Message(m)) => m.content.first().cloned(),
                        _ => None,
                    }
                    .unwrap_or_else(|| OutputText::new(text.clone(), Vec::new()));
                    for (k, a) in part.annotations.iter().enumerate() {
                        yield StreamEvent::AnnotationAdded {
                            item_id: item_id.clone(),
                            output_index: index,
                            content_index: 0,
                            annotation_index: k,
                            annotation: a.clone(),
                        };
                    }
                    yield StreamEvent::TextDone {
                        item_id: item_id.clone(),
                        output_index: index,
                        content_index: 0,
                        text: text.clone(),
                        logprobs: Vec::new(),
                    };
                    yield StreamEvent::PartDone {
                        item_id: item_id.clone(),
                        output_index: index,
                        content_index: 0,
                        part,
                    };
                    if let Some(item) = message {
                        yield StreamEvent::ItemDone { output_index: index, item };
                    }
                    // stored before it is announced complete
                    if let Err(e) = keep(&p.st, &p.tenant, &p.input, &r).await {
                        yield StreamEvent::Failed { response: p.failed(&e, text.clone()) };
                    } else if r.status == "incomplete" {
                        yield StreamEvent::Incomplete { response: r };
                    } else {
                        yield StreamEvent::Completed { response: r };
                    }
                    break;
                }
                Some(Event::Error(e)) => {
                    let e = from_gen(e);
                    let r = p.failed(&e, text.clone());
                    let _ = keep(&p.st, &p.tenant, &p.input, &r).await;
                    yield StreamEvent::Failed { response: r };
                    break;
                }
                None => {
                    let e = crate::error::internal("the runner ended the stream without finishing");
                    let r = p.failed(&e, text.clone());
                    let _ = keep(&p.st, &p.tenant, &p.input, &r).await;
                    yield StreamEvent::Failed { response: r };
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srcs() -> Vec<(String, String)> {
        vec![
            ("file-a".into(), "a.md".into()),
            ("file-b".into(), "b.pdf".into()),
            ("file-a".into(), "a.md".into()),
        ]
    }

    #[test]
    fn markers_become_citations_at_their_position() {
        let a = annotate("Ravens nest [2] in spring [1][9].", &srcs());
        let got: Vec<_> = a.iter().map(|c| (c.file_id.as_str(), c.index)).collect();
        // [9] names no source: not cited
        assert_eq!(got, vec![("file-b", 12), ("file-a", 26)]);
        assert_eq!(a[0].filename, "b.pdf");
        // character positions, not bytes
        let a = annotate("é [1]", &srcs());
        assert_eq!(a.first().map(|c| c.index), Some(2));
    }

    #[test]
    fn without_markers_each_file_is_cited_once_at_the_end() {
        let a = annotate("Ravens nest in spring.", &srcs());
        let got: Vec<_> = a.iter().map(|c| (c.file_id.as_str(), c.index)).collect();
        assert_eq!(got, vec![("file-a", 22), ("file-b", 22)]);
        assert!(annotate("text [x] [", &[]).is_empty());
    }
}
