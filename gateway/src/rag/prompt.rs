//! Prompt templates and the context budget.
//!
//! A template (minijinja) renders the **last user turn**: it receives
//! `sources` (each `n`, `text`, `doc_id`, `chunk_id`, `score`, `metadata`,
//! numbered from 1 in rank order) and `question` (that turn's text). The
//! earlier turns and any system message pass through unchanged and the
//! model's own chat template wraps the result. Putting the context next to
//! the question (not in a system turn) is what small instruct models
//! follow best, and it leaves an operator's system prompt untouched.
//!
//! The budget is counted with the model's own tokenizer on the fully
//! rendered chat: the lowest-ranked chunks are dropped, one at a time,
//! until prompt + reserved completion tokens fit the window.

use std::path::Path;

use minijinja::Environment;
use ragmesh_retriever::ScoredChunk;
use serde::Serialize;

use crate::error::{ApiError, ApiResult, internal};

const BUILTIN: &str = include_str!("../../templates/rag-default.j2");

pub struct PromptTemplate {
    env: Environment<'static>,
    pub name: String,
}

#[derive(Serialize)]
struct Source<'a> {
    n: usize,
    text: &'a str,
    doc_id: &'a str,
    chunk_id: &'a str,
    score: f32,
    metadata: &'a serde_json::Map<String, serde_json::Value>,
}

impl PromptTemplate {
    pub fn builtin() -> Self {
        // the shipped template is compiled in and covered by tests
        Self::from_source("default", BUILTIN.to_owned()).unwrap_or_else(|_| Self {
            env: Environment::new(),
            name: "default".into(),
        })
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read prompt template {}: {e}", path.display()))?;
        Self::from_source(&path.display().to_string(), src)
            .map_err(|e| anyhow::anyhow!("prompt template {}: {e}", path.display()))
    }

    pub fn from_source(name: &str, src: String) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(1_000_000));
        env.add_template_owned("prompt", src)
            .map_err(|e| e.to_string())?;
        let t = Self {
            env,
            name: name.to_owned(),
        };
        // a template that cannot render a trivial context is refused at
        // start-up, not on the first request
        t.render(&[], "?").map_err(ApiError::into_message)?;
        Ok(t)
    }

    pub fn render(&self, chunks: &[ScoredChunk], question: &str) -> ApiResult<String> {
        let sources: Vec<Source> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| Source {
                n: i + 1,
                text: super::retrieve::truncate_chars(&c.text, MAX_SOURCE_CHARS),
                doc_id: &c.doc_id,
                chunk_id: &c.id,
                score: c.score,
                metadata: &c.metadata,
            })
            .collect();
        let tmpl = self
            .env
            .get_template("prompt")
            .map_err(|e| internal(format!("prompt template: {e}")))?;
        tmpl.render(minijinja::context! { sources => minijinja::Value::from(minijinja::value::Serde(&sources)), question => question })
            .map_err(|e| internal(format!("prompt template '{}' failed: {e}", self.name)))
    }
}

/// Characters of one source placed in a prompt. Chunks this gateway makes
/// are far shorter (chunk size × `chunk::MAX_CHARS_PER_TOKEN`); the bound
/// is for chunks written before that limit existed, or straight through
/// the retriever, which would otherwise be tokenized whole on every
/// question that retrieves them.
pub const MAX_SOURCE_CHARS: usize = 8192;

/// The conversation after the context was placed, and what it cost.
#[derive(Debug)]
pub struct Fitted {
    pub messages: Vec<(String, String)>,
    /// Chunks placed (the first `used` of the ranked list).
    pub used: usize,
    /// Chunks dropped to fit the window.
    pub dropped: usize,
    pub prompt_tokens: usize,
}

