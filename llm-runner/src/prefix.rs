//! Automatic prefix caching over reference-counted KV blocks.
//!
//! Every KV block (`kv.rs`: [`KEY_BLOCK`] positions of all layers) comes
//! from one pool with the runner's KV budget. Once a sequence has filled
//! a block, the block is registered under a chained hash: block `i`'s
//! hash covers its 16 tokens and block `i-1`'s hash, so equal hashes mean
//! equal prefixes up to and including that block. A new sequence holds
//! the longest run of registered blocks its prompt starts with (the same
//! blocks, their counts raised, no copy) and prefills only the rest; at
//! least the prompt's last token is always prefilled, since its logits
//! choose the first output token. Registration happens as blocks fill,
//! so a sequence shares the prefix of one still running (sixteen requests
//! after one preamble: the later ones hold the first one's blocks). Two
//! admitted together with a prefix nothing holds yet each prefill it; the
//! second one's copy of a block is freed once the block is registered,
//! and it holds the cached one.
//!
//! A full block is never written again (a sequence writes only positions
//! past its length, in blocks of its own), so holders share it freely;
//! `KvCache::push` would copy a shared block rather than change it.
//!
//! Reuse is bit-identical to a cold prefill: a position's keys and values
//! depend only on the tokens up to it (the quantized kernels compute each
//! row alone, attention reads the cache, RoPE is by absolute position),
//! and the scheduler cuts the rest of the prompt at the same absolute
//! chunk boundaries as before. (`--kernel gemm`, whose OpenBLAS blocking
//! can change a row's last bits with the batch, reuses or merges into
//! equivalent keys and values, not always the same bits.)
//!
//! The chain starts from the request's cache salt (the gateway's hash of
//! the tenant), so requests of different salts never share a block: a hit
//! shows in `cached_tokens` and in the time to first token, and shared
//! blocks would let one tenant test whether another sent a given prompt.
//! The hashes are keyed per process (SipHash, random keys), and a lookup
//! also compares each block's tokens, depth and parent hash; a sequence
//! whose block meets a different one under the same hash registers
//! nothing more, so no chain ever runs through a colliding entry.
//!
//! Budget: the pool counts live blocks (held by sequences or the cache);
//! the scheduler adds the blocks running sequences may still take (each
//! is promised its prompt plus `max_tokens` at admission, so none is ever
//! preempted). A registered block no sequence holds is idle: idle blocks
//! count as free room at admission, and stay cached until a step needs
//! their room for new positions; then the least recently used go first
//! (on a tie the deepest, as a block is useless without its parent).
//! Evicting only then matters: a request without `max_tokens` is promised
//! the rest of the context window, far more than it usually takes.
//! Freed blocks keep their memory for the next ones (their pages stay
//! resident). Without caching (`--prefix-cache false`) nothing is
//! registered and a finished sequence's blocks are freed at once.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use crate::kv::{Block, KEY_BLOCK, KvCache, Shape};

struct Entry {
    block: Arc<Block>,
    parent: u64,
    tokens: [u32; KEY_BLOCK],
    /// Blocks before it in its sequence.
    depth: usize,
    /// When it was registered or last held (the LRU clock).
    used: u64,
}

impl Entry {
    /// Held by nothing but the cache: evictable.
    fn idle(&self) -> bool {
        Arc::strong_count(&self.block) == 1
    }
}

/// The KV blocks of one engine, and the cache of registered ones.
pub struct BlockPool {
    shape: Shape,
    /// Blocks the budget allows.
    capacity: usize,
    /// Blocks held by sequences or the cache.
    live: usize,
    /// Freed blocks, for reuse.
    free: Vec<Block>,
    index: HashMap<u64, Entry>,
    clock: u64,
    enabled: bool,
    keys: RandomState,
}

impl BlockPool {
    /// A pool of blocks of `shape` for `capacity_tokens` positions
    /// (rounded up to whole blocks, so a request within the budget always
    /// fits), caching prefixes when `enabled`.
    pub fn new(shape: Shape, capacity_tokens: usize, enabled: bool) -> Self {
        Self {
            shape,
            capacity: capacity_tokens.div_ceil(KEY_BLOCK),
            live: 0,
            free: Vec::new(),
            index: HashMap::new(),
            clock: 0,
            enabled,
            keys: RandomState::new(),
        }
    }

