//! Constrained decoding on the real model: JSON Schema and `json_object`
//! outputs parse and hold to their schema, tool calls are grammar-forced
//! and read back as calls, constrained and free sequences batch together
//! with each output equal to the same request alone, and bad schemas are
//! refused before they queue while the runner keeps serving.

mod common;

use ragmesh_llm_runner::{
    FinishReason, FunctionTool, GenError, GenerateRequest, Input, OutputFormat, ToolChoice, Tools,
};
use serde_json::{Value, json};

fn chat(q: &str, n: i64) -> GenerateRequest {
    let mut r = GenerateRequest::prompt("", n);
    r.input = Input::Chat(vec![("user".into(), q.into())]);
    r
}

fn with_schema(q: &str, schema: Value) -> GenerateRequest {
    let mut r = chat(q, 300);
    r.format = OutputFormat::JsonSchema {
        name: "answer".into(),
        schema,
        strict: true,
    };
    r
}

fn person() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "colour": {"enum": ["red", "green", "blue"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        },
        "required": ["name", "age", "colour", "tags"],
    })
}

/// Checks a person answer by hand (the schema's every rule).
fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    assert_eq!(o.len(), 4, "no other keys (strict): {text}");
    assert!(v["name"].is_string(), "{text}");
    let age = v["age"].as_i64().unwrap_or(-1);
    assert!((18..=99).contains(&age), "{text}");
    assert!(
        ["red", "green", "blue"].contains(&v["colour"].as_str().unwrap_or("")),
        "{text}"
    );
    let tags = v["tags"].as_array().map_or(0, Vec::len);
    assert!((1..=2).contains(&tags), "{text}");
}

