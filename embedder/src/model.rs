//! Loading a sentence-transformers directory: BERT weights, tokenizer,
//! pooling and the maximum sequence length.
//!
//! Expected files (all present in any BERT-family sentence-transformers
//! export): `config.json`, `tokenizer.json`, `model.safetensors`,
//! `1_Pooling/config.json` (optional: mean pooling), and
//! `sentence_bert_config.json` (optional: the limit is then the model's
//! `max_position_embeddings`).

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{Bert, BertConfig};
use crate::counter::TokenCounter;
use crate::error::{EmbedError, Result};
use crate::pooling::Pooling;

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| EmbedError::ModelFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::ModelFile {
        path: path.to_owned(),
        reason: format!("invalid JSON: {e}"),
    })
}

/// Everything the embedder needs from a model directory.
pub struct LoadedModel {
    pub id: String,
    pub bert: Bert,
    /// Truncates at `max_seq_len` (special tokens included); never pads:
    /// the forward pass is unpadded.
    pub tokenizer: Tokenizer,
    /// The same vocabulary without truncation: counts a text's full length
    /// (chunk sizing at ingest).
    pub counter: TokenCounter,
    /// tokenizer.json as read, served by the `Tokenizer` RPC.
    pub tokenizer_json: Vec<u8>,
    pub pooling: Pooling,
    pub max_seq_len: usize,
    pub dims: usize,
}

impl LoadedModel {
    /// Loads the directory. `id` defaults to the directory's name.
    pub fn load(dir: &Path, id: Option<String>, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EmbedError::ModelFile {
                path: dir.to_owned(),
                reason: "no such model directory".into(),
            });
        }
        let config_path = dir.join("config.json");
        let cfg: BertConfig = read_json(&config_path)?;
        if let Some(kind) = cfg.model_type.as_deref()
            && !matches!(
                kind,
                "bert" | "roberta" | "xlm-roberta" | "distilbert" | "camembert"
            )
        {
            return Err(EmbedError::ModelFile {
                path: config_path,
                reason: format!("model_type '{kind}' is not a BERT-family encoder"),
            });
        }

        let weights_path = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&weights_path, device).map_err(|e| {
            EmbedError::ModelFile {
                path: weights_path.clone(),
                reason: e.to_string(),
            }
        })?;
        let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, device);
        let bert = Bert::load(vb, &cfg).map_err(|e| EmbedError::ModelFile {
            path: weights_path,
            reason: e.to_string(),
        })?;

        let st_path = dir.join("sentence_bert_config.json");
        let max_seq_len = if st_path.exists() {
            #[derive(Deserialize)]
            struct St {
                max_seq_length: Option<usize>,
            }
            let st: St = read_json(&st_path)?;
            st.max_seq_length.unwrap_or(cfg.max_position_embeddings)
        } else {
            cfg.max_position_embeddings
        }
        .min(cfg.max_position_embeddings);

        let tok_path = dir.join("tokenizer.json");
        let bad_tokenizer = |reason: String| EmbedError::ModelFile {
            path: tok_path.clone(),
            reason,
        };
        let tokenizer_json = std::fs::read(&tok_path).map_err(|e| bad_tokenizer(e.to_string()))?;
        let mut tokenizer =
            Tokenizer::from_bytes(&tokenizer_json).map_err(|e| bad_tokenizer(e.to_string()))?;
        // The shipped tokenizer.json pads every input to 128: padding is
        // pure waste for an unpadded forward.
        tokenizer.with_padding(None);
        let counter = TokenCounter::from_json(&tokenizer_json).map_err(bad_tokenizer)?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_len,
                ..Default::default()
            }))
            .map_err(|e| bad_tokenizer(e.to_string()))?;

        let id = id.unwrap_or_else(|| dir_name(dir));
        Ok(Self {
            id,
            dims: bert.hidden_size(),
            bert,
            tokenizer,
            counter,
            tokenizer_json,
            pooling: Pooling::from_dir(dir)?,
            max_seq_len,
        })
    }
}

fn dir_name(dir: &Path) -> String {
    let canonical: PathBuf = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "embedder".into())
}
