//! The tile kernel for CPUs with AVX-512 VNNI, chosen at run time (the
//! workspace's baseline stays x86-64-v3): [`WIDE`] activation rows, one
//! per 32-bit lane of a 512-bit vector, so one broadcast of four weight
//! values serves twice the rows of the AVX2 tile, and `vpdpbusd` does the
//! multiply, the pairwise sums and the accumulation of four products per
//! lane in one instruction (exact: no 16-bit step).
//!
//! Each lane computes exactly the arithmetic of [`crate::scalar`]: the
//! integer dots are exact whatever instruction forms them, and the float
//! steps (scale product, two FMAs per block into accumulator `b % 8`, the
//! fixed reduction) are the same operations in the same order. A row's
//! result is the same bits on either kernel.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::acts::TileActs;
use crate::scalar::WRow;
use crate::{BLOCK, Format, Unpacked, WIDE};

/// Whether this CPU runs the kernel (checked once).
pub(crate) fn available() -> bool {
    static YES: OnceLock<bool> = OnceLock::new();
    *YES.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    })
}

/// `out[i] = w · a[i]` for the tile's rows, or `None` when the CPU lacks
/// the features or a slice does not fit.
///
/// `u`: the row as [`Unpacked::fill`] made it. Q8_0 bytes are read in
/// place and offset by 128 to unsigned in the register (`vpdpbusd`
/// multiplies unsigned by signed).
pub(crate) fn tile(w: WRow<'_>, u: &Unpacked, a: TileActs<'_>) -> Option<[f32; WIDE]> {
    let nb = w.d.len();
    let fits = a.q.len() >= nb * BLOCK * WIDE
        && a.scale.len() >= nb * WIDE
        && a.sum.len() >= nb * WIDE
        && a.qsum.len() >= nb * WIDE
        && u.d.len() >= nb
        && match w.format {
            Format::Q4_1 => u.vals.len() >= nb * BLOCK && u.m.len() >= nb,
            Format::Q8_0 => w.qs.len() >= nb * BLOCK,
        };
    if !fits || !available() {
        return None;
    }
    // SAFETY: the features were detected on this CPU, and every slice
    // holds what block `b < nb` reads (checked above).
    Some(unsafe {
        match w.format {
            Format::Q4_1 => blocks::<true>(w, u, a),
            Format::Q8_0 => blocks::<false>(w, u, a),
        }
    })
}

/// Safety: AVX-512F/BW/VNNI present; slices as [`tile`] checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn blocks<const Q41: bool>(w: WRow<'_>, u: &Unpacked, a: TileActs<'_>) -> [f32; WIDE] {
    let nb = w.d.len();
    let chunks = nb / 8;
    // SAFETY: as the caller guarantees.
    unsafe {
        // eight named accumulators, as in the AVX2 kernel
        let z = _mm512_setzero_ps();
        let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
        let (mut a4, mut a5, mut a6, mut a7) = (z, z, z, z);
        for c in 0..chunks {
            let b = c * 8;
            a0 = block::<Q41>(w, u, a, b, a0);
            a1 = block::<Q41>(w, u, a, b + 1, a1);
            a2 = block::<Q41>(w, u, a, b + 2, a2);
            a3 = block::<Q41>(w, u, a, b + 3, a3);
            a4 = block::<Q41>(w, u, a, b + 4, a4);
            a5 = block::<Q41>(w, u, a, b + 5, a5);
            a6 = block::<Q41>(w, u, a, b + 6, a6);
            a7 = block::<Q41>(w, u, a, b + 7, a7);
        }
        let mut tail = [a0, a1, a2, a3, a4, a5, a6, a7];
        for (k, ak) in tail.iter_mut().enumerate().take(nb % 8) {
            *ak = block::<Q41>(w, u, a, chunks * 8 + k, *ak);
        }
        let [a0, a1, a2, a3, a4, a5, a6, a7] = tail;
        // the scalar reduction, lane-wise
        let t = _mm512_add_ps(
            _mm512_add_ps(_mm512_add_ps(a0, a4), _mm512_add_ps(a2, a6)),
            _mm512_add_ps(_mm512_add_ps(a1, a5), _mm512_add_ps(a3, a7)),
        );
        let mut out = [0f32; WIDE];
        _mm512_storeu_ps(out.as_mut_ptr(), t);
        out
    }
}

/// One block of the tile into its accumulator (a lane per row).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn block<const Q41: bool>(
    w: WRow<'_>,
    u: &Unpacked,
    a: TileActs<'_>,
    b: usize,
    acc: __m512,
) -> __m512 {
    // SAFETY: see `blocks`.
    unsafe {
        let q = a.q.as_ptr().add(b * BLOCK * WIDE);
        let wp = match Q41 {
            true => u.vals.as_ptr().add(b * BLOCK),
            false => w.qs.as_ptr().add(b * BLOCK),
        };
        let offset = _mm512_set1_epi32(0x8080_8080_u32 as i32);
        let step = |s: __m512i, g: usize| {
            let mut wg = _mm512_set1_epi32(wp.add(g * 4).cast::<i32>().read_unaligned());
            if !Q41 {
                // signed bytes + 128 = the same bits with the top one flipped
                wg = _mm512_xor_si512(wg, offset);
            }
            _mm512_dpbusd_epi32(s, wg, _mm512_loadu_si512(q.add(g * 64).cast()))
        };
        // four chains of two: `vpdpbusd` accumulates in place, so one
        // chain would wait out its latency eight times per block
        let z = _mm512_setzero_si512();
        let (s0, s1) = (step(step(z, 0), 4), step(step(z, 1), 5));
        let (s2, s3) = (step(step(z, 2), 6), step(step(z, 3), 7));
        let mut isum = _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3));
        if !Q41 {
            // the weights were offset by 128: subtract 128·Σq_a
            let qsum = _mm512_loadu_si512(a.qsum.as_ptr().add(b * WIDE).cast());
            isum = _mm512_sub_epi32(isum, _mm512_slli_epi32::<7>(qsum));
        }
        let sc = _mm512_mul_ps(
            _mm512_set1_ps(*u.d.get_unchecked(b)),
            _mm512_loadu_ps(a.scale.as_ptr().add(b * WIDE)),
        );
        let acc = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(isum), acc);
        if Q41 {
            _mm512_fmadd_ps(
                _mm512_set1_ps(*u.m.get_unchecked(b)),
                _mm512_loadu_ps(a.sum.as_ptr().add(b * WIDE)),
                acc,
            )
        } else {
            acc
        }
    }
}
