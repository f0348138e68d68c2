//! A llama-family decoder over GGUF weights, written for batched serving:
//! one forward runs any mix of sequences (prefill chunks and single decode
//! tokens) whose tokens are stacked into one matrix, so every linear layer
//! is one matmul for the whole batch, while attention runs per sequence
//! against that sequence's own [`KvCache`]. candle's stock
//! `quantized_llama` keeps a single KV cache inside the model and cannot do
//! this.
//!
//! Layout matches llama.cpp's `llama` architecture: RMSNorm, rotary
//! embeddings on interleaved pairs (the GGUF converter permutes q/k for
//! it), grouped-query attention, SwiGLU feed-forward, tied or separate
//! output matrix.

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::QTensor;
use rayon::prelude::*;

use crate::attention::{Heads, ROWS_PER_JOB, SeqAttn, attend_into, attend_rows};
use crate::error::{GenError, Result};
use crate::gguf::{Gguf, LlamaConfig};
use crate::kv::KvCache;
use crate::linear::{Kernel, QLinear};
pub use crate::logits::Logits;
use crate::math;

/// Decode rows per part, at least, before a step is split by sequences
/// (see [`Llama::forward`]): fewer, and streaming all the weights per part
/// costs more than the hand-offs it saves (4 sequences on 2 threads: 4.3
/// ms split against 4.1 ms; 8: the same; 16: ~10.1 against 10.5 ms).
pub const SPLIT_ROWS: usize = 4;

struct Layer {
    attn_norm: Vec<f32>,
    qkv: QLinear,
    wo: QLinear,
    ffn_norm: Vec<f32>,
    gate_up: QLinear,
    down: QLinear,
}

pub struct Llama {
    pub cfg: LlamaConfig,
    /// `[vocab, hidden]`, dequantised (embedding lookup).
    embed: QLinear,
    /// `None`: tied to `embed`.
    output: Option<QLinear>,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    /// `[context, head_dim / 2]` cos and sin tables.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
}

/// One sequence's part of a batched forward.
pub struct SeqBatch<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    /// Return logits for the last token (prefill chunks before the last
    /// one don't need them).
    pub logits: bool,
}

/// `1/√(mean(x²) + eps)`. As llama.cpp's `rms_norm`: f32 squares summed
/// in f64, the mean back in f32; here in 8 f64 lanes, so it vectorises (a
/// single running f32 sum was a serial chain of 576 adds per row, ~0.35 ms
/// of a 16-row step).
fn rms_scale(row: &[f32], eps: f32) -> f32 {
    let mut acc = [0f64; 8];
    let chunks = row.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|v| f64::from(v * v)).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += f64::from(v * v);
        }
    }
    let ms = ((acc.iter().sum::<f64>() + rest) / row.len() as f64) as f32;
    1.0 / (ms + eps).sqrt()
}

/// `out` = `x` RMS-normalised with gains `w`.
fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = *v * scale * g;
    }
}

fn tensor(g: &mut Gguf, path: &Path, name: &str) -> Result<QTensor> {
    g.content
        .tensor(&mut g.file, name, &Device::Cpu)
        .map_err(|e| GenError::Model(format!("{}: tensor {name}: {e}", path.display())))
}

