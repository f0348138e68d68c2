//! Pooling of token states into one sentence vector, as the model's
//! `1_Pooling/config.json` says.

use std::path::Path;

use serde::Deserialize;

use crate::error::{EmbedError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
    MeanSqrtLen,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len",
        }
    }

    /// Reads `1_Pooling/config.json`; a directory without one is a plain
    /// transformer and gets mean pooling (what sentence-transformers does).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            pooling_mode_cls_token: bool,
            #[serde(default)]
            pooling_mode_mean_tokens: bool,
            #[serde(default)]
            pooling_mode_max_tokens: bool,
            #[serde(default)]
            pooling_mode_mean_sqrt_len_tokens: bool,
        }
        let path = dir.join("1_Pooling").join("config.json");
        if !path.exists() {
            return Ok(Pooling::Mean);
        }
        let raw: Raw = crate::model::read_json(&path)?;
        let modes = [
            (raw.pooling_mode_mean_tokens, Pooling::Mean),
            (raw.pooling_mode_cls_token, Pooling::Cls),
            (raw.pooling_mode_max_tokens, Pooling::Max),
            (raw.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
        ];
        let chosen: Vec<Pooling> = modes.iter().filter(|m| m.0).map(|m| m.1).collect();
        match chosen.as_slice() {
            [one] => Ok(*one),
            _ => Err(EmbedError::ModelFile {
                path,
                reason:
                    "exactly one pooling mode must be enabled (combined modes are not supported)"
                        .into(),
            }),
        }
    }

    /// Pools `states` (`len` rows of `dim` floats, row-major) into `out`.
    pub fn pool(self, states: &[f32], dim: usize, out: &mut Vec<f32>) {
        let len = states.len() / dim;
        out.clear();
        match self {
            Pooling::Cls => out.extend_from_slice(&states[..dim]),
            Pooling::Max => {
                out.extend_from_slice(&states[..dim]);
                for row in states.chunks_exact(dim).skip(1) {
                    for (o, v) in out.iter_mut().zip(row) {
                        *o = o.max(*v);
                    }
                }
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                out.resize(dim, 0.0);
                for row in states.chunks_exact(dim) {
                    for (o, v) in out.iter_mut().zip(row) {
                        *o += *v;
                    }
                }
                let div = if self == Pooling::Mean {
                    len as f32
                } else {
                    (len as f32).sqrt()
                };
                out.iter_mut().for_each(|o| *o /= div);
            }
        }
    }
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_max_cls_pool_rows() {
        let states = [1.0, 2.0, 3.0, -4.0];
        let mut out = Vec::new();
        Pooling::Mean.pool(&states, 2, &mut out);
        assert_eq!(out, vec![2.0, -1.0]);
        Pooling::Max.pool(&states, 2, &mut out);
        assert_eq!(out, vec![3.0, 2.0]);
        Pooling::Cls.pool(&states, 2, &mut out);
        assert_eq!(out, vec![1.0, 2.0]);
        Pooling::MeanSqrtLen.pool(&states, 2, &mut out);
        let s = 2f32.sqrt();
        assert_eq!(out, vec![4.0 / s, -2.0 / s]);
    }

    #[test]
    fn normalize_handles_zero() {
        let mut z = vec![0.0; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
    }
}
