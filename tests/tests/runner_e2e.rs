//! The real `ragmesh-llm-runner` binary over gRPC: streaming generation,
//! Info/Load/Tokenize/CountTokens, bad input (INVALID_ARGUMENT with a
//! message), overload (RESOURCE_EXHAUSTED), cancellation, /metrics, and a
//! clear start-up error for a damaged model file.

use std::time::{Duration, Instant};

use ragmesh_proto::v1 as pb;
use ragmesh_proto::v1::llm_runner_client::LlmRunnerClient;
use ragmesh_tests::Service;
use tonic::Code;
use tonic::transport::Channel;

fn model() -> String {
    format!(
        "{}/SmolLM2-135M-Instruct.Q4_1.gguf",
        ragmesh_tests::model_dir()
    )
}

fn start(extra: &[&str]) -> Service {
    ragmesh_tests::services::runner("0", extra)
}

async fn client(svc: &Service) -> LlmRunnerClient<Channel> {
    LlmRunnerClient::connect(svc.grpc_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn chat(content: &str, max_tokens: Option<u32>) -> pb::GenerateRequest {
    pb::GenerateRequest {
        input: Some(pb::generate_request::Input::Chat(pb::ChatMessages {
            messages: vec![pb::ChatMessage {
                role: "user".into(),
                content: content.into(),
                ..Default::default()
            }],
        })),
        sampling: Some(pb::SamplingParams {
            temperature: Some(0.0),
            ..Default::default()
        }),
        max_tokens,
        ..Default::default()
    }
}

/// Polls `Load` until nothing runs, waits or holds KV cache.
async fn wait_idle(c: &mut LlmRunnerClient<Channel>, within: Duration) {
    let t0 = Instant::now();
    loop {
        let load = c
            .load(pb::LoadRequest {})
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        if load.running == 0 && load.waiting == 0 && load.kv_tokens_used == 0 {
            return;
        }
        assert!(t0.elapsed() < within, "slots still held: {load:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn collect(
    c: &mut LlmRunnerClient<Channel>,
    r: pb::GenerateRequest,
) -> Result<(String, pb::GenerateDelta), tonic::Status> {
    let mut s = c.generate(r).await?.into_inner();
    let mut text = String::new();
    while let Some(d) = s.message().await? {
        text.push_str(&d.text);
        if d.finish_reason != pb::FinishReason::Unspecified as i32 {
            return Ok((text, d));
        }
    }
    Err(tonic::Status::internal("stream ended without a finish"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_streams_and_reports_load() {
    let svc = start(&[]);
    let mut c = client(&svc).await;
    let info = c
        .info(pb::RunnerInfoRequest {})
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.context_length, 8192);
    assert!(info.has_chat_template);

    let (text, last) = collect(&mut c, chat("What is the capital of France?", Some(16)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // llama.cpp (the reference decoder: same GGUF, greedy, chat template)
    // answers "L'Étoile, la Cité, la Nation, …" (a 135M model): the served
    // text must open the same way
    assert!(text.starts_with("L'Étoile, la"), "{text:?}");
    let usage = last.usage.unwrap_or_default();
    assert!(usage.prompt_tokens > 10 && usage.completion_tokens >= 1);

    let n = c
        .count_tokens(pb::CountTokensRequest {
            model: String::new(),
            input: Some(pb::count_tokens_request::Input::Text(
                "Hello, world!".into(),
            )),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .count;
    assert_eq!(n, 4);
    let t = c
        .tokenize(pb::TokenizeRequest {
            model: String::new(),
            input: Some(pb::tokenize_request::Input::Text("Hello, world!".into())),
            add_special_tokens: false,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(t.tokens.concat(), "Hello, world!");

    // cancel mid-stream: Load shows the slot free again within a step
    let mut s = c
        .generate(chat("Tell me a long story about a dragon.", Some(500)))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    for _ in 0..3 {
        let _ = s.message().await.unwrap_or_else(|e| panic!("{e}"));
    }
    let load = c
        .load(pb::LoadRequest {})
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(load.running, 1);
    drop(s);
    wait_idle(&mut c, Duration::from_secs(3)).await;

    let metrics = reqwest::get(format!("{}/metrics", svc.http_url()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    for name in [
        "ragmesh_llm_time_to_first_token_seconds_bucket",
        "ragmesh_llm_inter_token_latency_seconds_bucket",
        "ragmesh_llm_e2e_request_latency_seconds_bucket",
        "ragmesh_llm_prompt_tokens_total",
        "ragmesh_llm_generation_tokens_total",
        "ragmesh_llm_num_requests_running",
        "ragmesh_llm_request_cancelled_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_invalid_argument_and_serving_continues() {
    let svc = start(&[
        "--max-model-len",
        "512",
        "--max-waiting",
        "2",
        "--max-sequences",
        "1",
    ]);
    let mut c = client(&svc).await;
    let msg = |role: &str, content: &str| pb::ChatMessage {
        role: role.into(),
        content: content.into(),
        ..Default::default()
    };
    let with = |f: &dyn Fn(&mut pb::GenerateRequest)| {
        let mut r = chat("hi", Some(8));
        f(&mut r);
        r
    };
    let long = "word ".repeat(600);
    let cases: Vec<(&str, pb::GenerateRequest, Code, &str)> = vec![
        (
            "empty messages",
            with(&|r| {
                r.input = Some(pb::generate_request::Input::Chat(pb::ChatMessages {
                    messages: vec![],
                }))
            }),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "no input",
            with(&|r| r.input = None),
            Code::InvalidArgument,
            "input",
        ),
        (
            "unknown role",
            with(&|r| {
                r.input = Some(pb::generate_request::Input::Chat(pb::ChatMessages {
                    messages: vec![msg("wizard", "x")],
                }))
            }),
            Code::InvalidArgument,
            "role",
        ),
        (
            "schema that is not JSON",
            with(&|r| {
                r.response_format = Some(pb::ResponseFormat {
                    format: Some(pb::response_format::Format::JsonSchema(
                        pb::response_format::JsonSchema {
                            name: "x".into(),
                            schema: "{not json".into(),
                            strict: true,
                        },
                    )),
                })
            }),
            Code::InvalidArgument,
            "response_format.json_schema.schema is not valid JSON",
        ),
        (
            "unsupported schema keyword",
            with(&|r| {
                r.response_format = Some(pb::ResponseFormat {
                    format: Some(pb::response_format::Format::JsonSchema(
                        pb::response_format::JsonSchema {
                            name: "x".into(),
                            schema: r#"{"type": "array", "uniqueItems": true}"#.into(),
                            strict: true,
                        },
                    )),
                })
            }),
            Code::InvalidArgument,
            "\"uniqueItems\"",
        ),
        (
            "tool_choice names an unknown function",
            with(&|r| {
                r.tools = vec![pb::FunctionTool {
                    name: "f".into(),
                    ..Default::default()
                }];
                r.tool_choice = Some(pb::ToolChoice {
                    choice: Some(pb::tool_choice::Choice::Function("g".into())),
                });
            }),
            Code::InvalidArgument,
            "'g'",
        ),
        (
            "zero max_tokens",
            with(&|r| r.max_tokens = Some(0)),
            Code::InvalidArgument,
            "max_tokens",
        ),
        (
            "huge max_tokens",
            with(&|r| r.max_tokens = Some(u32::MAX)),
            Code::InvalidArgument,
            "context window is 512",
        ),
        (
            "temperature",
            with(&|r| {
                r.sampling = Some(pb::SamplingParams {
                    temperature: Some(7.5),
                    ..Default::default()
                })
            }),
            Code::InvalidArgument,
            "temperature",
        ),
        (
            "NaN top_p",
            with(&|r| {
                r.sampling = Some(pb::SamplingParams {
                    top_p: Some(f32::NAN),
                    ..Default::default()
                })
            }),
            Code::InvalidArgument,
            "top_p",
        ),
        (
            "zero repetition_penalty",
            with(&|r| {
                r.sampling = Some(pb::SamplingParams {
                    repetition_penalty: Some(0.0),
                    ..Default::default()
                })
            }),
            Code::InvalidArgument,
            "repetition_penalty",
        ),
        (
            "long prompt",
            chat(&long, Some(8)),
            Code::InvalidArgument,
            "context window is 512",
        ),
        (
            "bad UTF-8 stop",
            with(&|r| r.stop = vec![vec![0xff, 0xfe]]),
            Code::InvalidArgument,
            "UTF-8",
        ),
        (
            "unknown model",
            with(&|r| r.model = "gpt-9".into()),
            Code::NotFound,
            "gpt-9",
        ),
    ];
    for (name, req, code, needle) in cases {
        let err = match c.generate(req).await {
            Err(e) => e,
            Ok(s) => {
                let mut s = s.into_inner();
                match s.message().await {
                    Err(e) => e,
                    Ok(m) => panic!("{name}: accepted ({m:?})"),
                }
            }
        };
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{name}: {:?} lacks {needle:?}",
            err.message()
        );
    }

    // overload: 1 running + 2 waiting; the next gets RESOURCE_EXHAUSTED
    let mut held = Vec::new();
    let mut exhausted = None;
    for _ in 0..6 {
        match c.generate(chat("Tell me a long story.", Some(200))).await {
            Ok(s) => held.push(s.into_inner()),
            Err(e) => {
                exhausted = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = exhausted.unwrap_or_else(|| panic!("never refused"));
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.metadata().get("retry-after").is_some());
    drop(held);
    // the dropped calls leave the queue and the batch within a few steps
    wait_idle(&mut c, Duration::from_secs(10)).await;
    // still serving
    let (text, _) = collect(&mut c, chat("What is 2 + 2?", Some(8)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!text.is_empty());
}

#[test]
fn damaged_model_file_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let truncated = dir.path().join("cut.gguf");
    let bytes = std::fs::read(model()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(ragmesh_tests::bin_dir().join("ragmesh-llm-runner"))
        .args([
            "--model",
            &truncated.to_string_lossy(),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("ragmesh-llm-runner: error:"), "{err}");
    assert!(last.contains("truncated"), "{last}");
}
