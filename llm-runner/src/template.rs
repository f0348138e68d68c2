//! Chat templates: the model's own `tokenizer.chat_template` (Jinja),
//! rendered with minijinja plus what real templates call: Python string
//! methods (`.strip()`, `.startswith()`... via minijinja-contrib's
//! pycompat), `raise_exception`, `strftime_now`, `tojson`.
//!
//! A model without a template gets ChatML (`<|im_start|>role\n...
//! <|im_end|>\n`, then `<|im_start|>assistant\n`), the format most
//! instruction-tuned GGUF models without embedded metadata expect; the
//! choice is reported by `Info.has_chat_template = false`.

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};

use crate::error::{GenError, Result};
use crate::tools::{self, ToolHistory, Tools};

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Roles accepted in `messages`.
pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

pub struct ChatTemplate {
    env: Environment<'static>,
    pub from_model: bool,
    /// The template renders `tools` itself (it names the variable); else
    /// the generic tool prompt ([`tools::generic_prompt`]) is used.
    pub native_tools: bool,
    bos: String,
    eos: String,
}

fn raise_exception(msg: String) -> std::result::Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> String {
    // Templates use it for "today's date" in system prompts; UTC, no
    // calendar dependency: only the common %Y %m %d %B %b specifiers.
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = MONTHS[(m - 1).clamp(0, 11) as usize];
    fmt.replace("%Y", &y.to_string())
        .replace("%m", &format!("{m:02}"))
        .replace("%d", &format!("{d:02}"))
        .replace("%B", month)
        .replace("%b", &month[..3])
}