/// Places the top chunks into the last user turn, dropping the
/// lowest-ranked until `count(messages) <= budget`. When even no context
/// fits, the bare conversation is returned and the runner's own
/// context-window check answers the caller with the numbers.
pub async fn fit<F, Fut>(
    template: &PromptTemplate,
    messages: &[(String, String)],
    chunks: &[ScoredChunk],
    budget: usize,
    count: F,
) -> ApiResult<Fitted>
where
    // owned messages in, an owning future out: no borrow crosses the
    // await, so the handler's future stays Send
    F: Fn(Vec<(String, String)>) -> Fut,
    Fut: std::future::Future<Output = ApiResult<usize>>,
{
    let Some(last_user) = messages.iter().rposition(|(r, _)| r == "user") else {
        return Err(crate::error::bad_request(
            "retrieval needs a user message to search with",
            "messages",
        ));
    };
    let question = &messages[last_user].1;
    let mut k = chunks.len();
    loop {
        let mut msgs = messages.to_vec();
        msgs[last_user].1 = template.render(&chunks[..k], question)?;
        let tokens = count(msgs.clone()).await?;
        if tokens <= budget || k == 0 {
            if k == 0 && tokens > budget {
                return Ok(Fitted {
                    prompt_tokens: count(messages.to_vec()).await?,
                    messages: messages.to_vec(),
                    used: 0,
                    dropped: chunks.len(),
                });
            }
            return Ok(Fitted {
                messages: msgs,
                used: k,
                dropped: chunks.len() - k,
                prompt_tokens: tokens,
            });
        }
        k -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: usize, words: usize) -> ScoredChunk {
        ScoredChunk {
            id: format!("d{i}#0"),
            doc_id: format!("d{i}"),
            text: vec!["word"; words].join(" "),
            metadata: Default::default(),
            score: 1.0 - i as f32 * 0.1,
        }
    }

    async fn words(m: Vec<(String, String)>) -> ApiResult<usize> {
        Ok(m.iter().map(|(_, c)| c.split_whitespace().count()).sum())
    }

    fn fit_words(
        t: &PromptTemplate,
        msgs: &[(String, String)],
        chunks: &[ScoredChunk],
        budget: usize,
    ) -> ApiResult<Fitted> {
        futures::executor::block_on(fit(t, msgs, chunks, budget, words))
    }

    #[test]
    fn builtin_numbers_sources_and_keeps_the_question() {
        let t = PromptTemplate::builtin();
        let out = t
            .render(&[chunk(0, 2), chunk(1, 2)], "why?")
            .unwrap_or_default();
        assert!(out.contains("[1] word word"), "{out}");
        assert!(out.contains("[2] word word"), "{out}");
        assert!(out.trim_end().ends_with("Question: why?"), "{out}");
    }

    #[test]
    fn drops_lowest_ranked_first_until_it_fits() {
        let t = PromptTemplate::builtin();
        let msgs = vec![
            ("system".to_owned(), "be brief".to_owned()),
            ("user".to_owned(), "q".to_owned()),
        ];
        let chunks: Vec<_> = (0..4).map(|i| chunk(i, 100)).collect();
        let all = fit_words(&t, &msgs, &chunks, usize::MAX).ok();
        let all_tokens = all.as_ref().map(|f| f.prompt_tokens).unwrap_or_default();
        assert_eq!(all.map(|f| f.used), Some(4));
        // room for two chunks only
        let f = fit_words(&t, &msgs, &chunks, all_tokens - 150);
        let f = f.ok();
        assert_eq!(f.as_ref().map(|f| (f.used, f.dropped)), Some((2, 2)));
        let text = f.map(|f| f.messages[1].1.clone()).unwrap_or_default();
        assert!(text.contains("[2]") && !text.contains("[3]"), "{text}");
        // the system turn is untouched
        let f = fit_words(&t, &msgs, &chunks, 1).ok();
        assert_eq!(f.as_ref().map(|f| f.used), Some(0));
        assert_eq!(f.map(|f| f.messages), Some(msgs.clone()));
    }

    #[test]
    fn bad_templates_fail_at_load() {
        assert!(PromptTemplate::from_source("x", "{% for %}".into()).is_err());
        assert!(PromptTemplate::from_source("x", "{{ sources.nope() }}".into()).is_err());
    }
}
