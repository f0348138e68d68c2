//! Per-sequence KV cache, owned by the sequence, so sequences join and
//! leave a batch freely (continuous batching).
//!
//! Keys and values are stored as f16 (llama.cpp's default cache type):
//! half the memory, and half the bytes a decode step streams.
//!
//! Per layer, positions are grouped in blocks of [`KEY_BLOCK`], and a
//! block holds each KV head's part contiguously (2 KB for SmolLM2's head
//! size of 64):
//! - keys `[block][n_kv_head][head_dim][KEY_BLOCK]`: transposed within the
//!   block, so attention takes a dimension's positions as one run;
//! - values `[block][n_kv_head][KEY_BLOCK][head_dim]`.
//!
//! The layout is for memory traffic: a decode step reads every sequence's
//! whole cache (about 50 MB for 16 sequences of 140 tokens on SmolLM2), so
//! it streams from DRAM, and one KV head's cache is a series of 2 KB runs
//! the prefetchers follow. (Keys transposed over the whole capacity,
//! `[head][dim][cap]`, were 64 short runs per head and streamed at a
//! fraction of the bandwidth.) Growing appends blocks; nothing moves.

use half::f16;

/// Positions per cache block (the attention kernels' block).
pub const KEY_BLOCK: usize = ragmesh_kernels::attn::CACHE_BLOCK;

