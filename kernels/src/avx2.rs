//! AVX2 kernels computing exactly the arithmetic of [`crate::scalar`].
//!
//! - [`row`]: one activation row. Eight blocks at a time: their integer
//!   dots are reduced (`hadd`) into one vector with a block per lane, so
//!   the scale, the conversion and the two FMAs run once per eight blocks.
//!   Leftover blocks (fewer than eight) go one at a time.
//! - [`tile`]: [`TILE`] activation rows, one per lane. Four weight values
//!   are broadcast to every lane and multiplied with each row's matching
//!   four activations (`maddubs`), so nothing is reduced across lanes; the
//!   eight accumulators are eight registers.
//!
//! Every function checks its slice lengths first and otherwise falls back
//! to the scalar code, so the raw-pointer loads below stay in bounds.

use std::arch::x86_64::*;

use crate::acts::{RowActs, TileActs};
use crate::scalar::{self, WRow};
use crate::{BLOCK, Format, TILE, Unpacked};

fn row_fits(w: WRow<'_>, a: RowActs<'_>) -> bool {
    let nb = w.d.len();
    let qb = match w.format {
        Format::Q4_1 => 16,
        Format::Q8_0 => BLOCK,
    };
    let pairs = match w.format {
        Format::Q4_1 => nb / 8 * 8 * BLOCK,
        Format::Q8_0 => 0,
    };
    w.qs.len() >= nb * qb
        && (w.format == Format::Q8_0 || w.m.len() >= nb)
        && a.q.len() >= nb * BLOCK
        && a.pairs.len() >= pairs
        && a.scale.len() >= nb
        && a.sum.len() >= nb
}

/// `w · a`, bit-identical to [`scalar::row_dot`].
pub(crate) fn row(w: WRow<'_>, a: RowActs<'_>) -> f32 {
    if !row_fits(w, a) {
        return scalar::row_dot(w, a);
    }
    let nb = w.d.len();
    let chunks = nb / 8;
    // SAFETY: AVX2/FMA/F16C are compile-time target features (this module
    // is compiled only then). `row_fits` checked every slice against `nb`:
    // chunk `c` reads qs[c·8·qb .. (c+1)·8·qb], pairs[c·256 .. +256],
    // q[c·256 .. +256], d/m/scale/sum[c·8 .. +8], all inside.
    let acc = unsafe {
        let mut acc = _mm256_setzero_ps();
        for c in 0..chunks {
            let isum = match w.format {
                Format::Q4_1 => {
                    q4_1_chunk(w.qs.as_ptr().add(c * 128), a.pairs.as_ptr().add(c * 256))
                }
                Format::Q8_0 => q8_0_chunk(w.qs.as_ptr().add(c * 256), a.q.as_ptr().add(c * 256)),
            };
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(w.d.as_ptr().add(c * 8).cast()));
            let sc = _mm256_mul_ps(dw, _mm256_loadu_ps(a.scale.as_ptr().add(c * 8)));
            acc = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(isum), acc);
            if w.format == Format::Q4_1 {
                let mw = _mm256_cvtph_ps(_mm_loadu_si128(w.m.as_ptr().add(c * 8).cast()));
                acc = _mm256_fmadd_ps(mw, _mm256_loadu_ps(a.sum.as_ptr().add(c * 8)), acc);
            }
        }
        acc
    };
    let mut lanes = [0f32; 8];
    // SAFETY: an unaligned store of 8 floats into an 8-float array.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    for b in chunks * 8..nb {
        let k = b % 8;
        lanes[k] = scalar::block_step(w, b, a, block_isum(w, b, a.q), lanes[k]);
    }
    scalar::reduce(lanes)
}

/// Integer dots of one Q4_1 block (row layout), as scalar::block_isum.
fn block_isum(w: WRow<'_>, b: usize, q: &[i8]) -> i32 {
    if w.format == Format::Q8_0 {
        return scalar::block_isum(w, b, q);
    }
    // SAFETY: callers passed `row_fits`: qs holds 16 bytes at b·16 and q 32
    // at b·32.
    unsafe {
        let qs = _mm_loadu_si128(w.qs.as_ptr().add(b * 16).cast());
        let mask = _mm_set1_epi8(15);
        let lo = _mm_and_si128(qs, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), mask);
        let av = _mm256_loadu_si256(q.as_ptr().add(b * BLOCK).cast());
        let p = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_set_m128i(hi, lo), av),
            _mm256_set1_epi16(1),
        );
        let s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
        let s = _mm_hadd_epi32(s, s);
        let s = _mm_hadd_epi32(s, s);
        _mm_cvtsi128_si32(s)
    }
}

