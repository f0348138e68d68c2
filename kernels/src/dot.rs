//! One weight row · one activation row, per block format. `w` holds the
//! row's GGUF blocks; the callers pass matching lengths (a row of `cols`
//! values: `cols / 32` blocks, `cols` quantized activations).

use half::f16;

use crate::{ActRow, BLOCK};

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_1 weights: `Σ_blocks d_w·d_a·Σ q_w·q_a + m_w·(d_a·Σ q_a)`.
pub fn q4_1_row(w: &[u8], a: ActRow<'_>) -> f32 {
    #[cfg(target_feature = "avx2")]
    {
        avx2::q4_1_row(w, a)
    }
    #[cfg(not(target_feature = "avx2"))]
    {
        scalar_q4_1_row(w, a)
    }
}

/// Rows per tile: one pass over a weight row serves this many activation
/// rows (the weight blocks are unpacked once per tile).
pub const TILE: usize = 4;

/// `out[i] = w · a[i]` for up to [`TILE`] activation rows.
pub fn q4_1_tile(w: &[u8], a: &[ActRow<'_>], out: &mut [f32]) {
    #[cfg(target_feature = "avx2")]
    if a.len() == TILE {
        return avx2::q4_1_tile(w, a, out);
    }
    for (o, r) in out.iter_mut().zip(a) {
        *o = q4_1_row(w, r.reborrow());
    }
}

/// As [`q4_1_tile`] for Q8_0 weights.
pub fn q8_0_tile(w: &[u8], a: &[ActRow<'_>], out: &mut [f32]) {
    #[cfg(target_feature = "avx2")]
    if a.len() == TILE {
        return avx2::q8_0_tile(w, a, out);
    }
    for (o, r) in out.iter_mut().zip(a) {
        *o = q8_0_row(w, r.reborrow());
    }
}

/// Q8_0 weights: `Σ_blocks d_w·d_a·Σ q_w·q_a`.
pub fn q8_0_row(w: &[u8], a: ActRow<'_>) -> f32 {
    #[cfg(target_feature = "avx2")]
    {
        avx2::q8_0_row(w, a)
    }
    #[cfg(not(target_feature = "avx2"))]
    {
        scalar_q8_0_row(w, a)
    }
}

#[cfg_attr(target_feature = "avx2", allow(dead_code))]
fn scalar_q4_1_row(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let q = &a.q[b * BLOCK..(b + 1) * BLOCK];
        let mut s = 0i32;
        for j in 0..16 {
            s += i32::from(blk[4 + j] & 15) * i32::from(q[j]);
            s += i32::from(blk[4 + j] >> 4) * i32::from(q[j + 16]);
        }
        acc += f16_at(blk, 0) * a.scale[b] * s as f32 + f16_at(blk, 2) * a.sum[b];
    }
    acc
}

#[cfg_attr(target_feature = "avx2", allow(dead_code))]
fn scalar_q8_0_row(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let q = &a.q[b * BLOCK..(b + 1) * BLOCK];
        let s: i32 = blk[2..34]
            .iter()
            .zip(q)
            .map(|(&x, &y)| i32::from(x as i8) * i32::from(y))
            .sum();
        acc += f16_at(blk, 0) * a.scale[b] * s as f32;
    }
    acc
}

