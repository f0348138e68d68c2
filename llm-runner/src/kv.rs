//! A sequence's KV cache: a table of reference-counted blocks, each
//! [`KEY_BLOCK`] positions of every layer. Sequences join and leave a
//! batch freely (continuous batching), and sequences with a common prefix
//! hold the same blocks of it (`prefix.rs`): a full block is never
//! written again, so sharing one needs no copy and no lock.
//!
//! Keys and values are stored as f16 (llama.cpp's default cache type):
//! half the memory, and half the bytes a decode step streams.
//!
//! A block is one allocation, `[layer][keys | values]`, and within a
//! layer each KV head's part is contiguous (2 KB for SmolLM2's head size
//! of 64):
//! - keys `[n_kv_head][head_dim][KEY_BLOCK]`: transposed within the
//!   block, so attention takes a dimension's positions as one run;
//! - values `[n_kv_head][KEY_BLOCK][head_dim]`.
//!
//! The layout is for memory traffic: a decode step reads every sequence's
//! whole cache (about 50 MB for 16 sequences of 140 tokens on SmolLM2), so
//! it streams from DRAM, and a layer's part of a block is one 12 KB run
//! (keys, then values); attention prefetches the next block's run while
//! it reads one (`attention.rs`). (Keys transposed over the
//! whole capacity, `[head][dim][cap]`, were 64 short runs per head and
//! streamed at a fraction of the bandwidth.) Growing appends blocks;
//! nothing moves.

use std::sync::Arc;

use half::f16;

/// Positions per cache block (the attention kernels' block).
pub const KEY_BLOCK: usize = ragmesh_kernels::attn::CACHE_BLOCK;

/// What a block holds: `n_layer` layers of `kv_dim` keys and values per
/// position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub n_layer: usize,
    pub kv_dim: usize,
}

impl Shape {
    /// Values of one layer's keys (or values) in a block.
    pub fn span(&self) -> usize {
        self.kv_dim * KEY_BLOCK
    }

    /// Values in a block.
    pub fn elems(&self) -> usize {
        2 * self.n_layer * self.span()
    }
}

/// [`KEY_BLOCK`] positions of every layer's keys and values.
#[derive(Clone)]
pub struct Block(Box<[f16]>);

impl Block {
    /// A zeroed block (written whole, so its pages are faulted in here, on
    /// the engine thread: ~0.1 ms per 360 KB block, once, since freed
    /// blocks are reused).
    pub fn new(shape: Shape) -> Self {
        Self(vec![f16::ZERO; shape.elems()].into_boxed_slice())
    }

    pub fn fits(&self, shape: Shape) -> bool {
        self.0.len() == shape.elems()
    }
}

pub struct KvCache {
    blocks: Vec<Arc<Block>>,
    n_layer: usize,
    /// Values per position and layer (0 until the first push or block).
    kv_dim: usize,
    len: usize,
    /// Chained hashes of the leading full blocks the prefix cache has
    /// seen (`prefix.rs`).
    pub(crate) hashes: Vec<u64>,
    /// False once a block met another under its hash: nothing more of
    /// this cache is registered.
    pub(crate) registrable: bool,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            blocks: Vec::new(),
            n_layer,
            kv_dim: 0,
            len: 0,
            hashes: Vec::new(),
            registrable: true,
        }
    }

    /// A cache holding `blocks` (whole, cached ones: `len` is theirs).
    pub(crate) fn with_blocks(shape: Shape, blocks: Vec<Arc<Block>>, hashes: Vec<u64>) -> Self {
        Self {
            len: blocks.len() * KEY_BLOCK,
            blocks,
            n_layer: shape.n_layer,
            kv_dim: shape.kv_dim,
            hashes,
            registrable: true,
        }
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

    /// Positions the blocks held have room for.
    pub fn room(&self) -> usize {
        self.blocks.len() * KEY_BLOCK
    }

    pub(crate) fn blocks(&self) -> &[Arc<Block>] {
        &self.blocks
    }

    /// Appends `block` (a new one, for positions to come).
    pub(crate) fn append(&mut self, shape: Shape, block: Block) {
        self.kv_dim = shape.kv_dim;
        self.blocks.push(Arc::new(block));
    }

    /// Puts `block` (equal contents) in place of block `b`; returns the
    /// one it replaces.
    pub(crate) fn swap_block(&mut self, b: usize, block: Arc<Block>) -> Arc<Block> {
        std::mem::replace(&mut self.blocks[b], block)
    }

    /// Hands the blocks back (`prefix.rs` recycles or keeps them).
    pub(crate) fn into_blocks(self) -> (Vec<Arc<Block>>, Vec<u64>) {
        (self.blocks, self.hashes)
    }

    /// Adds fresh blocks for `tokens` positions of `kv_dim` values per
    /// layer, outside any pool (benchmarks, tests; the engine takes its
    /// blocks from its pool).
    pub fn reserve(&mut self, kv_dim: usize, tokens: usize) {
        let shape = Shape {
            n_layer: self.n_layer,
            kv_dim,
        };
        while self.room() < tokens {
            self.append(shape, Block::new(shape));
        }
    }

    /// Layer `layer`'s keys and values, block by block.
    pub fn layer(&self, layer: usize) -> LayerView<'_> {
        let span = self.kv_dim * KEY_BLOCK;
        LayerView {
            blocks: &self.blocks,
            at: 2 * layer * span,
            span,
        }
    }

    /// Stores position `pos`'s key and value rows (`kv_heads` heads each,
    /// heads in order) in layer `layer`. The engine adds a sequence's
    /// blocks before its forward; a cache used alone grows here. A block
    /// another holder shares (full, so never written by the engine) would
    /// be copied first rather than changed under it.
    pub fn push(&mut self, layer: usize, pos: usize, kv_heads: usize, key: &[f32], value: &[f32]) {
        let kv_dim = key.len();
        let shape = Shape {
            n_layer: self.n_layer,
            kv_dim,
        };
        let b = pos / KEY_BLOCK;
        while self.blocks.len() <= b {
            debug_assert!(self.kv_dim == 0 || self.kv_dim == kv_dim);
            self.append(shape, Block::new(shape));
        }
        let Block(data) = Arc::make_mut(&mut self.blocks[b]);
        let i = pos % KEY_BLOCK;
        let hd = kv_dim / kv_heads.max(1);
        let span = shape.span();
        let (kb, vb) = data[2 * layer * span..][..2 * span].split_at_mut(span);
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

/// One layer of a cache, block by block (what attention reads).
#[derive(Clone, Copy)]
pub struct LayerView<'a> {
    blocks: &'a [Arc<Block>],
    /// Where the layer's keys start in a block.
    at: usize,
    span: usize,
}

