//! Token-aware chunking with overlap, by `text-splitter`: chunks follow the
//! text's own structure (Markdown sections, paragraphs, sentences, words)
//! and are measured in the **embedder's** tokens, so no chunk is longer
//! than what the embedding model reads (nothing is silently truncated away
//! from the vector).

use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};

use crate::stages::Embed;

#[derive(Debug, Clone, Copy)]
pub struct ChunkSettings {
    /// Largest chunk, in embedder tokens.
    pub tokens: usize,
    /// Tokens repeated between neighbouring chunks.
    pub overlap: usize,
}

impl ChunkSettings {
    /// Checks the settings against the embedding model's input limit
    /// (two tokens go to [CLS]/[SEP]-style specials).
    pub fn validate(&self, max_input_tokens: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.tokens >= 16, "chunk size must be at least 16 tokens");
        anyhow::ensure!(
            self.tokens + 2 <= max_input_tokens,
            "chunk size {} exceeds the embedding model's input of {max_input_tokens} tokens",
            self.tokens
        );
        anyhow::ensure!(
            self.overlap < self.tokens,
            "chunk overlap {} must be smaller than the chunk size {}",
            self.overlap,
            self.tokens
        );
        Ok(())
    }
}

struct EmbedTokens(Embed);

impl ChunkSizer for EmbedTokens {
    fn size(&self, chunk: &str) -> usize {
        self.0.count_tokens(chunk)
    }
}

/// Splits `text` into chunks (Markdown-aware when `markdown`). CPU-bound:
/// call it off the async workers.
pub fn split(text: &str, markdown: bool, s: ChunkSettings, embed: Embed) -> Vec<String> {
    let overlap = s.overlap.min(s.tokens.saturating_sub(1));
    // overlap < size always holds here, so with_overlap cannot fail; the
    // fallback (no overlap) only keeps this free of a panic path
    let config = ChunkConfig::new(s.tokens)
        .with_sizer(EmbedTokens(embed.clone()))
        .with_overlap(overlap)
        .unwrap_or_else(|_| ChunkConfig::new(s.tokens).with_sizer(EmbedTokens(embed)));
    let out: Vec<String> = if markdown {
        MarkdownSplitter::new(config)
            .chunks(text)
            .map(str::to_owned)
            .collect()
    } else {
        TextSplitter::new(config)
            .chunks(text)
            .map(str::to_owned)
            .collect()
    };
    out.into_iter().filter(|c| !c.trim().is_empty()).collect()
}