fn weather_tools(choice: ToolChoice) -> Tools {
    Tools {
        functions: vec![
            FunctionTool {
                name: "get_weather".into(),
                description: "Current weather in a city".into(),
                parameters: Some(json!({
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                    "required": ["city", "unit"],
                })),
                strict: true,
            },
            FunctionTool {
                name: "get_time".into(),
                description: "Local time in a city".into(),
                parameters: Some(json!({
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                })),
                strict: false,
            },
        ],
        choice,
        parallel: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_outputs_parse_and_hold_to_the_schema() {
    let g = common::generator();
    for q in [
        "Describe a pirate.",
        "Tell me about a scientist.",
        "Who is your favourite singer?",
    ] {
        let out = common::run(g, with_schema(q, person())).await;
        assert_eq!(out.finish, FinishReason::Stop, "{q}: {}", out.text);
        check_person(&out.text);
        // the fixed layout: one space after ':' and ','
        assert!(out.text.starts_with("{\"name\": \""), "{}", out.text);
    }
    let mut r = chat(
        "Return a JSON object with the keys name and colour for a ripe banana.",
        300,
    );
    r.format = OutputFormat::JsonObject;
    let out = common::run(g, r).await;
    let v: Value = serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {}", out.text));
    assert!(v.is_object(), "{}", out.text);
    let mut r = chat("What is the year?", 20);
    r.format = OutputFormat::Regex("[0-9]{4}".into());
    let out = common::run(g, r).await;
    assert!(
        out.text.len() == 4 && out.text.bytes().all(|b| b.is_ascii_digit()),
        "{}",
        out.text
    );
}

/// Log-probabilities under a grammar: the alternatives a mask removed are
/// reported as -9999 (as vLLM does), never -inf (JSON has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_alternatives_have_finite_logprobs() {
    let g = common::generator();
    let mut r = chat("What is the year?", 4);
    r.format = OutputFormat::Regex("[0-9]{4}".into());
    r.logprobs = true;
    r.top_logprobs = 20;
    let mut rx = g.generate(r).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = 0;
    while let Some(ev) = rx.recv().await {
        match ev {
            ragmesh_llm_runner::Event::Delta { logprobs, .. } => {
                for lp in logprobs {
                    assert!(lp.logprob.is_finite(), "{lp:?}");
                    for (_, _, alt) in &lp.top {
                        assert!(alt.is_finite() && *alt >= -9999.0, "{lp:?}");
                        seen += 1;
                    }
                }
            }
            ragmesh_llm_runner::Event::Done { .. } => break,
            ragmesh_llm_runner::Event::Error(e) => panic!("{e}"),
        }
    }
    // 20 alternatives per token, most of them masked (only digits allowed)
    assert!(seen >= 20, "{seen}");
}

/// A budget too short for what the model wants to write: the answer is
/// steered to close in its last tokens, and still parses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_budget_still_closes_the_json() {
    let g = common::generator();
    let schema = json!({
        "type": "object",
        "properties": {"story": {"type": "string"}, "moral": {"type": "string"}},
        "required": ["story", "moral"],
    });
    let mut r = with_schema("Tell me a very long story about a dragon.", schema);
    r.max_tokens = Some(40);
    let out = common::run(g, r).await;
    assert_eq!(out.finish, FinishReason::Stop, "{}", out.text);
    assert!(out.completion_tokens <= 40);
    let v: Value = serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {}", out.text));
    assert!(
        v["story"].is_string() && v["moral"].is_string(),
        "{}",
        out.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_forced_and_read_back() {
    let g = common::generator();
    let mut r = chat("What is the weather in Paris?", 200);
    r.tools = Some(weather_tools(ToolChoice::Required));
    let out = common::run(g, r).await;
    assert_eq!(
        out.finish,
        FinishReason::ToolCalls,
        "{out:?}",
        out = out.text
    );
    assert_eq!(out.text, "", "a calls-only answer has no text");
    assert!(!out.calls.is_empty());
    for (name, args) in &out.calls {
        let v: Value = serde_json::from_str(args).unwrap_or_else(|e| panic!("{e}: {args}"));
        match name.as_str() {
            "get_weather" => {
                assert!(
                    v["city"].is_string() && ["c", "f"].contains(&v["unit"].as_str().unwrap_or("")),
                    "{args}"
                );
            }
            "get_time" => assert!(v["city"].is_string(), "{args}"),
            other => panic!("unknown function {other}"),
        }
    }
    // a named function, one call only
    let mut r = chat("Hello there!", 200);
    let mut t = weather_tools(ToolChoice::Function("get_time".into()));
    t.parallel = false;
    r.tools = Some(t);
    let out = common::run(g, r).await;
    assert_eq!(out.calls.len(), 1, "{:?}", out.calls);
    assert_eq!(out.calls[0].0, "get_time");
    // none: plain text, tools not offered
    let mut r = chat("Say hi.", 8);
    r.tools = Some(weather_tools(ToolChoice::None));
    let out = common::run(g, r).await;
    assert!(
        out.calls.is_empty() && !out.text.is_empty(),
        "{:?}",
        out.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constrained_and_free_sequences_batch_as_if_alone() {
    let g = common::generator();
    let schemas = [
        person(),
        json!({"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}}, "required": ["city", "population"]}),
        json!({"type": "object", "properties": {"ok": {"type": "boolean"}, "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}}, "required": ["ok", "items"]}),
        json!({"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 2, "maxItems": 4}),
    ];
    let mut reqs = Vec::new();
    for (i, s) in schemas.iter().enumerate() {
        reqs.push(with_schema(
            &format!("Answer number {i} about a town."),
            s.clone(),
        ));
        reqs.push(chat(
            &format!("Write a short line about town number {i}."),
            40,
        ));
    }
    let mut alone = Vec::new();
    for r in &reqs {
        alone.push(common::run(g, r.clone()).await);
    }
    let together = futures::future::join_all(reqs.iter().map(|r| common::run(g, r.clone()))).await;
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.ids, t.ids, "request {i}: batched != alone");
        assert_eq!(a.text, t.text, "request {i}");
    }
    check_person(&together[0].text);
    for (i, t) in together.iter().enumerate().step_by(2) {
        let v: Result<Value, _> = serde_json::from_str(&t.text);
        assert!(v.is_ok(), "constrained request {i}: {}", t.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schemas_are_refused_before_they_queue() {
    let g = common::generator();
    let refused = |r: GenerateRequest, needle: &str| match g.generate(r) {
        Err(GenError::InvalidArgument(m)) => assert!(m.contains(needle), "{m}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("accepted; wanted an error with {needle}"),
    };
    refused(
        with_schema("x", json!({"type": 5})),
        "response_format.json_schema.schema",
    );
    refused(
        with_schema("x", json!({"type": "object", "not": {"required": ["a"]}})),
        "\"not\"",
    );
    refused(
        with_schema("x", json!({"type": "string", "format": "zodiac"})),
        "response_format.json_schema.schema",
    );
    // a pattern whose lexer may grow past its limits once the string
    // starts (how far depends on the text): refused, or ended with an
    // error naming the field, or answered; the runner goes on either way
    let blowup = with_schema(
        "x",
        json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "[a-z]{1,100}{1,100}{1,100}"}}}),
    );
    match g.generate(blowup) {
        Err(GenError::InvalidArgument(m)) => assert!(m.contains("response_format"), "{m}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(mut rx) => loop {
            match rx.recv().await {
                Some(ragmesh_llm_runner::Event::Error(GenError::InvalidArgument(m))) => {
                    assert!(m.contains("response_format.json_schema.schema"), "{m}");
                    break;
                }
                Some(ragmesh_llm_runner::Event::Delta { .. }) => {}
                Some(ragmesh_llm_runner::Event::Done { .. }) => break,
                other => panic!("wanted an answer or an InvalidArgument error, got {other:?}"),
            }
        },
    }
    let big: serde_json::Map<String, Value> = (0..8000)
        .map(|i| {
            (
                format!("field_{i}"),
                json!({"type": "string", "description": "x".repeat(30)}),
            )
        })
        .collect();
    refused(
        with_schema("x", json!({"type": "object", "properties": big})),
        "at most",
    );
    let mut r = chat("x", 10);
    r.tools = Some(weather_tools(ToolChoice::Required));
    r.ignore_eos = true;
    refused(r, "ignore_eos");
    let mut r = chat("x", 10);
    let mut t = weather_tools(ToolChoice::Auto);
    t.functions[1].parameters =
        Some(json!({"type": "object", "properties": {"a": {"uniqueItems": true}}}));
    r.tools = Some(t);
    refused(r, "tools[1].function.parameters");
    let mut r = chat("x", 10);
    r.format = OutputFormat::Lark("start: undefined_rule".into());
    match g.generate(r) {
        Err(GenError::InvalidArgument(m)) => assert!(m.contains("grammar"), "{m}"),
        other => panic!("a broken grammar: {:?}", other.err()),
    }
    // still serving
    let out = common::run(g, chat("Say hi.", 4)).await;
    assert!(out.completion_tokens > 0);
}
