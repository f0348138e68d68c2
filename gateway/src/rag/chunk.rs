//! Token-aware chunking with overlap, by `text-splitter`: chunks follow the
//! text's own structure (Markdown sections, paragraphs, sentences, words)
//! and are measured in the **embedder's** tokens, so no chunk is longer
//! than what the embedding model reads (nothing is silently truncated away
//! from the vector).
//!
//! Chunks are bounded by characters too: at most
//! [`MAX_CHARS_PER_TOKEN`] characters per token of the chunk size. A
//! tokenizer alone would let a run without separators through whole
//! (WordPiece reads any word past 100 characters as one `[UNK]`), and that
//! one chunk would then be tokenized again by every prompt that retrieves
//! it. The bound also keeps each sizing call small: a candidate longer
//! than the bound is "too big" without being tokenized, so chunking stays
//! linear in the text.

use std::sync::atomic::{AtomicBool, Ordering};

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
            self.tokens.saturating_add(2) <= max_input_tokens,
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

/// Characters one chunk token may stand for (English averages about 4.5
/// per WordPiece token; code and URLs about 3).
pub const MAX_CHARS_PER_TOKEN: usize = 10;

/// Why a document was not chunked.
#[derive(Debug, PartialEq, Eq)]
pub enum SplitError {
    /// It makes more than the allowed number of chunks (at least `.0`).
    TooManyChunks(usize),
    /// The caller went away.
    Cancelled,
}

struct Sizer {
    embed: Embed,
    max_chars: usize,
}

impl ChunkSizer for Sizer {
    fn size(&self, chunk: &str) -> usize {
        // a UTF-8 character is at most 4 bytes: past 4 × max_chars bytes
        // the chunk is over the bound whatever it holds
        if chunk.len() > 4 * self.max_chars {
            return chunk.len().div_ceil(4 * MAX_CHARS_PER_TOKEN);
        }
        let by_chars = chunk.chars().count().div_ceil(MAX_CHARS_PER_TOKEN);
        if by_chars * MAX_CHARS_PER_TOKEN > self.max_chars {
            return by_chars;
        }
        self.embed.count_tokens(chunk).max(by_chars)
    }
}

impl ChunkSettings {
    /// The most characters one chunk holds.
    pub fn max_chars(&self) -> usize {
        self.tokens * MAX_CHARS_PER_TOKEN
    }

    /// The fewest chunks `text` can make: no chunk holds more than
    /// [`Self::max_chars`]. Checked before any tokenizing.
    pub fn min_chunks(&self, text: &str) -> usize {
        text.chars().count().div_ceil(self.max_chars())
    }
}

/// Splits `text` into chunks (Markdown-aware when `markdown`), at most
/// `max_chunks` of them, stopping early when `cancelled` is set.
/// CPU-bound: call it off the async workers.
pub fn split(
    text: &str,
    markdown: bool,
    s: ChunkSettings,
    embed: Embed,
    max_chunks: usize,
    cancelled: &AtomicBool,
) -> Result<Vec<String>, SplitError> {
    let fewest = s.min_chunks(text);
    if fewest > max_chunks {
        return Err(SplitError::TooManyChunks(fewest));
    }
    let overlap = s.overlap.min(s.tokens.saturating_sub(1));
    let sizer = || Sizer {
        embed: embed.clone(),
        max_chars: s.max_chars(),
    };
    // overlap < size always holds here, so with_overlap cannot fail; the
    // fallback (no overlap) only keeps this free of a panic path
    let config = ChunkConfig::new(s.tokens)
        .with_sizer(sizer())
        .with_overlap(overlap)
        .unwrap_or_else(|_| ChunkConfig::new(s.tokens).with_sizer(sizer()));
    if markdown {
        let splitter = MarkdownSplitter::new(config);
        collect(splitter.chunks(text), max_chunks, cancelled)
    } else {
        let splitter = TextSplitter::new(config);
        collect(splitter.chunks(text), max_chunks, cancelled)
    }
}

/// Pulls chunks one at a time, so a limit or a cancellation stops the
/// work instead of being checked after it.
fn collect<'t>(
    chunks: impl Iterator<Item = &'t str>,
    max_chunks: usize,
    cancelled: &AtomicBool,
) -> Result<Vec<String>, SplitError> {
    let mut out = Vec::new();
    for c in chunks {
        if cancelled.load(Ordering::Relaxed) {
            return Err(SplitError::Cancelled);
        }
        if c.trim().is_empty() {
            continue;
        }
        if out.len() == max_chunks {
            return Err(SplitError::TooManyChunks(max_chunks + 1));
        }
        out.push(c.to_owned());
    }
    Ok(out)
}
