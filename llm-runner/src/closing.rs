//! Keeping a constrained answer finishable. A grammar guarantees that
//! every token is valid, not that the answer ever ends: a small model
//! writing greedily falls into loops inside a JSON string (`"Sofa_Sofa_…`)
//! or array (`"Lima", "Lima", …`) and runs to `max_tokens` with JSON that
//! does not parse. So a constrained sequence switches, for the rest of
//! its answer, to *closing*: among the tokens its grammar allows, only
//! those that end something without starting anything (a string's `"`,
//! an array's `]`, an object's `}`, or the answer's end token) are kept
//! when there are any. Strings
//! close, optional members are skipped, arrays stop at their minimum,
//! and the output parses.
//!
//! It switches when the answer loops (the same block of 1-48 tokens
//! written 4 times in a row and over at least 12 tokens) or when what is left of
//! `max_tokens` drops to [`reserve`] (enough to close a few levels and
//! write the required members still missing as short values).

/// Tokens the answer keeps for closing: an eighth of `max_tokens`, at
/// least 16 and at most 64.
pub fn reserve(max_tokens: usize) -> usize {
    (max_tokens / 8).clamp(16, 64)
}

/// Whether the last tokens are one block repeated (see the module docs).
pub fn looping(tokens: &[u32]) -> bool {
    const REPEATS: usize = 4;
    const MIN_SPAN: usize = 12;
    let n = tokens.len();
    (1..=48).any(|p| {
        // short blocks repeat more: 12 times one token, 6 times two
        let repeats = REPEATS.max(MIN_SPAN.div_ceil(p));
        n >= p * repeats
            && (1..repeats).all(|k| tokens[n - p..] == tokens[n - (k + 1) * p..n - k * p])
    })
}

/// Whether a token's text ends something and starts nothing: it ends
/// in `"`, `]` or `}` characters only (`"`, `"}`, `abc"]`, `}}`), the
/// first of them not escaped. `", "` closes a string but opens the next,
/// so it does not count.
pub fn closes(bytes: &[u8]) -> bool {
    let t = bytes.trim_ascii_end();
    let tail = t
        .iter()
        .rev()
        .take_while(|b| matches!(b, b'"' | b']' | b'}'))
        .count();
    if tail == 0 {
        return false;
    }
    let head = &t[..t.len() - tail];
    // a separator or an opening bracket goes on to something new
    if head.iter().any(|b| matches!(b, b',' | b':' | b'[' | b'{')) {
        return false;
    }
    let backslashes = head.iter().rev().take_while(|&&b| b == b'\\').count();
    backslashes % 2 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_blocks_repeated_four_times() {
        // a 2-token block 4 times is 8 tokens: too short to call a loop
        assert!(!looping(&[9, 1, 2, 1, 2, 1, 2, 1, 2]));
        let mut t = vec![9];
        for _ in 0..6 {
            t.extend([1, 2]);
        }
        assert!(looping(&t));
        // a 3-token block 4 times
        let mut t = vec![7, 7];
        for _ in 0..4 {
            t.extend([4, 5, 6]);
        }
        assert!(looping(&t));
        t.push(8);
        assert!(!looping(&t));
        // 3 repeats of a 5-token block are not yet a loop
        let mut t = Vec::new();
        for _ in 0..3 {
            t.extend([1, 2, 3, 4, 5]);
        }
        assert!(!looping(&t));
        t.extend([1, 2, 3, 4, 5]);
        assert!(looping(&t));
    }

    #[test]
    fn closing_tokens() {
        assert!(closes(b"\""));
        assert!(closes(b"]}"));
        assert!(closes(b"ab\"} "));
        assert!(!closes(b"\","), "a comma goes on to the next item");
        assert!(!closes(b"\", \""), "closes a string and opens the next");
        assert!(!closes(b"},"));
        assert!(!closes(b"\\\""), "an escaped quote stays in the string");
        assert!(closes(b"\\\\\""), "an escaped backslash, then a quote");
        assert!(!closes(b"Sofa_"));
        assert!(!closes(b", "));
        assert_eq!(reserve(400), 50);
        assert_eq!(reserve(20), 16);
        assert_eq!(reserve(4000), 64);
    }
}
