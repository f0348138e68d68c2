//! Quantized matrix × vector products for decode steps, straight on the
//! GGUF blocks: a decode step reads every weight once per token, so it is
//! bound by memory traffic, and 4.5-bit weights move 7× fewer bytes than
//! dequantised f32 ones. The activations are quantized to 8 bits per
//! 32-value block first (as llama.cpp does), so each block's dot product
//! is an integer one.
//!
//! - [`QuantizedActs`]: activation rows quantized to Q8 (scale, sum, i8s).
//! - [`QMatrix`]: a weight matrix as its raw GGUF blocks (Q4_1 or Q8_0)
//!   and [`QMatrix::matmul`]: `out[r][o] = Σ w[o] · x[r]`, rows of the
//!   weight split over the rayon pool; all activation rows are served
//!   while a weight row is in cache, so a batch of decode rows reads the
//!   weights once.
//!
//! With AVX2 (the workspace's x86-64-v3 baseline) the block dots run on
//! `maddubs`/`madd` intrinsics; elsewhere on a scalar path with the same
//! integer arithmetic. Both are exact in the integer part, so a row's
//! result never depends on the other rows of the call.
//!
//! This crate is the workspace's only `unsafe`: unaligned SIMD loads from
//! slices whose lengths are checked by the safe callers, inside functions
//! compiled only when the target has AVX2.

#![cfg_attr(not(target_feature = "avx2"), forbid(unsafe_code))]

mod dot;

use half::f16;
use rayon::prelude::*;

/// Values per block (both formats).
pub const BLOCK: usize = 32;

/// GGUF block formats this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// f16 scale, f16 min, 16 bytes of 4-bit values: `w = d·q + m`.
    Q4_1,
    /// f16 scale, 32 signed bytes: `w = d·q`.
    Q8_0,
}

impl Format {
    pub fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }
}

/// A `rows × cols` weight matrix in GGUF block layout (row-major, each
/// row `cols / 32` blocks).
pub struct QMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl QMatrix {
    /// `None` unless `data` holds exactly `rows × cols` values of `format`
    /// and `cols` is a multiple of 32.
    pub fn new(format: Format, rows: usize, cols: usize, data: Vec<u8>) -> Option<Self> {
        let ok = cols > 0
            && cols.is_multiple_of(BLOCK)
            && data.len() == rows * (cols / BLOCK) * format.block_bytes();
        ok.then_some(Self {
            format,
            rows,
            cols,
            data,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.format.block_bytes()
    }

    /// `out` (`acts.rows() × self.rows()`, row-major) = `acts · selfᵀ`.
    /// Panics never: a shape mismatch leaves `out` untouched and returns
    /// false.
    pub fn matmul(&self, acts: &QuantizedActs, out: &mut [f32]) -> bool {
        let n = acts.rows;
        if acts.cols != self.cols || out.len() != n * self.rows {
            return false;
        }
        const SLAB: usize = 64;
        let rb = self.row_bytes();
        if n == 1 {
            // single-stream decode: slabs write straight into `out`
            let a = acts.row(0);
            self.data
                .par_chunks(rb * SLAB)
                .zip(out.par_chunks_mut(SLAB))
                .for_each(|(w, o)| {
                    for (y, wrow) in o.iter_mut().zip(w.chunks_exact(rb)) {
                        *y = match self.format {
                            Format::Q4_1 => dot::q4_1_row(wrow, a),
                            Format::Q8_0 => dot::q8_0_row(wrow, a),
                        };
                    }
                });
            return true;
        }
        // one task per slab of weight rows; each writes its own columns of
        // every activation row, gathered after
        let slabs: Vec<Vec<f32>> = self
            .data
            .par_chunks(rb * SLAB)
            .map(|w| {
                let rows = w.len() / rb;
                let mut part = vec![0f32; rows * n];
                let act_rows: Vec<ActRow<'_>> = (0..n).map(|r| acts.row(r)).collect();
                for (o, wrow) in w.chunks_exact(rb).enumerate() {
                    // tiles of activation rows share each unpacked weight
                    // block; a row's arithmetic is the same in any tile
                    let dst = &mut part[o * n..(o + 1) * n];
                    for (a, d) in act_rows.chunks(dot::TILE).zip(dst.chunks_mut(dot::TILE)) {
                        match self.format {
                            Format::Q4_1 => dot::q4_1_tile(wrow, a, d),
                            Format::Q8_0 => dot::q8_0_tile(wrow, a, d),
                        }
                    }
                }
                part
            })
            .collect();
        for (si, part) in slabs.iter().enumerate() {
            let base = si * SLAB;
            for (o, vals) in part.chunks_exact(n).enumerate() {
                for (r, v) in vals.iter().enumerate() {
                    out[r * self.rows + base + o] = *v;
                }
            }
        }
        true
    }

    /// Row `r` dequantised (an embedding lookup).
    pub fn dequantize_row(&self, r: usize) -> Option<Vec<f32>> {
        if r >= self.rows {
            return None;
        }
        let rb = self.row_bytes();
        let row = self.data.get(r * rb..(r + 1) * rb)?;
        let mut out = Vec::with_capacity(self.cols);
        for b in row.chunks_exact(self.format.block_bytes()) {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            match self.format {
                Format::Q4_1 => {
                    let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                    let qs = &b[4..20];
                    out.extend(qs.iter().map(|q| d * f32::from(q & 15) + m));
                    out.extend(qs.iter().map(|q| d * f32::from(q >> 4) + m));
                }
                Format::Q8_0 => out.extend(b[2..34].iter().map(|&q| d * f32::from(q as i8))),
            }
        }
        Some(out)
    }
}

/// Activation rows quantized to 8 bits per 32-value block.
pub struct QuantizedActs {
    rows: usize,
    cols: usize,
    /// Per block: scale `d`, and `d · Σq` (the Q4_1 min term needs it).
    scale: Vec<f32>,
    sum: Vec<f32>,
    q: Vec<i8>,
}

/// One quantized activation row.
#[derive(Clone, Copy)]
pub struct ActRow<'a> {
    pub scale: &'a [f32],
    pub sum: &'a [f32],
    pub q: &'a [i8],
}

impl ActRow<'_> {
    fn reborrow(&self) -> ActRow<'_> {
        *self
    }
}

