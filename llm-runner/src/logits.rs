//! A step's logits: one vocabulary-sized row per sequence that asked for
//! them, in one allocation (16 rows of SmolLM2's 49k vocabulary are 3 MB;
//! handed out as views, not copied per sequence).

pub struct Logits {
    data: Vec<f32>,
    vocab: usize,
    /// Per batch entry: its row, if it asked.
    of: Vec<Option<usize>>,
}

impl Logits {
    pub(crate) fn new(data: Vec<f32>, vocab: usize, of: Vec<Option<usize>>) -> Self {
        Self { data, vocab, of }
    }

    /// Batch entry `i`'s logits.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        let r = (*self.of.get(i)?)?;
        self.data.get(r * self.vocab..(r + 1) * self.vocab)
    }

    /// Every batch entry's logits, mutable (sampling applies penalties in
    /// place), `None` where it did not ask.
    pub fn rows_mut(&mut self) -> Vec<Option<&mut [f32]>> {
        let mut rows: Vec<Option<&mut [f32]>> = self
            .data
            .chunks_exact_mut(self.vocab.max(1))
            .map(Some)
            .collect();
        self.of
            .iter()
            .map(|r| r.and_then(|r| rows.get_mut(r).and_then(Option::take)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Logits;

    /// Each entry that asked sees its own row, the others none; the
    /// mutable views are the same rows.
    #[test]
    fn logits_rows_per_entry() {
        let mut l = Logits::new(
            (0..6).map(|v| v as f32).collect(),
            2,
            vec![Some(0), None, Some(1), Some(2)],
        );
        assert_eq!(l.get(0), Some(&[0.0, 1.0][..]));
        assert_eq!(l.get(1), None);
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
    }
}
