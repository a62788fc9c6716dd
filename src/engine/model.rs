//! The learned classifier: logistic regression over hashed features (see [`super::features`]),
//! one head per category, weights quantised to one signed byte per bucket and head.
//!
//! File format (`rules/models/chatguard.model`, gzip-compressed): magic `CGLR`, format version
//! (u8), log2 of the bucket count (u8), number of heads (u8), then per head its bias and weight
//! scale (f32 little-endian), then the weights as i8, interleaved by bucket (`w[bucket * heads +
//! head]`) so that one feature costs one cache line for all heads.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::features::{DIM, DIM_BITS, Hashed};
use crate::domain::Category;

pub const MODELS_DIR: &str = "models";
pub const MODEL_FILE: &str = "chatguard.model";
const MAGIC: &[u8; 4] = b"CGLR";
const FORMAT: u8 = 1;
pub const HEADS: usize = 3;

/// Head order in the file and in [`Model::predict`].
pub const HEAD_CATEGORIES: [Category; HEADS] =
    [Category::Toxicity, Category::Spam, Category::Explicit];

pub fn head_of(c: Category) -> usize {
    match c {
        Category::Toxicity => 0,
        Category::Spam => 1,
        Category::Explicit => 2,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

/// A trained model, ready to score.
#[derive(Clone)]
pub struct Model {
    bias: [f32; HEADS],
    scale: [f32; HEADS],
    weights: Vec<i8>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("bias", &self.bias)
            .field("scale", &self.scale)
            .field("nonzero", &self.nonzero())
            .finish()
    }
}

impl Model {
    /// A model that knows nothing: every head answers its bias (0 → probability 0.5 is
    /// unhelpful, so the bias is very negative and the model never raises a score).
    pub fn empty() -> Self {
        Self {
            bias: [-20.0; HEADS],
            scale: [0.0; HEADS],
            weights: vec![0; DIM * HEADS],
        }
    }

    /// Quantises float weights (`w[bucket * HEADS + head]`).
    pub fn quantise(bias: [f32; HEADS], weights: &[f32]) -> Self {
        let mut scale = [0.0f32; HEADS];
        for (i, w) in weights.iter().enumerate() {
            let h = i % HEADS;
            scale[h] = scale[h].max(w.abs());
        }
        for s in &mut scale {
            *s /= 127.0;
        }
        let q = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let s = scale[i % HEADS];
                if s == 0.0 {
                    0
                } else {
                    (w / s).round().clamp(-127.0, 127.0) as i8
                }
            })
            .collect();
        Self {
            bias,
            scale,
            weights: q,
        }
    }

    pub fn load(rules_dir: &Path) -> Result<Self, ModelError> {
        let path = rules_dir.join(MODELS_DIR).join(MODEL_FILE);
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Read {
            path: path.clone(),
            source,
        })?;
        Self::decode(&bytes, &path)
    }

    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::Format {
            path: path.to_owned(),
            message,
        };
        let expected = 7 + HEADS * 8 + DIM * HEADS;
        let mut raw = Vec::with_capacity(expected);
        flate2::read::GzDecoder::new(bytes)
            .take(expected as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(|e| bad(format!("not a gzip model file: {e}")))?;
        if raw.len() < 7 || &raw[..4] != MAGIC {
            return Err(bad("not a chatguard model (bad magic)".into()));
        }
        if raw[4] != FORMAT {
            return Err(bad(format!(
                "model format {} is not supported (expected {FORMAT})",
                raw[4]
            )));
        }
        if u32::from(raw[5]) != DIM_BITS || usize::from(raw[6]) != HEADS {
            return Err(bad(format!(
                "model has 2^{} buckets and {} heads; this build expects 2^{DIM_BITS} and {HEADS}",
                raw[5], raw[6]
            )));
        }
        if raw.len() != expected {
            return Err(bad(format!(
                "model is truncated or padded: {} bytes, expected {expected}",
                raw.len()
            )));
        }
        let mut bias = [0.0; HEADS];
        let mut scale = [0.0; HEADS];
        for h in 0..HEADS {
            let at = 7 + h * 8;
            let f = |o: usize| f32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
            bias[h] = f(at);
            scale[h] = f(at + 4);
            if !bias[h].is_finite() || !scale[h].is_finite() || scale[h] < 0.0 {
                return Err(bad(format!("head {h} has a non-finite bias or scale")));
            }
        }
        let weights = raw[7 + HEADS * 8..].iter().map(|b| *b as i8).collect();
        Ok(Self {
            bias,
            scale,
            weights,
        })
    }

    /// The gzip-compressed file bytes. Deterministic: the same model gives the same bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(7 + HEADS * 8 + self.weights.len());
        raw.extend_from_slice(MAGIC);
        raw.extend_from_slice(&[FORMAT, DIM_BITS as u8, HEADS as u8]);
        for h in 0..HEADS {
            raw.extend_from_slice(&self.bias[h].to_le_bytes());
            raw.extend_from_slice(&self.scale[h].to_le_bytes());
        }
        raw.extend(self.weights.iter().map(|w| *w as u8));
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        let _ = gz.write_all(&raw);
        gz.finish().unwrap_or_default()
    }

    pub fn save(&self, rules_dir: &Path) -> Result<PathBuf, ModelError> {
        let dir = rules_dir.join(MODELS_DIR);
        let path = dir.join(MODEL_FILE);
        let write = |source| ModelError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(write)?;
        let tmp = dir.join(format!("{MODEL_FILE}.tmp"));
        std::fs::write(&tmp, self.encode()).map_err(write)?;
        std::fs::rename(&tmp, &path).map_err(write)?;
        Ok(path)
    }

    /// Buckets with a non-zero weight in any head.
    pub fn nonzero(&self) -> usize {
        self.weights
            .chunks_exact(HEADS)
            .filter(|c| c.iter().any(|w| *w != 0))
            .count()
    }

    /// Logit per head.
    pub fn logits(&self, features: &[Hashed]) -> [f32; HEADS] {
        let mut acc = [0.0f32; HEADS];
        for f in features {
            let at = f.index as usize * HEADS;
            if let Some(w) = self.weights.get(at..at + HEADS) {
                for h in 0..HEADS {
                    acc[h] += f32::from(w[h]) * f.value;
                }
            }
        }
        let mut out = self.bias;
        for h in 0..HEADS {
            out[h] += acc[h] * self.scale[h];
        }
        out
    }

    /// Probability per head.
    pub fn predict(&self, features: &[Hashed]) -> [f32; HEADS] {
        self.logits(features).map(sigmoid)
    }

    /// What one feature adds to a head's logit.
    pub fn contribution(&self, head: usize, f: &Hashed) -> f32 {
        let at = f.index as usize * HEADS + head;
        self.weights
            .get(at)
            .map_or(0.0, |w| f32::from(*w) * self.scale[head] * f.value)
    }

    pub fn bias(&self, head: usize) -> f32 {
        self.bias[head]
    }

    /// Maps a head's logit z to `slope · z + offset` (Platt-style calibration), folded into the
    /// head's bias and weight scale so the file format and scoring cost stay the same.
    pub fn calibrate(&mut self, head: usize, slope: f32, offset: f32) {
        self.bias[head] = slope * self.bias[head] + offset;
        self.scale[head] *= slope;
    }
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Model {
        let mut w = vec![0.0f32; DIM * HEADS];
        w[5 * HEADS] = 2.0;
        w[5 * HEADS + 1] = -1.0;
        w[9 * HEADS + 2] = 0.5;
        Model::quantise([-1.0, -2.0, -3.0], &w)
    }

    #[test]
    fn predicts_from_quantised_weights() {
        let m = sample();
        let f = [
            Hashed {
                index: 5,
                value: 1.0,
            },
            Hashed {
                index: 9,
                value: 2.0,
            },
        ];
        let z = m.logits(&f);
        assert!((z[0] - 1.0).abs() < 0.02, "{z:?}");
        assert!((z[1] - -3.0).abs() < 0.02, "{z:?}");
        assert!((z[2] - -2.0).abs() < 0.02, "{z:?}");
        assert!((m.contribution(0, &f[0]) - 2.0).abs() < 0.02);
        assert_eq!(m.nonzero(), 2);
    }

    #[test]
    fn file_round_trip_is_exact_and_deterministic() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(bytes, sample().encode());
        let back = Model::decode(&bytes, Path::new("m")).unwrap();
        assert_eq!(back.weights, m.weights);
        assert_eq!(back.bias, m.bias);
        assert_eq!(back.scale, m.scale);
    }

    #[test]
    fn bad_files_are_rejected_with_a_reason() {
        let e = Model::decode(b"hello", Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gzip"), "{e}");
        let mut bytes = Vec::new();
        let mut gz = flate2::write::GzEncoder::new(&mut bytes, flate2::Compression::fast());
        gz.write_all(b"CGLR\x01\x10\x03").unwrap();
        gz.finish().unwrap();
        let e = Model::decode(&bytes, Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2^16"), "{e}");
    }
}
