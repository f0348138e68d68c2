//! A step's logits: one vocabulary-sized row per sequence that asked for
//! them, handed out as views (16 rows of SmolLM2's 49k vocabulary are
//! 3 MB; they are not copied per sequence, nor gathered when the step ran
//! in parts).

/// The rows of one part of a step (a step split by sequences has one part
/// per thread, see `Llama::forward`).
pub(crate) struct Part {
    /// `rows × vocab`.
    pub data: Vec<f32>,
    /// Per batch entry of the part: its row, if it asked.
    pub of: Vec<Option<usize>>,
}

pub struct Logits {
    vocab: usize,
    /// In batch order.
    parts: Vec<Part>,
}

impl Logits {
    pub(crate) fn new(vocab: usize, parts: Vec<Part>) -> Self {
        Self { vocab, parts }
    }

    /// Batch entry `i`'s logits.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        let mut i = i;
        for p in &self.parts {
            if i < p.of.len() {
                let r = p.of[i]?;
                return p.data.get(r * self.vocab..(r + 1) * self.vocab);
            }
            i -= p.of.len();
        }
        None
    }

    /// Every batch entry's logits, mutable (sampling applies penalties in
    /// place), `None` where it did not ask.
    pub fn rows_mut(&mut self) -> Vec<Option<&mut [f32]>> {
        let vocab = self.vocab.max(1);
        let mut out = Vec::new();
        for p in &mut self.parts {
            let mut rows: Vec<Option<&mut [f32]>> =
                p.data.chunks_exact_mut(vocab).map(Some).collect();
            out.extend(
                p.of.iter()
                    .map(|r| r.and_then(|r| rows.get_mut(r).and_then(Option::take))),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each entry that asked sees its own row, the others none, across
    /// parts; the mutable views are the same rows.
    #[test]
    fn logits_rows_per_entry() {
        let mut l = Logits::new(
            2,
            vec![
                Part {
                    data: (0..4).map(|v| v as f32).collect(),
                    of: vec![Some(0), None, Some(1)],
                },
                Part {
                    data: vec![4.0, 5.0],
                    of: vec![Some(0)],
                },
            ],
        );
        assert_eq!(l.get(0), Some(&[0.0, 1.0][..]));
        assert_eq!(l.get(1), None);
        assert_eq!(l.get(2), Some(&[2.0, 3.0][..]));
        assert_eq!(l.get(3), Some(&[4.0, 5.0][..]));
        assert_eq!(l.get(4), None);
        let rows = l.rows_mut();
        assert_eq!(rows.len(), 4);
        assert!(rows[1].is_none());
        for (i, r) in rows.into_iter().enumerate() {
            if let Some(r) = r {
                r[0] = -(i as f32);
            }
        }
        assert_eq!(l.get(2), Some(&[-2.0, 3.0][..]));
        assert_eq!(l.get(3), Some(&[-3.0, 5.0][..]));
    }
}
