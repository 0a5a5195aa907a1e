//! Epoch-shuffled batch order over packed sequences, with a position that can be saved and
//! restored exactly (the "data position" of a resumed run).

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Where the sampler is: which epoch, and how far into that epoch's shuffled order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerPosition {
    pub epoch: u64,
    pub offset: usize,
}

pub struct BatchSampler {
    n_sequences: usize,
    batch_size: usize,
    seed: u64,
    position: SamplerPosition,
    order: Vec<usize>,
}

impl BatchSampler {
    pub fn new(n_sequences: usize, batch_size: usize, seed: u64, position: SamplerPosition) -> Self {
        assert!(n_sequences > 0 && batch_size > 0);
        let order = epoch_order(n_sequences, seed, position.epoch);
        BatchSampler { n_sequences, batch_size, seed, position, order }
    }

    pub fn position(&self) -> SamplerPosition {
        self.position
    }

    /// The next `batch_size` sequence indices; an epoch boundary reshuffles and continues.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let mut batch = Vec::with_capacity(self.batch_size);
        while batch.len() < self.batch_size {
            if self.position.offset == self.n_sequences {
                self.position = SamplerPosition { epoch: self.position.epoch + 1, offset: 0 };
                self.order = epoch_order(self.n_sequences, self.seed, self.position.epoch);
            }
            batch.push(self.order[self.position.offset]);
            self.position.offset += 1;
        }
        batch
    }
}

fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::derive(seed.wrapping_add(epoch), "batch-order").shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_visits_every_sequence_once_and_positions_resume() {
        let mut sampler = BatchSampler::new(10, 4, 3, SamplerPosition::default());
        let mut seen: Vec<usize> = (0..2).flat_map(|_| sampler.next_batch()).collect();
        seen.extend(&sampler.next_batch()[..2]);
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());

        let saved = sampler.position();
        let mut resumed = BatchSampler::new(10, 4, 3, saved);
        assert_eq!(resumed.next_batch(), sampler.next_batch());
    }
}
