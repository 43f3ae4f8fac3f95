//! The queue of a Deferred chain's pending steps (Twisted's `Deferred.callbacks` list): the
//! first [`INLINE_STEPS`] live inside the chain, so a chain of a few callbacks allocates no
//! queue; more spill into a `VecDeque`.
//!
//! Invariant: every entry in `inline` is older than every entry in `spill`. Pushes go to
//! `inline` only while `spill` is empty, pops take from `inline` first, so the order is the
//! order of the pushes.

use std::collections::VecDeque;

/// How many steps a chain holds without allocating.
pub(crate) const INLINE_STEPS: usize = 4;

/// How many entries the spill makes room for when it is first needed.
const SPILL_FIRST: usize = 8;

/// A first-in, first-out queue with its first entries inline.
pub(crate) struct Steps<E> {
    inline: [Option<E>; INLINE_STEPS],
    /// Where the oldest inline entry is.
    head: usize,
    /// How many inline entries there are, from `head` on (wrapping).
    len: usize,
    spill: VecDeque<E>,
}

impl<E> Default for Steps<E> {
    fn default() -> Self {
        Steps {
            inline: [const { None }; INLINE_STEPS],
            head: 0,
            len: 0,
            spill: VecDeque::new(),
        }
    }
}

impl<E> Steps<E> {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0 && self.spill.is_empty()
    }

    #[inline]
    pub(crate) fn push_back(&mut self, entry: E) {
        if self.len < INLINE_STEPS && self.spill.is_empty() {
            self.inline[(self.head + self.len) % INLINE_STEPS] = Some(entry);
            self.len += 1;
        } else {
            if self.spill.capacity() == 0 {
                // One allocation for the next few, rather than growing from 4.
                self.spill.reserve_exact(SPILL_FIRST);
            }
            self.spill.push_back(entry);
        }
    }

    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<E> {
        if self.len == 0 {
            return self.spill.pop_front();
        }
        let entry = self.inline[self.head].take();
        self.head = (self.head + 1) % INLINE_STEPS;
        self.len -= 1;
        entry
    }

    /// The entries, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &E> {
        (0..self.len)
            .filter_map(|i| self.inline[(self.head + i) % INLINE_STEPS].as_ref())
            .chain(self.spill.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any mix of pushes and pops keeps the order a `VecDeque` keeps.
        #[test]
        fn steps_keep_the_order_of_a_plain_queue(ops in prop::collection::vec(any::<Option<u16>>(), 0..200)) {
            let mut steps = Steps::default();
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Some(v) => {
                        steps.push_back(v);
                        model.push_back(v);
                    }
                    None => prop_assert_eq!(steps.pop_front(), model.pop_front()),
                }
                prop_assert_eq!(steps.is_empty(), model.is_empty());
                prop_assert!(steps.iter().eq(model.iter()));
            }
        }
    }

    #[test]
    fn a_few_steps_stay_inline() {
        let mut steps = Steps::default();
        for i in 0..INLINE_STEPS {
            steps.push_back(i);
        }
        assert_eq!(steps.spill.capacity(), 0);
        steps.push_back(99);
        assert_eq!(steps.spill.len(), 1);
        assert_eq!(steps.pop_front(), Some(0));
        // Room inline again, but an older entry is in the spill: the new one goes after it.
        steps.push_back(100);
        let rest: Vec<_> = std::iter::from_fn(|| steps.pop_front()).collect();
        assert_eq!(rest, [1, 2, 3, 99, 100]);
    }
}