impl ChatTemplate {
    /// `source`: the model's template, if it has one.
    pub fn new(source: Option<String>, bos: String, eos: String) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        // bound the work a template may do (they come from model files)
        env.set_fuel(Some(5_000_000));
        let from_model = source.is_some();
        let src = source.unwrap_or_else(|| CHATML.to_owned());
        let native_tools = src.contains("tools");
        env.add_template_owned("chat", src)
            .map_err(|e| GenError::Model(format!("chat template does not parse: {e}")))?;
        Ok(Self {
            env,
            from_model,
            native_tools,
            bos,
            eos,
        })
    }

    /// Renders `(role, content)` messages with the generation prompt.
    pub fn render(&self, messages: &[(String, String)]) -> Result<String> {
        self.render_tools(messages, None, &ToolHistory::default())
    }

    /// [`Self::render`] with the tools offered (when `tools` is active) and
    /// the calls and results of earlier turns: through the template's own
    /// `tools` variable and message fields when it has them (the
    /// Hugging Face convention: `tool_calls[].function.arguments` an
    /// object, `tool_call_id` on tool turns), else as plain text (the
    /// generic tool prompt at the top of the system turn, calls in the
    /// assistant's text, results as `<tool_response>` user turns).
    pub fn render_tools(
        &self,
        messages: &[(String, String)],
        offered: Option<&Tools>,
        history: &ToolHistory,
    ) -> Result<String> {
        if messages.is_empty() {
            return Err(GenError::invalid("messages must not be empty"));
        }
        for (role, _) in messages {
            if !ROLES.contains(&role.as_str()) {
                return Err(GenError::invalid(format!(
                    "unknown role '{role}': use one of {}",
                    ROLES.join(", ")
                )));
            }
        }
        let offered = offered.filter(|t| t.active());
        let mut msgs: Vec<Value> = Vec::with_capacity(messages.len() + 1);
        let mut system_prefix = match offered {
            Some(t) if !self.native_tools => Some(tools::generic_prompt(t)),
            _ => None,
        };
        if let Some(p) = system_prefix.take_if(|_| messages[0].0 != "system") {
            msgs.push(context! { role => "system", content => p });
        }
        for (i, (r, c)) in messages.iter().enumerate() {
            let calls = history.calls_of(i);
            if self.native_tools {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|k| {
                        let args: serde_json::Value =
                            serde_json::from_str(&k.arguments).unwrap_or_default();
                        Value::from(minijinja::value::Serde(serde_json::json!({
                            "id": k.id,
                            "type": "function",
                            "function": {"name": k.name, "arguments": args},
                        })))
                    })
                    .collect();
                let id = history.result_of(i);
                msgs.push(if calls.is_empty() {
                    context! { role => r, content => c, tool_call_id => id }
                } else {
                    context! { role => r, content => c, tool_calls => calls }
                });
                continue;
            }
            let mut content = match system_prefix.take_if(|_| i == 0) {
                Some(p) if !c.is_empty() => format!("{p}\n\n{c}"),
                Some(p) => p,
                None => c.clone(),
            };
            let role = if r == "tool" {
                content = tools::generic_result(&content);
                "user"
            } else {
                r.as_str()
            };
            for k in calls {
                if !content.is_empty() {
                    content.push('\n');
                }
                content.push_str(&tools::call_text(&k.name, &k.arguments));
            }
            msgs.push(context! { role => role, content => content });
        }
        let tools_value = match offered {
            Some(t) if self.native_tools => Value::from(minijinja::value::Serde(
                t.functions
                    .iter()
                    .map(tools::function_json)
                    .collect::<Vec<_>>(),
            )),
            _ => Value::from(()),
        };
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| GenError::Internal(e.to_string()))?;
        tmpl.render(context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => self.bos.clone(),
            eos_token => self.eos.clone(),
            tools => tools_value,
        })
        .map_err(|e| match e.kind() {
            // raise_exception: the template rejects this conversation
            ErrorKind::InvalidOperation => GenError::invalid(format!("chat template: {e}")),
            _ => GenError::invalid(format!("chat template failed: {e}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(r: &str, c: &str) -> (String, String) {
        (r.into(), c.into())
    }

    #[test]
    fn chatml_fallback_and_errors() {
        let t =
            ChatTemplate::new(None, String::new(), String::new()).unwrap_or_else(|e| panic!("{e}"));
        let s = t
            .render(&[m("user", "hi")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        assert!(matches!(t.render(&[]), Err(GenError::InvalidArgument(_))));
        assert!(matches!(
            t.render(&[m("robot", "x")]),
            Err(GenError::InvalidArgument(_))
        ));
    }

    #[test]
    fn tools_render_natively_or_as_the_generic_prompt() {
        use crate::tools::{FunctionTool, ToolCall, ToolChoice};
        let tools = Tools {
            functions: vec![FunctionTool {
                name: "get_weather".into(),
                description: "Weather in a city".into(),
                parameters: None,
                strict: false,
            }],
            choice: ToolChoice::Auto,
            parallel: true,
        };
        let history = ToolHistory {
            calls: vec![(
                1,
                vec![ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\": \"Paris\"}".into(),
                }],
            )],
            results: vec![(2, "call_1".into())],
        };
        let turns = [
            m("user", "weather?"),
            m("assistant", ""),
            m("tool", "sunny"),
        ];
        let generic =
            ChatTemplate::new(None, String::new(), String::new()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!generic.native_tools);
        let s = generic
            .render_tools(&turns, Some(&tools), &history)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.starts_with("<|im_start|>system\n# Tools"), "{s}");
        assert!(s.contains("<|im_start|>assistant\n<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call><|im_end|>"), "{s}");
        assert!(
            s.contains("<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>"),
            "{s}"
        );
        let src = "{% for t in tools or [] %}T:{{ t.function.name }};{% endfor %}{% for m in messages %}{{ m.role }}:{{ m.content }}{% for c in m.tool_calls or [] %}[{{ c.function.name }}({{ c.function.arguments.city }})]{% endfor %}{% if m.tool_call_id %}<{{ m.tool_call_id }}>{% endif %};{% endfor %}";
        let native = ChatTemplate::new(Some(src.into()), String::new(), String::new())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(native.native_tools);
        let s = native
            .render_tools(&turns, Some(&tools), &history)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s,
            "T:get_weather;user:weather?;assistant:[get_weather(Paris)];tool:sunny<call_1>;"
        );
        // tool_choice none: the tools are not offered
        let none = Tools {
            choice: ToolChoice::None,
            ..tools
        };
        let s = native
            .render_tools(&turns[..1], Some(&none), &ToolHistory::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, "user:weather?;");
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0].content.strip().upper() }}|{{ strftime_now('%Y') | length }}";
        let t = ChatTemplate::new(Some(src.into()), String::new(), String::new())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.render(&[m("user", "  hi ")])
                .unwrap_or_else(|e| panic!("{e}")),
            "HI|4"
        );
        let e = t.render(&[m("system", "x")]);
        assert!(
            matches!(e, Err(GenError::InvalidArgument(ref s)) if s.contains("first must be user"))
        );
    }
}
