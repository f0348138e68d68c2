//! Causal grouped-query attention of a batched step, each sequence
//! against its own KV cache.
//!
//! Work is split by (sequence, block of query rows); a row walks its
//! sequence's cache blocks in memory order, and the query heads sharing a
//! KV head (SmolLM2: 3 per group) are computed together: for each 16-position block of the f16 cache (`kv.rs`),
//! `ragmesh_kernels::attn` widens each key and value once and multiplies
//! it into every head of the group, with the heads' running sums in
//! registers. Scores are kept per block (`[block][head][16]`), so the
//! softmax runs over whole 16-value runs.

use ragmesh_kernels::attn::{block_scores, block_values, prefetch};
use rayon::prelude::*;

use crate::kv::{KEY_BLOCK, LayerView};
use crate::math;

/// Query heads a layer may have (the softmax keeps one sum per head on
/// the stack); the model loader refuses more.
pub const MAX_HEADS: usize = 256;

/// Query rows per job: enough work per task, enough tasks per prompt.
pub const ROWS_PER_JOB: usize = 32;

/// Head layout of one layer.
#[derive(Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// One sequence's slice of the step: `n` query rows starting at `row` of
/// the stacked batch, and its cache's layer (keys and values of all
/// `past + n` positions, this step's already stored, in the block layouts
/// of `kv.rs`).
pub struct SeqAttn<'a> {
    pub row: usize,
    pub n: usize,
    pub past: usize,
    pub kv: LayerView<'a>,
}

