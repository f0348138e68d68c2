//! Choosing the next token: repetition penalties ([`crate::penalty`]),
//! then greedy (temperature 0) or temperature + top-k + top-p sampling
//! from a per-request seeded generator (same seed, same output).
//! Log-probabilities are those of the model (raw logits, log-softmax),
//! as vLLM reports them by default.

use crate::math;
use crate::penalty::Penalties;
use crate::repeat::RepeatGuard;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    pub seed: Option<u64>,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Multiplicative, over the last generated tokens; 1 = off.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition_penalty: 1.0,
        }
    }
}

pub struct Sampler {
    p: SamplingParams,
    state: u64,
    penalties: Penalties,
    /// Unnormalised probabilities, kept between tokens (a vocabulary-sized
    /// buffer each token otherwise).
    w: Vec<f32>,
}

pub struct Choice {
    pub token: u32,
    /// The chosen token's log-probability, when asked for.
    pub logprob: Option<f32>,
    /// The `n` most likely tokens, best first.
    pub top: Vec<(u32, f32)>,
}

fn log_softmax_at(logits: &[f32]) -> (f32, f32) {
    let max = math::max(logits);
    let e: Vec<f32> = logits.iter().map(|l| math::exp(l - max)).collect();
    (max, math::sum(&e).ln())
}

/// Entries per partial sum of the draw: the draw finds its chunk from
/// the sums, then scans one chunk (a scan in index order from the start
/// went through half the vocabulary on average).
const CHUNK: usize = 1024;

impl Sampler {
    pub fn new(p: SamplingParams) -> Self {
        let state = p.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        });
        Self {
            penalties: Penalties::new(
                p.frequency_penalty,
                p.presence_penalty,
                p.repetition_penalty,
            ),
            p,
            state,
            w: Vec::new(),
        }
    }

    /// splitmix64
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Picks the next token from `logits` (modified in place) and records
    /// it for the penalties. `logprobs`: `None`, or how many alternatives
    /// to report with the chosen token's log-probability (the log-softmax
    /// over the vocabulary costs an `exp` per entry, so it runs only then).
    pub fn sample(&mut self, logits: &mut [f32], logprobs: Option<usize>) -> Choice {
        let lse = logprobs.map(|_| log_softmax_at(logits));
        // a token a grammar masked has no probability: reported as
        // vLLM does, -9999 (JSON has no -inf)
        let raw_lp = |l: f32| lse.map_or(0.0, |(max, lse)| (l - max - lse).max(-9999.0));
        let top_n = logprobs.unwrap_or(0).min(logits.len());
        let top = if top_n > 0 {
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            idx.select_nth_unstable_by(top_n - 1, |a, b| {
                logits[*b as usize].total_cmp(&logits[*a as usize])
            });
            idx.truncate(top_n);
            idx.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
            idx.iter()
                .map(|&i| (i, raw_lp(logits[i as usize])))
                .collect()
        } else {
            Vec::new()
        };
        // the logprob reported is the model's, before penalties
        let original: Option<Vec<f32>> =
            (self.penalties.active() && lse.is_some()).then(|| logits.to_vec());
        self.penalties.apply(logits);
        let token = if self.p.temperature <= 0.0 {
            // the first index holding the maximum
            let max = math::max(logits);
            logits.iter().position(|&l| l == max).unwrap_or(0) as u32
        } else {
            self.draw(logits)
        };
        self.penalties.record(token);
        let chosen = original.as_deref().unwrap_or(logits)[token as usize];
        Choice {
            token,
            logprob: lse.map(|_| raw_lp(chosen)),
            top,
        }
    }

    /// Temperature, then top-k, then top-p (of the top-k set's mass).
    /// Only as much of the vocabulary is ordered as the cut needs: a
    /// nucleus is usually a few dozen tokens, and sorting all ~50k per
    /// token would cost milliseconds.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        let inv_t = 1.0 / self.p.temperature;
        let max = math::max(logits);
        if !max.is_finite() {
            return 0;
        }
        // unnormalised probabilities
        let mut w = std::mem::take(&mut self.w);
        w.clear();
        w.extend(logits.iter().map(|l| math::exp((l - max) * inv_t)));
        let token = self.draw_from(&w);
        self.w = w;
        token
    }

    fn draw_from(&mut self, w: &[f32]) -> u32 {
        let n = w.len();
        let k = match self.p.top_k {
            0 => n,
            k => k.min(n),
        };
        if k == n && self.p.top_p >= 1.0 {
            // the whole vocabulary: no order needed; the chunk, then the
            // entry within it, in index order
            let sums: Vec<f32> = w.chunks(CHUNK).map(math::sum).collect();
            let mut r = self.uniform() * sums.iter().sum::<f32>();
            for (c, (chunk, &s)) in w.chunks(CHUNK).zip(&sums).enumerate() {
                if r >= s {
                    r -= s;
                    continue;
                }
                let mut last = None;
                for (i, &p) in chunk.iter().enumerate() {
                    if r < p {
                        return (c * CHUNK + i) as u32;
                    }
                    r -= p;
                    last = (p > 0.0).then_some(i).or(last);
                }
                // rounding left r past the chunk's last weight: its last
                // token that has any
                return (c * CHUNK + last.unwrap_or(chunk.len() - 1)) as u32;
            }
            // the same past the last chunk: the last token that has any
            return w.iter().rposition(|&p| p > 0.0).unwrap_or(n - 1) as u32;
        }
        let mut idx: Vec<u32> = (0..n as u32).collect();
        let heavier = |a: &u32, b: &u32| w[*b as usize].total_cmp(&w[*a as usize]);
        if k < n {
            idx.select_nth_unstable_by(k - 1, heavier);
            idx.truncate(k);
        }
        let mass: f32 = idx.iter().map(|&i| w[i as usize]).sum();
        let mut keep = idx.len();
        if self.p.top_p < 1.0 {
            // order a growing prefix until it holds top_p of the mass
            let want = self.p.top_p * mass;
            let mut m = 64.min(keep);
            loop {
                if m < idx.len() {
                    idx.select_nth_unstable_by(m - 1, heavier);
                }
                idx[..m].sort_by(heavier);
                let mut acc = 0.0;
                let cut = idx[..m].iter().position(|&i| {
                    acc += w[i as usize];
                    acc >= want
                });
                if let Some(c) = cut {
                    keep = c + 1;
                    break;
                }
                if m == idx.len() {
                    break;
                }
                m = (2 * m).min(idx.len());
            }
        }
        let kept = &idx[..keep];
        let total: f32 = kept.iter().map(|&i| w[i as usize]).sum();
        let mut r = self.uniform() * total;
        for &i in kept {
            let p = w[i as usize];
            if r < p {
                return i;
            }
            r -= p;
        }
        // rounding left `r` past the end: the last token with any weight
        // (never one a grammar masked)
        kept.iter()
            .rev()
            .find(|&&i| w[i as usize] > 0.0)
            .or(kept.last())
            .copied()
            .unwrap_or(0)
    }
}

