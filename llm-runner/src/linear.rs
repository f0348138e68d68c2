//! Linear layers with two kernels, chosen per call by the number of rows:
//!
//! - a real GEMM (OpenBLAS `sgemm`) on weights dequantised once at load:
//!   the default for every call (`quantized_max_rows = 0`).
//! - candle's quantized matmul straight on the GGUF blocks (Q4_1 × Q8_1
//!   dot products), for calls of at most `quantized_max_rows` rows. It
//!   needs 7× less weight memory traffic, but a row's result then depends
//!   on whether it was batched with others (a different kernel), so greedy
//!   output would change with load; off by default.
//!
//! Why the GEMM: candle's quantized matmul runs one vector dot per (row,
//! column), so a 512-token prompt costs as much as 512 decode steps, and a
//! batch of 16 decode rows 16 times one; the GEMM is compute-bound and an
//! order of magnitude faster per row. The price is memory: an f32 copy of
//! the linear weights (~0.5 GB for a 135M model).
//!
//! Several weights sharing an input (q/k/v, gate/up) are fused into one
//! GEMM; the quantized path runs them one by one and interleaves.

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::error::Result;

pub struct QLinear {
    parts: Vec<(QMatMul, usize)>,
    /// `[out, in]`, all parts stacked.
    dense: Array2<f32>,
    inp: usize,
    out: usize,
}

impl QLinear {
    /// `parts`: GGUF tensors of shape `[out_i, in]` sharing `in`.
    pub fn new(parts: Vec<QTensor>) -> Result<Self> {
        let mut rows = Vec::new();
        let mut qs = Vec::new();
        let mut inp = 0;
        let mut out = 0;
        for q in parts {
            let (o, i) = q.shape().dims2()?;
            inp = i;
            out += o;
            let w = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            rows.extend(w);
            qs.push((QMatMul::from_qtensor(q)?, o));
        }
        // the weight lives in an aligned allocation too (see forward_gemm)
        let mut w = Aligned::new(rows.len());
        w.slice_mut().copy_from_slice(&rows);
        let dense = Array2::from_shape_vec((out, inp), w.into_vec())
            .map_err(|e| crate::error::GenError::Model(e.to_string()))?;
        Ok(Self {
            parts: qs,
            dense,
            inp,
            out,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out
    }

    /// `x`: `rows × in`, row-major → `rows × out`.
    pub fn forward(&self, x: &[f32], rows: usize, quantized_max_rows: usize) -> Result<Vec<f32>> {
        if rows <= quantized_max_rows {
            self.forward_quantized(x, rows)
        } else {
            Ok(self.forward_gemm(x, rows))
        }
    }

    fn forward_quantized(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let xt = Tensor::from_slice(x, (rows, self.inp), &Device::Cpu)?;
        if self.parts.len() == 1 {
            return Ok(self.parts[0]
                .0
                .forward(&xt)?
                .flatten_all()?
                .to_vec1::<f32>()?);
        }
        let mut out = vec![0f32; rows * self.out];
        let mut offset = 0;
        for (q, n) in &self.parts {
            let y = q.forward(&xt)?.flatten_all()?.to_vec1::<f32>()?;
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

    /// Selected rows of the weight (an embedding lookup on a tied matrix).
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