impl QuantizedActs {
    /// `x`: `rows × cols` row-major; `None` unless `cols` is a multiple of
    /// 32 and `x` has `rows × cols` values.
    pub fn quantize(x: &[f32], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) || x.len() != rows * cols {
            return None;
        }
        let blocks = x.len() / BLOCK;
        let mut scale = Vec::with_capacity(blocks);
        let mut sum = Vec::with_capacity(blocks);
        let mut q = Vec::with_capacity(x.len());
        for b in x.chunks_exact(BLOCK) {
            let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut s = 0i32;
            for v in b {
                let qi = (v * inv).round().clamp(-127.0, 127.0) as i8;
                s += i32::from(qi);
                q.push(qi);
            }
            scale.push(d);
            sum.push(d * s as f32);
        }
        Some(Self {
            rows,
            cols,
            scale,
            sum,
            q,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn row(&self, r: usize) -> ActRow<'_> {
        let nb = self.cols / BLOCK;
        ActRow {
            scale: &self.scale[r * nb..(r + 1) * nb],
            sum: &self.sum[r * nb..(r + 1) * nb],
            q: &self.q[r * self.cols..(r + 1) * self.cols],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn f16b(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    /// Random Q4_1 and Q8_0 matrices: the kernel equals the dequantised
    /// weights times the dequantised activations (exact integer part, f32
    /// accumulation order aside).
    #[test]
    fn matmul_matches_dequantised_reference() {
        let (rows, cols, n) = (130, 96, 3);
        let mut seed = 7u64;
        for format in [Format::Q4_1, Format::Q8_0] {
            let mut data = Vec::new();
            for _ in 0..rows * cols / BLOCK {
                data.extend(f16b((rng(&mut seed) % 100) as f32 / 1000.0 + 0.001));
                match format {
                    Format::Q4_1 => {
                        data.extend(f16b(-((rng(&mut seed) % 100) as f32) / 500.0));
                        data.extend((0..16).map(|_| rng(&mut seed) as u8));
                    }
                    Format::Q8_0 => data.extend((0..32).map(|_| rng(&mut seed) as u8)),
                }
            }
            let m = QMatrix::new(format, rows, cols, data);
            let Some(m) = m else { panic!("shape") };
            let x: Vec<f32> = (0..n * cols)
                .map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let acts = QuantizedActs::quantize(&x, n, cols);
            let Some(acts) = acts else { panic!("acts") };
            let mut out = vec![0f32; n * rows];
            assert!(m.matmul(&acts, &mut out));
            for r in 0..n {
                // dequantised activations, as the kernel sees them
                let a = acts.row(r);
                let xa: Vec<f32> = (0..cols)
                    .map(|i| a.scale[i / BLOCK] * f32::from(a.q[i]))
                    .collect();
                for o in 0..rows {
                    let w = m.dequantize_row(o).unwrap_or_default();
                    let want: f32 = w.iter().zip(&xa).map(|(a, b)| a * b).sum();
                    let got = out[r * rows + o];
                    assert!(
                        (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "{format:?} row {r} out {o}: {got} vs {want}"
                    );
                }
            }
            // and close to the unquantised product
            let w0 = m.dequantize_row(0).unwrap_or_default();
            let exact: f32 = w0.iter().zip(&x[..cols]).map(|(a, b)| a * b).sum();
            assert!(
                (out[0] - exact).abs() < 0.05 * (1.0 + exact.abs()),
                "{} vs {exact}",
                out[0]
            );
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(QMatrix::new(Format::Q4_1, 2, 33, vec![0; 40]).is_none());
        assert!(QMatrix::new(Format::Q4_1, 2, 32, vec![0; 39]).is_none());
        assert!(QuantizedActs::quantize(&[0.0; 31], 1, 31).is_none());
        let m = QMatrix::new(Format::Q8_0, 1, 32, vec![0; 34]);
        let a = QuantizedActs::quantize(&[0.0; 64], 1, 64);
        if let (Some(m), Some(a)) = (m, a) {
            assert!(!m.matmul(&a, &mut [0.0]));
        }
    }
}
