//! Activations quantized to 8 bits per 32-value block, and the two layouts
//! the kernels read them in:
//!
//! - **row layout** (one activation row against one weight row): the
//!   natural order, plus, for Q4_1, each pair of blocks `(b, b+1)` as
//!   `[b: 0..16 | b+1: 0..16 | b: 16..32 | b+1: 16..32]` — the order a
//!   32-byte load of two blocks' nibbles unpacks into.
//! - **tile layout** (a tile of rows against one weight row: 8 for the
//!   AVX2 kernel, 16 for AVX-512): per block, per group of 4 values, the 4
//!   bytes of every row side by side, so one vector load pairs with 4
//!   weight values broadcast to all rows. Scales and sums are per block,
//!   one lane per row.

use crate::BLOCK;

/// Activation rows quantized to 8 bits per 32-value block.
pub struct QuantizedActs {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// Per row and block: the scale `d`.
    pub(crate) scale: Vec<f32>,
    /// Per row and block: `d · Σq` (the Q4_1 min term needs it).
    pub(crate) sum: Vec<f32>,
    /// `rows × cols`, natural order.
    pub(crate) q: Vec<i8>,
}

/// One activation row in row layout.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
pub(crate) struct RowActs<'a> {
    pub q: &'a [i8],
    /// Q4_1 pair layout of the whole 8-block chunks (empty for Q8_0).
    pub pairs: &'a [i8],
    pub scale: &'a [f32],
    pub sum: &'a [f32],
}

/// A tile of activation rows in tile layout (rows past the end are
/// zeros): [`TILE`](crate::TILE) rows for the AVX2 kernel, `WIDE` (16) for AVX-512.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
pub(crate) struct TileActs<'a> {
    /// `blocks × 8 groups × width rows × 4` bytes.
    pub q: &'a [i8],
    /// `blocks × width`.
    pub scale: &'a [f32],
    pub sum: &'a [f32],
    /// `blocks × width`: each row's integer `Σq` of the block (the AVX-512
    /// Q8_0 kernel offsets weights to unsigned and subtracts `128·Σq`).
    pub qsum: &'a [i32],
}

/// Owned tile-layout activations for several tiles.
pub(crate) struct Tiles {
    nb: usize,
    width: usize,
    q: Vec<i8>,
    scale: Vec<f32>,
    sum: Vec<f32>,
    qsum: Vec<i32>,
}

impl Tiles {
    pub fn tile(&self, t: usize) -> TileActs<'_> {
        let (qn, sn) = (self.nb * BLOCK * self.width, self.nb * self.width);
        TileActs {
            q: &self.q[t * qn..(t + 1) * qn],
            scale: &self.scale[t * sn..(t + 1) * sn],
            sum: &self.sum[t * sn..(t + 1) * sn],
            qsum: &self.qsum[t * sn..(t + 1) * sn],
        }
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
        let mut q = vec![0i8; x.len()];
        for (b, qb) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)) {
            // eight running maxima (lanes), so the compiler vectorises it;
            // a max is exact in any order
            let mut lanes = [0f32; 8];
            for c in b.chunks_exact(8) {
                for (m, v) in lanes.iter_mut().zip(c) {
                    *m = m.max(v.abs());
                }
            }
            let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            // ties to even (as llama.cpp's AVX2 path rounds), which the
            // compiler vectorises; |v·inv| ≤ 127 by construction
            for (o, v) in qb.iter_mut().zip(b) {
                *o = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
            let s: i32 = qb.iter().map(|&v| i32::from(v)).sum();
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

    pub(crate) fn blocks(&self) -> usize {
        self.cols / BLOCK
    }

    /// Row `r` in natural order; `pairs` must come from [`Self::pairs`].
    pub(crate) fn row<'a>(&'a self, r: usize, pairs: &'a [i8]) -> RowActs<'a> {
        let nb = self.blocks();
        RowActs {
            q: &self.q[r * self.cols..(r + 1) * self.cols],
            pairs,
            scale: &self.scale[r * nb..(r + 1) * nb],
            sum: &self.sum[r * nb..(r + 1) * nb],
        }
    }

    /// Row `r`'s whole 8-block chunks in the Q4_1 pair layout.
    pub(crate) fn pairs(&self, r: usize) -> Vec<i8> {
        let full = self.blocks() / 8 * 8;
        let q = &self.q[r * self.cols..r * self.cols + full * BLOCK];
        let mut out = Vec::with_capacity(q.len());
        for two in q.chunks_exact(2 * BLOCK) {
            let (a, b) = two.split_at(BLOCK);
            out.extend_from_slice(&a[..16]);
            out.extend_from_slice(&b[..16]);
            out.extend_from_slice(&a[16..]);
            out.extend_from_slice(&b[16..]);
        }
        out
    }

    /// `count` tiles of `width` rows from row `first`; rows past the last
    /// are zeros (their results are dropped).
    pub(crate) fn tiles(&self, width: usize, first: usize, count: usize) -> Tiles {
        let nb = self.blocks();
        let mut q = vec![0i8; count * nb * BLOCK * width];
        let mut scale = vec![0f32; count * nb * width];
        let mut sum = vec![0f32; count * nb * width];
        let mut qsum = vec![0i32; count * nb * width];
        for t in 0..count {
            for i in 0..width {
                let r = first + t * width + i;
                if r >= self.rows {
                    break;
                }
                for b in 0..nb {
                    let s = (t * nb + b) * width + i;
                    scale[s] = self.scale[r * nb + b];
                    sum[s] = self.sum[r * nb + b];
                    let src = &self.q[r * self.cols + b * BLOCK..][..BLOCK];
                    qsum[s] = src.iter().map(|&v| i32::from(v)).sum();
                    for (g, four) in src.chunks_exact(4).enumerate() {
                        let at = (((t * nb + b) * 8 + g) * width + i) * 4;
                        q[at..at + 4].copy_from_slice(four);
                    }
                }
            }
        }
        Tiles {
            nb,
            width,
            q,
            scale,
            sum,
            qsum,
        }
    }
}
