//! Linear layers, with the kernel chosen by what a row is:
//!
//! - **decode rows** (one generated token per sequence): the quantized
//!   kernel of `ragmesh-kernels` straight on the GGUF blocks (Q4_1 / Q8_0
//!   weights × activations quantized to 8 bits per 32-value block, as
//!   llama.cpp's CPU path). A decode step reads every weight once, so it
//!   is bound by memory traffic, and 4.5-bit blocks move ~7× fewer bytes
//!   than f32. All decode rows of a step share one pass over the weights,
//!   and a row's result is bit-identical whatever else is in the call.
//! - **prompt rows**: a GEMM (OpenBLAS `sgemm`) on weights dequantised at
//!   load, an order of magnitude faster than dot products for a prompt.
//!   OpenBLAS picks its blocking by the row count, so a row's last bits can
//!   depend on the call's size: each sequence's chunk is its own call, and
//!   the scheduler cuts prompts at fixed boundaries, so a prompt's calls
//!   are the same alone or batched.
//!
//! Together: greedy output does not depend on batching. `--kernel gemm`
//! sends every row of a step through one GEMM (the earlier engine: less
//! memory, ~7× the weight traffic per decode token, batch-dependent bits);
//! a weight format the quantized kernel lacks also takes the GEMM.
//!
//! Several weights sharing an input (q/k/v, gate/up) are fused: one GEMM,
//! or one activation quantization for all parts.

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use ragmesh_kernels::{Format, QMatrix, QuantizedActs};

use crate::error::{GenError, Result};

/// The engine's kernels (`--kernel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Kernel {
    /// Decode rows quantized, prompt rows GEMM per sequence.
    #[default]
    Quantized,
    /// Every row in one GEMM on dequantised f32 weights.
    Gemm,
}

impl Kernel {
    /// `RAGMESH_KERNEL` read as the runner's `--kernel` flag reads it, for
    /// harnesses that build a `GeneratorConfig` without the command line
    /// (tests, benchmarks); `None` when unset or not a kernel's name.
    pub fn from_env() -> Option<Self> {
        let v = std::env::var("RAGMESH_KERNEL").ok()?;
        <Self as clap::ValueEnum>::from_str(&v, true).ok()
    }
}

/// Consecutive rows of one sequence in a call.
#[derive(Debug, Clone, Copy)]
pub struct RowGroup {
    pub len: usize,
    /// Generated tokens (the quantized kernel), not prompt.
    pub decode: bool,
}

pub struct QLinear {
    /// The GGUF blocks of each part, for decode rows (`None`: the gemm
    /// kernel, or a format the quantized kernel lacks).
    quantized: Option<Vec<QMatrix>>,
    /// `[out, in]`, all parts stacked.
    dense: Array2<f32>,
    inp: usize,
    out: usize,
}

fn format_of(q: &QTensor) -> Option<Format> {
    match q.dtype() {
        GgmlDType::Q4_1 => Some(Format::Q4_1),
        GgmlDType::Q8_0 => Some(Format::Q8_0),
        _ => None,
    }
}

fn qmatrix(f: Format, rows: usize, cols: usize, data: Vec<u8>) -> Result<QMatrix> {
    QMatrix::new(f, rows, cols, data).ok_or_else(|| {
        GenError::Model(format!(
            "weight of {rows}×{cols} has a malformed block layout"
        ))
    })
}

