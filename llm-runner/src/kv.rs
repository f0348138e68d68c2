//! Per-sequence KV cache: for each layer, keys and values of every position
//! so far, `[len, n_kv_head * head_dim]` row-major. Owned by the sequence,
//! so sequences join and leave a batch freely (continuous batching).

pub struct KvCache {
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            k: vec![Vec::new(); n_layer],
            v: vec![Vec::new(); n_layer],
            len: 0,
        }
    }

    /// Positions cached (all layers have the same count after a forward).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
