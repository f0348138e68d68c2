//! The group kernel for CPUs with AVX-512 VNNI, chosen at run time (the
//! workspace's baseline stays x86-64-v3): a 512-bit vector holds four
//! quant bytes of each of a group's 16 weight rows, and `vpdpbusd`
//! multiplies them with four bytes of an activation row broadcast to all
//! lanes, sums the four products and accumulates, exactly (32-bit lanes,
//! no 16-bit step).
//!
//! Per block, the weight vectors are loaded once (Q4_1: 4 loads, split
//! into 8 nibble vectors) and serve every activation row of the call;
//! each row then costs 8 `vpdpbusd` with broadcast operands and the float
//! steps of [`crate::scalar`], lane-wise in the same order, so each lane
//! has the reference's bits.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::GroupArgs as Args;
use crate::{BLOCK, Format, GROUP};

/// Whether this CPU runs the kernel (checked once).
pub(crate) fn available() -> bool {
    static YES: OnceLock<bool> = OnceLock::new();
    *YES.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    })
}

/// Group · `n` activation rows (`args`, shapes checked by
/// `QMatrix::group_args`) into `dst[i·16 + lane]`; false (nothing
/// written) when the CPU lacks the features.
pub(crate) fn group(format: Format, args: Args<'_>, n: usize, dst: &mut [f32]) -> bool {
    if !available() {
        return false;
    }
    macro_rules! dispatch {
        ($($r:literal)*) => {
            match (format, n) {
                $((Format::Q4_1, $r) => run::<$r, true>(args, dst),
                  (Format::Q8_0, $r) => run::<$r, false>(args, dst),)*
                _ => return false,
            }
        };
    }
    // SAFETY: the features were detected on this CPU; `args` holds nb
    // records of the format and n activation rows of nb blocks, and dst
    // n·16 floats (checked by `QMatrix::group_args`).
    unsafe { dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16) };
    true
}

/// From this many activation rows (8: below, no measurable difference) a block takes long enough (~230 cycles
/// at 16 rows) that the out-of-order core no longer reaches the next
/// block's loads, and the hardware prefetchers alone fell behind on a
/// matrix larger than L3: the 30 MB Q8_0 output matrix ran 2.2× slower per
/// value than a cache-resident one. Fewer rows stream by themselves.
const PREFETCH_ROWS: usize = 8;

/// How far ahead, in blocks (1.3–2.2 KB): about DRAM latency at 16 rows.
const PREFETCH_BLOCKS: usize = 4;

/// Safety: AVX-512F/BW/VNNI present; `a` and `dst` as `QMatrix::group_args` checks,
/// for `R` rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run<const R: usize, const Q41: bool>(a: Args<'_>, dst: &mut [f32]) {
    let (rec, qbytes) = match Q41 {
        true => (4 * 64 + 64, 4 * 64),
        false => (8 * 64 + 32, 8 * 64),
    };
    // SAFETY: block b < nb reads w[b·rec .. (b+1)·rec] and, for row i < R,
    // q[i·cols + b·32 ..+32] and scale/sum/qsum[i·nb + b]; dst[i·16 ..+16].
    unsafe {
        let low = _mm512_set1_epi8(15);
        let mut acc = [_mm512_setzero_ps(); R];
        for b in 0..a.nb {
            let r0 = a.w.as_ptr().add(b * rec);
            if R >= PREFETCH_ROWS {
                // a hint only (never faults): it may point past this group,
                // at the next one's first blocks, which follow in memory
                let ahead = r0.wrapping_add(PREFETCH_BLOCKS * rec);
                for line in 0..rec.div_ceil(64) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line * 64).cast());
                }
            }
            let load = |j: usize| _mm512_loadu_si512(r0.add(j * 64).cast());
            let mut w = [_mm512_setzero_si512(); 8];
            if Q41 {
                for j in 0..4 {
                    let v = load(j);
                    w[j] = _mm512_and_si512(v, low);
                    w[j + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                }
            } else {
                for (j, wj) in w.iter_mut().enumerate() {
                    *wj = load(j);
                }
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(r0.add(qbytes).cast()));
            let mn = match Q41 {
                true => _mm512_cvtph_ps(_mm256_loadu_si256(r0.add(qbytes + 32).cast())),
                false => _mm512_setzero_ps(),
            };
            // this block's column of every row: row i's values are `i·nb`
            // blocks further on
            let at = Block {
                q: a.q.as_ptr().add(b * BLOCK),
                scale: a.scale.as_ptr().add(b),
                sum: a.sum.as_ptr().add(b),
                qsum: a.qsum.as_ptr().add(b),
                nb: a.nb,
            };
            // rows unrolled by hand: as a loop (7 rows or more) the compiler
            // kept the accumulators on the stack
            macro_rules! rows {
                ($($i:literal)*) => {$(
                    if $i < R {
                        acc[$i] = row::<Q41>(&w, d, mn, at, $i, acc[$i]);
                    }
                )*};
            }
            rows!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        }
        for (i, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(dst.as_mut_ptr().add(i * GROUP), *acc);
        }
    }
}

/// One block of every activation row of a call, as raw pointers set once
/// per block (indexing each row's slices in the row step was ~1.5% of a
/// 16-row call).
#[derive(Clone, Copy)]
struct Block {
    q: *const i8,
    scale: *const f32,
    sum: *const f32,
    qsum: *const i32,
    nb: usize,
}

/// Activation row `i`'s block `at` against the block's weight vectors `w`
/// (scales `d`, mins `mn`), into its accumulator.
///
/// Safety: as [`run`] (row i < R, the block within the row).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn row<const Q41: bool>(
    w: &[__m512i; 8],
    d: __m512,
    mn: __m512,
    at: Block,
    i: usize,
    acc: __m512,
) -> __m512 {
    // SAFETY: row i < R and the block < nb, as `run` guarantees.
    unsafe {
        let q = at.q.add(i * at.nb * BLOCK);
        let four = |j: usize| _mm512_set1_epi32(q.add(4 * j).cast::<i32>().read_unaligned());
        let k = i * at.nb;
        // one chain per row (16 rows give the core independent work); for
        // Q8_0 it starts at -128·Σq_a, as the weights were stored +128
        let mut isum = match Q41 {
            true => _mm512_setzero_si512(),
            false => _mm512_set1_epi32(-(*at.qsum.add(k) << 7)),
        };
        for (j, wj) in w.iter().enumerate() {
            isum = _mm512_dpbusd_epi32(isum, *wj, four(j));
        }
        let sc = _mm512_mul_ps(d, _mm512_set1_ps(*at.scale.add(k)));
        let acc = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(isum), acc);
        match Q41 {
            true => _mm512_fmadd_ps(mn, _mm512_set1_ps(*at.sum.add(k)), acc),
            false => acc,
        }
    }
}
