//! Batch policy: how queued sequences are grouped into forward passes.
//!
//! The forward is unpadded, so a batch costs about the sum of its sequence
//! lengths (plus a small per-sequence attention term). The policy keeps
//! arrival order (first come, first served) and closes a batch when adding
//! the next sequence would pass the token budget or the sequence cap. A
//! single sequence longer than the budget still runs, alone: the budget is
//! validated at start-up to be at least the model's max sequence length.

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch_tokens: usize,
    pub max_batch_sequences: usize,
}

impl BatchPolicy {
    /// Splits sequences with lengths `lens` into consecutive ranges, each
    /// one forward pass.
    pub fn plan(&self, lens: &[usize]) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut tokens = 0;
        for (i, &len) in lens.iter().enumerate() {
            let full = i > start
                && (tokens + len > self.max_batch_tokens || i - start >= self.max_batch_sequences);
            if full {
                out.push(start..i);
                start = i;
                tokens = 0;
            }
            tokens += len;
        }
        if start < lens.len() {
            out.push(start..lens.len());
        }
        out
    }
}

/// Splits one planned batch (lengths `lens`) into at most `parts`
/// consecutive slices of roughly equal token counts, to run side by side.
pub fn split_by_tokens(lens: &[usize], parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, lens.len().max(1));
    let total: usize = lens.iter().sum();
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    let mut acc = 0;
    for (i, &len) in lens.iter().enumerate() {
        acc += len;
        // close a slice once it reaches its share of the tokens, leaving at
        // least one sequence for each remaining slice
        let share = total * (out.len() + 1) / parts;
        let remaining = lens.len() - (i + 1);
        let slices_left = parts - out.len() - 1;
        if out.len() + 1 < parts && acc >= share && remaining >= slices_left {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_under_budget_in_order() {
        let p = BatchPolicy {
            max_batch_tokens: 10,
            max_batch_sequences: 3,
        };
        assert_eq!(p.plan(&[4, 4, 4, 1]), vec![0..2, 2..4]);
        assert_eq!(p.plan(&[1, 1, 1, 1, 1]), vec![0..3, 3..5]);
        // an over-budget sequence runs alone
        assert_eq!(p.plan(&[3, 20, 3]), vec![0..1, 1..2, 2..3]);
        assert!(p.plan(&[]).is_empty());
    }

    #[test]
    fn splits_evenly_by_tokens() {
        assert_eq!(split_by_tokens(&[10, 10, 10, 10], 2), vec![0..2, 2..4]);
        assert_eq!(split_by_tokens(&[30, 5, 5, 5, 5], 2), vec![0..1, 1..5]);
        assert_eq!(split_by_tokens(&[7], 4), vec![0..1]);
        assert!(split_by_tokens(&[], 2).is_empty());
        let lens: Vec<usize> = (0..33).map(|i| 40 + i % 20).collect();
        let parts = split_by_tokens(&lens, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|r| r.len()).sum::<usize>(), 33);
    }

    #[test]
    fn every_sequence_planned_once() {
        let p = BatchPolicy {
            max_batch_tokens: 64,
            max_batch_sequences: 32,
        };
        let lens: Vec<usize> = (0..500).map(|i| 1 + (i * 7919) % 60).collect();
        let plan = p.plan(&lens);
        let mut next = 0;
        for r in &plan {
            assert_eq!(r.start, next);
            assert!(r.len() <= 32);
            let t: usize = lens[r.clone()].iter().sum();
            assert!(t <= 64 || r.len() == 1);
            next = r.end;
        }
        assert_eq!(next, lens.len());
    }
}
