//! Linear layers on one of two kernels (`--kernel`):
//!
//! - **quantized** (the default): every row, prompt or generated, through
//!   `ragmesh-kernels` straight on the GGUF blocks (Q4_1 / Q8_0 weights ×
//!   activations quantized to 8 bits per 32-value block, as llama.cpp's
//!   CPU path does for prompts and decode alike). A decode step reads
//!   every weight once, so it is bound by memory traffic, and 4.5-bit
//!   blocks move ~7× fewer bytes than f32; for prompt rows the integer
//!   kernel (VNNI where the CPU has it) outruns an f32 GEMM as well:
//!   measured on SmolLM2, prefill of 512 tokens went from ~500 to ~675
//!   tok/s when prompt rows left OpenBLAS `sgemm` for this kernel, and 16
//!   short prompts admitted together from ~620 ms to ~110 ms (sgemm packs
//!   the whole f32 weight per call, so a call per sequence was slow). A
//!   row's result is bit-identical whatever else is in the call, so greedy
//!   output does not depend on batching; no f32 copy of the weights is
//!   kept (embedding rows are dequantised on lookup).
//! - **gemm**: every row of a step in one OpenBLAS `sgemm` on weights
//!   dequantised at load (the earlier engine: ~4× the memory, ~7× the
//!   weight traffic per decode token, batch-dependent last bits). A weight
//!   format the quantized kernel lacks also takes it.
//!
//! Several weights sharing an input (q/k/v, gate/up) are fused: one
//! activation quantization (or one GEMM) for all parts.

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use ragmesh_kernels::{Format, QMatrix, QuantizedActs};

use crate::error::{GenError, Result};

/// The engine's kernels (`--kernel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Kernel {
    /// Every row (prompt and decode) on the GGUF blocks, quantized kernels.
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