#[cfg(target_feature = "avx2")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::f16_at;
    use crate::{ActRow, BLOCK};

    /// Horizontal sum of 8 lanes.
    #[inline]
    fn hsum(v: __m256) -> f32 {
        // SAFETY: register-only intrinsics; this module is compiled only
        // when the target has AVX2 (and so AVX/SSE3).
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_hadd_ps(s, s);
            _mm_cvtss_f32(_mm_hadd_ps(s, s))
        }
    }

    pub fn q4_1_row(w: &[u8], a: ActRow<'_>) -> f32 {
        let blocks = w.len() / 20;
        if a.q.len() < blocks * BLOCK || a.scale.len() < blocks || a.sum.len() < blocks {
            return super::scalar_q4_1_row(w, a);
        }
        let mut mins = 0f32;
        // SAFETY: AVX2 is a compile-time target feature here; every load
        // reads 16 bytes at `blk[4..20]` or 32 bytes at `a.q[b*32..b*32+32]`,
        // both inside their slices (checked above / by chunks_exact).
        let acc = unsafe {
            let mask = _mm_set1_epi8(15);
            let ones = _mm256_set1_epi16(1);
            let mut acc = _mm256_setzero_ps();
            for (b, blk) in w.chunks_exact(20).enumerate() {
                let qs = _mm_loadu_si128(blk.as_ptr().add(4).cast());
                let lo = _mm_and_si128(qs, mask);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), mask);
                let wv = _mm256_set_m128i(hi, lo);
                let av = _mm256_loadu_si256(a.q.as_ptr().add(b * BLOCK).cast());
                // u8 weights × i8 activations → i16 pairs → i32 lanes
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones);
                let scale = _mm256_set1_ps(f16_at(blk, 0) * a.scale[b]);
                acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc);
                mins += f16_at(blk, 2) * a.sum[b];
            }
            acc
        };
        hsum(acc) + mins
    }

    pub fn q8_0_row(w: &[u8], a: ActRow<'_>) -> f32 {
        let blocks = w.len() / 34;
        if a.q.len() < blocks * BLOCK || a.scale.len() < blocks {
            return super::scalar_q8_0_row(w, a);
        }
        // SAFETY: as in q4_1_row; loads of 32 bytes at `blk[2..34]` and
        // `a.q[b*32..b*32+32]`.
        let acc = unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = _mm256_setzero_ps();
            for (b, blk) in w.chunks_exact(34).enumerate() {
                let wv = _mm256_loadu_si256(blk.as_ptr().add(2).cast());
                let av = _mm256_loadu_si256(a.q.as_ptr().add(b * BLOCK).cast());
                // i8 × i8 via maddubs: |w| (unsigned) × a carrying w's sign
                let p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(av, wv));
                let p = _mm256_madd_epi16(p, ones);
                let scale = _mm256_set1_ps(f16_at(blk, 0) * a.scale[b]);
                acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc);
            }
            acc
        };
        hsum(acc)
    }

    fn fits(w: &[u8], block_bytes: usize, a: &[ActRow<'_>]) -> bool {
        let blocks = w.len() / block_bytes;
        a.iter().all(|r| {
            r.q.len() >= blocks * BLOCK && r.scale.len() >= blocks && r.sum.len() >= blocks
        })
    }

    pub fn q4_1_tile(w: &[u8], a: &[ActRow<'_>], out: &mut [f32]) {
        if a.len() != super::TILE || out.len() < super::TILE || !fits(w, 20, a) {
            for (o, r) in out.iter_mut().zip(a) {
                *o = super::scalar_q4_1_row(w, r.reborrow());
            }
            return;
        }
        let blocks = w.len() / 20;
        // SAFETY: AVX2 is a compile-time target feature here. `fits` checked
        // that every activation row holds `blocks` blocks (32 quants, one
        // scale and one sum each), so the pointer reads at block `b <
        // blocks` stay inside the slices; weight loads read `blk[4..20]` of
        // a 20-byte chunk.
        let (acc, mins) = unsafe {
            let mask = _mm_set1_epi8(15);
            let ones = _mm256_set1_epi16(1);
            let q = [
                a[0].q.as_ptr(),
                a[1].q.as_ptr(),
                a[2].q.as_ptr(),
                a[3].q.as_ptr(),
            ];
            let sc = [
                a[0].scale.as_ptr(),
                a[1].scale.as_ptr(),
                a[2].scale.as_ptr(),
                a[3].scale.as_ptr(),
            ];
            let su = [
                a[0].sum.as_ptr(),
                a[1].sum.as_ptr(),
                a[2].sum.as_ptr(),
                a[3].sum.as_ptr(),
            ];
            let mut acc = [_mm256_setzero_ps(); super::TILE];
            let mut mins = [0f32; super::TILE];
            for (b, blk) in w.chunks_exact(20).take(blocks).enumerate() {
                let qs = _mm_loadu_si128(blk.as_ptr().add(4).cast());
                let lo = _mm_and_si128(qs, mask);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), mask);
                let wv = _mm256_set_m128i(hi, lo);
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                for t in 0..super::TILE {
                    let av = _mm256_loadu_si256(q[t].add(b * BLOCK).cast());
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones);
                    let scale = _mm256_set1_ps(d * *sc[t].add(b));
                    acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[t]);
                    mins[t] += m * *su[t].add(b);
                }
            }
            (acc, mins)
        };
        for t in 0..super::TILE {
            out[t] = hsum(acc[t]) + mins[t];
        }
    }

    pub fn q8_0_tile(w: &[u8], a: &[ActRow<'_>], out: &mut [f32]) {
        if a.len() != super::TILE || out.len() < super::TILE || !fits(w, 34, a) {
            for (o, r) in out.iter_mut().zip(a) {
                *o = super::scalar_q8_0_row(w, r.reborrow());
            }
            return;
        }
        let blocks = w.len() / 34;
        // SAFETY: as in q4_1_tile; weight loads read `blk[2..34]` of a
        // 34-byte chunk.
        let acc = unsafe {
            let ones = _mm256_set1_epi16(1);
            let q = [
                a[0].q.as_ptr(),
                a[1].q.as_ptr(),
                a[2].q.as_ptr(),
                a[3].q.as_ptr(),
            ];
            let sc = [
                a[0].scale.as_ptr(),
                a[1].scale.as_ptr(),
                a[2].scale.as_ptr(),
                a[3].scale.as_ptr(),
            ];
            let mut acc = [_mm256_setzero_ps(); super::TILE];
            for (b, blk) in w.chunks_exact(34).take(blocks).enumerate() {
                let wv = _mm256_loadu_si256(blk.as_ptr().add(2).cast());
                let wabs = _mm256_sign_epi8(wv, wv);
                let d = f16_at(blk, 0);
                for t in 0..super::TILE {
                    let av = _mm256_loadu_si256(q[t].add(b * BLOCK).cast());
                    let p = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, wv));
                    let p = _mm256_madd_epi16(p, ones);
                    let scale = _mm256_set1_ps(d * *sc[t].add(b));
                    acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[t]);
                }
            }
            acc
        };
        for t in 0..super::TILE {
            out[t] = hsum(acc[t]);
        }
    }
}