impl QLinear {
    /// `parts`: GGUF tensors of shape `[out_i, in]` sharing `in`.
    pub fn new(parts: Vec<QTensor>, kernel: Kernel) -> Result<Self> {
        let mut inp = 0;
        let mut out = 0;
        for q in &parts {
            let (o, i) = q.shape().dims2()?;
            inp = i;
            out += o;
        }
        let quantize = kernel == Kernel::Quantized && parts.iter().all(|q| format_of(q).is_some());
        // parts of one format are stacked into a single matrix: one pass
        // (one parallel region) per call instead of one per part
        let one_format = parts
            .windows(2)
            .all(|p| format_of(&p[0]) == format_of(&p[1]));
        let mut quantized = quantize.then(Vec::new);
        let mut stacked: Option<(Format, usize, Vec<u8>)> = None;
        let mut w = Aligned::new(out * inp);
        let mut at = 0;
        for q in parts {
            if let (Some(ms), Some(f)) = (quantized.as_mut(), format_of(&q)) {
                let (o, i) = q.shape().dims2()?;
                let bytes = q.data()?;
                if one_format {
                    let (_, rows, data) = stacked.get_or_insert_with(|| (f, 0, Vec::new()));
                    *rows += o;
                    data.extend_from_slice(&bytes);
                } else {
                    ms.push(qmatrix(f, o, i, bytes.into_owned())?);
                }
            }
            let v = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            w.slice_mut()[at..at + v.len()].copy_from_slice(&v);
            at += v.len();
        }
        if let (Some(ms), Some((f, rows, data))) = (quantized.as_mut(), stacked) {
            ms.push(qmatrix(f, rows, inp, data)?);
        }
        // the weight lives in an aligned allocation too (see forward_gemm)
        let dense = Array2::from_shape_vec((out, inp), w.into_vec())
            .map_err(|e| GenError::Model(e.to_string()))?;
        Ok(Self {
            quantized,
            dense,
            inp,
            out,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out
    }

    /// `x`: `rows × in`, row-major → `rows × out`; `groups` partition the
    /// rows in order (see the module docs for who computes what).
    pub fn forward(&self, x: &[f32], groups: &[RowGroup]) -> Result<Vec<f32>> {
        let rows: usize = groups.iter().map(|g| g.len).sum();
        if x.len() != rows * self.inp {
            return Err(GenError::Internal("linear: input shape mismatch".into()));
        }
        let Some(parts) = &self.quantized else {
            return Ok(self.forward_gemm(x, rows));
        };
        let mut out = vec![0f32; rows * self.out];
        // all decode rows in one quantized pass over the weights
        let nq: usize = groups.iter().filter(|g| g.decode).map(|g| g.len).sum();
        let mut yq = Vec::new();
        if nq > 0 {
            let mut xq = Vec::with_capacity(nq * self.inp);
            let mut r = 0;
            for g in groups {
                if g.decode {
                    xq.extend_from_slice(&x[r * self.inp..(r + g.len) * self.inp]);
                }
                r += g.len;
            }
            yq = self.forward_quantized(parts, &xq, nq)?;
        }
        // each prompt chunk in its own GEMM
        let (mut r, mut q) = (0, 0);
        for g in groups {
            let dst = &mut out[r * self.out..(r + g.len) * self.out];
            if g.decode {
                dst.copy_from_slice(&yq[q * self.out..(q + g.len) * self.out]);
                q += g.len;
            } else if g.len > 0 {
                dst.copy_from_slice(
                    &self.forward_gemm(&x[r * self.inp..(r + g.len) * self.inp], g.len),
                );
            }
            r += g.len;
        }
        Ok(out)
    }

    fn forward_quantized(&self, parts: &[QMatrix], x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let shape_err = || GenError::Internal("quantized linear: shape mismatch".into());
        let acts = QuantizedActs::quantize(x, rows, self.inp).ok_or_else(shape_err)?;
        let mut out = vec![0f32; rows * self.out];
        if let [m] = parts {
            return if m.matmul(&acts, &mut out) {
                Ok(out)
            } else {
                Err(shape_err())
            };
        }
        let mut offset = 0;
        for m in parts {
            let n = m.rows();
            let mut y = vec![0f32; rows * n];
            if !m.matmul(&acts, &mut y) {
                return Err(shape_err());
            }
            for r in 0..rows {
                out[r * self.out + offset..r * self.out + offset + n]
                    .copy_from_slice(&y[r * n..(r + 1) * n]);
            }
            offset += n;
        }
        Ok(out)
    }

    /// One `sgemm` over all rows, staged in 64-byte-aligned buffers and
    /// padded to at least two rows. Both keep a row's result independent of
    /// the batch it is in (greedy output must not change when requests
    /// share a step): OpenBLAS takes other, differently rounding paths for
    /// unaligned edges and for single-row products.
    fn forward_gemm(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let m = rows.max(2);
        let mut a_buf = Aligned::new(m * self.inp);
        a_buf.slice_mut()[..x.len()].copy_from_slice(x);
        let mut c_buf = Aligned::new(m * self.out);
        if let (Ok(a), Ok(mut c)) = (
            ArrayView2::from_shape((m, self.inp), a_buf.slice()),
            ArrayViewMut2::from_shape((m, self.out), c_buf.slice_mut()),
        ) {
            ndarray::linalg::general_mat_mul(1.0, &a, &self.dense.t(), 0.0, &mut c);
        }
        let mut out = c_buf.slice().to_vec();
        out.truncate(rows * self.out);
        out
    }

    /// One row of the weight, dequantised (an embedding lookup on a tied
    /// matrix).
    pub fn row(&self, r: usize) -> Option<Vec<f32>> {
        (r < self.out).then(|| self.dense.index_axis(Axis(0), r).to_vec())
    }
}

/// A zeroed f32 buffer whose first element is 64-byte aligned (a Vec with
/// slack, viewed from the first aligned index).
struct Aligned {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let buf = vec![0f32; len + 16];
        let off = buf.as_ptr().align_offset(64).min(16);
        Self { buf, off, len }
    }

    fn slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }

    fn slice_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }

    /// An aligned Vec holding exactly the slice (moves the data down only
    /// if it is already aligned at index 0, otherwise copies once).
    fn into_vec(self) -> Vec<f32> {
        if self.off == 0 {
            let mut v = self.buf;
            v.truncate(self.len);
            v
        } else {
            self.slice().to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    fn tensor(rows: usize, cols: usize, seed: u64, dtype: GgmlDType) -> QTensor {
        let vals: Vec<f32> = (0..rows * cols)
            .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 1000.0 - 0.5) * 0.2)
            .collect();
        let t = Tensor::from_vec(vals, (rows, cols), &Device::Cpu);
        t.and_then(|t| QTensor::quantize(&t, dtype))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn input(n: usize, inp: usize) -> Vec<f32> {
        (0..n * inp)
            .map(|i| ((i * 7919 % 2000) as f32 / 1000.0 - 1.0) * 0.7)
            .collect()
    }

    fn groups(n: usize, decode: bool) -> Vec<RowGroup> {
        if decode {
            vec![
                RowGroup {
                    len: 1,
                    decode: true
                };
                n
            ]
        } else {
            vec![RowGroup {
                len: n,
                decode: false,
            }]
        }
    }

    /// A decode row's output is bit-identical whatever else is in the call
    /// (other decode rows, prompt chunks): what keeps greedy output
    /// independent of batching.
    #[test]
    fn a_decode_rows_result_does_not_depend_on_its_batch() {
        let (out, inp, n) = (1536, 576, 240);
        let parts = vec![
            tensor(out, inp, 7, GgmlDType::Q4_1),
            tensor(64, inp, 9, GgmlDType::Q4_1),
        ];
        let l = QLinear::new(parts, Kernel::Quantized).unwrap_or_else(|e| panic!("{e}"));
        let width = l.out_features();
        let x = input(n, inp);
        let all = l
            .forward(&x, &groups(n, true))
            .unwrap_or_else(|e| panic!("{e}"));
        for (lo, len) in [(0, 1), (5, 2), (17, 3), (100, 30), (200, 40), (3, 97)] {
            let got = l
                .forward(&x[lo * inp..(lo + len) * inp], &groups(len, true))
                .unwrap_or_else(|e| panic!("{e}"));
            for r in 0..len {
                let a = &all[(lo + r) * width..(lo + r + 1) * width];
                let b = &got[r * width..(r + 1) * width];
                assert!(
                    a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "row {} differs in a call of {len}",
                    lo + r
                );
            }
        }
        // a step mixing prompt chunks and decode rows: each group gets
        // exactly what it gets alone
        let mixed = [
            RowGroup {
                len: 30,
                decode: false,
            },
            RowGroup {
                len: 1,
                decode: true,
            },
            RowGroup {
                len: 7,
                decode: false,
            },
            RowGroup {
                len: 1,
                decode: true,
            },
        ];
        let y = l
            .forward(&x[..39 * inp], &mixed)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut r = 0;
        for g in mixed {
            let alone = l
                .forward(&x[r * inp..(r + g.len) * inp], &[g])
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                y[r * width..(r + g.len) * width],
                alone[..],
                "group at row {r}"
            );
            r += g.len;
        }
    }

    /// Both kernels compute the same product (up to the activations'
    /// 8-bit quantization).
    #[test]
    fn kernels_agree() {
        let (out, inp, n) = (96, 128, 5);
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QLinear::new(vec![tensor(out, inp, 3, dtype)], Kernel::Quantized);
            let g = QLinear::new(vec![tensor(out, inp, 3, dtype)], Kernel::Gemm);
            let (Ok(q), Ok(g)) = (q, g) else {
                panic!("load")
            };
            assert!(q.quantized.is_some() && g.quantized.is_none());
            let x = input(n, inp);
            let (yq, yg) = (
                q.forward(&x, &groups(n, true)),
                g.forward(&x, &groups(n, true)),
            );
            let (Ok(yq), Ok(yg)) = (yq, yg) else {
                panic!("forward")
            };
            for (a, b) in yq.iter().zip(&yg) {
                assert!(
                    (a - b).abs() < 0.02 * (1.0 + b.abs()),
                    "{dtype:?}: {a} vs {b}"
                );
            }
        }
    }
}
