//! Constrained decoding: a request's response format or tool calls become
//! a grammar (llguidance: JSON Schema, regex and Lark over the model's own
//! vocabulary), and every step of its sequence masks the tokens the
//! grammar does not allow before sampling. Output is valid by
//! construction: a small model cannot write a schema-breaking token.
//!
//! - [`Grammars`] is built once per model: the vocabulary as byte strings
//!   (special tokens marked so text never matches them), and llguidance's
//!   parser factory with its token-slicing tables (a second or so at load).
//! - [`Grammars::compile`] runs on the caller's thread before the request
//!   queues, so a bad schema is a 400 that names the field and the engine
//!   never sees it. Compile work and memory are bounded by the parser
//!   limits set here.
//! - A [`Constraint`] goes with its sequence. The engine computes its mask
//!   while the forward runs (the mask needs only the tokens so far), then
//!   applies it to the logits and feeds back the chosen token.
//!   Unconstrained sequences have none and pay nothing.
//!
//! JSON is written in one fixed layout (`{"a": 1, "b": [2, 3]}`: no
//! newlines, one space after `:` and `,`): flexible whitespace lets a small
//! model pad an object with newlines until it runs out of tokens.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::earley::SlicedBiasComputer;
use llguidance::toktrie::{
    InferenceCapabilities, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv,
};
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};

use crate::closing;
use crate::error::{GenError, Result};
use crate::request::OutputFormat;
use crate::tokenizer::GgufTokenizer;
use crate::tools::{CALL_CLOSE, CALL_OPEN, FunctionTool, ToolChoice, Tools};

/// Largest schema or grammar text accepted (bytes), before compiling.
pub const MAX_GRAMMAR_BYTES: usize = 256 * 1024;

/// The vocabulary as llguidance sees it, with our tokenizer for the bytes
/// a grammar forces.
struct Vocab {
    trie: TokTrie,
    tok: Arc<GgufTokenizer>,
}

impl TokenizerEnv for Vocab {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tok.encode(text, false).unwrap_or_default()
        })
    }
}

/// Per model: turns response formats and tools into constraints.
pub struct Grammars {
    factory: ParserFactory,
    /// Per token: it ends a string, array or object ([`closing::closes`]).
    closers: Arc<Vec<bool>>,
    eos: Arc<Vec<u32>>,
    /// How a grammar writes the call tags: as text, or as the model's own
    /// special tokens when its vocabulary has them.
    open: String,
    close: String,
}

impl Grammars {
    /// `n_logits`: the width of the model's logits (the vocabulary may be
    /// padded past the tokenizer's list).
    pub fn new(tok: Arc<GgufTokenizer>, n_logits: usize) -> Result<Self> {
        let mut words: Vec<Vec<u8>> = (0..tok.tokens.len() as u32)
            .map(|id| match tok.special_text(id) {
                Some(t) => {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(t.as_bytes());
                    w
                }
                None => tok.token_bytes(id).to_vec(),
            })
            .collect();
        words.resize(words.len().max(n_logits), Vec::new());
        let n = words.len();
        let closers = Arc::new(words.iter().map(|w| closing::closes(w)).collect());
        let stops: Vec<u32> = tok
            .stop_ids
            .iter()
            .copied()
            .filter(|&i| (i as usize) < n)
            .collect();
        let Some(&eos) = stops.first() else {
            return Err(GenError::Model(
                "the vocabulary has no end token: constrained output is unavailable".into(),
            ));
        };
        let trie = TokTrie::from(&TokRxInfo::new(n as u32, eos), &words).with_eos_tokens(&stops);
        let eos = Arc::new(stops);
        let tag = |t: &str| match trie.get_special_token(t) {
            Some(_) => t.to_owned(),
            None => lark_str(t),
        };
        let (open, close) = (tag(CALL_OPEN), tag(CALL_CLOSE));
        let env: TokEnv = Arc::new(Vocab { trie, tok });
        let mut factory = ParserFactory::new(
            &env,
            InferenceCapabilities::default(),
            &SlicedBiasComputer::general_slices(),
        )
        .map_err(|e| GenError::Model(format!("grammar engine: {e}")))?;
        factory.quiet();
        let limits = factory.limits_mut();
        // client-facing errors without grammar dumps; lexer states bounded
        // (1-2 kB each) so one hostile schema cannot take the memory
        limits.verbose_errors = false;
        limits.max_lexer_states = 50_000;
        limits.max_grammar_size = 200_000;
        Ok(Self {
            factory,
            closers,
            eos,
            open,
            close,
        })
    }