    /// Registered blocks (the `Load` reply's `cached_blocks`).
    pub fn cached_blocks(&self) -> usize {
        self.index.len()
    }

    /// Blocks held by sequences or the cache.
    pub fn live(&self) -> usize {
        self.live
    }

    fn hash(&self, parent: u64, tokens: &[u32]) -> u64 {
        let mut h = self.keys.build_hasher();
        parent.hash(&mut h);
        tokens.hash(&mut h);
        h.finish()
    }

    /// The hashes of the longest run of registered blocks `prompt` (but
    /// its last token) starts with, for requests of `salt`.
    pub fn lookup(&self, salt: u64, prompt: &[u32]) -> Vec<u64> {
        let mut found = Vec::new();
        if !self.enabled || prompt.len() < 2 {
            return found;
        }
        let mut parent = salt;
        for (depth, tokens) in prompt[..prompt.len() - 1]
            .chunks_exact(KEY_BLOCK)
            .enumerate()
        {
            let h = self.hash(parent, tokens);
            match self.index.get(&h) {
                Some(e) if e.parent == parent && e.depth == depth && e.tokens == tokens => {
                    found.push(h);
                    parent = h;
                }
                _ => break,
            }
        }
        found
    }

    /// Whether a sequence holding the blocks of `hit` fits with
    /// `promised` blocks yet to be added by the running sequences and it:
    /// the idle blocks it does not hold can be evicted for them.
    pub fn fits(&self, hit: &[u64], promised: usize) -> bool {
        let idle = self.index.values().filter(|e| e.idle()).count();
        let pinned = hit
            .iter()
            .filter(|h| self.index.get(h).is_some_and(Entry::idle))
            .count();
        self.live + pinned + promised <= self.capacity + idle
    }

    /// A cache holding the blocks of `hit` (see [`Self::lookup`]).
    pub fn take(&mut self, hit: &[u64]) -> KvCache {
        self.clock += 1;
        let mut blocks = Vec::with_capacity(hit.len());
        for h in hit {
            let Some(e) = self.index.get_mut(h) else {
                break;
            };
            e.used = self.clock;
            blocks.push(e.block.clone());
        }
        let hashes = hit[..blocks.len()].to_vec();
        KvCache::with_blocks(self.shape, blocks, hashes)
    }

    /// Evicts idle blocks, least recently used first, until `blocks` more
    /// fit in the budget (the new blocks of a step: admission promised
    /// them, so idle ones are there to evict).
    pub fn make_room(&mut self, blocks: usize) {
        let over = (self.live + blocks).saturating_sub(self.capacity);
        if over == 0 {
            return;
        }
        let mut idle: Vec<(u64, Reverse<usize>, u64)> = self
            .index
            .iter()
            .filter(|(_, e)| e.idle())
            .map(|(h, e)| (e.used, Reverse(e.depth), *h))
            .collect();
        // the `over` oldest, without sorting them all: with the cache full
        // (a busy server's steady state) this runs most steps
        if over < idle.len() {
            idle.select_nth_unstable(over);
        }
        for (_, _, h) in idle.into_iter().take(over) {
            if let Some(e) = self.index.remove(&h) {
                self.recycle(e.block);
            }
        }
    }

    /// Frees `block` if nothing else holds it.
    fn recycle(&mut self, block: Arc<Block>) {
        if let Ok(b) = Arc::try_unwrap(block) {
            debug_assert!(self.live > 0, "a block freed that the pool never counted");
            self.live = self.live.saturating_sub(1);
            if b.fits(self.shape) && self.free.len() + self.live < self.capacity {
                self.free.push(b);
            }
        }
    }

    /// Adds blocks to `cache` until it has room for `positions`; returns
    /// how many it added.
    pub fn grow(&mut self, cache: &mut KvCache, positions: usize) -> usize {
        let mut added = 0;
        while cache.room() < positions {
            let b = self.free.pop().unwrap_or_else(|| Block::new(self.shape));
            cache.append(self.shape, b);
            self.live += 1;
            added += 1;
        }
        debug_assert!(self.live <= self.capacity, "more blocks than the budget");
        added
    }

