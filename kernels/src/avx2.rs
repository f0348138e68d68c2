//! The group kernel on AVX2 (the workspace's baseline): a 256-bit vector
//! holds four quant bytes of 8 weight rows, so a group is two halves.
//! Without VNNI the products go through `maddubs` (unsigned × signed
//! bytes to pairwise 16-bit sums) and `madd` to 32 bits:
//!
//! - Q4_1: nibbles 0..=15 against bytes ±127; the eight 4-value groups of
//!   a block sum to at most 16 products per 16-bit lane (≤ 30480), then
//!   one `madd` per row.
//! - Q8_0: the stored bytes (+128) are flipped back to signed; `|w|` times
//!   `a` carrying `w`'s sign (≤ 2·128·127 per pair) through `maddubs`.
//!
//! The float steps are [`crate::scalar`]'s, lane-wise in the same order.

use std::arch::x86_64::*;

use crate::GroupArgs as Args;
use crate::{BLOCK, Format, GROUP};

/// Rows per inner pass: 16 ymm registers hold the two weight vectors,
/// four integer and four float accumulators and the constants.
const PASS: usize = 4;

/// Group · `n` activation rows (`args`, shapes checked by
/// `QMatrix::group_args`) into `dst[i·16 + lane]`, [`PASS`] rows at a
/// time.
pub(crate) fn group(format: Format, args: Args<'_>, n: usize, dst: &mut [f32]) -> bool {
    let mut i = 0;
    while i < n {
        let k = (n - i).min(PASS);
        let args = args.skip_rows(i);
        let out = &mut dst[i * GROUP..];
        macro_rules! dispatch {
            ($($r:literal)*) => {
                for h in 0..2 {
                    match (format, k) {
                        $((Format::Q4_1, $r) => run::<$r, true>(args, h, out),
                          (Format::Q8_0, $r) => run::<$r, false>(args, h, out),)*
                        _ => return false,
                    }
                }
            };
        }
        // SAFETY: AVX2/FMA/F16C are compile-time target features (this
        // module is compiled only then); `args` holds nb records and k
        // activation rows of nb blocks, `out` k·16 floats (checked by
        // `QMatrix::group_args`).
        unsafe { dispatch!(1 2 3 4) };
        i += k;
    }
    true
}

/// Half `h` (lanes 8h..8h+8) of the group for `R` rows.
///
/// Safety: AVX2/FMA/F16C; `a` and `dst` as `QMatrix::group_args` checks,
/// for `R` rows.
#[inline(always)]
unsafe fn run<const R: usize, const Q41: bool>(a: Args<'_>, h: usize, dst: &mut [f32]) {
    let (rec, qbytes) = match Q41 {
        true => (4 * 64 + 64, 4 * 64),
        false => (8 * 64 + 32, 8 * 64),
    };
    let cols = a.nb * BLOCK;
    // SAFETY: block b < nb reads w[b·rec .. (b+1)·rec] and, for row i < R,
    // q[i·cols + b·32 ..+32] and scale/sum[i·nb + b]; dst[i·16 + 8h ..+8].
    unsafe {
        let low = _mm256_set1_epi8(15);
        let top = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..a.nb {
            let r0 = a.w.as_ptr().add(b * rec);
            let load = |j: usize| _mm256_loadu_si256(r0.add(j * 64 + h * 32).cast());
            let q = |i: usize| a.q.as_ptr().add(i * cols + b * BLOCK);
            let four = |i: usize, j: usize| {
                _mm256_set1_epi32(q(i).add(4 * j).cast::<i32>().read_unaligned())
            };
            let mut isum = [_mm256_setzero_si256(); R];
            if Q41 {
                let mut s16 = [_mm256_setzero_si256(); R];
                for j in 0..4 {
                    let v = load(j);
                    let lo = _mm256_and_si256(v, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                    for (i, s) in s16.iter_mut().enumerate() {
                        let p = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, four(i, j)),
                            _mm256_maddubs_epi16(hi, four(i, j + 4)),
                        );
                        *s = _mm256_add_epi16(*s, p);
                    }
                }
                for (s, t) in isum.iter_mut().zip(s16) {
                    *s = _mm256_madd_epi16(t, ones);
                }
            } else {
                for j in 0..8 {
                    let ws = _mm256_xor_si256(load(j), top);
                    let aw = _mm256_abs_epi8(ws);
                    for (i, s) in isum.iter_mut().enumerate() {
                        let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(four(i, j), ws));
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
                    }
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(r0.add(qbytes + h * 16).cast()));
            let mn = match Q41 {
                true => _mm256_cvtph_ps(_mm_loadu_si128(r0.add(qbytes + 32 + h * 16).cast())),
                false => _mm256_setzero_ps(),
            };
            for (i, acc) in acc.iter_mut().enumerate() {
                let k = i * a.nb + b;
                let sc = _mm256_mul_ps(d, _mm256_set1_ps(*a.scale.get_unchecked(k)));
                *acc = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(isum[i]), *acc);
                if Q41 {
                    *acc = _mm256_fmadd_ps(mn, _mm256_set1_ps(*a.sum.get_unchecked(k)), *acc);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(dst.as_mut_ptr().add(i * GROUP + h * 8), *acc);
        }
    }
}

