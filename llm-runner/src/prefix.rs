//! Automatic prefix caching over the caches of finished sequences.
//!
//! A finished (or cancelled) sequence's cache is kept with the tokens it
//! holds. Its whole [`KEY_BLOCK`]-position blocks are identified by a
//! chained hash: block `i`'s hash covers its 16 tokens and block `i-1`'s
//! hash, so equal hashes mean equal prefixes up to and including that
//! block (the tokens are compared too, so a hash collision cannot serve a
//! wrong prefix). A new sequence takes the kept cache sharing the longest
//! run of whole blocks with its prompt, keeps those positions and
//! prefills only the rest; at least the prompt's last token is always
//! prefilled, since its logits choose the first output token.
//!
//! Reuse is bit-identical to a cold prefill: a position's keys and values
//! depend only on the tokens up to it (the matmuls compute each row alone,
//! attention reads the cache, RoPE is by absolute position), and the
//! scheduler cuts the rest of the prompt at the same absolute chunk
//! boundaries as before.
//!
//! The chain starts from the request's cache salt (the gateway's hash of
//! the tenant), so requests of different salts never share a block: a hit
//! shows in `cached_tokens` and in the time to first token, and shared
//! blocks would let one tenant test whether another sent a given prompt.
//!
//! Kept caches count against the KV budget beside the running
//! reservations; past it the least recently used go first. A miss takes a
//! new cache while the budget has room for it (so kept prefixes are not
//! thrown away early), else recycles the least recently used kept cache.
//! A taken cache far larger than the sequence's reservation is cut down to
//! it, so the memory a sequence holds is what it is charged. A cache is
//! owned by one sequence at a time. A prompt that shares only the opening
//! of a longer kept cache (another conversation with the same system
//! prompt) copies the shared blocks into a cache of its own while the
//! budget has room, leaving the kept one whole; so does a prompt whose
//! kept prefix a queued prompt also wants (16 requests after one shared
//! preamble: all but the last copy it, none prefills it). Copies go into
//! fresh memory, whose page faults cost ~20 ms per 350 positions on this
//! project's VMs, far less than prefilling them; otherwise the kept cache
//! is taken and cut to the shared prefix. Two sequences admitted together
//! with a new prefix that nothing kept holds each prefill it.
//! Without caching (`--prefix-cache false`) kept caches are emptied, their
//! memory still reused.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::kv::{KEY_BLOCK, KvCache};

struct Kept {
    cache: KvCache,
    salt: u64,
    /// The tokens of the cache's positions.
    tokens: Vec<u32>,
    /// Chained hashes of its whole blocks.
    hashes: Vec<u64>,
    /// When it was kept or last hit (the LRU clock).
    used: u64,
}

/// Kept caches, for the next admissions.
pub struct CachePool {
    kept: Vec<Kept>,
    clock: u64,
    enabled: bool,
}

impl Default for CachePool {
    fn default() -> Self {
        Self::new(true)
    }
}

/// What the scheduler knows at an admission besides the prompt.
#[derive(Default)]
pub struct Around<'a> {
    /// The budget has room for a new cache.
    pub spare: bool,
    /// Prompts queued behind this one (same salt).
    pub queued: &'a [&'a [u32]],
    /// The running sequence sharing most whole blocks with the prompt,
    /// and how many.
    pub running: Option<(&'a KvCache, usize)>,
}

/// What [`CachePool::take`] hands out: a cache, and how many of the
/// prompt's positions it already holds.
pub struct Taken {
    pub cache: KvCache,
    pub reused: usize,
}

/// Whole blocks `prompt` (but its last token, always prefilled) shares
/// with the `held` tokens of another sequence's cache.
pub fn shared_blocks(prompt: &[u32], held: impl IntoIterator<Item = u32>) -> usize {
    let last = prompt.len().saturating_sub(1);
    prompt[..last]
        .iter()
        .zip(held)
        .take_while(|(a, b)| **a == *b)
        .count()
        / KEY_BLOCK
}

/// Chained hashes of the whole blocks of `tokens`, the chain started
/// from `salt`.
pub fn block_hashes(salt: u64, tokens: &[u32]) -> Vec<u64> {
    let mut out = Vec::with_capacity(tokens.len() / KEY_BLOCK);
    let mut parent = salt;
    for block in tokens.chunks_exact(KEY_BLOCK) {
        let mut h = DefaultHasher::new();
        parent.hash(&mut h);
        block.hash(&mut h);
        parent = h.finish();
        out.push(parent);
    }
    out
}

impl CachePool {
    pub fn new(enabled: bool) -> Self {
        Self {
            kept: Vec::new(),
            clock: 0,
            enabled,
        }
    }

