//! A party's quantized data share and the deterministic mini-batch sampler that the client
//! and the reference trainer share.

use ndarray::{Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::fixed::{Scales, ValueKind};
use crate::{Error, Result};

/// Features quantized at `2^fa` (`samples × n_0`) and class labels.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Features at `2^fa`, one row per sample.
    pub x: Array2<i128>,
    /// Class labels in `0..classes`.
    pub labels: Vec<usize>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Private data: shapes only.
        f.debug_struct("Dataset")
            .field("samples", &self.x.nrows())
            .field("features", &self.x.ncols())
            .finish()
    }
}

impl Dataset {
    /// Quantizes `x` (`samples × features`, real values) at `2^fa` with range checks.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `labels.len()` differs from the number of rows;
    /// [`Error::InvalidLabel`] for a label `≥ classes`; [`Error::OutOfRange`] /
    /// [`Error::NotFinite`] for a feature outside the activation range.
    pub fn quantize(
        x: ArrayView2<'_, f64>,
        labels: &[usize],
        classes: usize,
        scales: &Scales,
    ) -> Result<Self> {
        if labels.len() != x.nrows() {
            return Err(Error::ShapeMismatch {
                what: "labels",
                expected: x.nrows().to_string(),
                found: labels.len().to_string(),
            });
        }
        if let Some(&label) = labels.iter().find(|&&l| l >= classes) {
            return Err(Error::InvalidLabel { label, classes });
        }
        let mut q = Array2::zeros(x.dim());
        for (o, &v) in q.iter_mut().zip(x.iter()) {
            *o = scales.encode(ValueKind::Activation, v)?;
        }
        Ok(Self {
            x: q,
            labels: labels.to_vec(),
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.x.nrows()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.x.nrows() == 0
    }

    /// The rows `indices` (`B × n_0`) and their labels.
    pub fn select(&self, indices: &[usize]) -> (Array2<i128>, Vec<usize>) {
        (
            self.x.select(Axis(0), indices),
            indices.iter().map(|&i| self.labels[i]).collect(),
        )
    }
}

/// The seed of a client's batch sampler, derived from the client's seed (so the client
/// and the reference trainer draw the same mini-batches).
pub fn sampler_seed(client_seed: u64) -> u64 {
    client_seed ^ 0x6261_7463_6865_7321
}

/// Mini-batches of `B` distinct samples: a seeded permutation consumed in order; when
/// fewer than `B` samples remain, a new permutation is drawn (the tail is skipped).
#[derive(Clone, Debug)]
pub struct BatchSampler {
    n: usize,
    batch: usize,
    order: Vec<usize>,
    pos: usize,
    rng: ChaCha20Rng,
}

impl BatchSampler {
    /// A sampler over `n` samples.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `batch` is 0 or exceeds `n`.
    pub fn new(n: usize, batch: usize, seed: u64) -> Result<Self> {
        Self::from_rng(n, batch, ChaCha20Rng::seed_from_u64(seed))
    }

    /// A sampler over `n` samples drawing its permutations from `rng` (e.g. one seeded
    /// with 256 bits from the operating system, [`crate::randomness::os_rng`]);
    /// [`BatchSampler::new`] is `from_rng(n, batch, ChaCha20Rng::seed_from_u64(seed))`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `batch` is 0 or exceeds `n`.
    pub fn from_rng(n: usize, batch: usize, mut rng: ChaCha20Rng) -> Result<Self> {
        if batch == 0 || batch > n {
            return Err(Error::InvalidConfig {
                reason: format!("batch size {batch} for {n} samples"),
            });
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        Ok(Self {
            n,
            batch,
            order,
            pos: 0,
            rng,
        })
    }

    /// The batch size `B`.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Skips `batches` mini-batches: the state is that after as many
    /// [`BatchSampler::next_batch`] calls (a client resuming its batch order after a
    /// reconnection, [`crate::envelope::ToClient::Registered`]).
    pub fn skip(&mut self, batches: u64) {
        for _ in 0..batches {
            if self.pos + self.batch > self.n {
                self.order.shuffle(&mut self.rng);
                self.pos = 0;
            }
            self.pos += self.batch;
        }
    }

    /// The next mini-batch's sample indices.
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.pos + self.batch > self.n {
            self.order.shuffle(&mut self.rng);
            self.pos = 0;
        }
        let b = self.order[self.pos..self.pos + self.batch].to_vec();
        self.pos += self.batch;
        b
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn skipping_batches_is_drawing_them() {
        // 10 samples in batches of 3: a new permutation every 3 batches (tail skipped).
        for skipped in [0u64, 1, 2, 3, 7, 20] {
            let mut drawn = BatchSampler::new(10, 3, 5).unwrap();
            for _ in 0..skipped {
                drawn.next_batch();
            }
            let mut skipping = BatchSampler::new(10, 3, 5).unwrap();
            skipping.skip(skipped);
            let a: Vec<_> = (0..8).map(|_| drawn.next_batch()).collect();
            let b: Vec<_> = (0..8).map(|_| skipping.next_batch()).collect();
            assert_eq!(a, b, "after {skipped} batches");
        }
        // And the order does depend on the position.
        let mut s = BatchSampler::new(10, 3, 5).unwrap();
        let first: Vec<_> = (0..4).map(|_| s.next_batch()).collect();
        let mut t = BatchSampler::new(10, 3, 5).unwrap();
        t.skip(4);
        let later: Vec<_> = (0..4).map(|_| t.next_batch()).collect();
        assert_ne!(first, later);
    }
}