/// One 32-value block quantized as [`crate::QuantizedActs::quantize`]
/// writes it out plainly (the same operations, so the same bits): the
/// scale `amax / 127`, values `round_ties_even(v / d)`; returns the scale
/// and the integer sum.
pub(crate) fn quantize_block(x: &[f32; 32], q: &mut [i8; 32]) -> (f32, i32) {
    // SAFETY: AVX2 is a compile-time target feature here; the loads and
    // the store stay within the two 32-element arrays.
    unsafe {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(i * 8)));
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let m = v.iter().fold(_mm256_setzero_ps(), |m, &x| {
            _mm256_max_ps(m, _mm256_and_ps(x, abs))
        });
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        let d = _mm_cvtss_f32(m) / 127.0;
        let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let i: [__m256i; 4] = std::array::from_fn(|k| {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v[k], inv),
            );
            _mm256_cvtps_epi32(r)
        });
        let s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s = _mm_hadd_epi32(s, s);
        let s = _mm_cvtsi128_si32(_mm_hadd_epi32(s, s));
        // packs work per 128-bit lane: fix the order with one permute
        let p = _mm256_packs_epi16(
            _mm256_packs_epi32(i[0], i[1]),
            _mm256_packs_epi32(i[2], i[3]),
        );
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr().cast(), p);
        (d, s)
    }
}

/// [`crate::attn::block_scores`] for up to 8 heads (shapes checked by the
/// caller); false for more.
pub(crate) fn attn_scores(q: &[f32], hd: usize, k: &[half::f16], out: &mut [f32]) -> bool {
    macro_rules! dispatch {
        ($($g:literal)*) => {
            match q.len() / hd {
                // SAFETY: the caller checked q = heads × hd, k ≥ hd × 16 and
                // out ≥ heads × 16; AVX2/FMA/F16C are compile-time features.
                $($g => unsafe { scores_g::<$g>(q, hd, k, out) },)*
                _ => return false,
            }
        };
    }
    dispatch!(1 2 3 4 5 6 7 8);
    true
}

/// Safety: as [`attn_scores`] checks, for `G` heads.
#[inline(always)]
unsafe fn scores_g<const G: usize>(q: &[f32], hd: usize, k: &[half::f16], out: &mut [f32]) {
    // SAFETY: dimension d reads k[16d .. 16d + 16] (d < hd) and q[g·hd + d]
    // (g < G); out[16g .. 16g + 16] is written.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        let kp = k.as_ptr().cast::<__m128i>();
        for d in 0..hd {
            let k0 = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(2 * d)));
            let k1 = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(2 * d + 1)));
            macro_rules! heads {
                ($($g:literal)*) => {$(
                    if $g < G {
                        let qd = _mm256_set1_ps(*q.get_unchecked($g * hd + d));
                        acc[$g][0] = _mm256_fmadd_ps(qd, k0, acc[$g][0]);
                        acc[$g][1] = _mm256_fmadd_ps(qd, k1, acc[$g][1]);
                    }
                )*};
            }
            heads!(0 1 2 3 4 5 6 7);
        }
        for (g, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(16 * g), a[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(16 * g + 8), a[1]);
        }
    }
}

/// [`crate::attn::block_values`] for up to 8 heads and a head size that
/// is a multiple of 16 (shapes checked by the caller); false otherwise.
pub(crate) fn attn_values(
    w: &[f32],
    hd: usize,
    v: &[half::f16],
    n: usize,
    out: &mut [f32],
) -> bool {
    if !hd.is_multiple_of(16) {
        return false;
    }
    macro_rules! dispatch {
        ($($g:literal)*) => {
            match out.len() / hd {
                // SAFETY: the caller checked out = heads × hd, w ≥ heads ×
                // 16, v ≥ 16 × hd and n ≤ 16; AVX2/FMA/F16C as above.
                $($g => unsafe { values_g::<$g>(w, hd, v, n, out) },)*
                _ => return false,
            }
        };
    }
    dispatch!(1 2 3 4 5 6 7 8);
    true
}

/// Safety: as [`attn_values`] checks, for `G` heads.
#[inline(always)]
unsafe fn values_g<const G: usize>(
    w: &[f32],
    hd: usize,
    v: &[half::f16],
    n: usize,
    out: &mut [f32],
) {
    // SAFETY: run c (16 values) of position i reads v[i·hd + 16c ..+16]
    // (i < n ≤ 16, 16c < hd), w[16g + i], and out[g·hd + 16c ..+16].
    unsafe {
        let o = out.as_mut_ptr();
        for c in (0..hd).step_by(16) {
            let mut acc = [[_mm256_setzero_ps(); 2]; G];
            for (g, a) in acc.iter_mut().enumerate() {
                a[0] = _mm256_loadu_ps(o.add(g * hd + c));
                a[1] = _mm256_loadu_ps(o.add(g * hd + c + 8));
            }
            for i in 0..n {
                let vp = v.as_ptr().add(i * hd + c).cast::<__m128i>();
                let v0 = _mm256_cvtph_ps(_mm_loadu_si128(vp));
                let v1 = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(1)));
                macro_rules! heads {
                    ($($g:literal)*) => {$(
                        if $g < G {
                            let wi = _mm256_set1_ps(*w.get_unchecked(16 * $g + i));
                            acc[$g][0] = _mm256_fmadd_ps(wi, v0, acc[$g][0]);
                            acc[$g][1] = _mm256_fmadd_ps(wi, v1, acc[$g][1]);
                        }
                    )*};
                }
                heads!(0 1 2 3 4 5 6 7);
            }
            for (g, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(o.add(g * hd + c), a[0]);
                _mm256_storeu_ps(o.add(g * hd + c + 8), a[1]);
            }
        }
    }
}