/// One query row (`q`: all heads, `n_head × hd`) against the first `upto`
/// positions of `s`'s cache, into `out` (same layout); `w`: scratch of at
/// least `n_head × upto` rounded up to blocks (the scores, then the
/// weights, `[block][head][16]`).
///
/// Blocks are walked in order with every KV head of a block before the
/// next block, keys in one pass and values in another, each block's part
/// one 6 KB run. (Head by head over the blocks, the three passes each read
/// a third of every run and ran at a fraction of the bandwidth once 16
/// sequences' caches outgrew L3.) Each block is its own allocation, so
/// the hardware prefetchers lose the stream at every block: the next
/// block's run is prefetched whole while this one is computed. At 520
/// positions, 16 sequences' attention took 19.5 ms a step without the
/// hint, 13.3 ms with it (one contiguous cache per sequence: 17 ms; the
/// first lines only: 16 ms; two blocks ahead: no better).
fn row_attn(h: Heads, s: &SeqAttn<'_>, q: &[f32], upto: usize, w: &mut [f32], out: &mut [f32]) {
    let hd = h.head_dim;
    let group = h.n_head / h.n_kv_head.max(1);
    let per = hd * KEY_BLOCK; // one KV head's part of a cache block
    let run = h.n_head * KEY_BLOCK; // one block's scores, all heads
    let blocks = upto.div_ceil(KEY_BLOCK);
    let w = &mut w[..blocks * run];
    for (b, sb) in w.chunks_exact_mut(run).enumerate() {
        let kb = s.kv.keys(b);
        if b + 1 < blocks {
            prefetch(s.kv.keys(b + 1));
        }
        for ((qg, kh), sg) in q
            .chunks_exact(group * hd)
            .zip(kb.chunks_exact(per))
            .zip(sb.chunks_exact_mut(group * KEY_BLOCK))
        {
            let done = block_scores(qg, hd, kh, sg);
            debug_assert!(done, "attention block shapes");
        }
    }
    // softmax per head, in whole 16-value runs: the last block's
    // positions past `upto` are masked (their weights come out ~1e-38, and
    // the value products stop at `valid` anyway); the weights stay
    // unnormalised and each head's output is divided by their sum at the
    // end (hd divisions instead of one per position). Lane-wise maxima and
    // sums keep every pass vectorised: a running scalar max was a serial
    // chain, and the softmax took half the attention time.
    let valid = |b: usize| KEY_BLOCK.min(upto - b * KEY_BLOCK);
    let scale = 1.0 / (hd as f32).sqrt();
    let last = (blocks - 1) * run;
    let mut inv = [0f32; MAX_HEADS];
    for (head, inv) in inv.iter_mut().enumerate().take(h.n_head) {
        w[last + head * KEY_BLOCK..][valid(blocks - 1)..KEY_BLOCK].fill(f32::NEG_INFINITY);
        let mut m = [f32::NEG_INFINITY; KEY_BLOCK];
        for sb in w.chunks_exact(run) {
            for (a, x) in m.iter_mut().zip(&sb[head * KEY_BLOCK..][..KEY_BLOCK]) {
                *a = a.max(*x);
            }
        }
        let max = m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = [0f32; KEY_BLOCK];
        for sb in w.chunks_exact_mut(run) {
            for (a, x) in sum.iter_mut().zip(&mut sb[head * KEY_BLOCK..][..KEY_BLOCK]) {
                *x = math::exp((*x - max) * scale);
                *a += *x;
            }
        }
        *inv = 1.0 / sum.iter().sum::<f32>();
    }
    out.fill(0.0);
    for (b, sb) in w.chunks_exact(run).enumerate() {
        let vb = s.kv.values(b);
        if b + 1 < blocks {
            prefetch(s.kv.values(b + 1));
        }
        for ((sg, vh), og) in sb
            .chunks_exact(group * KEY_BLOCK)
            .zip(vb.chunks_exact(per))
            .zip(out.chunks_exact_mut(group * hd))
        {
            let done = block_values(sg, hd, vh, valid(b), og);
            debug_assert!(done, "attention block shapes");
        }
    }
    for (o, inv) in out.chunks_exact_mut(hd).zip(inv) {
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// `q`: `rows × n_head·head_dim` (rotated); returns the attention output
/// in the same layout.
pub fn attend(h: Heads, q: &[f32], seqs: &[SeqAttn<'_>]) -> Vec<f32> {
    let mut out = vec![0f32; q.len()];
    attend_into(h, q, seqs, &mut out);
    out
}

/// [`attend`] into `out` (`q`'s layout): only the rows of `seqs` are
/// written.
pub fn attend_into(h: Heads, q: &[f32], seqs: &[SeqAttn<'_>], out: &mut [f32]) {
    let q_dim = h.n_head * h.head_dim;
    // a job (sequence, first row, rows): one sequence's block of rows, all
    // KV heads (a job per head was three times the per-task overhead for a
    // decode row's ~1 µs of work per head)
    let mut jobs = Vec::new();
    for (si, s) in seqs.iter().enumerate() {
        for j0 in (0..s.n).step_by(ROWS_PER_JOB) {
            jobs.push((si, j0, ROWS_PER_JOB.min(s.n - j0)));
        }
    }
    let outs: Vec<Vec<f32>> = jobs
        .par_iter()
        .map(|&(si, j0, rows)| {
            let s = &seqs[si];
            let mut o = vec![0f32; rows * q_dim];
            let qs = &q[(s.row + j0) * q_dim..][..rows * q_dim];
            attend_rows(h, qs, s, j0, &mut o);
            o
        })
        .collect();
    for (&(si, j0, n), o) in jobs.iter().zip(&outs) {
        out[(seqs[si].row + j0) * q_dim..][..n * q_dim].copy_from_slice(o);
    }
}

/// Rows `j0..` of sequence `s` (their queries `qs`, `rows × q_dim`) into
/// `out` (same shape), causally: row `j` sees `s.past + j0 + j + 1`
/// positions. One task's work: the caller may run it for a whole short
/// sequence (see [`ROWS_PER_JOB`]) in the same task that stored its keys
/// and values.
pub fn attend_rows(h: Heads, qs: &[f32], s: &SeqAttn<'_>, j0: usize, out: &mut [f32]) {
    let q_dim = h.n_head * h.head_dim;
    let rows = qs.len() / q_dim.max(1);
    let n = s.past + j0 + rows;
    let mut w = vec![0f32; h.n_head * n.next_multiple_of(KEY_BLOCK)];
    for (j, (qr, or)) in qs
        .chunks_exact(q_dim)
        .zip(out.chunks_exact_mut(q_dim))
        .enumerate()
    {
        let upto = s.past + j0 + j + 1; // causal
        row_attn(h, s, qr, upto, &mut w, or);
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    /// The plain definition: every query head against its KV head, causal,
    /// one position at a time.
    fn naive(
        h: Heads,
        q: &[f32],
        s: &SeqAttn<'_>,
        (k_rows, v_rows): (&[f32], &[f32]),
        out: &mut [f32],
    ) {
        let (hd, group) = (h.head_dim, h.n_head / h.n_kv_head);
        let (q_dim, kv_dim) = (h.n_head * hd, h.n_kv_head * hd);
        for j in 0..s.n {
            let r = s.row + j;
            for head in 0..h.n_head {
                let kvh = head / group;
                let qh = &q[r * q_dim + head * hd..][..hd];
                let scores: Vec<f32> = (0..s.past + j + 1)
                    .map(|p| {
                        let k = &k_rows[p * kv_dim + kvh * hd..][..hd];
                        qh.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let w: Vec<f32> = scores.iter().map(|v| (v - max).exp()).collect();
                let sum: f32 = w.iter().sum();
                for (p, wp) in w.iter().enumerate() {
                    let v = &v_rows[p * kv_dim + kvh * hd..][..hd];
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
        // head sizes: one 16-value run of the value sums, four runs, and
        // 72 (not a multiple: the head-by-head path); groups of 3 (the
        // dispatched kernels) and 9 (past the dispatch: head by head)
        for (n_head, n_kv_head, head_dim) in [(6, 2, 16), (6, 2, 64), (6, 2, 72), (9, 1, 32)] {
            check_against_definition(Heads {
                n_head,
                n_kv_head,
                head_dim,
            });
        }
    }

    fn check_against_definition(h: Heads) {
        let kv_dim = h.n_kv_head * h.head_dim;
        // values exact in f16, as the cache stores them
        let val = |i: usize, salt: usize| {
            f16::from_f32(((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0 - 1.0).to_f32()
        };
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
        // keys as the cache stores them: transposed
        let transposed = |k: &[f32], v: &[f32]| {
            let mut c = crate::kv::KvCache::new(1);
            for (p, (kr, vr)) in k
                .chunks_exact(kv_dim)
                .zip(v.chunks_exact(kv_dim))
                .enumerate()
            {
                c.push(0, p, h.n_kv_head, kr, vr);
            }
            c
        };
        let (c1, c2) = (transposed(&k1, &v1), transposed(&k2, &v2));
        let seqs = [
            SeqAttn {
                row: 0,
                n: 70,
                past: 5,
                kv: c1.layer(0),
            },
            SeqAttn {
                row: 70,
                n: 1,
                past: 40,
                kv: c2.layer(0),
            },
        ];
        let q_dim = h.n_head * h.head_dim;
        let q: Vec<f32> = (0..71 * q_dim).map(|i| val(i, 5)).collect();
        let got = attend(h, &q, &seqs);
        let mut want = vec![0f32; 71 * q_dim];
        for (s, kv) in seqs.iter().zip([(&k1[..], &v1[..]), (&k2[..], &v2[..])]) {
            naive(h, &q, s, kv, &mut want);
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
