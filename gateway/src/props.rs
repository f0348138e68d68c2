//! Property tests (issue 23's fuzz targets): the JSON body reader, the
//! filter parser and the chunker take arbitrary input without panicking,
//! and what they return keeps its promises. Failures proptest finds are
//! kept under `proptest-regressions/` and replayed first on every run.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::error::ApiResult;
use crate::rag::chunk::{self, ChunkSettings};
use crate::stages::EmbedStage;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Bytes near JSON: fragments of valid documents, mixed with noise.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(
            prop::sample::select(vec![
                b'{', b'}', b'[', b']', b'"', b':', b',', b'\\', b' ', b'1', b'a', b'n', 0xff
            ]),
            0..64
        ),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The scanner finds exactly serde_json's members for any object, and
    /// the reader agrees with serde_json on what is a valid object.
    #[test]
    fn body_reader_agrees_with_serde(obj in prop::collection::btree_map(any::<String>(), json_value(), 0..8)) {
        let v = Value::Object(obj.into_iter().collect());
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        let members = crate::json_scan::members(&bytes);
        prop_assert!(members.is_ok(), "{:?}", members.err());
        let members = members.unwrap_or_default();
        prop_assert_eq!(members.len(), v.as_object().map_or(0, Map::len));
        // compared with serde's reading of the same text (its float parsing
        // does not round-trip every f64 exactly)
        let whole: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        for m in &members {
            let parsed: Value = serde_json::from_slice(&bytes[m.value.clone()]).unwrap_or(Value::Null);
            prop_assert_eq!(&parsed, &whole[&m.key]);
        }
        let body = crate::body::JsonBody::from_value(v.clone());
        prop_assert!(body.is_ok());
    }

    #[test]
    fn body_reader_never_panics_and_accepts_only_objects(bytes in json_ish()) {
        let ours = crate::body::JsonBody::from_bytes(bytes.clone()).is_ok();
        let serde = matches!(serde_json::from_slice::<Value>(&bytes), Ok(Value::Object(_)));
        prop_assert_eq!(ours, serde, "{}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn filter_parser_never_panics(v in json_value()) {
        let _ = crate::rag::filter::parse(Some(&v));
    }

    /// Every chunk is within the character bound and the token budget, and
    /// no text is lost: without overlap the chunks hold every
    /// non-whitespace character in order.
    #[test]
    fn chunks_respect_both_bounds(text in text(), tokens in 16usize..64) {
        let s = ChunkSettings { tokens, overlap: 0 };
        let embed: crate::stages::Embed = Arc::new(Words);
        let out = chunk::split(&text, false, s, embed.clone(), 100_000, &AtomicBool::new(false));
        let out = out.unwrap_or_default();
        for c in &out {
            prop_assert!(c.chars().count() <= s.max_chars(), "{} chars", c.chars().count());
            prop_assert!(embed.count_tokens(c) <= tokens);
        }
        let kept: String = out.concat().chars().filter(|c| !c.is_whitespace()).collect();
        let all: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        prop_assert_eq!(kept, all);
    }
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-z]{1,12}",
            "[a-z]{200,3000}",
            Just(" ".to_owned()),
            Just("\n\n".to_owned()),
            Just(". ".to_owned()),
            "[é漢字🙂]{1,40}",
        ],
        0..80,
    )
    .prop_map(|parts| parts.concat())
}

/// A stand-in tokenizer for the chunker's bounds: one token per
/// whitespace-separated word, a word past 100 characters being one token
/// (as WordPiece's `[UNK]`).
struct Words;

#[async_trait]
impl EmbedStage for Words {
    fn model_id(&self) -> &str {
        "words"
    }
    fn dims(&self) -> usize {
        1
    }
    fn max_input_tokens(&self) -> usize {
        512
    }
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
    fn accepts(&self, _: &str) -> bool {
        true
    }
    async fn embed(&self, texts: Vec<String>) -> ApiResult<(Vec<Vec<f32>>, usize)> {
        Ok((vec![vec![1.0]; texts.len()], 0))
    }
}