fn vec1(g: &mut Gguf, path: &Path, name: &str) -> Result<Vec<f32>> {
    Ok(tensor(g, path, name)?
        .dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

impl Llama {
    pub fn load(path: &Path, kernel: Kernel) -> Result<(Self, Gguf)> {
        let mut g = Gguf::open(path)?;
        let cfg = g.config(path)?;
        let out_norm = vec1(&mut g, path, "output_norm.weight")?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            let mut t = |n: &str| tensor(&mut g, path, &format!("{p}.{n}.weight"));
            let attn_norm = t("attn_norm")?
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1()?;
            let ffn_norm = t("ffn_norm")?
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1()?;
            let qkv = QLinear::new(vec![t("attn_q")?, t("attn_k")?, t("attn_v")?], kernel)?;
            let wo = QLinear::new(vec![t("attn_output")?], kernel)?;
            let gate_up = QLinear::new(vec![t("ffn_gate")?, t("ffn_up")?], kernel)?;
            let down = QLinear::new(vec![t("ffn_down")?], kernel)?;
            layers.push(Layer {
                attn_norm,
                qkv,
                wo,
                ffn_norm,
                gate_up,
                down,
            });
        }
        let embed = QLinear::new(vec![tensor(&mut g, path, "token_embd.weight")?], kernel)?;
        let output = match g.content.tensor_infos.contains_key("output.weight") {
            true => Some(QLinear::new(
                vec![tensor(&mut g, path, "output.weight")?],
                kernel,
            )?),
            false => None,
        };
        let half = cfg.head_dim / 2;
        let (mut rope_cos, mut rope_sin) = (
            Vec::with_capacity(cfg.context_length * half),
            Vec::with_capacity(cfg.context_length * half),
        );
        for pos in 0..cfg.context_length {
            for i in 0..half {
                let theta = cfg.rope_base.powf(-2.0 * i as f32 / cfg.head_dim as f32);
                let a = pos as f32 * theta;
                rope_cos.push(a.cos());
                rope_sin.push(a.sin());
            }
        }
        Ok((
            Self {
                cfg,
                embed,
                output,
                out_norm,
                layers,
                rope_cos,
                rope_sin,
            },
            g,
        ))
    }

    fn rope(&self, x: &mut [f32], pos: usize) {
        let half = self.cfg.head_dim / 2;
        let (cos, sin) = (
            &self.rope_cos[pos * half..(pos + 1) * half],
            &self.rope_sin[pos * half..(pos + 1) * half],
        );
        for head in x.chunks_mut(self.cfg.head_dim) {
            for i in 0..half {
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * cos[i] - b * sin[i];
                head[2 * i + 1] = a * sin[i] + b * cos[i];
            }
        }
    }

    /// Layer `li`'s attention for the whole batch (`qkv`: the stacked q, k,
    /// v rows; `pos`: each row's position): rope on q and k, k and v
    /// appended to each sequence's cache, then each sequence's rows against
    /// its cache. One task per sequence does all three for a sequence of
    /// at most [`ROWS_PER_JOB`] rows (every decode sequence), so a decode
    /// step opens one parallel region here, not two; longer prompt chunks
    /// are attended afterwards in jobs of that many rows, once all their
    /// keys are stored.
    fn attention(
        &self,
        li: usize,
        qkv: &[f32],
        batch: &mut [SeqBatch<'_>],
        pos: &[usize],
    ) -> Vec<f32> {
        let c = &self.cfg;
        let hd = c.head_dim;
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_kv_head * hd);
        let stride = q_dim + 2 * kv_dim;
        let heads = Heads {
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: hd,
        };
        let total = pos.len();
        let mut q = vec![0f32; total * q_dim];
        let mut attn = vec![0f32; total * q_dim];
        // each sequence's rows of q and of the output
        let mut parts = Vec::with_capacity(batch.len());
        let (mut qs, mut outs, mut row) = (&mut q[..], &mut attn[..], 0);
        for s in batch.iter_mut() {
            let n = s.tokens.len();
            let (mq, tq) = std::mem::take(&mut qs).split_at_mut(n * q_dim);
            let (mo, to) = std::mem::take(&mut outs).split_at_mut(n * q_dim);
            (qs, outs) = (tq, to);
            parts.push((s, mq, mo, row));
            row += n;
        }
        parts.into_par_iter().for_each(|(s, qs, out, row)| {
            for (j, qr) in qs.chunks_exact_mut(q_dim).enumerate() {
                let r = &qkv[(row + j) * stride..(row + j + 1) * stride];
                qr.copy_from_slice(&r[..q_dim]);
                self.rope(qr, pos[row + j]);
                let mut k = r[q_dim..q_dim + kv_dim].to_vec();
                self.rope(&mut k, pos[row + j]);
                let v = &r[q_dim + kv_dim..];
                s.cache.push(li, pos[row + j], c.n_kv_head, &k, v);
            }
            let n = s.tokens.len();
            if n <= ROWS_PER_JOB {
                let sa = SeqAttn {
                    row,
                    n,
                    past: s.cache.len(),
                    kv: s.cache.layer(li),
                };
                attend_rows(heads, qs, &sa, 0, out);
            }
        });
        // prompt chunks longer than one job
        let mut long = Vec::new();
        let mut row = 0;
        for s in batch.iter() {
            let n = s.tokens.len();
            if n > ROWS_PER_JOB {
                long.push(SeqAttn {
                    row,
                    n,
                    past: s.cache.len(),
                    kv: s.cache.layer(li),
                });
            }
            row += n;
        }
        if !long.is_empty() {
            attend_into(heads, &q, &long, &mut attn);
        }
        attn
    }

    /// Runs one batched step. Every sequence's new tokens are appended to
    /// its cache; returns, per sequence, the last token's logits when asked.
    /// Callers guarantee `cache.len() + tokens.len() <= context_length`.
    ///
    /// The step runs on a rayon worker: a step opens a parallel region per
    /// matmul (about 200 per decode step), and from a thread outside the
    /// pool each one is a hand-off to the pool and a futex wake back, where
    /// a worker starts on its share at once.
    ///
    /// A decode step of at least [`SPLIT_ROWS`] sequences per part is split
    /// by sequences: each part (a run of sequences) runs all the layers on
    /// its own, one per thread, whose inner regions only spill over to a
    /// thread that ran out of work; then the output matrix takes every
    /// part's rows in one call. Split by weight rows instead, each of the
    /// ~150 regions of the layers hands the activations to the other cores
    /// and the results back and waits for the slowest; each part streams
    /// all the layers' weights instead, which a decode step of 8 rows per
    /// thread can afford (it is compute-bound). On this 2-vCPU VM a
    /// 16-sequence step went from 10.5 to ~10.1 ms, and from 15–16 to ~12
    /// ms in the periods when the host makes cross-core hand-offs slow; see
    /// docs/benchmarks.md. Rows come out bit-identical either way (a row's
    /// products do not depend on its call), so greedy output is unchanged.
    pub fn forward(&self, batch: &mut [SeqBatch<'_>]) -> Result<Logits> {
        rayon::scope(|_| {
            let decode = batch.iter().all(|s| s.tokens.len() == 1);
            let parts = match decode {
                true => (batch.len() / SPLIT_ROWS).clamp(1, rayon::current_num_threads()),
                false => 1,
            };
            let last = match parts {
                1 => self.layers(batch)?,
                _ => {
                    let per = batch.len().div_ceil(parts);
                    let runs: Vec<&mut [SeqBatch<'_>]> = batch.chunks_mut(per).collect();
                    let parts = runs
                        .into_par_iter()
                        .map(|run| self.layers(run))
                        .collect::<Result<Vec<LastRows>>>()?;
                    LastRows::concat(parts, self.cfg.hidden)
                }
            };
            self.head(last)
        })
    }

    /// The output matrix over every part's last rows at once: per part it
    /// streamed the 30 MB matrix once per thread, at the memory bandwidth's
    /// limit (1.87 ms for 8 rows; the joined 16-row step is ~2% shorter).
    fn head(&self, last: LastRows) -> Result<Logits> {
        let c = &self.cfg;
        let h = c.hidden;
        let n = last.rows.len() / h.max(1);
        let mut data = Vec::new();
        if n > 0 {
            // normalised as they are quantized, like every layer's input
            let head = self.output.as_ref().unwrap_or(&self.embed);
            data = head.forward_with(n, |r, out| {
                rms_norm_into(&last.rows[r * h..][..h], &self.out_norm, c.rms_eps, out)
            })?;
        }
        Ok(Logits::new(data, c.vocab_size, last.of))
    }

    /// The layers over `batch` (the whole step, or one part of a split
    /// one, its parallel regions opened from this thread): the hidden rows
    /// of the sequences that want logits.
    fn layers(&self, batch: &mut [SeqBatch<'_>]) -> Result<LastRows> {
        let c = &self.cfg;
        let h = c.hidden;
        let total: usize = batch.iter().map(|s| s.tokens.len()).sum();
        if total == 0 {
            return Ok(LastRows {
                rows: Vec::new(),
                of: vec![None; batch.len()],
            });
        }
        // positions and token embeddings, stacked
        let mut x = Vec::with_capacity(total * h);
        let mut pos = Vec::with_capacity(total);
        for s in batch.iter() {
            for (j, &t) in s.tokens.iter().enumerate() {
                let row = self
                    .embed
                    .row(t as usize)
                    .ok_or_else(|| GenError::invalid(format!("token id {t} out of vocabulary")))?;
                x.extend(row);
                pos.push(s.cache.len() + j);
            }
        }
        for (li, layer) in self.layers.iter().enumerate() {
            // each linear layer's input rows are computed as they are
            // quantized (norms, the gated activation)
            let qkv = layer.qkv.forward_with(total, |r, out| {
                rms_norm_into(&x[r * h..][..h], &layer.attn_norm, c.rms_eps, out)
            })?;
            let attn = self.attention(li, &qkv, batch, &pos);
            let o = layer.wo.forward(&attn, total)?;
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            // feed-forward
            let gu = layer.gate_up.forward_with(total, |r, out| {
                rms_norm_into(&x[r * h..][..h], &layer.ffn_norm, c.rms_eps, out)
            })?;
            let ffn = c.ffn;
            let d = layer.down.forward_with(total, |r, out| {
                let (g, u) = gu[r * 2 * ffn..][..2 * ffn].split_at(ffn);
                math::swiglu(out, g, u);
            })?;
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        // logits for the last token of the sequences that want them
        let mut last = Vec::new();
        let mut row = 0;
        for s in batch.iter_mut() {
            let n = s.tokens.len();
            s.cache.advance(n);
            row += n;
            if s.logits && n > 0 {
                last.push(row - 1);
            }
        }
        let mut rows = Vec::with_capacity(last.len() * h);
        for r in last {
            rows.extend_from_slice(&x[r * h..][..h]);
        }
        let mut of = Vec::with_capacity(batch.len());
        let mut k = 0;
        for s in batch.iter() {
            let has = s.logits && !s.tokens.is_empty();
            of.push(has.then_some(k));
            k += usize::from(has);
        }
        Ok(LastRows { rows, of })
    }
}

/// The hidden rows (`hidden` values each) of the sequences that want
/// logits, and per batch entry its row.
struct LastRows {
    rows: Vec<f32>,
    of: Vec<Option<usize>>,
}

impl LastRows {
    /// The parts of a split step, in batch order.
    fn concat(parts: Vec<LastRows>, hidden: usize) -> LastRows {
        let mut all = LastRows {
            rows: Vec::new(),
            of: Vec::new(),
        };
        for p in parts {
            let base = all.rows.len() / hidden.max(1);
            all.of.extend(p.of.iter().map(|r| r.map(|r| r + base)));
            all.rows.extend(p.rows);
        }
        all
    }
}