/// Stop sequences over streamed text: text that could be the start of a
/// stop sequence is held back until it is known not to be; a matched stop
/// sequence and everything after it are never emitted.
/// With `stop_on_repeat`, the released text then passes a
/// [`RepeatGuard`], which ends the sequence at a repeated sentence.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    repeat: Option<RepeatGuard>,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>, stop_on_repeat: bool) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            repeat: stop_on_repeat.then(RepeatGuard::default),
        }
    }

    /// Returns the text that is safe to emit and whether the sequence
    /// stops (a stop sequence matched, or a repeat began).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        let (out, hit) = self.match_stops(text);
        let Some(g) = &mut self.repeat else {
            return (out, hit);
        };
        // the text before a stop sequence is still checked for a repeat,
        // and what the guard held is released when the stop ends it
        let (mut out, repeat) = g.push(&out);
        if hit && !repeat {
            out.push_str(&g.finish());
        }
        (out, hit || repeat)
    }

    fn match_stops(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return (out, true);
        }
        // keep the longest suffix that is a prefix of some stop
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in self.held.char_indices() {
                let suffix = &self.held[i..];
                if s.starts_with(suffix) {
                    keep = keep.max(suffix.len());
                    break;
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        (out, false)
    }

    /// Held text once generation ended without a stop.
    pub fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        match &mut self.repeat {
            Some(g) => match g.push(&held) {
                (out, true) => out,
                (out, false) => out + &g.finish(),
            },
            None => held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_spanning_pushes_is_not_emitted() {
        let mut m = StopMatcher::new(vec!["END".into(), "\n\n".into()], false);
        assert_eq!(m.push("abc E"), ("abc ".into(), false));
        assert_eq!(m.push("N"), (String::new(), false));
        assert_eq!(m.push("Dx"), (String::new(), true));
        let mut m = StopMatcher::new(vec!["END".into()], false);
        assert_eq!(m.push("EN"), (String::new(), false));
        assert_eq!(m.push("x"), ("ENx".into(), false));
        assert_eq!(m.push("é E"), ("é ".into(), false));
        assert_eq!(m.finish(), "E");
    }

    #[test]
    fn stops_and_repeats_together_lose_no_text() {
        let mut m = StopMatcher::new(vec!["\n\n".into()], true);
        assert_eq!(
            m.push("The reactor runs hot. "),
            ("The reactor runs hot. ".into(), false)
        );
        // held: it may be the start of a repeat
        assert_eq!(m.push("The reactor"), (String::new(), false));
        // a stop sequence ends it: the held text comes out first
        assert_eq!(
            m.push(" is blue.\n\nMore"),
            ("The reactor is blue.".into(), true)
        );
        // a repeat before a stop sequence ends the text at the repeat
        let mut m = StopMatcher::new(vec!["END".into()], true);
        assert_eq!(m.push("Red is nice. "), ("Red is nice. ".into(), false));
        assert_eq!(m.push("Red is nice. END"), (String::new(), true));
        // at the end, held text is released unless it completes a repeat
        let mut m = StopMatcher::new(vec![], true);
        assert_eq!(
            m.push("Red is nice. Red is"),
            ("Red is nice. ".into(), false)
        );
        assert_eq!(m.finish(), "Red is");
    }

    #[test]
    fn greedy_penalties_and_seeds() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        let c = s.sample(&mut [0.0, 3.0, 1.0], Some(2));
        assert_eq!(c.token, 1);
        assert_eq!(c.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(
            (c.logprob.unwrap_or(0.0) - (3.0 - (1f32 + 3f32.exp() + 1f32.exp()).ln())).abs() < 1e-5
        );
        // presence penalty 5 moves greedy off the repeated token
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            presence_penalty: 5.0,
            ..Default::default()
        });
        let c = s.sample(&mut [0.0, 3.0, 1.0], None);
        assert_eq!(c.token, 1);
        // not asked: no log-softmax, no logprob
        assert!(c.logprob.is_none() && c.top.is_empty());
        assert_eq!(s.sample(&mut [0.0, 3.0, 1.0], None).token, 2);
        // same seed, same draws; top_k 1 is greedy
        let p = SamplingParams {
            temperature: 1.0,
            seed: Some(7),
            ..Default::default()
        };
        let draws = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..20)
                .map(|_| s.sample(&mut [0.5, 0.4, 0.3, 0.2], None).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(p.clone()), draws(p.clone()));
        assert!(draws(p.clone()).iter().any(|&t| t != 0));
        assert!(
            draws(SamplingParams { top_k: 1, ..p })
                .iter()
                .all(|&t| t == 0)
        );
    }

    /// Without a cut, draws follow softmax(logits / temperature).
    #[test]
    fn full_vocabulary_draws_follow_the_softmax() {
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        for t in [1.0f32, 2.0] {
            let mut s = Sampler::new(SamplingParams {
                temperature: t,
                seed: Some(11),
                ..Default::default()
            });
            let n = 20_000;
            let mut seen = [0usize; 4];
            for _ in 0..n {
                seen[s.sample(&mut logits.clone(), None).token as usize] += 1;
            }
            let z: f32 = probs.iter().map(|p| p.powf(1.0 / t)).sum();
            for (i, p) in probs.iter().enumerate() {
                let want = p.powf(1.0 / t) / z;
                let got = seen[i] as f32 / n as f32;
                assert!(
                    (got - want).abs() < 0.015,
                    "T={t} token {i}: {got} vs {want}"
                );
            }
        }
    }

    /// Over a vocabulary of several draw chunks, draws land in the right
    /// chunk and entry.
    #[test]
    fn draws_across_chunks() {
        let mut logits = vec![-40.0f32; 3 * CHUNK + 7];
        let (a, b, c) = (10, 2 * CHUNK + 500, 3 * CHUNK + 6);
        logits[a] = 0.2f32.ln();
        logits[b] = 0.5f32.ln();
        logits[c] = 0.3f32.ln();
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            seed: Some(5),
            ..Default::default()
        });
        let n = 10_000;
        let mut seen = std::collections::HashMap::new();
        for _ in 0..n {
            *seen
                .entry(s.sample(&mut logits.clone(), None).token)
                .or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        for (t, p) in [(a, 0.2), (b, 0.5), (c, 0.3)] {
            let got = seen.get(&(t as u32)).copied().unwrap_or(0) as f32 / n as f32;
            assert!((got - p).abs() < 0.02, "token {t}: {got} vs {p}");
        }
    }

    /// top_k and top_p cut the right tokens, including a nucleus larger
    /// than the first ordered prefix (64).
    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let drawn = |p: SamplingParams, logits: &[f32], n: usize| {
            let mut s = Sampler::new(p);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..n {
                // fresh penalties-free logits each time
                seen.insert(s.sample(&mut logits.to_vec(), None).token);
            }
            seen
        };
        let base = SamplingParams {
            temperature: 1.0,
            seed: Some(3),
            ..Default::default()
        };
        let nucleus = SamplingParams {
            top_p: 0.7,
            ..base.clone()
        };
        assert_eq!(drawn(nucleus, &logits, 400), [0, 1].into());
        let k3 = SamplingParams {
            top_k: 3,
            ..base.clone()
        };
        assert_eq!(drawn(k3, &logits, 400), [0, 1, 2].into());
        assert_eq!(drawn(base.clone(), &logits, 400), [0, 1, 2, 3].into());
        // 100 equally likely tokens: top_p 0.9 keeps exactly 90 of them
        let flat = vec![0.0f32; 100];
        let wide = SamplingParams { top_p: 0.9, ..base };
        assert_eq!(drawn(wide, &flat, 3000).len(), 90);
    }
}
