//! Activations quantized to 8 bits per 32-value block (as llama.cpp's CPU
//! path does), in their natural order: the kernels broadcast four of a
//! row's bytes at a time against a vector of weight rows, so no other
//! layout is needed.

use rayon::prelude::*;

use crate::BLOCK;

/// A run of rows being quantized: its first row, quants, scales, `d·Σq`,
/// `Σq`.
type Run<'a> = (
    (usize, &'a mut [i8]),
    (&'a mut [f32], (&'a mut [f32], &'a mut [i32])),
);

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
        if x.len() != rows * cols {
            return None;
        }
        Self::quantize_with(rows, cols, |r, out| {
            out.copy_from_slice(&x[r * cols..(r + 1) * cols]);
        })
    }

    /// Rows `row(r, out)` writes (`cols` values each), computed and
    /// quantized in one pass, so an elementwise step before a matmul (a
    /// norm, the gated activation) needs no buffer and no pass of its
    /// own. `None` unless `cols` is a multiple of 32.
    pub fn quantize_with<F>(rows: usize, cols: usize, row: F) -> Option<Self>
    where
        F: Fn(usize, &mut [f32]) + Sync,
    {
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let nb = cols / BLOCK;
        let blocks = rows * nb;
        let (mut scale, mut sum) = (vec![0f32; blocks], vec![0f32; blocks]);
        let mut qsum = vec![0i32; blocks];
        let mut q = vec![0i8; rows * cols];
        // a run of rows: each computed into a scratch row, then its blocks
        let run = |((first, q), (scale, (sum, qsum))): Run<'_>| {
            let mut x = vec![0f32; cols];
            let rows = q.chunks_exact_mut(cols).zip(scale.chunks_exact_mut(nb));
            let sums = sum.chunks_exact_mut(nb).zip(qsum.chunks_exact_mut(nb));
            for (i, ((q, scale), (sum, qsum))) in rows.zip(sums).enumerate() {
                row(first + i, &mut x);
                let blocks = x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK));
                let out = scale.iter_mut().zip(sum.iter_mut()).zip(qsum.iter_mut());
                for ((b, qb), ((d, sm), qs)) in blocks.zip(out) {
                    let (dv, s) = quantize_block(b, qb);
                    (*d, *sm, *qs) = (dv, dv * s as f32, s);
                }
            }
        };
        // serial, this would leave the other cores idle before every matmul
        // of a decode step; split in runs of rows, two runs per thread (a
        // task per row made 16 rows × 576 take 16 µs instead of 3)
        const SPLIT_FROM: usize = 4096;
        if rows > 1 && rows * cols >= SPLIT_FROM {
            let per = rows.div_ceil(2 * rayon::current_num_threads().max(1));
            q.par_chunks_mut(per * cols)
                .enumerate()
                .map(|(k, q)| (k * per, q))
                .zip(
                    scale.par_chunks_mut(per * nb).zip(
                        sum.par_chunks_mut(per * nb)
                            .zip(qsum.par_chunks_mut(per * nb)),
                    ),
                )
                .for_each(run);
        } else {
            run(((0, &mut q), (&mut scale, (&mut sum, &mut qsum))));
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

/// One block: its scale, its values into `q`, their integer sum.
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    #[cfg(target_feature = "avx2")]
    if let (Ok(x), Ok(q)) = (
        <&[f32; BLOCK]>::try_from(x),
        <&mut [i8; BLOCK]>::try_from(&mut *q),
    ) {
        return crate::avx2::quantize_block(x, q);
    }
    quantize_plain(x, q)
}

/// The plain definition (the SIMD version computes exactly this).
fn quantize_plain(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    // ties to even, as llama.cpp's AVX2 path rounds; |v·inv| ≤ 127 by
    // construction
    for (o, v) in q.iter_mut().zip(x) {
        *o = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    (d, q.iter().map(|&v| i32::from(v)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows split over the pool (runs of rows, an uneven last run) are
    /// quantized exactly as one row at a time.
    #[test]
    fn split_rows_match_single_rows() {
        let (rows, cols) = (21, 608);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let Some(all) = QuantizedActs::quantize(&x, rows, cols) else {
            panic!("shape")
        };
        let nb = cols / BLOCK;
        for r in 0..rows {
            let Some(one) = QuantizedActs::quantize(&x[r * cols..][..cols], 1, cols) else {
                panic!("shape")
            };
            assert_eq!(&all.q[r * cols..][..cols], &one.q[..], "row {r}");
            assert_eq!(&all.qsum[r * nb..][..nb], &one.qsum[..], "row {r}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&all.scale[r * nb..][..nb]),
                bits(&one.scale),
                "row {r}"
            );
            assert_eq!(bits(&all.sum[r * nb..][..nb]), bits(&one.sum), "row {r}");
        }
    }

    /// The vectorised block quantization equals the plain one bit for bit
    /// (values at exact halves included, where rounding ties to even).
    #[test]
    fn simd_quantization_is_the_plain_one() {
        let mut seed = 3u64;
        for case in 0..200 {
            let x: Vec<f32> = (0..BLOCK)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    match case % 3 {
                        // amax 127 makes the scale 1: halves are ties
                        0 if i == 0 => 127.0,
                        0 => (seed % 255) as f32 / 2.0 - 63.5,
                        1 => ((seed % 20001) as f32 / 10000.0 - 1.0) * 3.7,
                        // all zero: scale 0
                        _ => 0.0,
                    }
                })
                .collect();
            let (mut a, mut b) = ([0i8; BLOCK], [0i8; BLOCK]);
            let (da, sa) = quantize_block(&x, &mut a);
            let (db, sb) = quantize_plain(&x, &mut b);
            assert_eq!((da.to_bits(), sa, a), (db.to_bits(), sb, b), "case {case}");
        }
    }
}
