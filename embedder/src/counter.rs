//! Token counting for chunk sizing: the model's vocabulary with neither
//! truncation nor padding, so a text's full length is measured. Built from
//! the tokenizer.json bytes so a process without the model (the mesh
//! gateway, which fetches them over the `Tokenizer` RPC) counts exactly
//! as the embedder does.

use tokenizers::Tokenizer;

pub struct TokenCounter {
    tokenizer: Tokenizer,
}

impl TokenCounter {
    /// Parses a Hugging Face tokenizer.json.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| e.to_string())?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| e.to_string())?;
        Ok(Self { tokenizer })
    }

    /// Tokens in `text`, special tokens excluded (`usize::MAX` if the
    /// tokenizer fails, so an unmeasurable text is never called small).
    pub fn count(&self, text: &str) -> usize {
        self.tokenizer
            .encode_fast(text, false)
            .map(|e| e.len())
            .unwrap_or(usize::MAX)
    }
}
