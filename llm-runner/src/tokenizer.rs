//! The tokenizer built from the GGUF file itself (`tokenizer.ggml.*`), so a
//! model file is all a runner needs, plus a streaming detokenizer.
//!
//! Supported: `tokenizer.ggml.model = gpt2` (byte-level BPE: vocabulary +
//! merges) with the pre-tokenizers `gpt2`/`default`, `smollm` (digits
//! split one by one, then the GPT-2 regex: llama.cpp's `smollm`) and
//! `llama-bpe` (the Llama 3 regex). Control and user-defined tokens
//! (`token_type` 3 and 4) are matched as whole tokens in text, as llama.cpp
//! does with `parse_special`. SentencePiece vocabularies (`llama`) are
//! rejected at start-up with that reason.

use std::collections::HashMap;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{GenError, Result};
use crate::gguf::Gguf;

const TYPE_CONTROL: u32 = 3;
const TYPE_USER_DEFINED: u32 = 4;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct GgufTokenizer {
    inner: Tokenizer,
    /// Bytes each token stands for when decoded (control tokens: none).
    bytes: Vec<Vec<u8>>,
    pub tokens: Vec<String>,
    /// GGUF token types (1 normal, 3 control, 4 user-defined...).
    types: Vec<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Token ids that end generation (eos, `<|im_end|>`, `<|eot_id|>`...).
    pub stop_ids: Vec<u32>,
    pub add_bos: bool,
}

/// GPT-2's reversible byte → printable-char map, inverted.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8)))
        .collect()
}

fn bad(msg: impl std::fmt::Display) -> GenError {
    GenError::Model(format!("tokenizer: {msg}"))
}

impl GgufTokenizer {
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g.string("tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer.ggml.model '{model}' is not supported (byte-level BPE 'gpt2' is)"
            )));
        }
        let list = |k: &str| g.get(k).and_then(|v| v.to_vec().ok());
        let tokens: Vec<String> = list("tokenizer.ggml.tokens")
            .ok_or_else(|| bad("no tokenizer.ggml.tokens"))?
            .iter()
            .map(|v| v.to_string().cloned().unwrap_or_default())
            .collect();
        let types: Vec<u32> = list("tokenizer.ggml.token_type")
            .map(|l| l.iter().map(|v| v.to_i32().unwrap_or(1) as u32).collect())
            .unwrap_or_else(|| vec![1; tokens.len()]);
        let merges: Vec<(String, String)> = list("tokenizer.ggml.merges")
            .ok_or_else(|| bad("no tokenizer.ggml.merges"))?
            .iter()
            .filter_map(|v| {
                let s = v.to_string().ok()?;
                let (a, b) = s.split_once(' ')?;
                Some((a.to_owned(), b.to_owned()))
            })
            .collect();
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(bad)?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, false, true);
        let pre = g
            .string("tokenizer.ggml.pre")
            .unwrap_or_else(|| "default".into());
        let pre: PreTokenizerWrapper = match pre.as_str() {
            "gpt2" | "default" => byte_level.into(),
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "llama-bpe" | "llama3" => Sequence::new(vec![
                Split::new(
                    SplitPattern::Regex(LLAMA3_REGEX.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(bad)?
                .into(),
                ByteLevel::new(false, false, false).into(),
            ])
            .into(),
            other => {
                return Err(bad(format!(
                    "pre-tokenizer '{other}' is not supported (gpt2, smollm, llama-bpe are)"
                )));
            }
        };
        inner.with_pre_tokenizer(Some(pre));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == TYPE_CONTROL || **t == TYPE_USER_DEFINED)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(&special);

        let map = unicode_to_byte();
        let bytes = tokens
            .iter()
            .zip(&types)
            .map(|(t, ty)| match *ty {
                TYPE_CONTROL => Vec::new(),
                TYPE_USER_DEFINED => t.as_bytes().to_vec(),
                _ => t
                    .chars()
                    .map(|c| map.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| t.as_bytes().to_vec()),
            })
            .collect();
        let id = |k: &str| g.u32(k);
        let eos = id("tokenizer.ggml.eos_token_id");
        let mut stop_ids: Vec<u32> = eos.into_iter().collect();
        for extra in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            stop_ids.extend(id(extra));
        }
        for name in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "<|endoftext|>",
        ] {
            if let Some(i) = tokens.iter().position(|t| t == name) {
                stop_ids.push(i as u32);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self {
            inner,
            bytes,
            tokens,
            types,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos,
            stop_ids,
            add_bos: g
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(false),
        })
    }

    /// Token ids of `text`; special-token text becomes those tokens. With
    /// `add_bos`, the BOS token leads when the model asks for one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| GenError::invalid(format!("cannot tokenize: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The text of a special token (control, or user-defined in angle
    /// brackets like `<tool_call>`): a grammar names it as one token,
    /// never as text.
    pub fn special_text(&self, id: u32) -> Option<&str> {
        let t = self.tokens.get(id as usize)?;
        match self.types.get(id as usize).copied() {
            Some(TYPE_CONTROL) => Some(t),
            Some(TYPE_USER_DEFINED) if t.starts_with('<') && t.ends_with('>') => Some(t),
            _ => None,
        }
    }

    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Text of one token as the API shows it (lossy if it is a partial
    /// UTF-8 character).
    pub fn token_text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.token_bytes(id)).into_owned()
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.token_bytes(i).to_vec())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Turns a stream of token ids into UTF-8 text, holding back the bytes of a
/// character that is split across tokens until it is complete.
#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // incomplete character at the end: wait for more
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // invalid bytes: replace, as a lossy decode would
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end of the stream (a truncated character).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_decoder_holds_split_characters() {
        let mut d = StreamDecoder::default();
        let snow = "☃".as_bytes(); // 3 bytes
        assert_eq!(d.push(&snow[..1]), "");
        assert_eq!(d.push(&snow[1..2]), "");
        assert_eq!(d.push(&[snow[2], b'a']), "☃a");
        assert_eq!(d.push(&[0xff, b'b']), "\u{fffd}b");
        assert_eq!(d.push(&snow[..2]), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let m = unicode_to_byte();
        assert_eq!(m.len(), 256);
        assert_eq!(m.get(&'Ġ'), Some(&b' '));
        assert_eq!(m.get(&'Ċ'), Some(&b'\n'));
    }
}
