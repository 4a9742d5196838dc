//! The samples waiting for the watermark, in timestamp order.
//!
//! A release takes samples from the front while requests append at the back, usually
//! a few thousand of a buffer of a whole lateness period (100 000 samples and more).
//! Removing them from a `Vec` moved every sample left behind on each release; here the
//! released ones are skipped by a head index instead, and the live part is moved to
//! the front only once the dead prefix is at least as long as it, so each sample is
//! moved at most once on average.

use crate::series::Sample;

/// Dead samples tolerated in front before compacting, whatever the live length.
const MIN_COMPACT: usize = 4096;

/// Buffered samples: `samples[head..]` are live.
#[derive(Debug, Clone, Default)]
pub(super) struct Buffer {
    samples: Vec<Sample>,
    head: usize,
}

impl Buffer {
    /// A buffer holding `samples`.
    pub(super) fn from_vec(samples: Vec<Sample>) -> Self {
        Buffer { samples, head: 0 }
    }

    /// The live samples.
    #[inline]
    pub(super) fn live(&self) -> &[Sample] {
        &self.samples[self.head..]
    }

    /// The live samples, mutably.
    pub(super) fn live_mut(&mut self) -> &mut [Sample] {
        &mut self.samples[self.head..]
    }

    pub(super) fn len(&self) -> usize {
        self.samples.len() - self.head
    }

    pub(super) fn last(&self) -> Option<&Sample> {
        self.live().last()
    }

    #[inline]
    pub(super) fn push(&mut self, s: Sample) {
        self.samples.push(s);
    }

    /// Makes room for `extra` more samples: reuses the dead prefix when it is as large as
    /// the live part, else grows exactly when this is the largest batch yet, by half
    /// again otherwise (amortised).
    pub(super) fn reserve(&mut self, extra: usize) {
        if self.samples.len() + extra <= self.samples.capacity() {
            return;
        }
        if self.head >= self.len() {
            self.compact();
            if self.samples.len() + extra <= self.samples.capacity() {
                return;
            }
        }
        let cap = self.samples.capacity();
        let want = (self.samples.len() + extra).max(cap + cap / 2);
        self.samples.reserve_exact(want - self.samples.len());
    }

    /// Drops the oldest `n` live samples.
    pub(super) fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head == self.samples.len() {
            self.samples.clear();
            self.head = 0;
        } else if self.head >= MIN_COMPACT && self.head >= self.len() {
            self.compact();
        }
        if self.samples.capacity() > 4 * self.samples.len().max(1024) {
            // After a burst (or at the end of a replay): give the spare back.
            self.compact();
            self.samples.shrink_to(2 * self.samples.len());
        }
    }

    /// Moves the live samples to the front.
    fn compact(&mut self) {
        self.samples.drain(..self.head);
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: usize) -> Sample {
        Sample {
            series: i as u32,
            ts: i as i64,
            value: i as f64,
        }
    }

    /// A buffer of samples `0..n`, reserved as the evaluator does.
    fn filled(n: usize) -> Buffer {
        let mut buf = Buffer::default();
        buf.reserve(n);
        for i in 0..n {
            buf.push(sample(i));
        }
        buf
    }

    /// Random pushes and releases, while the buffer grows and then while it shrinks,
    /// keep exactly the samples a plain `Vec` would.
    #[test]
    fn holds_what_a_vec_would() {
        let mut buf = Buffer::default();
        let mut model: Vec<Sample> = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = 0;
        for round in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let push = (state % 600) as usize;
            buf.reserve(push);
            for _ in 0..push {
                buf.push(sample(next));
                model.push(sample(next));
                next += 1;
            }
            let take = ((state >> 20) % if round < 2_500 { 500 } else { 800 }) as usize;
            buf.consume(take);
            model.drain(..take.min(model.len()));
            assert_eq!(buf.live(), &model[..]);
            assert_eq!(buf.len(), model.len());
        }
        assert!(next > 1_000_000, "the buffer grew large: {next} pushes");
    }

    /// A reservation holds the batch whatever the dead prefix: pushing it then does not
    /// reallocate.
    #[test]
    fn a_reservation_holds_the_batch() {
        let mut buf = filled(3_000);
        buf.consume(1_000);
        for extra in [1_500, 10_000] {
            buf.reserve(extra);
            let before = buf.samples.as_ptr();
            for i in 0..extra {
                buf.push(sample(i));
            }
            assert_eq!(buf.samples.as_ptr(), before, "no reallocation for {extra}");
        }
    }

    #[test]
    fn a_release_of_a_few_does_not_move_the_rest() {
        let mut buf = filled(100_000);
        let before = buf.live().as_ptr();
        buf.consume(10);
        assert_eq!(buf.live().as_ptr(), before.wrapping_add(10));
        assert_eq!(buf.live()[0], sample(10));
    }

    #[test]
    fn emptied_buffers_give_their_space_back() {
        let mut buf = filled(1 << 20);
        buf.consume((1 << 20) - 10);
        assert_eq!(buf.len(), 10);
        assert!(buf.samples.capacity() <= 2048);
        assert_eq!(buf.live()[9], sample((1 << 20) - 1));
    }
}
