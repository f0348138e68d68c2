//! Reading a GGUF file: metadata into a typed [`LlamaConfig`], and checks
//! that turn a wrong or damaged file into one readable start-up error.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use crate::error::{GenError, Result};

/// Architectures whose tensors and RoPE layout the llama forward serves.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub architecture: String,
    pub name: String,
    pub n_layer: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub context_length: usize,
    pub vocab_size: usize,
}

pub struct Gguf {
    pub content: Content,
    pub file: File,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> GenError {
    GenError::Model(format!("{}: {msg}", path.display()))
}

impl Gguf {
    /// Opens and parses the header; checks every tensor lies inside the
    /// file (a truncated download is reported as such, not as a panic).
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
        let len = file.metadata().map_err(|e| bad(path, e))?.len();
        let content = Content::read(&mut file)
            .map_err(|e| bad(path, format!("not a readable GGUF file: {e}")))?;
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let bytes = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            let end = content.tensor_data_offset + info.offset + bytes as u64;
            if end > len {
                return Err(bad(
                    path,
                    format!("truncated: tensor {name} ends at byte {end}, the file has {len}"),
                ));
            }
        }
        Ok(Self { content, file })
    }

    pub fn meta(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| v.to_string().ok()).cloned()
    }

    pub fn u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(|v| v.to_u32().ok())
    }

    pub fn config(&self, path: &Path) -> Result<LlamaConfig> {
        let arch = self
            .string("general.architecture")
            .ok_or_else(|| bad(path, "no general.architecture"))?;
        if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(bad(
                path,
                format!(
                    "unsupported architecture '{arch}' (supported: {})",
                    SUPPORTED_ARCHITECTURES.join(", ")
                ),
            ));
        }
        let need = |k: &str| -> Result<usize> {
            self.u32(&format!("{arch}.{k}"))
                .map(|v| v as usize)
                .ok_or_else(|| bad(path, format!("missing {arch}.{k}")))
        };
        let hidden = need("embedding_length")?;
        let n_head = need("attention.head_count")?;
        let n_kv_head = self
            .u32(&format!("{arch}.attention.head_count_kv"))
            .map_or(n_head, |v| v as usize);
        if n_head == 0 || hidden % n_head != 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(bad(path, "inconsistent attention head counts"));
        }
        if n_head > crate::attention::MAX_HEADS {
            return Err(bad(
                path,
                format!(
                    "{n_head} attention heads (at most {} supported)",
                    crate::attention::MAX_HEADS
                ),
            ));
        }
        let vocab_size = match self.get("tokenizer.ggml.tokens").map(|v| v.to_vec()) {
            Some(Ok(t)) => t.len(),
            _ => return Err(bad(path, "no tokenizer.ggml.tokens (the vocabulary)")),
        };
        let f = |k: &str, d: f32| {
            self.get(&format!("{arch}.{k}"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(d)
        };
        Ok(LlamaConfig {
            name: self.string("general.name").unwrap_or_else(|| arch.clone()),
            architecture: arch.clone(),
            n_layer: need("block_count")?,
            hidden,
            ffn: need("feed_forward_length")?,
            n_head,
            n_kv_head,
            head_dim: hidden / n_head,
            rope_base: f("rope.freq_base", 10_000.0),
            rms_eps: f("attention.layer_norm_rms_epsilon", 1e-5),
            context_length: need("context_length")?,
            vocab_size,
        })
    }
}