impl<'a> LayerView<'a> {
    /// Block `b`'s keys, `[n_kv_head][head_dim][KEY_BLOCK]`.
    pub fn keys(&self, b: usize) -> &'a [f16] {
        &self.blocks[b].0[self.at..][..self.span]
    }

    /// Block `b`'s values, `[n_kv_head][KEY_BLOCK][head_dim]`.
    pub fn values(&self, b: usize) -> &'a [f16] {
        &self.blocks[b].0[self.at + self.span..][..self.span]
    }

    /// Blocks held.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

/// Equal contents (positions past a cache's length included, as stored).
impl PartialEq for LayerView<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.blocks() == other.blocks()
            && (0..self.blocks())
                .all(|b| self.keys(b) == other.keys(b) && self.values(b) == other.values(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reserved blocks fill without moving; past them the cache still
    /// grows, block by block.
    #[test]
    fn reserved_blocks_stay_put() {
        let mut c = KvCache::new(2);
        c.reserve(4, 40);
        assert_eq!(c.room(), 48);
        let at = c.layer(1).keys(2).as_ptr();
        for p in 0..40 {
            for l in 0..2 {
                c.push(l, p, 2, &[p as f32; 4], &[1.0; 4]);
            }
        }
        assert_eq!(c.layer(1).keys(2).as_ptr(), at);
        assert_eq!(c.layer(1).blocks(), 3);
        c.push(1, 48, 2, &[9.0; 4], &[9.0; 4]);
        assert_eq!(c.layer(1).blocks(), 4);
        assert_eq!(c.layer(1).keys(3)[0], f16::from_f32(9.0));
        // layer 0 of the new block is untouched
        assert_eq!(c.layer(0).keys(3)[0], f16::ZERO);
    }

    /// Keys land transposed within their block, values by head, across
    /// several blocks and layers.
    #[test]
    fn block_layouts() {
        let mut c = KvCache::new(2);
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
            for l in 0..2 {
                let o = l as f32 * 50.0;
                c.push(l, p, 2, &row(p, o), &row(p, o + 0.5));
            }
        }
        for l in 0..2 {
            let view = c.layer(l);
            assert_eq!(view.blocks(), 3);
            for p in 0..40 {
                let (b, i) = (p / KEY_BLOCK, p % KEY_BLOCK);
                let (k, v) = (view.keys(b), view.values(b));
                let o = l as f32 * 50.0;
                for (x, (kw, vw)) in row(p, o).iter().zip(row(p, o + 0.5)).enumerate() {
                    let (h, d) = (x / 2, x % 2);
                    let at = (h * 2 + d) * KEY_BLOCK + i;
                    assert_eq!(k[at].to_f32(), *kw, "layer {l} key pos {p} dim {x}");
                    let at = (h * KEY_BLOCK + i) * 2 + d;
                    assert_eq!(v[at].to_f32(), vw, "layer {l} value pos {p} dim {x}");
                }
            }
        }
    }

    /// A block another cache holds is copied before a write, never
    /// changed under its other holder.
    #[test]
    fn a_shared_block_is_never_written() {
        let mut a = KvCache::new(1);
        for p in 0..KEY_BLOCK {
            a.push(0, p, 1, &[1.0; 2], &[1.0; 2]);
        }
        a.advance(KEY_BLOCK);
        let shape = Shape {
            n_layer: 1,
            kv_dim: 2,
        };
        let mut b = KvCache::with_blocks(shape, a.blocks().to_vec(), Vec::new());
        assert_eq!(b.len(), KEY_BLOCK);
        b.push(0, 3, 1, &[7.0; 2], &[7.0; 2]);
        assert_eq!(a.layer(0).keys(0)[3], f16::from_f32(1.0));
        assert_eq!(b.layer(0).keys(0)[3], f16::from_f32(7.0));
        assert!(!Arc::ptr_eq(&a.blocks()[0], &b.blocks()[0]));
    }
}