pub struct KvCache {
    pub(crate) k: Vec<Vec<f16>>,
    pub(crate) v: Vec<Vec<f16>>,
    len: usize,
    /// Positions every layer has room for without growing.
    room: usize,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            k: vec![Vec::new(); n_layer],
            v: vec![Vec::new(); n_layer],
            len: 0,
            room: 0,
        }
    }

    /// Positions reserved (see [`Self::reserve`]).
    pub fn room(&self) -> usize {
        self.room
    }

    /// Empties the cache for another sequence, keeping its memory (and
    /// its pages resident).
    pub fn clear(&mut self) {
        self.len = 0;
        for b in self.k.iter_mut().chain(self.v.iter_mut()) {
            b.clear();
        }
    }

    /// Reserves room for `tokens` positions of `kv_dim` values per layer
    /// (address space only: pages are touched as positions arrive). The
    /// scheduler reserves a sequence's whole KV budget at admission: grown
    /// by doubling instead, 16 sequences copied and faulted their caches
    /// back in at 64 and 128 tokens, 15–90 ms stalls in a 16-stream decode.
    pub fn reserve(&mut self, kv_dim: usize, tokens: usize) {
        let want = tokens.div_ceil(KEY_BLOCK) * KEY_BLOCK * kv_dim;
        for b in self.k.iter_mut().chain(self.v.iter_mut()) {
            b.reserve_exact(want.saturating_sub(b.len()));
        }
        self.room = self.room.max(tokens.div_ceil(KEY_BLOCK) * KEY_BLOCK);
    }

    /// Positions cached (all layers have the same count after a forward).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Reserves room for `need` positions (as [`Self::reserve`]), and
    /// first cuts a cache holding more than twice that down to it (its
    /// cached positions copied into a right-sized buffer): a reused cache
    /// then holds the memory its sequence is charged for, not what an
    /// earlier, longer sequence needed.
    pub fn fit(&mut self, kv_dim: usize, need: usize) {
        let want = need.div_ceil(KEY_BLOCK).max(1) * KEY_BLOCK;
        if self.room > 2 * want {
            let keep = self.len.div_ceil(KEY_BLOCK) * KEY_BLOCK * kv_dim;
            for b in self.k.iter_mut().chain(self.v.iter_mut()) {
                b.truncate(keep);
                b.shrink_to(want * kv_dim);
            }
            self.room = self.len.div_ceil(KEY_BLOCK) * KEY_BLOCK;
        }
        self.reserve(kv_dim, need);
    }

    /// Replaces this cache's contents with a copy of `src`'s first
    /// `positions` positions (whole blocks), keeping room for `need`: a
    /// prefix shared without taking `src` from whoever may reuse the rest
    /// of it. Into fresh memory the page faults (some 2,000 for 350
    /// positions of SmolLM2) cost ~20 ms on this project's VMs, on the
    /// engine thread: the prefix cache copies only to keep another
    /// conversation's longer cache whole.
    pub fn copy_prefix_from(
        &mut self,
        src: &KvCache,
        kv_dim: usize,
        positions: usize,
        need: usize,
    ) {
        let n = positions.div_ceil(KEY_BLOCK) * KEY_BLOCK * kv_dim;
        self.clear();
        self.reserve(kv_dim, need.max(positions));
        for (dst, from) in self
            .k
            .iter_mut()
            .zip(&src.k)
            .chain(self.v.iter_mut().zip(&src.v))
        {
            dst.extend_from_slice(&from[..n.min(from.len())]);
        }
        self.len = positions.min(src.len);
    }

    /// Keeps the first `len` positions (a reused prefix); later pushes
    /// overwrite what was beyond, and attention never reads past `len`.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Layer `layer`'s keys and values, in the block layouts above.
    pub fn layer(&self, layer: usize) -> (&[f16], &[f16]) {
        (&self.k[layer], &self.v[layer])
    }

    /// Stores position `pos`'s key and value rows (`kv_heads` heads each,
    /// heads in order) in layer `layer`.
    pub fn push(&mut self, layer: usize, pos: usize, kv_heads: usize, key: &[f32], value: &[f32]) {
        let kv_dim = key.len();
        let hd = kv_dim / kv_heads.max(1);
        let (k, v) = (&mut self.k[layer], &mut self.v[layer]);
        let (b, i) = (pos / KEY_BLOCK, pos % KEY_BLOCK);
        let block = kv_dim * KEY_BLOCK;
        if k.len() < (b + 1) * block {
            k.resize((b + 1) * block, f16::ZERO);
            v.resize((b + 1) * block, f16::ZERO);
        }
        let (kb, vb) = (&mut k[b * block..][..block], &mut v[b * block..][..block]);
        for (h, (kr, vr)) in key
            .chunks_exact(hd.max(1))
            .zip(value.chunks_exact(hd.max(1)))
            .enumerate()
        {
            let (kh, vh) = (&mut kb[h * hd * KEY_BLOCK..], &mut vb[h * hd * KEY_BLOCK..]);
            for (d, &x) in kr.iter().enumerate() {
                kh[d * KEY_BLOCK + i] = f16::from_f32(x);
            }
            for (o, &x) in vh[i * hd..][..hd].iter_mut().zip(vr) {
                *o = f16::from_f32(x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reserved cache fills without moving (no copy, no fresh pages);
    /// past its reservation it still grows.
    #[test]
    fn reserved_cache_stays_put() {
        let mut c = KvCache::new(2);
        c.reserve(4, 40);
        let at = (c.k[1].as_ptr(), c.v[1].as_ptr());
        for p in 0..40 {
            for l in 0..2 {
                c.push(l, p, 2, &[p as f32; 4], &[1.0; 4]);
            }
        }
        assert_eq!((c.k[1].as_ptr(), c.v[1].as_ptr()), at);
        assert_eq!(c.k[1].len(), 3 * KEY_BLOCK * 4);
        c.push(1, 48, 2, &[9.0; 4], &[9.0; 4]);
        assert_eq!(c.k[1].len(), 4 * KEY_BLOCK * 4);
        assert_eq!(c.layer(1).0[(3 * 4) * KEY_BLOCK], f16::from_f32(9.0));
        // cleared, it keeps its memory and fills again from position 0
        assert_eq!(c.room(), 48);
        c.clear();
        assert!(c.is_empty() && c.layer(1).0.is_empty());
        let at = c.k[1].as_ptr();
        c.push(1, 0, 2, &[3.0; 4], &[3.0; 4]);
        assert_eq!(c.k[1].as_ptr(), at);
        assert_eq!(c.layer(1).0[0], f16::from_f32(3.0));
    }

    /// Keys land transposed within their block, values by head, across
    /// several blocks.
    #[test]
    fn block_layouts() {
        let mut c = KvCache::new(1);
        // 2 heads of 2 dims
        let row = |p: usize, o: f32| {
            [
                o + p as f32,
                o + 100.0 + p as f32,
                o + 200.0 + p as f32,
                o + 300.0 + p as f32,
            ]
        };
        for p in 0..40 {
            c.push(0, p, 2, &row(p, 0.0), &row(p, 0.5));
        }
        let (k, v) = c.layer(0);
        assert_eq!(k.len(), 3 * KEY_BLOCK * 4);
        for p in 0..40 {
            let (b, i) = (p / KEY_BLOCK, p % KEY_BLOCK);
            for (x, (kw, vw)) in row(p, 0.0).iter().zip(row(p, 0.5)).enumerate() {
                let (h, d) = (x / 2, x % 2);
                let at = ((b * 2 + h) * 2 + d) * KEY_BLOCK + i;
                assert_eq!(k[at].to_f32(), *kw, "key pos {p} dim {x}");
                let at = ((b * 2 + h) * KEY_BLOCK + i) * 2 + d;
                assert_eq!(v[at].to_f32(), vw, "value pos {p} dim {x}");
            }
        }
    }
}