    /// The constraint `format` and `tools` put on the output, if any. A
    /// schema or grammar that does not compile is `InvalidArgument` naming
    /// the request field it came from.
    pub fn compile(
        &self,
        format: &OutputFormat,
        tools: Option<&Tools>,
    ) -> Result<Option<Constraint>> {
        let tools = tools.filter(|t| t.active());
        let grammar = match (format, tools) {
            (OutputFormat::Text, None) => return Ok(None),
            (OutputFormat::Lark(_), Some(_)) => {
                return Err(GenError::invalid(
                    "a Lark grammar cannot be combined with tools: send one or the other",
                ));
            }
            (f, None) => {
                let (field, g) = format_grammar(f)?;
                return self.matcher(field, g).map(Some);
            }
            (f, Some(t)) => self.tools_lark(f, t)?,
        };
        self.matcher("tools", TopLevelGrammar::from_lark(grammar))
            .map(Some)
    }

    fn matcher(&self, field: &str, g: TopLevelGrammar) -> Result<Constraint> {
        let parser = self
            .factory
            .create_parser(g)
            .map_err(|e| compile_error(field, &format!("{e:#}")))?;
        Ok(Constraint {
            matcher: Matcher::new(Ok(parser)),
            mask: None,
            closers: self.closers.clone(),
            eos: self.eos.clone(),
            recent: Vec::new(),
            max_tokens: usize::MAX,
            generated: 0,
            closing: false,
        })
    }

    /// Text (or the response format) or calls, for `auto`; calls only for
    /// `required` and a named function.
    fn tools_lark(&self, format: &OutputFormat, t: &Tools) -> Result<String> {
        let callable: Vec<(usize, &FunctionTool)> = t
            .functions
            .iter()
            .enumerate()
            .filter(|(_, f)| match &t.choice {
                ToolChoice::Function(n) => &f.name == n,
                _ => true,
            })
            .collect();
        if callable.is_empty() {
            return Err(GenError::invalid(
                "tool_choice names a function that is not in tools",
            ));
        }
        let mut g = String::new();
        let calls = if t.parallel {
            "calls: call+\n"
        } else {
            "calls: call\n"
        };
        match (&t.choice, format) {
            (ToolChoice::Auto, OutputFormat::Text) => {
                // text that does not start with "<" (so the first byte
                // decides: a call opens with the tag)
                g.push_str("start: TEXT | calls\nTEXT: /[^<](?s:.*)/\n");
            }
            (ToolChoice::Auto, f) => {
                let (_, answer) = format_lark(f)?;
                g.push_str(&format!("start: answer | calls\nanswer: {answer}\n"));
            }
            _ => g.push_str("start: calls\n"),
        }
        g.push_str(calls);
        g.push_str(&format!(
            "call: {} \"\\n\" fn \"\\n\" {}\nfn: {}\n",
            self.open,
            self.close,
            (0..callable.len())
                .map(|k| format!("f{k}"))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
        for (k, (i, f)) in callable.iter().enumerate() {
            let schema = call_schema(f, *i)?;
            // compiled alone first, so an error names its function
            self.factory
                .create_parser(TopLevelGrammar::from_json_schema(schema.clone()))
                .map_err(|e| {
                    compile_error(
                        &format!("tools[{i}].function.parameters"),
                        &format!("{e:#}"),
                    )
                })?;
            g.push_str(&format!("f{k}: %json {schema}\n"));
        }
        if g.len() > MAX_GRAMMAR_BYTES {
            return Err(GenError::invalid(format!(
                "tools: the function definitions are {} bytes; at most {MAX_GRAMMAR_BYTES}",
                g.len()
            )));
        }
        Ok(g)
    }
}

/// A Lark string literal (JSON escaping is Lark's).
fn lark_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// The layout options every JSON grammar gets (module docs), and whether
/// unsupported keywords are refused (`strict`) or ignored.
fn with_layout(mut schema: Value, strict: bool) -> Value {
    if let Value::Object(o) = &mut schema {
        o.insert(
            "x-guidance".into(),
            json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
                "lenient": !strict,
            }),
        );
    }
    schema
}

