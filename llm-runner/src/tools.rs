//! Tool calling: the functions a request offers, how they reach the
//! prompt, and how the model's calls are read back out of its output as
//! it streams.
//!
//! The call format is Hermes' (what Qwen2.5, Hermes and many other
//! tool-tuned templates use), the same whether the model's template
//! renders the tools or the generic tool prompt does:
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```
//!
//! The output grammar ([`crate::grammar`]) makes the model write exactly
//! that, so [`CallStream`] reads it with a small incremental scanner
//! rather than by guessing: with `auto` the answer is either text or calls
//! (decided by its first bytes), with `required` or a named function it is
//! calls only.

use serde_json::{Value, json};

/// Opens a call in the model's output.
pub const CALL_OPEN: &str = "<tool_call>";
/// Closes it.
pub const CALL_CLOSE: &str = "</tool_call>";

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object (`None`: any object).
    pub parameters: Option<Value>,
    /// OpenAI's strict mode (see [`crate::OutputFormat::JsonSchema`]).
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// Text or calls, the model's choice.
    #[default]
    Auto,
    /// Text only; the tools are not offered in the prompt.
    None,
    /// One or more calls.
    Required,
    /// A call of this function.
    Function(String),
}

/// The tools a request offers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tools {
    pub functions: Vec<FunctionTool>,
    pub choice: ToolChoice,
    /// More than one call in an answer (OpenAI's `parallel_tool_calls`).
    pub parallel: bool,
}

impl Tools {
    /// Whether the answer is read for calls (and constrained).
    pub fn active(&self) -> bool {
        !self.functions.is_empty() && self.choice != ToolChoice::None
    }
}

/// A call the model made in an earlier turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text of the arguments object.
    pub arguments: String,
}

/// The tool parts of a conversation's turns, by turn index (the turns
/// themselves stay `(role, text)` pairs, which retrieval and routing
/// read).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolHistory {
    /// Calls an assistant turn made.
    pub calls: Vec<(usize, Vec<ToolCall>)>,
    /// The call a `tool` turn answers.
    pub results: Vec<(usize, String)>,
}

impl ToolHistory {
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.results.is_empty()
    }

    pub fn calls_of(&self, turn: usize) -> &[ToolCall] {
        self.calls
            .iter()
            .find(|(t, _)| *t == turn)
            .map_or(&[], |(_, c)| c.as_slice())
    }

    pub fn result_of(&self, turn: usize) -> Option<&str> {
        self.results
            .iter()
            .find(|(t, _)| *t == turn)
            .map(|(_, id)| id.as_str())
    }
}

/// The OpenAI shape of a function, as templates and the generic prompt
/// show it.
pub fn function_json(f: &FunctionTool) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": f.name,
            "description": f.description,
            "parameters": f.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
        }
    })
}

/// A call as the model writes it (and as earlier calls are replayed in
/// the prompt).
pub fn call_text(name: &str, arguments: &str) -> String {
    let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
    format!(
        "{CALL_OPEN}\n{}\n{CALL_CLOSE}",
        json!({"name": name, "arguments": args})
    )
}

/// The generic tool prompt, for templates that do not render `tools`:
/// placed at the top of the system turn.
pub fn generic_prompt(tools: &Tools) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to help with the user's request. \
         The functions, one JSON object per line:\n<tools>\n",
    );
    for f in &tools.functions {
        s.push_str(&function_json(f).to_string());
        s.push('\n');
    }
    s.push_str(
        "</tools>\n\nTo call a function, write its name and a JSON object of arguments \
         inside tags, one block per call:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <arguments-json-object>}\n</tool_call>\n\
         A function's result comes back inside <tool_response></tool_response> tags.",
    );
    s
}

/// A tool result, as the generic prompt shows it (in a user turn).
pub fn generic_result(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

/// One piece of a streamed call: the first names the function, later
/// ones carry fragments of its arguments' JSON text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallDelta {
    pub index: u32,
    pub name: String,
    pub arguments: String,
}

/// What one piece of output became.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub text: String,
    pub calls: Vec<CallDelta>,
}

#[derive(Debug, PartialEq)]
enum Mode {
    /// Not yet known whether the answer is text or calls.
    Undecided,
    Text,
    /// Between calls: whitespace, then `<tool_call>` or the end.
    Between,
    /// Inside `<tool_call>`, reading the call object.
    Call,
    /// After the object, up to `</tool_call>`.
    Closing,
}

/// Reads calls out of the output as it streams (see the module docs).
pub struct CallStream {
    mode: Mode,
    /// Undecided or between calls: bytes that may start `<tool_call>`.
    pending: String,
    /// Calls opened so far.
    calls: u32,
    scan: ObjectScan,
}

impl CallStream {
    /// `calls_only`: `required` or a named function (no text answer).
    pub fn new(calls_only: bool) -> Self {
        Self {
            mode: if calls_only {
                Mode::Between
            } else {
                Mode::Undecided
            },
            pending: String::new(),
            calls: 0,
            scan: ObjectScan::default(),
        }
    }

    /// Calls the answer opened.
    pub fn calls(&self) -> u32 {
        self.calls
    }

    pub fn push(&mut self, piece: &str) -> Parsed {
        let mut out = Parsed::default();
        let mut rest = piece;
        while !rest.is_empty() {
            rest = self.step(rest, &mut out);
        }
        out
    }

    /// The end of the output: an undecided beginning was text after all.
    pub fn finish(&mut self) -> Parsed {
        let mut out = Parsed::default();
        if self.mode == Mode::Undecided {
            out.text = std::mem::take(&mut self.pending);
            self.mode = Mode::Text;
        }
        out
    }

    /// Consumes a prefix of `s`, returns the rest.
    fn step<'a>(&mut self, s: &'a str, out: &mut Parsed) -> &'a str {
        match self.mode {
            Mode::Text => {
                out.text.push_str(s);
                ""
            }
            Mode::Undecided | Mode::Between => {
                let Some(c) = s.chars().next() else {
                    return s;
                };
                let rest = &s[c.len_utf8()..];
                if self.mode == Mode::Between && self.pending.is_empty() && c.is_whitespace() {
                    return rest;
                }
                self.pending.push(c);
                if self.pending == CALL_OPEN {
                    self.pending.clear();
                    self.mode = Mode::Call;
                    self.scan = ObjectScan::default();
                    self.calls += 1;
                } else if !CALL_OPEN.starts_with(&self.pending) {
                    if self.mode == Mode::Undecided {
                        out.text.push_str(&std::mem::take(&mut self.pending));
                        self.mode = Mode::Text;
                    } else {
                        // text between calls (the grammar allows none): dropped
                        self.pending.clear();
                    }
                }
                rest
            }
            Mode::Call => {
                let index = self.calls - 1;
                let (used, done) = self.scan.feed(s, index, &mut out.calls);
                if done {
                    self.mode = Mode::Closing;
                }
                &s[used..]
            }
            Mode::Closing => {
                let Some(c) = s.chars().next() else {
                    return s;
                };
                self.pending.push(c);
                if self.pending.ends_with(CALL_CLOSE) {
                    self.pending.clear();
                    self.mode = Mode::Between;
                }
                &s[c.len_utf8()..]
            }
        }
    }
}

/// Which member of the call object the scanner is in.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Member {
    #[default]
    Other,
    Name,
    Arguments,
}

/// Where the scanner is among the object's top-level members.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Phase {
    #[default]
    Key,
    Colon,
    Value,
}

/// An incremental reader of one `{"name": ..., "arguments": ...}` object:
/// it tracks nesting and strings, collects the name, and passes the
/// arguments' text through as it comes.
#[derive(Debug, Default)]
struct ObjectScan {
    /// 0 before the opening brace, 1 among the members.
    depth: u32,
    in_string: bool,
    escaped: bool,
    phase: Phase,
    key: String,
    member: Member,
    /// The name's JSON string literal as written.
    name_raw: String,
    name_sent: bool,
    /// Argument text seen before the name (sent after it).
    held: String,
}

impl ObjectScan {
    /// Feeds `s`; returns the bytes used and whether the object closed.
    fn feed(&mut self, s: &str, index: u32, out: &mut Vec<CallDelta>) -> (usize, bool) {
        let mut args = String::new();
        let mut used = s.len();
        let mut done = false;
        for (i, c) in s.char_indices() {
            if self.depth == 0 {
                if c == '{' {
                    self.depth = 1;
                    self.phase = Phase::Key;
                }
                continue;
            }
            let key = self.depth == 1 && self.phase == Phase::Key;
            if self.in_string {
                let closing = !self.escaped && c == '"';
                self.escaped = !self.escaped && c == '\\';
                if closing {
                    self.in_string = false;
                    if key {
                        self.phase = Phase::Colon;
                        continue;
                    }
                }
                if key {
                    self.key.push(c);
                } else {
                    self.value(c, &mut args);
                }
                continue;
            }
            if self.depth == 1 {
                match (self.phase, c) {
                    (_, c) if c.is_whitespace() => {}
                    (Phase::Key, '"') => {
                        self.in_string = true;
                        self.key.clear();
                    }
                    (Phase::Colon, ':') => {
                        self.phase = Phase::Value;
                        self.member = match self.key.as_str() {
                            "name" => Member::Name,
                            "arguments" => Member::Arguments,
                            _ => Member::Other,
                        };
                    }
                    (Phase::Value, ',') => self.phase = Phase::Key,
                    (_, '}') => {
                        self.depth = 0;
                        used = i + c.len_utf8();
                        done = true;
                        break;
                    }
                    (Phase::Value, c) => self.open(c, &mut args),
                    _ => {}
                }
                continue;
            }
            // inside a nested value
            match c {
                '}' | ']' => self.depth -= 1,
                _ => {}
            }
            self.open(c, &mut args);
        }
        self.send(index, args, done, out);
        (used, done)
    }

    /// A value character outside strings: opens strings and nesting.
    fn open(&mut self, c: char, args: &mut String) {
        match c {
            '"' => self.in_string = true,
            '{' | '[' => self.depth += 1,
            _ => {}
        }
        self.value(c, args);
    }

    /// Routes one character of a value to the name or the arguments.
    fn value(&mut self, c: char, args: &mut String) {
        match self.member {
            Member::Name => self.name_raw.push(c),
            Member::Arguments => args.push(c),
            Member::Other => {}
        }
    }

    fn send(&mut self, index: u32, args: String, done: bool, out: &mut Vec<CallDelta>) {
        if !self.name_sent {
            self.held.push_str(&args);
            let complete = self.name_raw.len() >= 2
                && self.name_raw.ends_with('"')
                && self.member != Member::Name;
            if complete || done {
                let name: String =
                    serde_json::from_str(&self.name_raw).unwrap_or_else(|_| self.name_raw.clone());
                out.push(CallDelta {
                    index,
                    name,
                    arguments: std::mem::take(&mut self.held),
                });
                self.name_sent = true;
            }
        } else if !args.is_empty() {
            out.push(CallDelta {
                index,
                name: String::new(),
                arguments: args,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of `n` characters; returns the text and
    /// the calls reassembled.
    fn run(text: &str, n: usize, calls_only: bool) -> (String, Vec<(String, String)>) {
        let mut s = CallStream::new(calls_only);
        let chars: Vec<char> = text.chars().collect();
        let mut parsed = Vec::new();
        for piece in chars.chunks(n) {
            parsed.push(s.push(&piece.iter().collect::<String>()));
        }
        parsed.push(s.finish());
        let mut out = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for p in parsed {
            out.push_str(&p.text);
            for d in p.calls {
                let i = d.index as usize;
                if calls.len() <= i {
                    calls.resize(i + 1, Default::default());
                    calls[i].0 = d.name.clone();
                } else {
                    assert!(d.name.is_empty(), "the name comes once");
                }
                calls[i].1.push_str(&d.arguments);
            }
        }
        (out, calls)
    }

    #[test]
    fn calls_are_read_in_any_piece_size() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa\\\"ris}\", \"days\": [1, {\"x\": 2}]}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        for n in [1, 2, 3, 5, 7, 1000] {
            let (out, calls) = run(text, n, true);
            assert_eq!(out, "", "piece size {n}");
            assert_eq!(calls.len(), 2, "piece size {n}");
            assert_eq!(calls[0].0, "get_weather");
            let args: Value = serde_json::from_str(&calls[0].1).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(args, json!({"city": "Pa\"ris}", "days": [1, {"x": 2}]}));
            assert_eq!(calls[1], ("now".into(), "{}".into()));
        }
    }

    #[test]
    fn auto_answers_are_text_or_calls() {
        for n in [1, 4, 100] {
            assert_eq!(
                run("<tool is a word", n, false),
                ("<tool is a word".into(), vec![])
            );
            assert_eq!(run("Hello", n, false), ("Hello".into(), vec![]));
            assert_eq!(run("<tool", n, false), ("<tool".into(), vec![]));
            let (out, calls) = run(
                "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>",
                n,
                false,
            );
            assert_eq!(out, "");
            assert_eq!(calls, vec![("f".into(), "{\"a\": 1}".into())]);
        }
    }

    #[test]
    fn arguments_before_the_name_wait_for_it() {
        let (_, calls) = run(
            "<tool_call>{\"arguments\": {\"a\": [1]}, \"name\": \"f\"}</tool_call>",
            3,
            true,
        );
        assert_eq!(calls, vec![("f".into(), "{\"a\": [1]}".into())]);
    }

    #[test]
    fn history_and_prompts() {
        assert_eq!(
            call_text("f", "{\"a\":1}"),
            "<tool_call>\n{\"name\":\"f\",\"arguments\":{\"a\":1}}\n</tool_call>"
        );
        let t = Tools {
            functions: vec![FunctionTool {
                name: "f".into(),
                description: "does f".into(),
                parameters: None,
                strict: false,
            }],
            choice: ToolChoice::Function("f".into()),
            parallel: true,
        };
        assert!(t.active());
        assert!(generic_prompt(&t).contains("\"name\":\"f\""));
        let h = ToolHistory {
            calls: vec![(1, vec![])],
            results: vec![(2, "call_1".into())],
        };
        assert_eq!(h.result_of(2), Some("call_1"));
        assert_eq!(h.result_of(1), None);
    }
}
