//! Constrained-decoding benchmark (run by `bench/structured.sh`): decode
//! throughput of JSON-Schema-constrained sequences vs free ones, 1 and 16
//! streams, in one invocation on one loaded model; and the compile time
//! of the test schemas (the SDK suite's Pydantic models and tools).
//!
//! Both kinds generate exactly `TOKENS` tokens: the free ones with
//! `ignore_eos`, the constrained ones under a schema (an array of at least
//! 500 records) that cannot end sooner. Greedy, the same prompts. Prints
//! one JSON line.
//!
//! Usage: `bench_structured MODEL.gguf [tokens]`.

use std::time::Instant;

use ragmesh_llm_runner::{
    Event, FunctionTool, GenerateRequest, Generator, GeneratorConfig, Input, OutputFormat,
    ToolChoice, Tools,
};
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn long_schema() -> Value {
    json!({
        "type": "array",
        "minItems": 500,
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 24},
                "city": {"enum": ["Paris", "Oslo", "Lima", "Cairo", "Seoul"]},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "member": {"type": "boolean"},
            },
            "required": ["name", "city", "age", "member"],
        },
    })
}

/// The SDK suite's schemas (as `openai` sends its Pydantic models).
fn test_schemas() -> Vec<Value> {
    let s = |p: Value, r: &[&str]| json!({"type": "object", "properties": p, "required": r, "additionalProperties": false});
    vec![
        json!({"$defs": {"Colour": {"enum": ["red", "green", "blue"], "type": "string"},
                         "Address": {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                                     "required": ["city", "country"], "additionalProperties": false}},
               "type": "object", "additionalProperties": false,
               "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
                              "favourite_colour": {"$ref": "#/$defs/Colour"}, "address": {"$ref": "#/$defs/Address"},
                              "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
               "required": ["name", "age", "favourite_colour", "address", "nickname"]}),
        s(
            json!({"title": {"type": "string"}, "ingredients": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
                 "minutes": {"type": "integer", "minimum": 1, "maximum": 600}, "vegetarian": {"type": "boolean"}}),
            &["title", "ingredients", "minutes", "vegetarian"],
        ),
        s(
            json!({"shop": {"type": "string"}, "items": {"type": "array", "minItems": 1, "maxItems": 3, "items":
                 {"type": "object", "additionalProperties": false, "required": ["name", "quantity", "price"],
                  "properties": {"name": {"type": "string"}, "quantity": {"type": "integer", "minimum": 0, "maximum": 1000},
                                 "price": {"type": "number", "minimum": 0, "maximum": 10000}}}}}),
            &["shop", "items"],
        ),
        s(
            json!({"title": {"type": "string"}, "day": {"enum": ["monday", "tuesday", "wednesday", "thursday", "friday"]},
                 "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                 "attendees": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}),
            &["title", "day", "priority", "attendees"],
        ),
        s(
            json!({"product": {"type": "string"}, "stars": {"type": "integer", "minimum": 1, "maximum": 5},
                 "pros": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
                 "cons": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
                 "recommended": {"type": "boolean"}}),
            &["product", "stars", "pros", "cons", "recommended"],
        ),
        long_schema(),
    ]
}

fn tools() -> Tools {
    let f = |name: &str, p: Value| FunctionTool {
        name: name.into(),
        description: String::new(),
        parameters: Some(p),
        strict: false,
    };
    Tools {
        functions: vec![
            f(
                "GetWeather",
                json!({"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}),
            ),
            f(
                "BookFlight",
                json!({"type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}, "passengers": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["origin", "destination", "passengers"]}),
            ),
            f(
                "SendEmail",
                json!({"type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "urgent": {"type": "boolean"}}, "required": ["to", "subject", "urgent"]}),
            ),
        ],
        choice: ToolChoice::Required,
        parallel: true,
    }
}

fn request(i: usize, tokens: usize, constrained: bool) -> GenerateRequest {
    let mut r = GenerateRequest::prompt("", tokens as i64);
    r.input = Input::Chat(vec![(
        "user".into(),
        format!("List the members of club number {i} as JSON records."),
    )]);
    if constrained {
        r.format = OutputFormat::JsonSchema {
            name: "members".into(),
            schema: long_schema(),
            strict: true,
        };
    } else {
        r.ignore_eos = true;
    }
    r
}

/// `streams` requests at once: aggregate decode tokens/s (tokens after
/// each stream's first, over the time from the first first-token to the
/// last token) and tokens generated.
async fn run(
    g: &'static Generator,
    streams: usize,
    tokens: usize,
    constrained: bool,
) -> anyhow::Result<(f64, usize)> {
    let t0 = Instant::now();
    let handles: Vec<_> = (0..streams)
        .map(|i| {
            let req = request(i, tokens, constrained);
            tokio::spawn(async move {
                let mut rx = g.generate(req)?;
                let (mut first, mut last, mut n) = (None, 0.0, 0usize);
                while let Some(ev) = rx.recv().await {
                    match ev {
                        Event::Delta { token_ids, .. } => {
                            let t = t0.elapsed().as_secs_f64();
                            first.get_or_insert(t);
                            last = t;
                            n += token_ids.len();
                        }
                        Event::Done { .. } => break,
                        Event::Error(e) => anyhow::bail!("{e}"),
                    }
                }
                Ok((first.unwrap_or_default(), last, n))
            })
        })
        .collect();
    let (mut start, mut end, mut total, mut decode) = (f64::MAX, 0.0f64, 0, 0);
    for h in handles {
        let (f, l, n) = h.await??;
        start = start.min(f);
        end = end.max(l);
        total += n;
        decode += n.saturating_sub(1);
    }
    Ok((decode as f64 / (end - start).max(1e-9), total))
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .get(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bench_structured MODEL.gguf [tokens]"))?;
    let tokens = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let g: &'static Generator = Box::leak(Box::new(Generator::load(GeneratorConfig::new(model))?));
    let grammars = g
        .grammars()
        .ok_or_else(|| anyhow::anyhow!("no grammar engine for this model"))?;
    // compile times: each test schema and the tool set, 5 times each
    let mut compile_ms = Vec::new();
    for _ in 0..5 {
        for s in test_schemas() {
            let f = OutputFormat::JsonSchema {
                name: "s".into(),
                schema: s,
                strict: true,
            };
            let t = Instant::now();
            grammars.compile(&f, None)?;
            compile_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let t = Instant::now();
        grammars.compile(&OutputFormat::Text, Some(&tools()))?;
        compile_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // warm-up: page the weights in
    run(g, 1, 8, false).await?;
    run(g, 1, 8, true).await?;
    let mut rows = Vec::new();
    for streams in [1usize, 16] {
        // alternate, twice each: the machine is noisy
        let (mut free, mut shaped) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            free.push(run(g, streams, tokens, false).await?);
            shaped.push(run(g, streams, tokens, true).await?);
        }
        let best = |v: &[(f64, usize)]| v.iter().map(|x| x.0).fold(0.0, f64::max);
        let (f, s) = (best(&free), best(&shaped));
        rows.push(json!({
            "streams": streams,
            "free_tok_s": (f * 10.0).round() / 10.0,
            "constrained_tok_s": (s * 10.0).round() / 10.0,
            "ratio": (s / f * 100.0).round() / 100.0,
            "tokens": [free[0].1, shaped[0].1],
        }));
    }
    println!(
        "{}",
        json!({
            "rows": rows,
            "compile_ms_p50": (percentile(compile_ms.clone(), 0.5) * 100.0).round() / 100.0,
            "compile_ms_max": (percentile(compile_ms.clone(), 1.0) * 100.0).round() / 100.0,
            "compiles": compile_ms.len(),
        })
    );
    Ok(())
}
