//! Causal grouped-query attention of a batched step, each sequence
//! against its own KV cache.
//!
//! Work is split by (sequence, KV head, block of query rows): the query
//! heads sharing a KV head are scored together, so each cached key and
//! value row is read once per group instead of once per head (SmolLM2:
//! 9 query heads over 3 KV heads), and a long prompt still splits into
//! enough jobs for every core.

use rayon::prelude::*;

use crate::math;

/// Query rows per job: enough work per task, enough tasks per prompt.
const ROWS_PER_JOB: usize = 32;

/// Head layout of one layer.
#[derive(Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// One sequence's slice of the step: `n` query rows starting at `row` of
/// the stacked batch, and its cache (keys and values of all `past + n`
/// positions, this step's already appended).
pub struct SeqAttn<'a> {
    pub row: usize,
    pub n: usize,
    pub past: usize,
    pub k: &'a [f32],
    pub v: &'a [f32],
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // 8 accumulators so the compiler vectorises without fast-math
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `out = Σ_p w[p] · v[p]` over the head's slice (`off..off + out.len()`)
/// of each cached value row, 32 values at a time in a local accumulator
/// the compiler keeps in registers (the whole output in memory would be a
/// load and a store per value and position).
fn weighted_sum(w: &[f32], v: &[f32], kv_dim: usize, off: usize, out: &mut [f32]) {
    const CHUNK: usize = 32;
    let whole = out.len() / CHUNK * CHUNK;
    for c in (0..whole).step_by(CHUNK) {
        let mut acc = [0f32; CHUNK];
        for (p, &wp) in w.iter().enumerate() {
            let row = &v[p * kv_dim + off + c..][..CHUNK];
            for (a, x) in acc.iter_mut().zip(row) {
                *a = wp.mul_add(*x, *a);
            }
        }
        out[c..c + CHUNK].copy_from_slice(&acc);
    }
    for (p, &wp) in w.iter().enumerate() {
        let row = &v[p * kv_dim + off + whole..][..out.len() - whole];
        for (a, x) in out[whole..].iter_mut().zip(row) {
            *a = wp.mul_add(*x, *a);
        }
    }
}

/// `q`: `rows × n_head·head_dim` (rotated); returns the attention output
/// in the same layout.
pub fn attend(h: Heads, q: &[f32], seqs: &[SeqAttn<'_>]) -> Vec<f32> {
    let hd = h.head_dim;
    let q_dim = h.n_head * hd;
    let kv_dim = h.n_kv_head * hd;
    let group = h.n_head / h.n_kv_head.max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    // (sequence, kv head, first row, rows)
    let mut jobs = Vec::new();
    for (si, s) in seqs.iter().enumerate() {
        for kvh in 0..h.n_kv_head {
            for j0 in (0..s.n).step_by(ROWS_PER_JOB) {
                jobs.push((si, kvh, j0, ROWS_PER_JOB.min(s.n - j0)));
            }
        }
    }
    let outs: Vec<Vec<f32>> = jobs
        .par_iter()
        .map(|&(si, kvh, j0, rows)| {
            let s = &seqs[si];
            // out: rows × group × hd
            let mut out = vec![0f32; rows * group * hd];
            let mut scores = vec![0f32; s.past + j0 + rows];
            for j in 0..rows {
                let r = s.row + j0 + j;
                let upto = s.past + j0 + j + 1; // causal
                let qs = &q[r * q_dim + kvh * group * hd..][..group * hd];
                let o = &mut out[j * group * hd..(j + 1) * group * hd];
                for (qh, oh) in qs.chunks_exact(hd).zip(o.chunks_exact_mut(hd)) {
                    let sc = &mut scores[..upto];
                    for (p, v) in sc.iter_mut().enumerate() {
                        *v = dot(qh, &s.k[p * kv_dim + kvh * hd..][..hd]) * scale;
                    }
                    let max = sc.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let inv = 1.0 / math::exp_shifted_sum(sc, max);
                    sc.iter_mut().for_each(|v| *v *= inv);
                    weighted_sum(sc, s.v, kv_dim, kvh * hd, oh);
                }
            }
            out
        })
        .collect();
    let rows: usize = seqs.iter().map(|s| s.n).sum();
    let mut attn = vec![0f32; rows * q_dim];
    for (&(si, kvh, j0, n), out) in jobs.iter().zip(&outs) {
        for j in 0..n {
            let r = seqs[si].row + j0 + j;
            attn[r * q_dim + kvh * group * hd..][..group * hd]
                .copy_from_slice(&out[j * group * hd..(j + 1) * group * hd]);
        }
    }
    attn
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition: every query head against its KV head, causal,
    /// one position at a time.
    fn naive(h: Heads, q: &[f32], s: &SeqAttn<'_>, out: &mut [f32]) {
        let (hd, group) = (h.head_dim, h.n_head / h.n_kv_head);
        let (q_dim, kv_dim) = (h.n_head * hd, h.n_kv_head * hd);
        for j in 0..s.n {
            let r = s.row + j;
            for head in 0..h.n_head {
                let kvh = head / group;
                let qh = &q[r * q_dim + head * hd..][..hd];
                let scores: Vec<f32> = (0..s.past + j + 1)
                    .map(|p| {
                        let k = &s.k[p * kv_dim + kvh * hd..][..hd];
                        qh.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let w: Vec<f32> = scores.iter().map(|v| (v - max).exp()).collect();
                let sum: f32 = w.iter().sum();
                for (p, wp) in w.iter().enumerate() {
                    let v = &s.v[p * kv_dim + kvh * hd..][..hd];
                    for (o, x) in out[r * q_dim + head * hd..][..hd].iter_mut().zip(v) {
                        *o += wp / sum * x;
                    }
                }
            }
        }
    }

    /// Grouped heads, prompt rows split into jobs of 32 and a decode row
    /// against a longer cache all give the plain definition's answer.
    #[test]
    fn grouped_split_attention_matches_the_definition() {
        // 16: shorter than one 32-value run of the value sums; 72: two runs
        // and a remainder
        for head_dim in [16, 72] {
            check_against_definition(Heads {
                n_head: 6,
                n_kv_head: 2,
                head_dim,
            });
        }
    }

    fn check_against_definition(h: Heads) {
        let kv_dim = h.n_kv_head * h.head_dim;
        let val = |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0 - 1.0;
        // a 70-row prompt chunk after 5 cached positions; one decode row
        // after 40
        let (k1, v1): (Vec<f32>, Vec<f32>) = (
            (0..75 * kv_dim).map(|i| val(i, 1)).collect(),
            (0..75 * kv_dim).map(|i| val(i, 2)).collect(),
        );
        let (k2, v2): (Vec<f32>, Vec<f32>) = (
            (0..41 * kv_dim).map(|i| val(i, 3)).collect(),
            (0..41 * kv_dim).map(|i| val(i, 4)).collect(),
        );
        let seqs = [
            SeqAttn {
                row: 0,
                n: 70,
                past: 5,
                k: &k1,
                v: &v1,
            },
            SeqAttn {
                row: 70,
                n: 1,
                past: 40,
                k: &k2,
                v: &v2,
            },
        ];
        let q_dim = h.n_head * h.head_dim;
        let q: Vec<f32> = (0..71 * q_dim).map(|i| val(i, 5)).collect();
        let got = attend(h, &q, &seqs);
        let mut want = vec![0f32; 71 * q_dim];
        for s in &seqs {
            naive(h, &q, s, &mut want);
        }
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "head_dim {}, value {i}: {a} vs {b}",
                h.head_dim
            );
        }
    }
}
