//! OpenAI's Responses API as a core with plain types: `request.rs` (the
//! create body), `types.rs` (the Response object, its output items, the
//! stream events, input items), `run.rs` (a response through
//! [`crate::answer::answer`], whole or as stream events), `store.rs`
//! (stored responses and conversation chains). The HTTP handlers are in
//! [`crate::openai::responses`].

pub mod request;
pub mod run;
pub mod store;
pub mod types;