/// OpenAI's strict mode: objects that do not say otherwise take no other
/// keys than their `properties`.
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let is_object = o.get("type").is_some_and(|t| {
                t == "object"
                    || t.as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "object"))
            }) || o.contains_key("properties");
            if is_object && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, child) in o.iter_mut() {
                // constants and examples are data, not schemas
                if !matches!(k.as_str(), "const" | "enum" | "default" | "examples") {
                    close_objects(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

fn check_schema(field: &str, schema: &Value) -> Result<()> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(GenError::invalid(format!(
            "{field} must be a JSON Schema object"
        )));
    }
    let len = schema.to_string().len();
    if len > MAX_GRAMMAR_BYTES {
        return Err(GenError::invalid(format!(
            "{field} is {len} bytes; at most {MAX_GRAMMAR_BYTES}"
        )));
    }
    Ok(())
}

/// The JSON schema a response format compiles to, strict-mode closed.
fn strict_schema(field: &str, schema: &Value) -> Result<Value> {
    check_schema(field, schema)?;
    let mut s = match schema {
        Value::Bool(true) => json!({}),
        Value::Bool(false) => {
            return Err(GenError::invalid(format!(
                "{field}: the schema 'false' accepts nothing"
            )));
        }
        s => s.clone(),
    };
    if let Value::Object(o) = &mut s {
        o.remove("x-guidance");
    }
    close_objects(&mut s);
    Ok(with_layout(s, true))
}

/// A response format as a grammar of its own.
fn format_grammar(f: &OutputFormat) -> Result<(&'static str, TopLevelGrammar)> {
    Ok(match f {
        OutputFormat::Text => (
            "response_format",
            TopLevelGrammar::from_lark("start: /(?s:.*)/".into()),
        ),
        OutputFormat::JsonObject => (
            "response_format",
            TopLevelGrammar::from_json_schema(with_layout(json!({"type": "object"}), true)),
        ),
        OutputFormat::JsonSchema { schema, .. } => {
            let field = "response_format.json_schema.schema";
            (
                field,
                TopLevelGrammar::from_json_schema(strict_schema(field, schema)?),
            )
        }
        OutputFormat::Regex(r) => {
            bounded("regex", r)?;
            ("regex", TopLevelGrammar::from_regex(r))
        }
        OutputFormat::Lark(l) => {
            bounded("grammar", l)?;
            ("grammar", TopLevelGrammar::from_lark(l.clone()))
        }
    })
}

/// A response format as a Lark rule body (beside tool calls).
fn format_lark(f: &OutputFormat) -> Result<(&'static str, String)> {
    Ok(match f {
        OutputFormat::JsonObject => (
            "response_format",
            format!("%json {}", with_layout(json!({"type": "object"}), true)),
        ),
        OutputFormat::JsonSchema { schema, .. } => {
            let field = "response_format.json_schema.schema";
            (field, format!("%json {}", strict_schema(field, schema)?))
        }
        OutputFormat::Regex(r) => {
            bounded("regex", r)?;
            ("regex", format!("/{}/", r.replace('/', "\\/")))
        }
        OutputFormat::Text | OutputFormat::Lark(_) => ("response_format", "/[^<](?s:.*)/".into()),
    })
}

fn bounded(field: &str, text: &str) -> Result<()> {
    if text.len() > MAX_GRAMMAR_BYTES {
        return Err(GenError::invalid(format!(
            "{field} is {} bytes; at most {MAX_GRAMMAR_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

/// One function's call object: its name, then arguments valid against
/// its parameters (always enforced: a call's arguments must parse for
/// the caller to run it).
fn call_schema(f: &FunctionTool, i: usize) -> Result<Value> {
    let field = format!("tools[{i}].function.parameters");
    let params = match &f.parameters {
        None => json!({"type": "object"}),
        Some(p) => {
            let mut p = strict_schema(&field, p)?;
            if let Value::Object(o) = &mut p {
                o.remove("x-guidance");
            }
            p
        }
    };
    Ok(with_layout(
        json!({
            "type": "object",
            "properties": {"name": {"const": f.name}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        }),
        true,
    ))
}

/// llguidance's compile errors in the API's terms: an unsupported keyword
/// is named as such.
fn compile_error(field: &str, e: &str) -> GenError {
    if let Some(rest) = e.split("Unimplemented keys: ").nth(1) {
        let keys = rest
            .split(']')
            .next()
            .unwrap_or(rest)
            .trim_start_matches('[');
        return GenError::invalid(format!(
            "{field}: unsupported JSON Schema keyword(s) {keys}"
        ));
    }
    let e = e.lines().next().unwrap_or(e);
    GenError::invalid(format!(
        "{field}: the schema or grammar does not compile: {e}"
    ))
}

/// A sequence's grammar state.
pub struct Constraint {
    matcher: Matcher,
    /// The next token's mask, computed ahead (beside the forward).
    mask: Option<SimpleVob>,
    closers: Arc<Vec<bool>>,
    /// The end tokens (they close the answer).
    eos: Arc<Vec<u32>>,
    /// The answer's last tokens (loop detection).
    recent: Vec<u32>,
    max_tokens: usize,
    generated: usize,
    /// Steering to the end ([`closing`]).
    closing: bool,
}

impl Constraint {
    /// Computes the next mask if it is not yet known (cheap to call
    /// again).
    pub fn prepare(&mut self) {
        if self.mask.is_none() && !self.matcher.is_stopped() {
            self.mask = self.matcher.compute_mask().ok();
        }
    }

    /// Sets every token the grammar does not allow to -inf. Fails when
    /// the grammar has no next token (an internal error: a finished
    /// grammar ends its sequence before this).
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<()> {
        self.prepare();
        let Some(mask) = self.mask.take() else {
            return Err(GenError::Internal(format!(
                "the output grammar failed: {}",
                self.matcher
                    .get_error()
                    .unwrap_or_else(|| "no token is allowed".into())
            )));
        };
        let n = mask.len();
        let allowed = |i: usize| i < n && mask.is_allowed(i as TokenId);
        // closing: of the allowed tokens, those that end something, when
        // there are any
        let ends = |i: usize| {
            allowed(i)
                && (self.closers.get(i).copied().unwrap_or(false) || self.eos.contains(&(i as u32)))
        };
        let steer = self.closing && (0..logits.len()).any(ends);
        for (i, l) in logits.iter_mut().enumerate() {
            if !allowed(i) || steer && !ends(i) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Sets the answer's token budget (`max_tokens`).
    pub fn budget(&mut self, max_tokens: usize) {
        self.max_tokens = max_tokens;
    }

    /// Feeds the chosen token; true when the grammar is complete (nothing
    /// may follow: the sequence ends).
    pub fn accept(&mut self, token: u32) -> Result<bool> {
        self.mask = None;
        // loops are found in the last 192 tokens at most
        if self.recent.len() == 384 {
            self.recent.drain(..192);
        }
        self.recent.push(token);
        self.generated += 1;
        let left = self.max_tokens.saturating_sub(self.generated);
        self.closing = self.closing
            || left <= closing::reserve(self.max_tokens)
            || closing::looping(&self.recent);
        self.matcher
            .consume_token(token)
            .map_err(|e| GenError::Internal(format!("the output grammar failed: {e}")))?;
        Ok(self.matcher.is_stopped())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_mode_closes_objects_but_not_data() {
        let mut s = json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"b": {"type": "string"}}},
                "c": {"const": {"type": "object"}},
                "d": {"type": "object", "additionalProperties": true},
            },
        });
        close_objects(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        assert_eq!(s["properties"]["c"]["const"], json!({"type": "object"}));
        assert_eq!(s["properties"]["d"]["additionalProperties"], true);
    }

    #[test]
    fn compile_errors_name_the_field_and_keyword() {
        let e = compile_error(
            "response_format.json_schema.schema",
            "Unimplemented keys: [\"not\", \"uniqueItems\"]",
        );
        assert_eq!(
            e.to_string(),
            GenError::invalid("response_format.json_schema.schema: unsupported JSON Schema keyword(s) \"not\", \"uniqueItems\"").to_string()
        );
    }
}
