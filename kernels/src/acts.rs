//! Activations quantized to 8 bits per 32-value block (as llama.cpp's CPU
//! path does), in their natural order: the kernels broadcast four of a
//! row's bytes at a time against a vector of weight rows, so no other
//! layout is needed.

use crate::BLOCK;

/// Activation rows quantized to 8 bits per 32-value block.
pub struct QuantizedActs {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// Per row and block: the scale `d`.
    pub(crate) scale: Vec<f32>,
    /// Per row and block: `d · Σq` (the Q4_1 min term needs it).
    pub(crate) sum: Vec<f32>,
    /// Per row and block: the integer `Σq` (the VNNI kernel offsets Q8_0
    /// weights to unsigned and subtracts `128·Σq`).
    pub(crate) qsum: Vec<i32>,
    /// `rows × cols`, natural order.
    pub(crate) q: Vec<i8>,
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
        let mut qsum = Vec::with_capacity(blocks);
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
            qsum.push(s);
        }
        Some(Self {
            rows,
            cols,
            scale,
            sum,
            qsum,
            q,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
}
