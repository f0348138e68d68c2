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

use crate::{BLOCK, Format, GROUP, QMatrix, QuantizedActs, ROWS};

/// Rows per inner pass: 16 ymm registers hold the two weight vectors,
/// four integer and four float accumulators and the constants.
const PASS: usize = 4;

#[derive(Clone, Copy)]
struct Args<'a> {
    w: &'a [u8],
    nb: usize,
    q: &'a [i8],
    scale: &'a [f32],
    sum: &'a [f32],
}

/// Group `g` · activation rows `first..first + n` into `dst[i·16 + lane]`;
/// false (nothing written) when a shape does not fit.
pub(crate) fn group(
    m: &QMatrix,
    g: usize,
    a: &QuantizedActs,
    first: usize,
    n: usize,
    dst: &mut [f32],
) -> bool {
    let nb = m.cols / BLOCK;
    let fits = (1..=ROWS).contains(&n)
        && a.cols == m.cols
        && first + n <= a.rows
        && a.q.len() >= (first + n) * a.cols
        && a.scale.len() >= (first + n) * nb
        && a.sum.len() >= (first + n) * nb
        && g < m.rows.div_ceil(GROUP)
        && dst.len() >= n * GROUP;
    if !fits {
        return false;
    }
    let w = m.group_data(g);
    let mut i = 0;
    while i < n {
        let k = (n - i).min(PASS);
        let r = first + i;
        let args = Args {
            w,
            nb,
            q: &a.q[r * a.cols..],
            scale: &a.scale[r * nb..],
            sum: &a.sum[r * nb..],
        };
        let out = &mut dst[i * GROUP..];
        macro_rules! dispatch {
            ($($r:literal)*) => {
                for h in 0..2 {
                    match (m.format, k) {
                        $((Format::Q4_1, $r) => run::<$r, true>(args, h, out),
                          (Format::Q8_0, $r) => run::<$r, false>(args, h, out),)*
                        _ => return false,
                    }
                }
            };
        }
        // SAFETY: AVX2/FMA/F16C are compile-time target features (this
        // module is compiled only then); `args` holds nb records and k
        // activation rows of nb blocks, `out` k·16 floats (checked above).
        unsafe { dispatch!(1 2 3 4) };
        i += k;
    }
    true
}

/// Half `h` (lanes 8h..8h+8) of the group for `R` rows.
///
/// Safety: AVX2/FMA/F16C; `a` and `dst` as [`group`] checks for `R` rows.
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