    /// Registers `cache`'s newly full blocks for requests of `salt`;
    /// `held`: the tokens of its positions, from the first.
    pub fn register(&mut self, cache: &mut KvCache, salt: u64, held: impl Iterator<Item = u32>) {
        let full = cache.len() / KEY_BLOCK;
        let seen = cache.hashes.len();
        if !self.enabled || !cache.registrable || seen >= full {
            return;
        }
        self.clock += 1;
        let mut held = held.skip(seen * KEY_BLOCK);
        for b in seen..full {
            let mut tokens = [0u32; KEY_BLOCK];
            for t in tokens.iter_mut() {
                match held.next() {
                    Some(x) => *t = x,
                    None => return,
                }
            }
            let parent = match b {
                0 => salt,
                _ => cache.hashes[b - 1],
            };
            let h = self.hash(parent, &tokens);
            match self.index.get(&h) {
                None => {
                    let block = cache.blocks()[b].clone();
                    self.index.insert(
                        h,
                        Entry {
                            block,
                            parent,
                            tokens,
                            depth: b,
                            used: self.clock,
                        },
                    );
                }
                // the same block computed twice (two sequences admitted
                // together): hold the cached one, free the copy
                Some(e) if e.parent == parent && e.depth == b && e.tokens == tokens => {
                    let mine = cache.swap_block(b, e.block.clone());
                    self.recycle(mine);
                }
                // another block under this hash: stop here
                Some(_) => {
                    cache.registrable = false;
                    return;
                }
            }
            cache.hashes.push(h);
        }
    }

    /// Takes back a finished sequence's blocks: registered ones stay
    /// cached (the most recently used now), the rest are freed.
    pub fn release(&mut self, cache: KvCache) {
        self.clock += 1;
        let (blocks, hashes) = cache.into_blocks();
        for h in &hashes {
            if let Some(e) = self.index.get_mut(h) {
                e.used = self.clock;
            }
        }
        for b in blocks {
            self.recycle(b);
        }
    }
}

