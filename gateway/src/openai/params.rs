//! The generation fields chat and text completions share, read from the
//! body with OpenAI's names, types and ranges.

use ragmesh_llm_runner::{GenerateRequest, Input, SamplingParams};

use crate::error::{ApiResult, bad_request};
use crate::fields::{self, Body};

/// What a request gets for the sampling fields it does not send.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub repetition_penalty: f32,
    pub stop_on_repeat: bool,
}

impl Default for SamplingDefaults {
    /// OpenAI's defaults: temperature 1, no penalties.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition_penalty: 1.0,
            stop_on_repeat: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenParams {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// vLLM's extra parameter (llama.cpp's `repeat_penalty`).
    pub repetition_penalty: Option<f32>,
    /// ragmesh's extra parameter: end a sentence-level loop.
    pub stop_on_repeat: Option<bool>,
    pub logprobs: bool,
    pub top_logprobs: u32,
    pub stream: bool,
    pub include_usage: bool,
    /// vLLM's extra parameter: generate through end-of-sequence tokens.
    pub ignore_eos: bool,
}

impl GenParams {
    /// `logprobs_field`: chat takes `logprobs: bool` + `top_logprobs: int`;
    /// text completions take `logprobs: int` (the top count).
    pub fn parse(b: &Body, chat: bool) -> ApiResult<Self> {
        let max_completion = fields::opt_i64(b, "max_completion_tokens")?;
        let max_tokens = match max_completion {
            Some(v) => Some(v),
            None => fields::opt_i64(b, "max_tokens")?,
        };
        if let Some(m) = max_tokens
            && m < 1
        {
            let param = if max_completion.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(bad_request(
                format!("'{param}' must be at least 1, got {m}"),
                param,
            ));
        }
        match fields::opt_i64(b, "n")? {
            None | Some(1) => {}
            Some(n) => {
                return Err(bad_request(
                    format!("only n=1 is supported, got n={n}; send separate requests"),
                    "n",
                ));
            }
        }
        let (logprobs, top_logprobs) = if chat {
            let lp = fields::opt_bool(b, "logprobs")?.unwrap_or(false);
            let top = fields::opt_int_in(b, "top_logprobs", 0, 20)?.unwrap_or(0);
            if top > 0 && !lp {
                return Err(bad_request(
                    "'top_logprobs' requires 'logprobs': true",
                    "top_logprobs",
                ));
            }
            (lp, top as u32)
        } else {
            match fields::opt_int_in(b, "logprobs", 0, 5)? {
                Some(n) => (true, n as u32),
                None => (false, 0),
            }
        };
        let stream = fields::opt_bool(b, "stream")?.unwrap_or(false);
        let include_usage = match fields::opt_object(b, "stream_options")? {
            Some(o) => fields::opt_bool(o, "include_usage")?.unwrap_or(false),
            None => false,
        };
        fields::opt_str(b, "user")?;
        Ok(Self {
            max_tokens,
            temperature: fields::opt_f32(b, "temperature", 0.0, 2.0)?,
            top_p: fields::opt_f32(b, "top_p", 0.0, 1.0)?.unwrap_or(1.0),
            seed: fields::opt_i64(b, "seed")?.map(|s| s as u64),
            stop: fields::stop_sequences(b)?,
            frequency_penalty: fields::opt_f32(b, "frequency_penalty", -2.0, 2.0)?,
            presence_penalty: fields::opt_f32(b, "presence_penalty", -2.0, 2.0)?,
            repetition_penalty: match fields::opt_f32(b, "repetition_penalty", 0.0, 2.0)? {
                Some(p) if p <= 0.0 => {
                    return Err(bad_request(
                        "'repetition_penalty' must be greater than 0 (1 is off)",
                        "repetition_penalty",
                    ));
                }
                p => p,
            },
            stop_on_repeat: fields::opt_bool(b, "stop_on_repeat")?,
            logprobs,
            top_logprobs,
            stream,
            include_usage,
            ignore_eos: fields::opt_bool(b, "ignore_eos")?.unwrap_or(false),
        })
    }

    /// The runner request; `defaults` fill what the caller did not send
    /// (OpenAI's for a plain model; a profile may choose others).
    pub fn request(
        &self,
        input: Input,
        defaults: &SamplingDefaults,
        request_id: &str,
    ) -> GenerateRequest {
        let d = defaults;
        GenerateRequest {
            input,
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(d.temperature),
                // top_p = 0 means "the single most likely token"
                top_p: if self.top_p <= 0.0 {
                    f32::MIN_POSITIVE
                } else {
                    self.top_p
                },
                top_k: 0,
                seed: self.seed,
                frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
                presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
                repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            },
            max_tokens: self.max_tokens,
            stop: self.stop.iter().map(|s| s.as_bytes().to_vec()).collect(),
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs,
            request_id: request_id.to_owned(),
            ignore_eos: self.ignore_eos,
            stop_on_repeat: self.stop_on_repeat.unwrap_or(d.stop_on_repeat),
            cache_salt: 0,
            format: Default::default(),
            tools: None,
            history: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::fields::body;

    #[test]
    fn max_completion_tokens_wins_and_bounds_hold() {
        let p = GenParams::parse(
            &body(json!({"max_tokens": 5, "max_completion_tokens": 7})),
            true,
        );
        assert_eq!(p.ok().and_then(|p| p.max_tokens), Some(7));
        for bad in [
            json!({"max_tokens": 0}),
            json!({"max_tokens": -3}),
            json!({"max_tokens": "5"}),
            json!({"n": 2}),
            json!({"temperature": 3}),
            json!({"top_p": 1.5}),
            json!({"top_logprobs": 3}),
            json!({"logprobs": 1}),
            json!({"stream": "yes"}),
            json!({"stream_options": {"include_usage": 1}}),
            json!({"seed": "x"}),
            json!({"presence_penalty": -3}),
            json!({"ignore_eos": "true"}),
        ] {
            assert!(GenParams::parse(&body(bad.clone()), true).is_err(), "{bad}");
        }
        let p = GenParams::parse(&body(json!({"logprobs": 2})), false).ok();
        assert_eq!(p.map(|p| (p.logprobs, p.top_logprobs)), Some((true, 2)));
        // vLLM's ignore_eos reaches the runner request
        let p = GenParams::parse(&body(json!({"ignore_eos": true})), true);
        let r = p.map(|p| {
            p.request(
                Input::Prompt("x".into()),
                &SamplingDefaults::default(),
                "id",
            )
        });
        assert!(r.is_ok_and(|r| r.ignore_eos));
        for bad in [
            json!({"repetition_penalty": 0}),
            json!({"repetition_penalty": 2.5}),
        ] {
            assert!(GenParams::parse(&body(bad.clone()), true).is_err(), "{bad}");
        }
        // a profile's defaults fill only what the request did not send
        let d = SamplingDefaults {
            temperature: 0.0,
            frequency_penalty: 0.3,
            presence_penalty: 0.0,
            repetition_penalty: 1.2,
            stop_on_repeat: true,
        };
        let p = GenParams::parse(
            &body(json!({"repetition_penalty": 1.0, "stop_on_repeat": false})),
            true,
        );
        let r = p.map(|p| p.request(Input::Prompt("x".into()), &d, "id"));
        let r = r.ok();
        assert_eq!(
            r.as_ref().map(|r| (
                r.sampling.temperature,
                r.sampling.frequency_penalty,
                r.sampling.repetition_penalty,
                r.stop_on_repeat
            )),
            Some((0.0, 0.3, 1.0, false))
        );
    }
}
