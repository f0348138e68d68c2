//! Repetition control applied to the logits before a token is chosen.
//!
//! Two families, as serving engines offer them:
//! - OpenAI's `frequency_penalty` / `presence_penalty`: subtracted from a
//!   token's logit, `count * frequency + presence`, over every token
//!   generated so far;
//! - the multiplicative `repetition_penalty` of llama.cpp (`repeat_penalty`)
//!   and vLLM: a positive logit is divided by it, a negative one
//!   multiplied, once per distinct token of the last [`REPEAT_WINDOW`]
//!   generated tokens (llama.cpp's `repeat_last_n` default).
//!
//! Only generated tokens count, never the prompt: a RAG answer must be
//! free to quote its sources word for word, which a penalty over the
//! prompt (vLLM's choice) would work against.

use std::collections::{HashMap, VecDeque};

/// Generated tokens the multiplicative penalty looks back over.
pub const REPEAT_WINDOW: usize = 64;

#[derive(Debug)]
pub struct Penalties {
    frequency: f32,
    presence: f32,
    /// 1 = off.
    repetition: f32,
    counts: HashMap<u32, u32>,
    recent: VecDeque<u32>,
    /// The window's distinct tokens, reused between tokens.
    distinct: Vec<u32>,
}

impl Penalties {
    pub fn new(frequency: f32, presence: f32, repetition: f32) -> Self {
        Self {
            frequency,
            presence,
            repetition,
            counts: HashMap::new(),
            recent: VecDeque::new(),
            distinct: Vec::new(),
        }
    }

    /// Whether [`Penalties::apply`] changes anything at all.
    pub fn active(&self) -> bool {
        self.frequency != 0.0 || self.presence != 0.0 || self.repetition != 1.0
    }

    /// Penalises `logits` in place for the tokens recorded so far.
    pub fn apply(&mut self, logits: &mut [f32]) {
        if self.frequency != 0.0 || self.presence != 0.0 {
            for (&t, &c) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= c as f32 * self.frequency + self.presence;
                }
            }
        }
        if self.repetition != 1.0 && !self.recent.is_empty() {
            self.distinct.clear();
            self.distinct.extend(self.recent.iter().copied());
            self.distinct.sort_unstable();
            self.distinct.dedup();
            for &t in &self.distinct {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / self.repetition
                    } else {
                        *l * self.repetition
                    };
                }
            }
        }
    }

    /// Records a generated token.
    pub fn record(&mut self, token: u32) {
        if self.frequency != 0.0 || self.presence != 0.0 {
            *self.counts.entry(token).or_insert(0) += 1;
        }
        if self.repetition != 1.0 {
            if self.recent.len() == REPEAT_WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additive_penalties_count_every_generated_token() {
        let mut p = Penalties::new(0.5, 1.0, 1.0);
        p.record(1);
        p.record(1);
        let mut l = [2.0, 2.0, 2.0];
        p.apply(&mut l);
        assert_eq!(l, [2.0, 2.0 - 2.0 * 0.5 - 1.0, 2.0]);
    }

    #[test]
    fn repetition_divides_positive_and_multiplies_negative_once_per_token() {
        let mut p = Penalties::new(0.0, 0.0, 2.0);
        assert!(p.active());
        for t in [0, 1, 1, 1] {
            p.record(t);
        }
        let mut l = [4.0, -1.0, 3.0];
        p.apply(&mut l);
        assert_eq!(l, [2.0, -2.0, 3.0]);
    }

    #[test]
    fn repetition_looks_back_over_the_window_only() {
        let mut p = Penalties::new(0.0, 0.0, 2.0);
        p.record(0);
        for _ in 0..REPEAT_WINDOW {
            p.record(1);
        }
        let mut l = [4.0, 4.0];
        p.apply(&mut l);
        // token 0 left the window; token 1 is penalised once
        assert_eq!(l, [4.0, 2.0]);
        assert!(!Penalties::new(0.0, 0.0, 1.0).active());
    }
}
