//! The arithmetic every path computes, written plainly: the fallback for
//! targets without AVX2, and the oracle the SIMD kernels are tested
//! against bit for bit.
//!
//! For weight row `o` and activation row `r`, one accumulator, blocks in
//! order: `isum_b = Σ q_w·q_a` (exact integers), then
//! `acc = fma(d_w·d_a, isum_b, acc)`, and for Q4_1 `acc = fma(m_w, s_a, acc)`.
//! The SIMD kernels hold one accumulator per lane (a lane is a weight
//! row) and run these same steps lane-wise, so a result has the same bits
//! whatever kernel computed it and whatever rows shared its call: batching
//! never changes greedy output.

use crate::{BLOCK, Format, QMatrix, QuantizedActs};

/// Weight row `o`'s quant at position `k` of block `b`, as a signed
/// integer (Q4_1: 0..=15; Q8_0: the signed byte).
pub(crate) fn quant(m: &QMatrix, o: usize, b: usize, k: usize) -> i32 {
    let (g, lane) = (o / crate::GROUP, o % crate::GROUP);
    let rec = m.record(g, b);
    let (quad, t) = (k / 4, k % 4);
    match m.format {
        Format::Q4_1 => {
            let byte = rec[(quad % 4) * 64 + lane * 4 + t];
            i32::from(if quad < 4 { byte & 15 } else { byte >> 4 })
        }
        Format::Q8_0 => i32::from((rec[quad * 64 + lane * 4 + t] ^ 0x80) as i8),
    }
}

/// `w[o] · a[r]` by the reference arithmetic.
pub(crate) fn dot(m: &QMatrix, o: usize, a: &QuantizedActs, r: usize) -> f32 {
    let nb = m.cols / BLOCK;
    let q = &a.q[r * a.cols..(r + 1) * a.cols];
    let mut acc = 0f32;
    for b in 0..nb {
        let isum: i32 = (0..BLOCK)
            .map(|k| quant(m, o, b, k) * i32::from(q[b * BLOCK + k]))
            .sum();
        let (d, mn) = m.scale_min(o, b);
        acc = (d * a.scale[r * nb + b]).mul_add(isum as f32, acc);
        if m.format == Format::Q4_1 {
            acc = mn.mul_add(a.sum[r * nb + b], acc);
        }
    }
    acc
}

/// Group `g` against activation rows `first..first + n`:
/// `dst[i·GROUP + lane] = w[g·GROUP + lane] · a[first + i]` (padding
/// lanes past the matrix's last row give 0).
pub(crate) fn group(
    m: &QMatrix,
    g: usize,
    a: &QuantizedActs,
    first: usize,
    n: usize,
    dst: &mut [f32],
) {
    for i in 0..n {
        for lane in 0..crate::GROUP {
            let o = g * crate::GROUP + lane;
            dst[i * crate::GROUP + lane] = match o < m.rows {
                true => dot(m, o, a, first + i),
                false => 0.0,
            };
        }
    }
}