/// Positions the running `caches` hold, a block several of them share
/// counted once (the KV usage gauge). Sequences share a block only
/// through the cache, which holds it as long as anyone does (only idle
/// blocks are evicted, and no entry is ever replaced): a block with at
/// most two holders is one sequence's, and only the rest need telling
/// apart.
pub fn held_positions<'a>(caches: impl Iterator<Item = &'a KvCache>) -> usize {
    let mut shared = HashSet::new();
    let mut n = 0;
    for c in caches {
        for (b, block) in c.blocks().iter().enumerate() {
            let here = c.len().saturating_sub(b * KEY_BLOCK).min(KEY_BLOCK);
            if Arc::strong_count(block) <= 2 || shared.insert(Arc::as_ptr(block)) {
                n += here;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    const SHAPE: Shape = Shape {
        n_layer: 1,
        kv_dim: 4,
    };

    fn seq(from: u32, n: usize) -> Vec<u32> {
        (from..from + n as u32).collect()
    }

    /// Runs `tokens` into `cache` as a forward would (key = token), from
    /// its length on, and registers its full blocks.
    fn fill(pool: &mut BlockPool, cache: &mut KvCache, salt: u64, tokens: &[u32]) -> usize {
        let from = cache.len();
        let added = pool.grow(cache, tokens.len());
        for (p, &t) in tokens.iter().enumerate().skip(from) {
            cache.push(0, p, 2, &[t as f32; 4], &[t as f32; 4]);
        }
        cache.advance(tokens.len() - from);
        pool.register(cache, salt, tokens.iter().copied());
        added
    }

    /// A pool with room for 6 blocks after sequences of `prompts` ran
    /// and finished, in that order.
    fn six_blocks_after(prompts: &[&[u32]]) -> BlockPool {
        let mut pool = BlockPool::new(SHAPE, 96, true);
        for t in prompts {
            let mut c = KvCache::new(1);
            fill(&mut pool, &mut c, 0, t);
            pool.release(c);
        }
        pool
    }

    fn key(cache: &KvCache, pos: usize) -> f32 {
        cache.layer(0).keys(pos / KEY_BLOCK)[pos % KEY_BLOCK].to_f32()
    }

    #[test]
    fn the_longest_prefix_is_found_and_the_last_token_prefilled() {
        let mut pool = BlockPool::new(SHAPE, 1024, true);
        let base = seq(0, 70);
        let mut a = KvCache::new(1);
        fill(&mut pool, &mut a, 0, &base[..50]);
        pool.release(a);
        assert_eq!(pool.cached_blocks(), 3);
        // shares the 3 whole blocks
        let hit = pool.lookup(0, &base);
        assert_eq!(hit.len(), 3);
        let c = pool.take(&hit);
        assert_eq!(c.len(), 48);
        assert_eq!(key(&c, 34), 34.0);
        // a prompt that is exactly the cached tokens still prefills its
        // last token: 48 tokens share 2 whole blocks, not 3
        assert_eq!(pool.lookup(0, &base[..48]).len(), 2);
        // a change in block 0 changes every later block's hash
        let mut other = base.clone();
        other[3] = 999;
        assert!(pool.lookup(0, &other).is_empty());
        // another salt (another tenant) never finds them
        assert!(pool.lookup(1, &base).is_empty());
    }

    /// A sequence admitted while another runs holds the running one's
    /// blocks: no copy, no new block, counted once.
    #[test]
    fn a_running_sequences_blocks_are_shared_not_copied() {
        let mut pool = BlockPool::new(SHAPE, 1024, true);
        let mut first = seq(0, 40);
        let mut a = KvCache::new(1);
        fill(&mut pool, &mut a, 0, &first);
        assert_eq!((pool.live(), pool.cached_blocks()), (3, 2));
        first.push(7);
        let hit = pool.lookup(0, &first);
        assert_eq!(hit.len(), 2);
        let mut b = pool.take(&hit);
        assert_eq!(pool.live(), 3, "nothing was allocated");
        for i in 0..2 {
            assert!(Arc::ptr_eq(&a.blocks()[i], &b.blocks()[i]));
        }
        // b goes on in a block of its own; a's blocks are unchanged
        let mut mine = first[..32].to_vec();
        mine.extend(seq(900, 10));
        assert_eq!(fill(&mut pool, &mut b, 0, &mine), 1);
        assert_eq!((key(&a, 33), key(&b, 33)), (33.0, 901.0));
        // 40 + 42 positions held, 32 of them shared
        assert_eq!(held_positions([&a, &b].into_iter()), 40 + 42 - 32);
        // the first one finishes: its shared blocks stay for b and the
        // cache, its own tail block is freed
        pool.release(a);
        assert_eq!(pool.live(), 3);
        pool.release(b);
        assert_eq!((pool.live(), pool.cached_blocks()), (2, 2));
    }

    #[test]
    fn eviction_takes_idle_blocks_least_recently_used_first() {
        // room for 6 blocks
        let (old, new) = (seq(0, 33), seq(1000, 33));
        let mut pool = six_blocks_after(&[&old, &new]);
        assert_eq!((pool.live(), pool.cached_blocks()), (4, 4));
        // a running sequence holds the old prefix (it is not idle)
        let held = pool.take(&pool.lookup(0, &old));
        // 5 more blocks promised would need 3 evicted, but only the 2
        // blocks of the newer prefix are idle: refused
        assert!(!pool.fits(&[], 5));
        assert!(pool.fits(&[], 4));
        pool.make_room(4);
        assert_eq!(pool.cached_blocks(), 2, "the idle blocks went");
        assert_eq!(pool.lookup(0, &old).len(), 2, "the held ones stayed");
        assert!(pool.lookup(0, &new).is_empty());
        pool.release(held);
        // least recently used first, and on a tie the deeper block
        let mut pool = six_blocks_after(&[&old, &new]);
        pool.make_room(3);
        assert_eq!(pool.lookup(0, &old).len(), 1, "the old chain's tail went");
        assert_eq!(pool.lookup(0, &new).len(), 2);
    }

    /// Idle blocks count as free room at admission, except those the new
    /// sequence will hold.
    #[test]
    fn admission_counts_idle_blocks_as_room_but_not_its_own() {
        // room for 6 blocks, 4 of them cached and idle
        let (a, b) = (seq(0, 33), seq(1000, 33));
        let mut pool = six_blocks_after(&[&a, &b]);
        assert!(pool.fits(&[], 6));
        assert!(!pool.fits(&[], 7));
        // holding 2 of them leaves 4 to promise
        let hit = pool.lookup(0, &a);
        assert_eq!(hit.len(), 2);
        assert!(pool.fits(&hit, 4));
        assert!(!pool.fits(&hit, 5));
        // a step taking its 4 blocks evicts exactly the other idle ones
        let mut c = pool.take(&hit);
        pool.make_room(4);
        assert_eq!(pool.grow(&mut c, 32 + 4 * KEY_BLOCK), 4);
        assert_eq!((pool.live(), pool.cached_blocks()), (6, 2));
        assert!(pool.lookup(0, &b).is_empty());
    }

    /// Generated tokens' blocks are registered as they fill, with the
    /// positions they were fed at.
    #[test]
    fn generated_tokens_are_cached_at_their_positions() {
        let mut pool = BlockPool::new(SHAPE, 1024, true);
        let prompt = seq(0, 20);
        let mut c = KvCache::new(1);
        fill(&mut pool, &mut c, 0, &prompt);
        assert_eq!(pool.cached_blocks(), 1);
        // 30 tokens fed one per step, each the one sampled before
        let mut generated = Vec::new();
        for t in 500..530u32 {
            let pos = c.len();
            pool.grow(&mut c, pos + 1);
            c.push(0, pos, 2, &[t as f32; 4], &[t as f32; 4]);
            c.advance(1);
            generated.push(t);
            let held = prompt.iter().chain(&generated).copied();
            pool.register(&mut c, 0, held);
        }
        // 50 positions: 3 full blocks
        assert_eq!(pool.cached_blocks(), 3);
        let mut next = prompt.clone();
        next.extend(&generated);
        next.push(7);
        let again = pool.take(&pool.lookup(0, &next));
        assert_eq!(again.len(), 48);
        assert_eq!(
            (key(&again, 19), key(&again, 20), key(&again, 47)),
            (19.0, 500.0, 527.0)
        );
    }

    /// Two sequences that computed the same block hold one copy once it
    /// is registered; a different block under a known hash stops the
    /// chain rather than joining it.
    #[test]
    fn duplicates_merge_and_collisions_stop_registration() {
        let mut pool = BlockPool::new(SHAPE, 1024, true);
        let t = seq(0, 40);
        let (mut a, mut b) = (KvCache::new(1), KvCache::new(1));
        fill(&mut pool, &mut a, 0, &t);
        assert_eq!(pool.live(), 3);
        fill(&mut pool, &mut b, 0, &t);
        assert_eq!(pool.live(), 4, "b's two full blocks were freed for a's");
        assert!(Arc::ptr_eq(&a.blocks()[1], &b.blocks()[1]));
        assert_eq!(key(&b, 39), 39.0);
        // a forged entry under the hash of another prompt's first block
        let other = seq(700, 40);
        let h = pool.hash(0, &other[..KEY_BLOCK]);
        let forged = Entry {
            block: Arc::new(Block::new(SHAPE)),
            parent: 0,
            tokens: [1; KEY_BLOCK],
            depth: 0,
            used: 0,
        };
        pool.index.insert(h, forged);
        assert!(pool.lookup(0, &other).is_empty(), "the tokens differ");
        let mut c = KvCache::new(1);
        fill(&mut pool, &mut c, 0, &other);
        assert!(!c.registrable && c.hashes.is_empty());
        assert!(pool.lookup(0, &other).is_empty());
    }

    #[test]
    fn freed_blocks_are_reused_and_off_caches_nothing() {
        let mut pool = BlockPool::new(SHAPE, 1024, false);
        let mut c = KvCache::new(1);
        fill(&mut pool, &mut c, 0, &seq(0, 40));
        let last = c.layer(0).keys(2).as_ptr();
        pool.release(c);
        assert_eq!((pool.live(), pool.cached_blocks()), (0, 0));
        assert!(pool.lookup(0, &seq(0, 40)).is_empty());
        let mut c = KvCache::new(1);
        assert_eq!(pool.grow(&mut c, 10), 1);
        // the last block freed is the first reused, memory and all
        assert_eq!(c.layer(0).keys(0).as_ptr(), last);
        assert_eq!(pool.live(), 1);
        // its old contents are there until overwritten (attention never
        // reads past a cache's length)
        assert_eq!(c.layer(0).keys(0)[0], f16::from_f32(32.0));
    }
}