pub struct QLinear {
    /// The GGUF blocks of each part (`None`: the gemm kernel, or a format
    /// the quantized kernel lacks).
    quantized: Option<Vec<QMatrix>>,
    /// `[out, in]`, all parts stacked and dequantised: the gemm kernel's
    /// weights (`None` with the quantized kernel).
    dense: Option<Array2<f32>>,
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
        if quantize {
            let mut ms = Vec::new();
            let mut stacked: Option<(Format, usize, Vec<u8>)> = None;
            for q in parts {
                let (o, i) = q.shape().dims2()?;
                let f = format_of(&q).ok_or_else(|| GenError::Internal("format".into()))?;
                let bytes = q.data()?;
                if one_format {
                    let (_, rows, data) = stacked.get_or_insert_with(|| (f, 0, Vec::new()));
                    *rows += o;
                    data.extend_from_slice(&bytes);
                } else {
                    ms.push(qmatrix(f, o, i, bytes.into_owned())?);
                }
            }
            if let Some((f, rows, data)) = stacked {
                ms.push(qmatrix(f, rows, inp, data)?);
            }
            return Ok(Self {
                quantized: Some(ms),
                dense: None,
                inp,
                out,
            });
        }
        let mut w = Aligned::new(out * inp);
        let mut at = 0;
        for q in parts {
            let v = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            w.slice_mut()[at..at + v.len()].copy_from_slice(&v);
            at += v.len();
        }
        // the weight lives in an aligned allocation too (see forward_gemm)
        let dense = Array2::from_shape_vec((out, inp), w.into_vec())
            .map_err(|e| GenError::Model(e.to_string()))?;
        Ok(Self {
            quantized: None,
            dense: Some(dense),
            inp,
            out,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out
    }

    /// `x`: `rows × in`, row-major → `rows × out`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if x.len() != rows * self.inp {
            return Err(GenError::Internal("linear: input shape mismatch".into()));
        }
        match (&self.quantized, &self.dense) {
            (Some(parts), _) => self.forward_quantized(parts, x, rows),
            (None, Some(dense)) => Ok(self.forward_gemm(dense, x, rows)),
            (None, None) => Err(GenError::Internal("linear: no weights".into())),
        }
    }

    /// [`Self::forward`] of the `rows` input rows that `row(r, out)`
    /// writes (`in` values each): with the quantized kernel they are
    /// computed and quantized in one pass (a norm or the gated activation
    /// before this layer needs no buffer and no pass of its own).
    pub fn forward_with<F>(&self, rows: usize, row: F) -> Result<Vec<f32>>
    where
        F: Fn(usize, &mut [f32]) + Sync,
    {
        match &self.quantized {
            Some(parts) => {
                let acts = QuantizedActs::quantize_with(rows, self.inp, row)
                    .ok_or_else(|| GenError::Internal("quantized linear: shape mismatch".into()))?;
                self.matmul_parts(parts, &acts, rows)
            }
            None => {
                let mut x = vec![0f32; rows * self.inp];
                for (r, out) in x.chunks_exact_mut(self.inp.max(1)).enumerate() {
                    row(r, out);
                }
                self.forward(&x, rows)
            }
        }
    }

    fn forward_quantized(&self, parts: &[QMatrix], x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let shape_err = || GenError::Internal("quantized linear: shape mismatch".into());
        let acts = QuantizedActs::quantize(x, rows, self.inp).ok_or_else(shape_err)?;
        self.matmul_parts(parts, &acts, rows)
    }

    fn matmul_parts(
        &self,
        parts: &[QMatrix],
        acts: &QuantizedActs,
        rows: usize,
    ) -> Result<Vec<f32>> {
        let shape_err = || GenError::Internal("quantized linear: shape mismatch".into());
        if let [m] = parts {
            return m.matmul_new(acts).ok_or_else(shape_err);
        }
        let mut out = vec![0f32; rows * self.out];
        let mut offset = 0;
        for m in parts {
            let n = m.rows();
            let mut y = vec![0f32; rows * n];
            if !m.matmul(acts, &mut y) {
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
    fn forward_gemm(&self, dense: &Array2<f32>, x: &[f32], rows: usize) -> Vec<f32> {
        let m = rows.max(2);
        let mut a_buf = Aligned::new(m * self.inp);
        a_buf.slice_mut()[..x.len()].copy_from_slice(x);
        let mut c_buf = Aligned::new(m * self.out);
        if let (Ok(a), Ok(mut c)) = (
            ArrayView2::from_shape((m, self.inp), a_buf.slice()),
            ArrayViewMut2::from_shape((m, self.out), c_buf.slice_mut()),
        ) {
            ndarray::linalg::general_mat_mul(1.0, &a, &dense.t(), 0.0, &mut c);
        }
        let mut out = c_buf.slice().to_vec();
        out.truncate(rows * self.out);
        out
    }

    /// One row of the weight, dequantised (an embedding lookup on a tied
    /// matrix): from the GGUF blocks with the quantized kernel, which
    /// dequantise exactly as candle's loader does (`d·q + m`, `d·q`).
    pub fn row(&self, r: usize) -> Option<Vec<f32>> {
        if let Some(dense) = &self.dense {
            return (r < self.out).then(|| dense.index_axis(Axis(0), r).to_vec());
        }
        let mut r = r;
        for m in self.quantized.as_deref().unwrap_or_default() {
            if r < m.rows() {
                return m.dequantize_row(r);
            }
            r -= m.rows();
        }
        None
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

    /// A row's output is bit-identical whatever else is in the call (a
    /// decode step's other rows, prompt chunks of any length): what keeps
    /// greedy output independent of batching.
    #[test]
    fn a_rows_result_does_not_depend_on_its_batch() {
        let (out, inp, n) = (1536, 576, 240);
        let parts = vec![
            tensor(out, inp, 7, GgmlDType::Q4_1),
            tensor(64, inp, 9, GgmlDType::Q4_1),
        ];
        let l = QLinear::new(parts, Kernel::Quantized).unwrap_or_else(|e| panic!("{e}"));
        let width = l.out_features();
        let x = input(n, inp);
        let all = l.forward(&x, n).unwrap_or_else(|e| panic!("{e}"));
        for (lo, len) in [(0, 1), (5, 2), (17, 3), (100, 30), (200, 40), (3, 97)] {
            let got = l
                .forward(&x[lo * inp..(lo + len) * inp], len)
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
    }

    /// Rows handed over by a closure (computed as they are quantized) give
    /// exactly what the same rows as a matrix give, on both kernels; a
    /// layer whose input width is not whole blocks is refused, not a panic.
    #[test]
    fn rows_from_a_closure_equal_a_matrix() {
        let (out, inp, n) = (80, 192, 7);
        let x = input(n, inp);
        for kernel in [Kernel::Quantized, Kernel::Gemm] {
            let l = QLinear::new(vec![tensor(out, inp, 5, GgmlDType::Q4_1)], kernel)
                .unwrap_or_else(|e| panic!("{e}"));
            let want = l.forward(&x, n).unwrap_or_else(|e| panic!("{e}"));
            let got = l
                .forward_with(n, |r, o| o.copy_from_slice(&x[r * inp..][..inp]))
                .unwrap_or_else(|e| panic!("{e}"));
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{kernel:?}");
        }
        let l = QLinear::new(
            vec![tensor(out, inp, 5, GgmlDType::Q4_1)],
            Kernel::Quantized,
        );
        let Ok(mut l) = l else { panic!("load") };
        l.inp = 100; // not whole 32-value blocks
        assert!(l.forward_with(1, |_, o| o.fill(1.0)).is_err());
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
            assert!(q.dense.is_none() && g.dense.is_some());
            // embedding rows: the blocks dequantised as candle does, bit
            // for bit
            for r in [0, 1, out - 1] {
                assert_eq!(q.row(r), g.row(r), "{dtype:?} row {r}");
            }
            assert_eq!(q.row(out), None);
            let x = input(n, inp);
            let (yq, yg) = (q.forward(&x, n), g.forward(&x, n));
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
