//! Elementwise math the forward pass runs millions of times per step
//! (softmax in attention, SiLU in the feed-forward): written so the
//! compiler vectorises it, where `f32::exp` is a libm call per value.

/// `e^x`, branch-free, within 2 ulp of `f32::exp` on `[-87, 88]`
/// (Cephes' `expf`: `x = n·ln2 + r`, a degree-6 polynomial for `e^r`,
/// `2^n` built in the exponent bits); below -87 it flushes towards 0 the
/// way softmax weights may (≈ 1e-38, not a subnormal).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so n·C1 is exact
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = n.mul_add(-C2, n.mul_add(-C1, x));
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 1.666_666_5e-1)
        .mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    // 2^n: n ∈ [-126, 127] after the clamp, so the biased exponent n + 127
    // is in 1..=254. Added to 1.5·2^23 it lands exactly in the low mantissa
    // bits, and shifting them into the exponent field gives the power of
    // two. (`n as i32` gave the same bits, but its saturating conversion
    // kept every caller's loop scalar.)
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    e * f32::from_bits((n + (127.0 + MAGIC)).to_bits() << 23)
}

/// Lanes of the reductions below: independent running values the compiler
/// keeps in vector registers (one running max or sum over a 49k-entry
/// vocabulary is a serial chain of ~150k cycles).
const LANES: usize = 16;

/// The largest value of `v` (NaNs ignored, as `f32::max` does; -inf when
/// empty).
pub fn max(v: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, x) in m.iter_mut().zip(c) {
            *a = a.max(*x);
        }
    }
    m.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// The sum of `v`, in [`LANES`] partial sums.
pub fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// SiLU(g)·u, elementwise into `out`.
pub fn swiglu(out: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, g), u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(ulps(got, want));
            assert!(ulps(got, want) <= 2, "exp({x}) = {got}, libm {want}");
            x += 0.0137;
        }
        for x in [0.0, -0.0, 1e-8, -1e-8, 1.0, -1.0, 0.5, -0.5] {
            assert!(ulps(exp(x), x.exp()) <= 2, "exp({x})");
        }
        assert!(worst <= 2);
        // far below the range: tiny, finite, ordered
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }

    /// The power of two built from the mantissa bits equals the integer
    /// conversion it replaced, over the whole clamped range.
    #[test]
    fn power_of_two_bits() {
        for n in -126..=127 {
            let old = f32::from_bits(((n + 127) as u32) << 23);
            let new = f32::from_bits(((n as f32) + (127.0 + 12_582_912.0)).to_bits() << 23);
            assert_eq!(old.to_bits(), new.to_bits(), "n = {n}");
        }
    }

    #[test]
    fn lane_max_and_sum() {
        let v: Vec<f32> = (0..37).map(|i| ((i * 17) % 23) as f32 - 5.0).collect();
        assert_eq!(max(&v), 17.0);
        assert_eq!(
            max(&v[..3]),
            v[..3].iter().copied().fold(f32::NEG_INFINITY, f32::max)
        );
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(max(&[f32::NAN, 1.0]), 1.0);
        let want: f32 = v.iter().sum();
        assert!((sum(&v) - want).abs() < 1e-4);
        assert_eq!(sum(&[]), 0.0);
    }

    #[test]
    fn shifted_sum_and_swiglu() {
        let mut v: Vec<f32> = (0..19).map(|i| i as f32 * 0.3 - 2.0).collect();
        let want: f32 = v.iter().map(|x| (x - 3.4).exp()).sum();
        v.iter_mut().for_each(|x| *x = exp(*x - 3.4));
        let got = sum(&v);
        assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
        let (g, u) = ([-3.0f32, 0.0, 2.5], [1.0f32, 5.0, -2.0]);
        let mut out = [0f32; 3];
        swiglu(&mut out, &g, &u);
        for i in 0..3 {
            let want = g[i] / (1.0 + (-g[i]).exp()) * u[i];
            assert!((out[i] - want).abs() < 1e-6 * (1.0 + want.abs()));
        }
    }
}
