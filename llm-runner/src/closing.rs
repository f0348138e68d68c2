//! Keeping a constrained answer finishable. A grammar guarantees that
//! every token is valid, not that the answer ever ends: a small model
//! writing greedily falls into loops inside a JSON string (`"Sofa_Sofa_…`)
//! or array (`"Lima", "Lima", …`) and runs to `max_tokens` with JSON that
//! does not parse. So a JSON answer (a response format, a tool call; not a
//! regex, a Lark grammar or free text) switches to *closing*: among the tokens its grammar allows, only
//! those that end something without starting anything (a string's `"`,
//! an array's `]`, an object's `}`, or the answer's end token) are kept
//! when there are any. Strings
//! close, optional members are skipped, arrays stop at their minimum,
//! and the output parses.
//!
//! It closes while the answer loops (the same block of 1-48 tokens written
//! 4 times in a row and over at least 16 tokens; closing a string or an
//! array usually ends the loop, and the answer goes on freely), and for
//! the rest of the answer once what is left of `max_tokens` drops to
//! [`reserve`] plus the depth of the JSON written so far ([`Nesting`]:
//! enough to close every level and write the required members still
//! missing as short values). A legitimate run of 8 equal
//! array items (`0, 0, 0, …`) reads as a loop too: the array may end there.

/// How deep JSON text is, read as it streams: open objects and arrays
/// outside strings.
#[derive(Debug, Default, Clone)]
pub struct Nesting {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Nesting {
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// Open objects and arrays, plus one for an open string.
    pub fn depth(&self) -> usize {
        self.depth + usize::from(self.in_string)
    }
}

/// Tokens the answer keeps for closing: an eighth of `max_tokens`, at
/// least 16 and at most 64.
pub fn reserve(max_tokens: usize) -> usize {
    (max_tokens / 8).clamp(16, 64)
}

/// Whether the last tokens are one block repeated (see the module docs).
pub fn looping(tokens: &[u32]) -> bool {
    const REPEATS: usize = 4;
    const MIN_SPAN: usize = 16;
    let n = tokens.len();
    (1..=48).any(|p| {
        // short blocks repeat more: 16 times one token, 8 times two
        let repeats = REPEATS.max(MIN_SPAN.div_ceil(p));
        n >= p * repeats
            && (1..repeats).all(|k| tokens[n - p..] == tokens[n - (k + 1) * p..n - k * p])
    })
}

/// [`closes`]: the token ends the string it is written in.
pub const IN_STRING: u8 = 1;
/// [`closes`]: the token ends arrays or objects (written outside strings).
pub const OUTSIDE: u8 = 2;

/// Whether a token's text ends something and starts nothing, written
/// inside a string ([`IN_STRING`]: its first unescaped `"`, then only
/// `]`, `}` or spaces: `"`, `abc"}`) or outside one ([`OUTSIDE`]: only
/// `]`, `}` or spaces). `", "` ends a string but opens the next, so it
/// does not count; neither does `]` inside a string, where it is text.
pub fn closes(bytes: &[u8]) -> u8 {
    let only_closing = |t: &[u8]| {
        t.iter()
            .all(|b| matches!(b, b']' | b'}') || b.is_ascii_whitespace())
    };
    let mut flags = 0;
    if !bytes.trim_ascii().is_empty() && only_closing(bytes) {
        flags |= OUTSIDE;
    }
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => {
                if only_closing(&bytes[i + 1..]) {
                    flags |= IN_STRING;
                }
                break;
            }
            _ => {}
        }
    }
    flags
}

/// Whether the JSON written so far is inside a string.
impl Nesting {
    pub fn in_string(&self) -> bool {
        self.in_string
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_blocks_repeated_four_times() {
        let block = |b: &[u32], n: usize| -> Vec<u32> {
            let mut t = vec![9];
            for _ in 0..n {
                t.extend_from_slice(b);
            }
            t
        };
        // a 2-token block: 8 times (16 tokens), not 7
        assert!(!looping(&block(&[1, 2], 7)));
        assert!(looping(&block(&[1, 2], 8)));
        // a 4-token block 4 times
        let mut t = block(&[4, 5, 6, 7], 4);
        assert!(looping(&t));
        t.push(8);
        assert!(!looping(&t), "the loop broke");
        // a 5-token block: 3 times is not yet a loop, 4 times is
        assert!(!looping(&block(&[1, 2, 3, 4, 5], 3)));
        assert!(looping(&block(&[1, 2, 3, 4, 5], 4)));
    }

    #[test]
    fn nesting_counts_levels_outside_strings() {
        let mut n = Nesting::default();
        n.push(br#"{"a": [1, {"b": "x]}\"{"#);
        assert_eq!(n.depth(), 3 + 1, "three levels and an open string");
        n.push(br#"", "c": []}]"#);
        assert_eq!(n.depth(), 1);
        n.push(b"}");
        assert_eq!(n.depth(), 0);
    }

    #[test]
    fn closing_tokens() {
        assert_eq!(closes(b"\""), IN_STRING);
        assert_eq!(closes(b"ab\"} "), IN_STRING);
        assert_eq!(closes(b"]}"), OUTSIDE);
        assert_eq!(closes(b" }"), OUTSIDE);
        assert_eq!(closes(b"x]"), 0, "text that ends in a bracket");
        assert_eq!(closes(b"\","), 0, "a comma goes on to the next item");
        assert_eq!(closes(b"\", \""), 0, "closes a string and opens the next");
        assert_eq!(closes(b"},"), 0);
        assert_eq!(closes(b"\\\""), 0, "an escaped quote stays in the string");
        assert_eq!(
            closes(b"\\\\\""),
            IN_STRING,
            "an escaped backslash, then a quote"
        );
        assert_eq!(closes(b"Sofa_"), 0);
        assert_eq!(closes(b", "), 0);
        assert_eq!(reserve(400), 50);
        assert_eq!(reserve(20), 16);
        assert_eq!(reserve(4000), 64);
    }
}
