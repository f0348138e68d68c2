//! BERT encoder forward over candle, in an *unpadded* layout.
//!
//! A batch is one `[total_tokens, hidden]` matrix: every sequence's tokens
//! back to back, no padding. The linear layers (fused QKV, attention output,
//! the two FFN matrices: ~98% of the FLOPs) run as one GEMM over all tokens
//! of the batch, so no work is spent on padding whatever the length mix.
//! Only attention, which must not mix sequences, runs per sequence.
//!
//! Weight names follow Hugging Face's `BertModel` (with or without a `bert.`
//! prefix), so any BERT-family sentence-transformers checkpoint loads.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::linear::Dense;
use serde::Deserialize;

use crate::error::{EmbedError, Result};

/// The subset of Hugging Face's `config.json` a BERT encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

#[derive(Debug, Clone, Copy)]
enum Act {
    GeluErf,
    GeluTanh,
    Relu,
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    ffn_in: Dense,
    ffn_out: Dense,
    ffn_norm: LayerNorm,
}

pub struct Bert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    act: Act,
    device: Device,
}

fn linear(vb: &VarBuilder, inp: usize, out: usize) -> candle_core::Result<Linear> {
    Ok(Linear::new(
        vb.get((out, inp), "weight")?,
        Some(vb.get(out, "bias")?),
    ))
}

fn dense(vb: &VarBuilder, inp: usize, out: usize, gelu: bool) -> candle_core::Result<Dense> {
    Dense::new(
        vb.get((out, inp), "weight")?,
        Some(vb.get(out, "bias")?),
        gelu,
    )
}

fn layer_norm(vb: &VarBuilder, size: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(size, "weight")?,
        vb.get(size, "bias")?,
        eps,
    ))
}

impl Bert {
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let act = match cfg.hidden_act.as_str() {
            "gelu" => Act::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Act::GeluTanh,
            "relu" => Act::Relu,
            other => {
                return Err(EmbedError::Backend(format!(
                    "unsupported hidden_act '{other}'"
                )));
            }
        };
        if let Some(kind) = cfg.position_embedding_type.as_deref()
            && kind != "absolute"
        {
            return Err(EmbedError::Backend(format!(
                "unsupported position_embedding_type '{kind}'"
            )));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(EmbedError::Backend(
                "hidden_size is not a multiple of num_attention_heads".into(),
            ));
        }
        // Checkpoints saved from BertModel have no prefix; from BertFor* they
        // carry "bert." (or the model_type).
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp(cfg.model_type.as_deref().unwrap_or("bert"))
        };
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let word = Embedding::new(emb.get((cfg.vocab_size, h), "word_embeddings.weight")?, h);
        let position = Embedding::new(
            emb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            h,
        );
        let token_type = Embedding::new(
            emb.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?,
            h,
        );
        let emb_norm = layer_norm(&emb.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lv = vb.pp(format!("encoder.layer.{i}"));
            let att = lv.pp("attention");
            let q = linear(&att.pp("self.query"), h, h)?;
            let k = linear(&att.pp("self.key"), h, h)?;
            let v = linear(&att.pp("self.value"), h, h)?;
            // Fuse Q, K and V into one [3h, h] matrix: one GEMM instead of three.
            let w = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
            let b = match (q.bias(), k.bias(), v.bias()) {
                (Some(qb), Some(kb), Some(vb)) => Some(Tensor::cat(&[qb, kb, vb], 0)?),
                _ => None,
            };
            layers.push(Layer {
                qkv: Dense::new(w, b, false)?,
                attn_out: dense(&att.pp("output.dense"), h, h, false)?,
                attn_norm: layer_norm(&att.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
                // BERT's exact-erf GELU is fused into the BLAS layer.
                ffn_in: dense(
                    &lv.pp("intermediate.dense"),
                    h,
                    cfg.intermediate_size,
                    matches!(act, Act::GeluErf),
                )?,
                ffn_out: dense(&lv.pp("output.dense"), cfg.intermediate_size, h, false)?,
                ffn_norm: layer_norm(&lv.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            });
        }
        Ok(Self {
            word,
            position,
            token_type,
            emb_norm,
            layers,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            hidden: h,
            act,
            device: vb.device().clone(),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Runs the encoder over `seqs` (token ids, each already truncated to the
    /// model's limit) and returns the last hidden states, unpadded:
    /// `[sum(len), hidden]` with sequence `i`'s rows starting at the sum of the
    /// previous lengths.
    /// `blocks` > 1 splits each dense layer's rows over that many cores.
    pub fn forward(&self, seqs: &[&[u32]], blocks: usize) -> Result<Tensor> {
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut pos = Vec::with_capacity(total);
        for s in seqs {
            ids.extend_from_slice(s);
            pos.extend(0..s.len() as u32);
        }
        let ids = Tensor::from_vec(ids, total, &self.device)?;
        let pos = Tensor::from_vec(pos, total, &self.device)?;
        let types = Tensor::zeros(total, DType::U32, &self.device)?;
        let x = (self.word.forward(&ids)? + self.position.forward(&pos)?)?;
        let x = (x + self.token_type.forward(&types)?)?;
        let mut x = self.emb_norm.forward(&x)?;
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, seqs, blocks)?;
        }
        Ok(x)
    }

    fn layer_forward(
        &self,
        l: &Layer,
        x: &Tensor,
        seqs: &[&[u32]],
        blocks: usize,
    ) -> Result<Tensor> {
        let h = self.hidden;
        let qkv = l.qkv.forward(x, blocks)?; // [T, 3h]
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut ctx = Vec::with_capacity(seqs.len());
        let mut off = 0;
        for s in seqs {
            let n = s.len();
            let rows = qkv.narrow(0, off, n)?;
            off += n;
            let split = |i: usize| -> candle_core::Result<Tensor> {
                rows.narrow(1, i * h, h)?
                    .reshape((n, self.heads, self.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?); // [heads, n, d]
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let c = probs.matmul(&v)?.transpose(0, 1)?.reshape((n, h))?;
            ctx.push(c);
        }
        let ctx = Tensor::cat(&ctx, 0)?;
        let a = l
            .attn_norm
            .forward(&(l.attn_out.forward(&ctx, blocks)? + x)?)?;
        let i = l.ffn_in.forward(&a, blocks)?;
        let i = match self.act {
            _ if l.ffn_in.fuses_gelu() => i,
            Act::GeluErf => i.gelu_erf()?,
            Act::GeluTanh => i.gelu()?,
            Act::Relu => i.relu()?,
        };
        let o = (l.ffn_out.forward(&i, blocks)? + &a)?;
        Ok(l.ffn_norm.forward(&o)?)
    }
}

/// Reads the last hidden states back as one flat row-major buffer.
pub fn to_rows(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}