    /// Caches kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Positions the kept caches have room for, together.
    pub fn room(&self) -> usize {
        self.kept.iter().map(|k| k.cache.room()).sum()
    }

    /// Whole blocks held for reuse (the `Load` reply's `cached_blocks`).
    pub fn cached_blocks(&self) -> usize {
        self.kept.iter().map(|k| k.hashes.len()).sum()
    }

    /// Keeps `cache`, whose positions hold `tokens` (longer is cut to the
    /// cache's length), for requests of `salt`.
    pub fn put(&mut self, mut cache: KvCache, salt: u64, tokens: &[u32]) {
        self.clock += 1;
        let tokens = if self.enabled {
            tokens[..cache.len().min(tokens.len())].to_vec()
        } else {
            Vec::new()
        };
        cache.truncate(tokens.len());
        if tokens.is_empty() {
            cache.clear();
        }
        self.kept.push(Kept {
            salt,
            hashes: block_hashes(salt, &tokens),
            tokens,
            cache,
            used: self.clock,
        });
    }

    /// A cache of `n_layer` layers with room for `need` positions of
    /// `kv_dim` values for a sequence of `salt` whose prompt is `prompt`:
    /// the kept cache sharing the longest whole-block prefix with it (cut
    /// to that prefix); else a new one when `spare` (the budget has room
    /// for it); else the least recently used kept cache with room
    /// (emptied); else a new one.
    pub fn take(
        &mut self,
        (n_layer, kv_dim): (usize, usize),
        need: usize,
        salt: u64,
        prompt: &[u32],
        around: Around<'_>,
    ) -> Taken {
        let Around {
            spare,
            queued,
            running,
        } = around;
        self.clock += 1;
        let mut best: Option<(usize, usize)> = None; // (blocks, index)
        if self.enabled && prompt.len() > 1 {
            // the last prompt token is always prefilled (its logits)
            let want = block_hashes(salt, &prompt[..prompt.len() - 1]);
            for (i, k) in self.kept.iter().enumerate().filter(|(_, k)| k.salt == salt) {
                let n = want
                    .iter()
                    .zip(&k.hashes)
                    .take_while(|(a, b)| a == b)
                    .count();
                let n = if prompt[..n * KEY_BLOCK] == k.tokens[..n * KEY_BLOCK] {
                    n
                } else {
                    0
                };
                let better = match best {
                    None => n > 0,
                    Some((b, j)) => n > b || (n == b && k.used > self.kept[j].used),
                };
                if better {
                    best = Some((n, i));
                }
            }
        }
        // a running sequence holding more of the prompt than anything
        // kept: copy its blocks (requests sharing a preamble that arrive
        // while the first of them runs)
        if let Some((from, blocks)) = running
            && self.enabled
            && spare
            && blocks > best.map_or(0, |b| b.0)
        {
            let reused = blocks * KEY_BLOCK;
            let mut into = KvCache::new(n_layer);
            into.copy_prefix_from(from, kv_dim, reused, need);
            into.fit(kv_dim, need);
            return Taken {
                cache: into,
                reused,
            };
        }
        if let Some((blocks, i)) = best {
            // less than half of the kept cache is shared: the opening of
            // another conversation, whose rest is worth keeping; more than
            // half: a continuation or a repeat of it, which takes it
            // also when a queued prompt shares the same blocks: it gets
            // the kept cache after this one's copy, instead of prefilling
            let wanted = || {
                let mine = &self.kept[i].hashes[..blocks];
                queued.iter().any(|q| {
                    q.len() > blocks * KEY_BLOCK
                        && block_hashes(salt, &q[..blocks * KEY_BLOCK]) == mine
                })
            };
            if spare && (blocks * 2 < self.kept[i].hashes.len() || wanted()) {
                let mut into = KvCache::new(n_layer);
                self.kept[i].used = self.clock;
                let reused = blocks * KEY_BLOCK;
                into.copy_prefix_from(&self.kept[i].cache, kv_dim, reused, need);
                into.fit(kv_dim, need);
                return Taken {
                    cache: into,
                    reused,
                };
            }
            let mut k = self.kept.swap_remove(i);
            let reused = blocks * KEY_BLOCK;
            k.cache.truncate(reused);
            k.cache.fit(kv_dim, need);
            return Taken {
                cache: k.cache,
                reused,
            };
        }
        let fit = self
            .kept
            .iter()
            .enumerate()
            .filter(|(_, k)| !spare && k.cache.room() >= need)
            .min_by_key(|(_, k)| k.used)
            .map(|(i, _)| i);
        let mut cache = match fit {
            Some(i) => {
                let mut c = self.kept.swap_remove(i).cache;
                c.clear();
                c
            }
            None => KvCache::new(n_layer),
        };
        cache.fit(kv_dim, need);
        Taken { cache, reused: 0 }
    }