/// Eight Q4_1 blocks' integer dots, block `k` in lane `k`. `w`: 128
/// nibble bytes; `a`: 256 activation bytes in pair layout.
#[inline]
unsafe fn q4_1_chunk(w: *const u8, a: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 128 readable bytes at `w` and 256 at `a`.
    unsafe {
        let mask = _mm256_set1_epi8(15);
        let mut s = [_mm256_setzero_si256(); 4];
        for (p, sp) in s.iter_mut().enumerate() {
            let v = _mm256_loadu_si256(w.add(p * 32).cast());
            let lo = _mm256_and_si256(v, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
            let a0 = _mm256_loadu_si256(a.add(p * 64).cast());
            let a1 = _mm256_loadu_si256(a.add(p * 64 + 32).cast());
            // i16 lanes of 4 products (|·| ≤ 7620): block 2p low half,
            // block 2p+1 high half
            *sp = _mm256_add_epi16(_mm256_maddubs_epi16(lo, a0), _mm256_maddubs_epi16(hi, a1));
        }
        // two more pairwise levels stay within i16 (16 products ≤ 30480)
        let h = _mm256_hadd_epi16(_mm256_hadd_epi16(s[0], s[1]), _mm256_hadd_epi16(s[2], s[3]));
        // lanes hold blocks 0,2,4,6 | 1,3,5,7
        let v = _mm256_madd_epi16(h, _mm256_set1_epi16(1));
        _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

/// Eight Q8_0 blocks' integer dots, block `k` in lane `k`. `w` and `a`:
/// 256 bytes each, natural order.
#[inline]
unsafe fn q8_0_chunk(w: *const u8, a: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 256 readable bytes at `w` and at `a`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut p = [_mm256_setzero_si256(); 8];
        for (k, pk) in p.iter_mut().enumerate() {
            let wv = _mm256_loadu_si256(w.add(k * 32).cast());
            let av = _mm256_loadu_si256(a.add(k * 32).cast());
            // i8·i8 through maddubs: |w| unsigned, a carrying w's sign
            let m = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(av, wv));
            *pk = _mm256_madd_epi16(m, ones);
        }
        let lo = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        let hi = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        // lo: blocks 0..4 (first halves) | 0..4 (second halves); hi: 4..8
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(lo, hi),
            _mm256_permute2x128_si256::<0x31>(lo, hi),
        )
    }
}

fn tile_fits(w: WRow<'_>, a: TileActs<'_>) -> bool {
    let nb = w.d.len();
    let qb = match w.format {
        Format::Q4_1 => 16,
        Format::Q8_0 => BLOCK,
    };
    w.qs.len() >= nb * qb
        && (w.format == Format::Q8_0 || w.m.len() >= nb)
        && a.q.len() >= nb * BLOCK * TILE
        && a.scale.len() >= nb * TILE
        && a.sum.len() >= nb * TILE
}

/// `out[i] = w · a[i]` for the tile's rows, each bit-identical to
/// [`scalar::row_dot`]. `None` when the slices do not fit (the caller
/// then takes the row path).
///
/// `u`: the row as [`Unpacked::fill`] made it.
pub(crate) fn tile(w: WRow<'_>, u: &Unpacked, a: TileActs<'_>) -> Option<[f32; TILE]> {
    let nb = w.d.len();
    if !tile_fits(w, a) || u.d.len() < nb {
        return None;
    }
    match w.format {
        Format::Q4_1 if u.vals.len() >= nb * BLOCK && u.m.len() >= nb => {
            // SAFETY: `tile_fits` checked the slices against the block
            // count, and `u` holds 32 values, a scale and a min per block.
            Some(unsafe { tile_blocks::<true>(w, u, a) })
        }
        Format::Q4_1 => None,
        // SAFETY: as above; Q8_0 reads its bytes from `w.qs`.
        Format::Q8_0 => Some(unsafe { tile_blocks::<false>(w, u, a) }),
    }
}

/// A Q4_1 row's nibbles into `vals`, one value per byte in block order,
/// so tiles can broadcast four values with one load. False when the
/// lengths do not match.
pub(crate) fn unpack(qs: &[u8], vals: &mut [u8]) -> bool {
    if vals.len() != qs.len() * 2 || !qs.len().is_multiple_of(16) {
        return false;
    }
    // SAFETY: block `i` reads qs[16i..16i+16] and writes vals[32i..32i+32],
    // inside the slices checked above.
    unsafe {
        let mask = _mm_set1_epi8(15);
        for i in 0..qs.len() / 16 {
            let v = _mm_loadu_si128(qs.as_ptr().add(i * 16).cast());
            let dst = vals.as_mut_ptr().add(i * 32);
            _mm_storeu_si128(dst.cast(), _mm_and_si128(v, mask));
            _mm_storeu_si128(
                dst.add(16).cast(),
                _mm_and_si128(_mm_srli_epi16::<4>(v), mask),
            );
        }
    }
    true
}

/// `dst[i] = src[i]` as f32, eight at a time (`vcvtph2ps`).
pub(crate) fn widen(src: &[half::f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let whole = n / 8 * 8;
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= n, within both slices.
        unsafe {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().add(i).cast()));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
        }
    }
    for (d, s) in dst[whole..n].iter_mut().zip(&src[whole..n]) {
        *d = s.to_f32();
    }
}

