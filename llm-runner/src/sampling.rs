//! Choosing the next token: OpenAI-style frequency/presence penalties,
//! then greedy (temperature 0) or temperature + top-k + top-p sampling
//! from a per-request seeded generator (same seed, same output).
//! Log-probabilities are those of the model (raw logits, log-softmax),
//! as vLLM reports them by default.

use std::collections::HashMap;

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
        }
    }
}

pub struct Sampler {
    p: SamplingParams,
    state: u64,
    counts: HashMap<u32, u32>,
}

pub struct Choice {
    pub token: u32,
    pub logprob: f32,
    /// The `n` most likely tokens, best first.
    pub top: Vec<(u32, f32)>,
}

fn log_softmax_at(logits: &[f32]) -> (f32, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    (max, sum.ln())
}

impl Sampler {
    pub fn new(p: SamplingParams) -> Self {
        let state = p.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        });
        Self {
            p,
            state,
            counts: HashMap::new(),
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
    /// it for the penalties. `top_n`: how many alternatives to report.
    pub fn sample(&mut self, logits: &mut [f32], top_n: usize) -> Choice {
        let (max, lse) = log_softmax_at(logits);
        let raw_lp = |l: f32| l - max - lse;
        let top = if top_n > 0 {
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            let n = top_n.min(idx.len());
            idx.select_nth_unstable_by(n - 1, |a, b| {
                logits[*b as usize].total_cmp(&logits[*a as usize])
            });
            idx.truncate(n);
            idx.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
            idx.iter()
                .map(|&i| (i, raw_lp(logits[i as usize])))
                .collect()
        } else {
            Vec::new()
        };
        let chosen_raw = |logits: &[f32], t: u32| raw_lp(logits[t as usize]);
        let original: Option<Vec<f32>> = (self.p.frequency_penalty != 0.0
            || self.p.presence_penalty != 0.0)
            .then(|| logits.to_vec());
        for (&t, &c) in &self.counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= c as f32 * self.p.frequency_penalty + self.p.presence_penalty;
            }
        }
        let token = if self.p.temperature <= 0.0 {
            let mut best = 0usize;
            for (i, l) in logits.iter().enumerate() {
                if *l > logits[best] {
                    best = i;
                }
            }
            best as u32
        } else {
            self.draw(logits)
        };
        *self.counts.entry(token).or_insert(0) += 1;
        let logprob = chosen_raw(original.as_deref().unwrap_or(logits), token);
        Choice {
            token,
            logprob,
            top,
        }
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let t = self.p.temperature;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32, l / t))
            .collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1));
        if self.p.top_k > 0 {
            cand.truncate(self.p.top_k);
        }
        let max = cand.first().map_or(0.0, |c| c.1);
        let mut probs: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let s: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= s);
        }
        let mut r = self.uniform();
        for (i, p) in probs.iter().enumerate() {
            if r < *p {
                return cand[i].0;
            }
            r -= p;
        }
        cand[probs.len().saturating_sub(1)].0
    }
}

/// Stop sequences over streamed text: text that could be the start of a
/// stop sequence is held back until it is known not to be; a matched stop
/// sequence and everything after it are never emitted.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Returns the text that is safe to emit and whether a stop matched.
    pub fn push(&mut self, text: &str) -> (String, bool) {
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
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_spanning_pushes_is_not_emitted() {
        let mut m = StopMatcher::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(m.push("abc E"), ("abc ".into(), false));
        assert_eq!(m.push("N"), (String::new(), false));
        assert_eq!(m.push("Dx"), (String::new(), true));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("EN"), (String::new(), false));
        assert_eq!(m.push("x"), ("ENx".into(), false));
        assert_eq!(m.push("é E"), ("é ".into(), false));
        assert_eq!(m.finish(), "E");
    }

    #[test]
    fn greedy_penalties_and_seeds() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        let c = s.sample(&mut [0.0, 3.0, 1.0], 2);
        assert_eq!(c.token, 1);
        assert_eq!(c.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((c.logprob - (3.0 - (1f32 + 3f32.exp() + 1f32.exp()).ln())).abs() < 1e-5);
        // presence penalty 5 moves greedy off the repeated token
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            presence_penalty: 5.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.0, 3.0, 1.0], 0).token, 1);
        assert_eq!(s.sample(&mut [0.0, 3.0, 1.0], 0).token, 2);
        // same seed, same draws; top_k 1 is greedy
        let p = SamplingParams {
            temperature: 1.0,
            seed: Some(7),
            ..Default::default()
        };
        let draws = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..20)
                .map(|_| s.sample(&mut [0.5, 0.4, 0.3, 0.2], 0).token)
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
}