    /// Drops kept caches, least recently used first, while their room
    /// plus `reserved` exceeds `budget` or more than `max` are kept.
    pub fn trim(&mut self, reserved: usize, budget: usize, max: usize) {
        while !self.kept.is_empty() && (reserved + self.room() > budget || self.kept.len() > max) {
            let oldest = self
                .kept
                .iter()
                .enumerate()
                .min_by_key(|(_, k)| k.used)
                .map_or(0, |(i, _)| i);
            self.kept.swap_remove(oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache holding `tokens` (one layer of 2 heads × 2 dims), each
    /// position's key its token.
    fn filled(tokens: &[u32]) -> KvCache {
        let mut c = KvCache::new(1);
        c.reserve(4, tokens.len());
        for (p, &t) in tokens.iter().enumerate() {
            c.push(0, p, 2, &[t as f32; 4], &[t as f32; 4]);
        }
        c.advance(tokens.len());
        c
    }

    fn seq(from: u32, n: usize) -> Vec<u32> {
        (from..from + n as u32).collect()
    }

    #[test]
    fn a_running_sequence_shares_its_blocks() {
        let held = seq(0, 50);
        let mut prompt = seq(0, 40);
        prompt.push(7);
        assert_eq!(shared_blocks(&prompt, held.iter().copied()), 2);
        // the prompt's last token is never counted
        assert_eq!(shared_blocks(&seq(0, 32), held.iter().copied()), 1);
        assert_eq!(shared_blocks(&seq(1, 40), held.iter().copied()), 0);
        // copied from it when nothing kept holds as much
        let running = filled(&held);
        let mut pool = CachePool::new(true);
        let t = pool.take(
            (1, 4),
            60,
            0,
            &prompt,
            Around {
                spare: true,
                running: Some((&running, 2)),
                ..Default::default()
            },
        );
        assert_eq!((t.reused, t.cache.len()), (32, 32));
        assert_eq!(
            t.cache.layer(0).0[4 * KEY_BLOCK + 5],
            half::f16::from_f32(21.0)
        );
        // not with caching off
        let mut off = CachePool::new(false);
        let around = Around {
            spare: true,
            running: Some((&running, 2)),
            ..Default::default()
        };
        assert_eq!(off.take((1, 4), 60, 0, &prompt, around).reused, 0);
        // not without room to spare
        let t = pool.take(
            (1, 4),
            60,
            0,
            &prompt,
            Around {
                spare: false,
                running: Some((&running, 2)),
                ..Default::default()
            },
        );
        assert_eq!(t.reused, 0);
    }

    #[test]
    fn hashes_chain_over_whole_blocks() {
        let a = block_hashes(0, &seq(0, 40));
        assert_eq!(a.len(), 2, "40 tokens: two whole blocks");
        let mut other = seq(0, 40);
        other[3] = 999;
        let b = block_hashes(0, &other);
        // a change in block 0 changes every later block's hash too
        assert!(a[0] != b[0] && a[1] != b[1]);
        assert_eq!(block_hashes(0, &seq(0, 32)), a);
    }

    #[test]
    fn the_longest_prefix_is_reused_and_the_last_token_prefilled() {
        let mut pool = CachePool::new(true);
        let base = seq(0, 70);
        pool.put(filled(&base[..50]), 0, &base[..50]);
        pool.put(filled(&seq(500, 64)), 0, &seq(500, 64));
        // shares 3 whole blocks (48 positions) of the first
        let t = pool.take(
            (1, 4),
            100,
            0,
            &base,
            Around {
                spare: false,
                ..Default::default()
            },
        );
        assert_eq!(t.reused, 48);
        assert_eq!(t.cache.len(), 48);
        // the reused positions are the ones written (key = token)
        assert_eq!(
            t.cache.layer(0).0[2 * 4 * KEY_BLOCK + 2],
            half::f16::from_f32(34.0)
        );
        // a prompt that is exactly a kept cache's tokens still prefills
        // its last token: 64 tokens share 3 whole blocks, not 4
        let t = pool.take((1, 4), 100, 0, &seq(500, 64), Around::default());
        assert_eq!(t.reused, 48);
        // nothing kept shares a block: an empty cache
        let t = pool.take((1, 4), 10, 0, &seq(9000, 40), Around::default());
        assert_eq!((t.reused, t.cache.len()), (0, 0));
    }

    #[test]
    fn salts_and_budget_decide_what_is_reused() {
        let mut pool = CachePool::new(true);
        let t = seq(0, 40);
        pool.put(filled(&t), 7, &t);
        // another salt (another tenant) never reuses it
        let other = pool.take(
            (1, 4),
            40,
            8,
            &t,
            Around {
                spare: true,
                ..Default::default()
            },
        );
        assert_eq!(other.reused, 0);
        assert_eq!(pool.len(), 1, "a miss with room to spare takes a new cache");
        // the same salt does
        assert_eq!(
            pool.take(
                (1, 4),
                40,
                7,
                &t,
                Around {
                    spare: true,
                    ..Default::default()
                }
            )
            .reused,
            32
        );
        // a kept cache far larger than the taker's need is cut down to it,
        // its cached positions intact
        let mut big = KvCache::new(1);
        big.reserve(4, 1024);
        for (p, &tok) in t.iter().enumerate() {
            big.push(0, p, 2, &[tok as f32; 4], &[tok as f32; 4]);
        }
        big.advance(t.len());
        pool.put(big, 7, &t);
        let cut = pool.take(
            (1, 4),
            40,
            7,
            &t,
            Around {
                spare: false,
                ..Default::default()
            },
        );
        assert_eq!((cut.reused, cut.cache.room()), (32, 48));
        assert_eq!(
            cut.cache.layer(0).0[4 * KEY_BLOCK + 1],
            half::f16::from_f32(17.0)
        );
    }

    #[test]
    fn a_shared_opening_is_copied_not_taken() {
        let mut pool = CachePool::new(true);
        // a 96-token conversation kept; another shares its first 2 blocks
        let kept = seq(0, 96);
        pool.put(filled(&kept), 0, &kept);
        let mut other = seq(0, 40);
        other.extend(seq(900, 30));
        let t = pool.take(
            (1, 4),
            80,
            0,
            &other,
            Around {
                spare: true,
                ..Default::default()
            },
        );
        assert_eq!((t.reused, t.cache.len()), (32, 32));
        assert_eq!(
            t.cache.layer(0).0[4 * KEY_BLOCK + 3],
            half::f16::from_f32(19.0)
        );
        // the kept conversation is still whole for its own next turn,
        // which takes it (more than half of it is shared)
        assert_eq!(pool.len(), 1);
        let mut next = kept.clone();
        next.extend(seq(5000, 10));
        assert_eq!(
            pool.take(
                (1, 4),
                110,
                0,
                &next,
                Around {
                    spare: true,
                    ..Default::default()
                }
            )
            .reused,
            96
        );
        assert!(pool.is_empty());
        // a prompt sharing most of it takes it, unless a queued prompt
        // wants the same blocks: then it copies and leaves it in place
        pool.put(filled(&kept), 0, &kept);
        let mut most = seq(0, 80);
        most.extend(seq(700, 20));
        let mut also = seq(0, 80);
        also.extend(seq(800, 20));
        let t = pool.take(
            (1, 4),
            120,
            0,
            &most,
            Around {
                spare: true,
                queued: &[also.as_slice()],
                ..Default::default()
            },
        );
        assert_eq!((t.reused, pool.len()), (80, 1));
        let t = pool.take(
            (1, 4),
            120,
            0,
            &also,
            Around {
                spare: true,
                ..Default::default()
            },
        );
        assert_eq!((t.reused, pool.len()), (80, 0));
        // without room to spare the shared opening is taken, cut down
        pool.put(filled(&kept), 0, &kept);
        let t = pool.take(
            (1, 4),
            80,
            0,
            &other,
            Around {
                spare: false,
                ..Default::default()
            },
        );
        assert_eq!(t.reused, 32);
        assert!(pool.is_empty());
    }

    #[test]
    fn off_keeps_memory_not_contents() {
        let mut pool = CachePool::new(false);
        pool.put(filled(&seq(0, 40)), 0, &seq(0, 40));
        assert_eq!(pool.cached_blocks(), 0);
        let t = pool.take((1, 4), 40, 0, &seq(0, 40), Around::default());
        assert_eq!((t.reused, t.cache.len(), t.cache.room()), (0, 0, 48));
    }

    #[test]
    fn eviction_is_least_recently_used() {
        let mut pool = CachePool::new(true);
        for i in 0..3 {
            let t = seq(1000 * i, 32);
            pool.put(filled(&t), 0, &t);
        }
        assert_eq!(pool.room(), 96);
        // hit the oldest: it leaves the pool, and comes back newest
        let t = pool.take((1, 4), 32, 0, &seq(0, 40), Around::default());
        assert_eq!(t.reused, 32);
        pool.put(t.cache, 0, &seq(0, 40));
        // budget for two: the least recently used (1000…) goes
        pool.trim(0, 80, 8);
        assert_eq!(pool.kept.len(), 2);
        assert!(pool.kept.iter().all(|k| k.tokens[0] != 1000));
        pool.trim(0, 1000, 0);
        assert_eq!(pool.room(), 0);
    }
}
