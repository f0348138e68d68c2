//! The arithmetic every path computes, written plainly: the scalar
//! fallback for targets without AVX2, and the oracle the SIMD kernels are
//! tested against bit for bit.
//!
//! For a weight row `w` and an activation row `a`, per block `b`:
//! `isum_b = Σ q_w·q_a` (exact integers), then, in eight accumulators
//! `acc[b % 8]`, in block order:
//! `acc = fma(d_w·d_a, isum_b, acc)`, and for Q4_1 `acc = fma(m_w, s_a, acc)`.
//! The result is `((acc0+acc4)+(acc2+acc6)) + ((acc1+acc5)+(acc3+acc7))`.
//! Eight accumulators let the single-row kernel put eight blocks in one
//! vector and the tile kernel keep one vector per accumulator with a row
//! per lane: both then round exactly as this does, so a row's result never
//! depends on the rows it was batched with.

use half::f16;

use crate::acts::RowActs;
use crate::{BLOCK, Format};

/// One weight row: its blocks' quants, scales and (Q4_1) mins.
#[derive(Clone, Copy)]
pub(crate) struct WRow<'a> {
    pub format: Format,
    /// Q4_1: 16 nibble bytes per block; Q8_0: 32 signed bytes.
    pub qs: &'a [u8],
    pub d: &'a [f16],
    pub m: &'a [f16],
}

/// Exact integer dot of block `b`.
pub(crate) fn block_isum(w: WRow<'_>, b: usize, q: &[i8]) -> i32 {
    let q = &q[b * BLOCK..(b + 1) * BLOCK];
    match w.format {
        Format::Q4_1 => {
            let blk = &w.qs[b * 16..(b + 1) * 16];
            (0..16)
                .map(|j| {
                    i32::from(blk[j] & 15) * i32::from(q[j])
                        + i32::from(blk[j] >> 4) * i32::from(q[j + 16])
                })
                .sum()
        }
        Format::Q8_0 => w.qs[b * BLOCK..(b + 1) * BLOCK]
            .iter()
            .zip(q)
            .map(|(&x, &y)| i32::from(x as i8) * i32::from(y))
            .sum(),
    }
}

/// Block `b`'s contribution to its accumulator, given its integer dot.
#[inline]
pub(crate) fn block_step(w: WRow<'_>, b: usize, a: RowActs<'_>, isum: i32, acc: f32) -> f32 {
    let acc = (w.d[b].to_f32() * a.scale[b]).mul_add(isum as f32, acc);
    match w.format {
        Format::Q4_1 => w.m[b].to_f32().mul_add(a.sum[b], acc),
        Format::Q8_0 => acc,
    }
}

/// The fixed reduction of the eight accumulators.
#[inline]
pub(crate) fn reduce(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// `w · a` by the reference arithmetic.
pub(crate) fn row_dot(w: WRow<'_>, a: RowActs<'_>) -> f32 {
    let mut acc = [0f32; 8];
    for b in 0..w.d.len() {
        acc[b % 8] = block_step(w, b, a, block_isum(w, b, a.q), acc[b % 8]);
    }
    reduce(acc)
}
