//! Ending an answer that starts to repeat itself (`stop_on_repeat`).
//!
//! Small models under greedy decoding fall into loops: the same sentence
//! again and again until `max_tokens`. Penalties ([`crate::penalty`])
//! make that less likely; this guard ends it when it happens anyway. The
//! text is cut into segments (a sentence ends at `.`, `!` or `?` followed
//! by white space; a line at `\n`). A segment of at least
//! [`MIN_WORDS`] words that equals an earlier one (case and spacing
//! aside) finishes the sequence with `stop`, and the repeat is never
//! emitted: while the segment being written is still a prefix of an
//! earlier one it is held back, exactly as text that could start a stop
//! sequence is (see [`crate::sampling::StopMatcher`]).

/// Shorter segments ("1.", "- Yes.") may legitimately recur.
pub const MIN_WORDS: usize = 3;

#[derive(Debug, Default)]
pub struct RepeatGuard {
    /// Earlier segments, normalised.
    seen: Vec<String>,
    /// The segment being written (all of it held back or not).
    current: String,
    /// Bytes of `current` already released.
    released: usize,
}

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

impl RepeatGuard {
    /// Takes released text; returns what may be emitted and whether the
    /// sequence must stop (the repeat itself is dropped).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        let mut out = String::new();
        for c in text.chars() {
            let ends = match self.current.chars().last() {
                Some('.' | '!' | '?') => c.is_whitespace(),
                _ => c == '\n',
            };
            self.current.push(c);
            if ends && self.end_segment() {
                return (out, true);
            }
            if ends {
                out.push_str(&self.current[self.released..]);
                self.current.clear();
                self.released = 0;
            }
        }
        if !self.could_repeat() {
            out.push_str(&self.current[self.released..]);
            self.released = self.current.len();
        }
        (out, false)
    }

    /// Held text once generation ended for another reason. The last,
    /// unfinished segment is emitted even if it was repeating: it did not
    /// end, so it is not known to be a repeat.
    pub fn finish(&mut self) -> String {
        let out = self.current[self.released..].to_owned();
        self.current.clear();
        self.released = 0;
        out
    }

    /// The segment just ended: true if it repeats an earlier one.
    fn end_segment(&mut self) -> bool {
        let n = normalise(&self.current);
        if n.split(' ').count() < MIN_WORDS {
            return false;
        }
        if self.seen.contains(&n) {
            return true;
        }
        self.seen.push(n);
        false
    }

    /// Whether the unfinished segment is a prefix of an earlier one.
    fn could_repeat(&self) -> bool {
        let n = normalise(&self.current);
        !n.is_empty() && self.seen.iter().any(|s| s.starts_with(&n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` as tokens would arrive; returns the text emitted
    /// and whether it stopped.
    fn run(pieces: &[&str]) -> (String, bool) {
        let mut g = RepeatGuard::default();
        let mut out = String::new();
        for p in pieces {
            let (t, stop) = g.push(p);
            out.push_str(&t);
            if stop {
                return (out, true);
            }
        }
        out.push_str(&g.finish());
        (out, false)
    }

    #[test]
    fn a_repeated_sentence_stops_and_is_not_emitted() {
        let (out, stop) = run(&[
            "The reactor",
            " runs at 742 K.",
            " It is",
            " blue.",
            " The Reactor ",
            "runs at",
            " 742 K.",
            " More",
        ]);
        assert!(stop);
        assert_eq!(out, "The reactor runs at 742 K. It is blue. ");
    }

    #[test]
    fn a_repeated_line_stops() {
        let (out, stop) = run(&["A: the answer is [1]\n", "A: the answer", " is [1]\n"]);
        assert!(stop);
        assert_eq!(out, "A: the answer is [1]\n");
    }

    #[test]
    fn prefixes_are_held_then_released_when_they_differ() {
        let mut g = RepeatGuard::default();
        assert_eq!(
            g.push("The reactor runs hot. "),
            ("The reactor runs hot. ".into(), false)
        );
        // a prefix of the earlier sentence: held
        assert_eq!(g.push("The reactor"), (String::new(), false));
        // it diverges: released whole
        assert_eq!(g.push(" is blue"), ("The reactor is blue".into(), false));
        assert_eq!(g.finish(), "");
    }

    #[test]
    fn short_segments_and_numbers_may_recur() {
        let (out, stop) = run(&[
            "1. Yes.\n",
            "2. Yes.\n",
            "Pi is 3.14 and e is 2.71.",
            " Yes.",
        ]);
        assert!(!stop);
        assert_eq!(out, "1. Yes.\n2. Yes.\nPi is 3.14 and e is 2.71. Yes.");
    }

    #[test]
    fn an_unfinished_repeat_is_emitted_at_the_end() {
        let (out, stop) = run(&["Red is nice. ", "Red is"]);
        assert!(!stop);
        assert_eq!(out, "Red is nice. Red is");
    }
}
