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
    /// Per token: what it ends ([`closing::closes`]).
    closers: Arc<Vec<u8>>,
    /// Per token: its text starts with `<` (a call's tag, in `auto`).
    opens_tag: Arc<Vec<bool>>,
    /// Per token: its text (special tokens: none), for the nesting depth.
    words: Arc<Vec<Vec<u8>>>,
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
        let opens_tag = Arc::new(
            words
                .iter()
                .map(|w| {
                    w.strip_prefix(&[TokTrie::SPECIAL_TOKEN_MARKER])
                        .unwrap_or(w)
                        .starts_with(b"<")
                })
                .collect(),
        );
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
        let texts = Arc::new(
            words
                .iter()
                .map(|w| match w.first() {
                    Some(&TokTrie::SPECIAL_TOKEN_MARKER) => Vec::new(),
                    _ => w.clone(),
                })
                .collect(),
        );
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
        limits.max_lexer_states = 20_000;
        limits.max_grammar_size = 200_000;
        Ok(Self {
            factory,
            closers,
            opens_tag,
            words: texts,
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
        let json = matches!(
            format,
            OutputFormat::JsonObject | OutputFormat::JsonSchema { .. }
        );
        let grammar = match (format, tools) {
            (OutputFormat::Text, None) => return Ok(None),
            (OutputFormat::Lark(_) | OutputFormat::Regex(_), Some(_)) => {
                return Err(GenError::invalid(
                    "a regex or Lark grammar cannot be combined with tools: send one or the other",
                ));
            }
            (f, None) => {
                let (field, g) = format_grammar(f)?;
                let steer = if json { Steer::Json } else { Steer::Never };
                return self.matcher(field, g, steer).map(Some);
            }
            (f, Some(t)) => self.tools_lark(f, t)?,
        };
        // calls are JSON; free text (auto) is not steered unless a call opens
        let steer = match tools.map(|t| &t.choice) {
            Some(ToolChoice::Auto) if !json => Steer::AfterTag,
            _ => Steer::Json,
        };
        self.matcher("tools", TopLevelGrammar::from_lark(grammar), steer)
            .map(Some)
    }

    fn matcher(&self, field: &str, g: TopLevelGrammar, steer: Steer) -> Result<Constraint> {
        let parser = self
            .factory
            .create_parser(g)
            .map_err(|e| compile_error(field, &format!("{e:#}")))?;
        let mut matcher = Matcher::new(Ok(parser));
        // the first mask here, on the request's thread: a pattern whose
        // lexer blows up is refused now, not at its first token
        let first = matcher
            .compute_mask()
            .map_err(|e| compile_error(field, &format!("{e:#}")))?;
        Ok(Constraint {
            matcher,
            field: field.to_owned(),
            mask: Some(first),
            closers: self.closers.clone(),
            opens_tag: self.opens_tag.clone(),
            words: self.words.clone(),
            nesting: closing::Nesting::default(),
            steer,
            eos: self.eos.clone(),
            recent: Vec::new(),
            max_tokens: usize::MAX,
            generated: 0,
            short: false,
            looping: false,
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
                let answer = format_lark(f)?;
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
        let schemas = callable
            .iter()
            .map(|(i, f)| call_schema(f, *i).map(|s| (*i, s)))
            .collect::<Result<Vec<_>>>()?;
        let bytes: usize = schemas.iter().map(|(_, s)| s.to_string().len()).sum();
        if bytes > MAX_GRAMMAR_BYTES {
            return Err(GenError::invalid(format!(
                "tools: the function definitions are {bytes} bytes; at most {MAX_GRAMMAR_BYTES}"
            )));
        }
        for (k, (i, schema)) in schemas.iter().enumerate() {
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

/// OpenAI's strict mode: objects that list `properties` and do not say
/// otherwise take no other keys. (An object without `properties` is
/// free-form: closed, it could only be `{}`.)
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let listed = o.contains_key("properties") && !o.contains_key("patternProperties");
            if listed && !o.contains_key("additionalProperties") {
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

/// The schema as compiled: bounded in size, a client's own `x-guidance`
/// options dropped, objects closed in strict mode.
fn prepared(field: &str, schema: &Value, strict: bool) -> Result<Value> {
    let len = schema.to_string().len();
    if len > MAX_GRAMMAR_BYTES {
        return Err(GenError::invalid(format!(
            "{field} is {len} bytes; at most {MAX_GRAMMAR_BYTES}"
        )));
    }
    let mut s = match schema {
        Value::Bool(true) => json!({}),
        Value::Bool(false) => {
            return Err(GenError::invalid(format!(
                "{field}: the schema 'false' accepts nothing"
            )));
        }
        Value::Object(_) => schema.clone(),
        _ => {
            return Err(GenError::invalid(format!(
                "{field} must be a JSON Schema object"
            )));
        }
    };
    if let Value::Object(o) = &mut s {
        o.remove("x-guidance");
    }
    if strict {
        close_objects(&mut s);
    }
    Ok(s)
}

const SCHEMA_FIELD: &str = "response_format.json_schema.schema";

/// A response format as a grammar of its own.
fn format_grammar(f: &OutputFormat) -> Result<(&'static str, TopLevelGrammar)> {
    Ok(match f {
        OutputFormat::JsonSchema { schema, strict, .. } => (
            SCHEMA_FIELD,
            TopLevelGrammar::from_json_schema(with_layout(
                prepared(SCHEMA_FIELD, schema, *strict)?,
                true,
            )),
        ),
        OutputFormat::Regex(r) => {
            bounded("regex", r)?;
            ("regex", TopLevelGrammar::from_regex(r))
        }
        OutputFormat::Lark(l) => {
            bounded("grammar", l)?;
            ("grammar", TopLevelGrammar::from_lark(l.clone()))
        }
        OutputFormat::JsonObject | OutputFormat::Text => (
            "response_format",
            TopLevelGrammar::from_json_schema(with_layout(json!({"type": "object"}), true)),
        ),
    })
}

/// A JSON response format as a Lark rule body (beside tool calls; free
/// text when there is none).
fn format_lark(f: &OutputFormat) -> Result<String> {
    Ok(match f {
        OutputFormat::JsonObject => {
            format!("%json {}", with_layout(json!({"type": "object"}), true))
        }
        OutputFormat::JsonSchema { schema, strict, .. } => format!(
            "%json {}",
            with_layout(prepared(SCHEMA_FIELD, schema, *strict)?, true)
        ),
        _ => "/[^<](?s:.*)/".into(),
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
/// the caller to run it). The parameters' `$defs` / `definitions` move to
/// the call object's root, where their `#/$defs/...` references point.
fn call_schema(f: &FunctionTool, i: usize) -> Result<Value> {
    let field = format!("tools[{i}].function.parameters");
    let mut params = match &f.parameters {
        None => json!({"type": "object"}),
        Some(p) => prepared(&field, p, f.strict)?,
    };
    let mut call = json!({
        "type": "object",
        "properties": {"name": {"const": f.name}},
        "required": ["name", "arguments"],
        "additionalProperties": false,
    });
    if let (Value::Object(p), Value::Object(c)) = (&mut params, &mut call) {
        for key in ["$defs", "definitions"] {
            if let Some(defs) = p.remove(key) {
                c.insert(key.into(), defs);
            }
        }
    }
    call["properties"]["arguments"] = params;
    Ok(with_layout(call, true))
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

/// Where [`closing`] steers a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Steer {
    /// A regex or Lark grammar, or free text: never.
    Never,
    /// JSON (a response format, tool calls): when it loops or runs short.
    Json,
    /// `auto` tools over free text: as `Json` once the answer opens a
    /// call (its first token starts with `<`), else never.
    AfterTag,
}

/// A sequence's grammar state.
pub struct Constraint {
    matcher: Matcher,
    /// The request field the grammar came from (errors name it).
    field: String,
    /// The next token's mask, computed ahead (beside the forward).
    mask: Option<SimpleVob>,
    closers: Arc<Vec<u8>>,
    opens_tag: Arc<Vec<bool>>,
    words: Arc<Vec<Vec<u8>>>,
    /// How deep the JSON written so far is (what closing it costs).
    nesting: closing::Nesting,
    steer: Steer,
    /// The end tokens (they close the answer).
    eos: Arc<Vec<u32>>,
    /// The answer's last tokens (loop detection).
    recent: Vec<u32>,
    max_tokens: usize,
    generated: usize,
    /// Steering to the end ([`closing`]): for the rest of the answer once
    /// its budget runs short, while it loops.
    short: bool,
    looping: bool,
}

impl Constraint {
    /// Computes the next mask if it is not yet known (cheap to call
    /// again).
    pub fn prepare(&mut self) {
        if self.mask.is_none() && !self.matcher.is_stopped() {
            self.mask = self.matcher.compute_mask().ok();
        }
    }

    /// Sets every token the grammar does not allow to -inf (and, while
    /// closing, every allowed token that does not end something, when
    /// some do). Fails when the grammar allows no token (an internal
    /// error: a finished grammar ends its sequence before this).
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<()> {
        self.prepare();
        let mask = match self.mask.take() {
            Some(m) if !m.is_zero() => m,
            // the grammar's own limits (a pattern whose lexer grows past
            // them as the text goes on): the request's to simplify
            _ => {
                return Err(GenError::invalid(format!(
                    "{}: the grammar cannot be enforced past this point ({}); simplify it",
                    self.field,
                    self.matcher
                        .get_error()
                        .unwrap_or_else(|| "no token is allowed".into())
                        .lines()
                        .next()
                        .unwrap_or_default()
                )));
            }
        };
        let n = mask.len();
        let allowed = |i: usize| i < n && mask.is_allowed(i as TokenId);
        let want = if self.nesting.in_string() {
            closing::IN_STRING
        } else {
            closing::OUTSIDE
        };
        let ends = |i: usize| {
            allowed(i)
                && (self.closers.get(i).is_some_and(|c| c & want != 0)
                    || self.eos.contains(&(i as u32)))
        };
        let steer = self.steer == Steer::Json
            && (self.short || self.looping)
            && (0..logits.len()).any(ends);
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
        if self.steer == Steer::AfterTag {
            let tag = self.opens_tag.get(token as usize).copied().unwrap_or(false);
            self.steer = if tag { Steer::Json } else { Steer::Never };
        }
        // loops are found in the last 192 tokens at most
        if self.recent.len() == 384 {
            self.recent.drain(..192);
        }
        self.recent.push(token);
        self.generated += 1;
        if let Some(w) = self.words.get(token as usize) {
            self.nesting.push(w);
        }
        let left = self.max_tokens.saturating_sub(self.generated);
        // a level costs a token or so to close
        self.short |= left <= closing::reserve(self.max_tokens) + self.nesting.depth();
        self.looping = closing::looping(&self.recent);
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
        // a free-form object (no properties) stays open
        let mut free = json!({"type": "object", "properties": {"f": {"type": "object"}}});
        close_objects(&mut free);
        assert!(
            free["properties"]["f"]
                .get("additionalProperties")
                .is_none()
        );
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