/// The tile kernel for one format (`Q41`: Q4_1, else Q8_0).
///
/// Safety: the caller checked `tile_fits(w, a)` and that `u` holds what
/// [`tile`] checks.
#[inline(always)]
unsafe fn tile_blocks<const Q41: bool>(w: WRow<'_>, u: &Unpacked, a: TileActs<'_>) -> [f32; TILE] {
    let nb = w.d.len();
    let chunks = nb / 8;
    let rest = nb % 8;
    // SAFETY: target features as above; `tile_fits` checked that block
    // `b < nb` has its quant bytes at qs[b·qb], 256 activation bytes at
    // q[b·256] and TILE scales/sums at [b·TILE].
    unsafe {
        // eight named accumulators: an indexed array would live on the stack
        let z = _mm256_setzero_ps();
        let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
        let (mut a4, mut a5, mut a6, mut a7) = (z, z, z, z);
        for c in 0..chunks {
            let b = c * 8;
            a0 = tile_block::<Q41>(w, u, a, b, a0);
            a1 = tile_block::<Q41>(w, u, a, b + 1, a1);
            a2 = tile_block::<Q41>(w, u, a, b + 2, a2);
            a3 = tile_block::<Q41>(w, u, a, b + 3, a3);
            a4 = tile_block::<Q41>(w, u, a, b + 4, a4);
            a5 = tile_block::<Q41>(w, u, a, b + 5, a5);
            a6 = tile_block::<Q41>(w, u, a, b + 6, a6);
            a7 = tile_block::<Q41>(w, u, a, b + 7, a7);
        }
        let b = chunks * 8;
        let mut tail = [a0, a1, a2, a3, a4, a5, a6, a7];
        for (k, ak) in tail.iter_mut().enumerate().take(rest) {
            *ak = tile_block::<Q41>(w, u, a, b + k, *ak);
        }
        let [a0, a1, a2, a3, a4, a5, a6, a7] = tail;
        // the scalar reduction, lane-wise
        let t = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(a0, a4), _mm256_add_ps(a2, a6)),
            _mm256_add_ps(_mm256_add_ps(a1, a5), _mm256_add_ps(a3, a7)),
        );
        let mut out = [0f32; TILE];
        _mm256_storeu_ps(out.as_mut_ptr(), t);
        out
    }
}

/// One block of a tile into its accumulator (a lane per row).
#[inline(always)]
unsafe fn tile_block<const Q41: bool>(
    w: WRow<'_>,
    u: &Unpacked,
    a: TileActs<'_>,
    b: usize,
    acc: __m256,
) -> __m256 {
    // SAFETY: see `tile_blocks`.
    unsafe {
        let q = a.q.as_ptr().add(b * BLOCK * TILE);
        let sc = _mm256_mul_ps(
            _mm256_broadcast_ss(u.d.get_unchecked(b)),
            _mm256_loadu_ps(a.scale.as_ptr().add(b * TILE)),
        );
        if Q41 {
            // the block's 32 values, one per byte (unpacked by the
            // caller); four of them broadcast to every row's lane
            let wp = u.vals.as_ptr().add(b * BLOCK);
            let p = |g: usize| {
                let wg = _mm256_set1_epi32(wp.add(g * 4).cast::<i32>().read_unaligned());
                _mm256_maddubs_epi16(wg, _mm256_loadu_si256(q.add(g * 32).cast()))
            };
            // 8 groups of 4 products per i16 pair: ≤ 16 products per
            // i16 lane (≤ 30480), then one madd to i32 per row
            let s = _mm256_add_epi16(
                _mm256_add_epi16(_mm256_add_epi16(p(0), p(1)), _mm256_add_epi16(p(2), p(3))),
                _mm256_add_epi16(_mm256_add_epi16(p(4), p(5)), _mm256_add_epi16(p(6), p(7))),
            );
            let isum = _mm256_madd_epi16(s, _mm256_set1_epi16(1));
            let acc = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(isum), acc);
            _mm256_fmadd_ps(
                _mm256_broadcast_ss(u.m.get_unchecked(b)),
                _mm256_loadu_ps(a.sum.as_ptr().add(b * TILE)),
                acc,
            )
        } else {
            let wp = w.qs.as_ptr().add(b * BLOCK);
            let ones = _mm256_set1_epi16(1);
            let mut s = _mm256_setzero_si256();
            for g in 0..8 {
                let wb = _mm256_set1_epi32(wp.add(g * 4).cast::<i32>().read_unaligned());
                let av = _mm256_loadu_si256(q.add(g * 32).cast());
                // i8·i8 through maddubs: |w| unsigned, a carrying w's sign
                let m = _mm256_maddubs_epi16(_mm256_abs_epi8(wb), _mm256_sign_epi8(av, wb));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(m, ones));
            }
            _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(s), acc)
        }
    }
}
