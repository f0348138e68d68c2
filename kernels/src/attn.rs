//! Attention's two inner products on an f16 KV cache block of
//! [`CACHE_BLOCK`] positions, for the query heads of one KV group at once
//! (each key and value is loaded and widened once for all of them):
//!
//! - [`block_scores`]: keys stored dimension-major (`hd × 16`), so a
//!   dimension's 16 positions are one load, multiplied into every head's
//!   16 running scores (registers; no horizontal sums);
//! - [`block_values`]: values stored position-major (`16 × hd`), each
//!   position's row added, weighted, into every head's output.
//!
//! The AVX2 path (`vcvtph2ps`, FMA) keeps a head's accumulators in
//! registers for up to 8 heads per group; otherwise, and without AVX2, the
//! plain loops below compute the same sums in the same order.

use half::f16;

/// Positions per cache block.
pub const CACHE_BLOCK: usize = 16;

/// Asks for `run` to be fetched into the caches ahead of use, a cache
/// line at a time (a hint: never faults; nothing off x86-64). For the
/// next KV block, another allocation, whose stream the hardware
/// prefetchers would pick up only after its first misses.
#[allow(unsafe_code)]
pub fn prefetch(run: &[f16]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // a line per 32 values, and the last value's (a run need not
        // start on a line)
        let last = run.len().checked_sub(1);
        for at in (0..run.len()).step_by(32).chain(last) {
            // SAFETY: `at` is in bounds, and a prefetch reads nothing
            unsafe { _mm_prefetch::<_MM_HINT_T0>(run.as_ptr().add(at).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = run;
}

/// `out[g·16 + i] = Σ_d q[g·hd + d] · k[d·16 + i]` for the `q.len() / hd`
/// heads of `q` against one block's keys `k` (`hd × 16`). False (nothing
/// written) when the shapes do not fit.
pub fn block_scores(q: &[f32], hd: usize, k: &[f16], out: &mut [f32]) -> bool {
    let heads = q.len() / hd.max(1);
    if hd == 0
        || q.len() != heads * hd
        || k.len() < hd * CACHE_BLOCK
        || out.len() < heads * CACHE_BLOCK
    {
        return false;
    }
    #[cfg(target_feature = "avx2")]
    if crate::avx2::attn_scores(q, hd, k, out) {
        return true;
    }
    for (g, o) in out.chunks_exact_mut(CACHE_BLOCK).take(heads).enumerate() {
        let mut acc = [0f32; CACHE_BLOCK];
        for d in 0..hd {
            let qd = q[g * hd + d];
            for (a, kv) in acc.iter_mut().zip(&k[d * CACHE_BLOCK..][..CACHE_BLOCK]) {
                *a = qd.mul_add(kv.to_f32(), *a);
            }
        }
        o.copy_from_slice(&acc);
    }
    true
}

/// `out[g·hd + d] += Σ_{i<n} w[g·16 + i] · v[i·hd + d]` for `out.len() /
/// hd` heads, over the first `n ≤ 16` positions of one block's values
/// `v` (`16 × hd`). False (nothing written) when the shapes do not fit.
pub fn block_values(w: &[f32], hd: usize, v: &[f16], n: usize, out: &mut [f32]) -> bool {
    let heads = out.len() / hd.max(1);
    if hd == 0
        || n > CACHE_BLOCK
        || out.len() != heads * hd
        || w.len() < heads * CACHE_BLOCK
        || v.len() < CACHE_BLOCK * hd
    {
        return false;
    }
    #[cfg(target_feature = "avx2")]
    if crate::avx2::attn_values(w, hd, v, n, out) {
        return true;
    }
    for (g, o) in out.chunks_exact_mut(hd).enumerate() {
        for i in 0..n {
            let wi = w[g * CACHE_BLOCK + i];
            for (a, x) in o.iter_mut().zip(&v[i * hd..][..hd]) {
                *a = wi.mul_add(x.to_f32(), *a);
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(i: usize, salt: usize) -> f32 {
        f16::from_f32(((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0 - 1.0).to_f32()
    }

    /// Every group size (dispatched 1–8, and 9 past the dispatch) and head
    /// sizes with and without whole 16-value runs give the plain sums.
    #[test]
    fn block_products_match_the_definition() {
        for (heads, hd) in [(1, 64), (3, 64), (4, 32), (8, 16), (9, 64), (3, 24)] {
            let q: Vec<f32> = (0..heads * hd).map(|i| val(i, 1)).collect();
            let k: Vec<f16> = (0..hd * CACHE_BLOCK)
                .map(|i| f16::from_f32(val(i, 2)))
                .collect();
            let v: Vec<f16> = (0..hd * CACHE_BLOCK)
                .map(|i| f16::from_f32(val(i, 3)))
                .collect();
            let mut s = vec![0f32; heads * CACHE_BLOCK];
            assert!(block_scores(&q, hd, &k, &mut s));
            for g in 0..heads {
                for i in 0..CACHE_BLOCK {
                    let want: f32 = (0..hd)
                        .map(|d| q[g * hd + d] * k[d * CACHE_BLOCK + i].to_f32())
                        .sum();
                    let got = s[g * CACHE_BLOCK + i];
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{heads}×{hd} score {g},{i}: {got} vs {want}"
                    );
                }
            }
            for n in [16, 5] {
                let mut out: Vec<f32> = (0..heads * hd).map(|i| val(i, 4)).collect();
                let before = out.clone();
                assert!(block_values(&s, hd, &v, n, &mut out));
                for g in 0..heads {
                    for d in 0..hd {
                        let want = before[g * hd + d]
                            + (0..n)
                                .map(|i| s[g * CACHE_BLOCK + i] * v[i * hd + d].to_f32())
                                .sum::<f32>();
                        let got = out[g * hd + d];
                        assert!(
                            (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                            "{heads}×{hd} n {n} value {g},{d}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        assert!(!block_scores(
            &[0.0; 10],
            4,
            &[f16::ZERO; 64],
            &mut [0.0; 48]
        ));
        assert!(!block_values(
            &[0.0; 16],
            4,
            &[f16::ZERO; 64],
            17,
            &mut [0.0; 4]
        ));
    }
}
