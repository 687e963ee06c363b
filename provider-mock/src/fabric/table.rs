//! [`Table`]: the fabric's objects keyed by the numbers the simulated device hands out — QP
//! numbers, lkeys, CQ numbers — numbers that name their slot, as hardware keys do (an mlx5
//! lkey is an index and a key byte). A lookup is an index and a compare, not a hash: the data
//! path looks up a dozen of them per message.
//!
//! A number is a slot and that slot's generation. A freed slot waits behind at least
//! [`MIN_FREE`] others before it is taken again, and its generation moves on each time it is
//! taken, so a number comes back only after thousands of others were handed out: a late or
//! stale number finds nothing, as it should. The table grows to the most objects ever live at
//! once, plus that reserve, and no further.

use std::collections::VecDeque;

/// Bits of slot in a QP number (24 bits): 2^18 live QPs on a fabric, 6 bits of generation.
pub(super) const QPN_SLOT_BITS: u32 = 18;
/// Bits of slot in an lkey (31 bits) or a CQ number (32): 2^20 live regions or CQs.
pub(super) const KEY_SLOT_BITS: u32 = 20;
// The fabric's numbers keep at least six bits of generation above their slot.
const _: () = assert!(24 - QPN_SLOT_BITS >= 6 && 31 - KEY_SLOT_BITS >= 6);
/// Free slots a table keeps in reserve before it takes a freed one again: with the fewest
/// generations, a number returns after 63 × 256 others at the soonest.
const MIN_FREE: usize = 256;

/// A table of `T`s whose numbers are at most `max`, `BITS` of which name the slot: its slots
/// are the most objects of one kind live at once on the fabric, over all its devices. A
/// constant, so that a lookup shifts and masks by constants.
pub(super) struct Table<T, const BITS: u32> {
    /// Grows as slots are first taken; boxed, so that a free slot costs a pointer.
    slots: Vec<Slot<T>>,
    /// Free slots, the longest free first.
    free: VecDeque<usize>,
    /// The largest generation a number can carry (`max >> BITS`).
    max_generation: u32,
}

struct Slot<T> {
    /// The generation of the number that names the object here (or named the last one).
    generation: u32,
    value: Option<Box<T>>,
}

impl<T, const BITS: u32> Table<T, BITS> {
    /// How many slots the table has.
    const CAPACITY: usize = 1 << BITS;

    /// An empty table whose numbers are at most `max`.
    pub(super) fn new(max: u32) -> Self {
        let max_generation = max >> BITS;
        assert!(
            max_generation >= 1,
            "numbers up to {max:#x} leave no generation above {BITS} bits of slot"
        );
        Table {
            slots: Vec::new(),
            free: VecDeque::new(),
            max_generation,
        }
    }

    #[inline]
    fn split(number: u32) -> (usize, u32) {
        ((number & ((1 << BITS) - 1)) as usize, number >> BITS)
    }

    fn slot(&self, number: u32) -> Option<&Slot<T>> {
        let (i, generation) = Self::split(number);
        self.slots.get(i).filter(|s| s.generation == generation)
    }

    /// The object `number` names, if it is live.
    #[inline]
    pub(super) fn get(&self, number: &u32) -> Option<&T> {
        self.slot(*number)?.value.as_deref()
    }

    /// [`get`](Self::get), mutable.
    #[inline]
    pub(super) fn get_mut(&mut self, number: &u32) -> Option<&mut T> {
        let (i, generation) = Self::split(*number);
        self.slots
            .get_mut(i)
            .filter(|s| s.generation == generation)?
            .value
            .as_deref_mut()
    }

    /// The objects two different numbers name, both mutable; `None` for a number that names
    /// nothing live, or if the two are the same.
    pub(super) fn get_pair_mut(&mut self, a: &u32, b: &u32) -> [Option<&mut T>; 2] {
        let ((i, ga), (j, gb)) = (Self::split(*a), Self::split(*b));
        if i == j || i >= self.slots.len() || j >= self.slots.len() {
            return [None, None];
        }
        let [x, y] = self
            .slots
            .get_disjoint_mut([i, j])
            .expect("distinct and in range");
        [
            Some(x)
                .filter(|s| s.generation == ga)
                .and_then(|s| s.value.as_deref_mut()),
            Some(y)
                .filter(|s| s.generation == gb)
                .and_then(|s| s.value.as_deref_mut()),
        ]
    }

    /// Takes a free slot for the object `make` builds from its number: a new one while fewer than
    /// [`MIN_FREE`] are free, else the one free the longest; `None` when every slot is taken.
    pub(super) fn insert_with(&mut self, make: impl FnOnce(u32) -> T) -> Option<u32> {
        let i = if self.free.len() < MIN_FREE && self.slots.len() < Self::CAPACITY {
            self.slots.push(Slot {
                generation: 0,
                value: None,
            });
            self.slots.len() - 1
        } else {
            self.free.pop_front()?
        };
        let slot = &mut self.slots[i];
        slot.generation = if slot.generation >= self.max_generation {
            1
        } else {
            slot.generation + 1
        };
        let number = (slot.generation << BITS) | i as u32;
        slot.value = Some(Box::new(make(number)));
        Some(number)
    }

    /// Removes the object `number` names, if it is live.
    pub(super) fn remove(&mut self, number: &u32) -> Option<T> {
        let (i, generation) = Self::split(*number);
        let slot = self
            .slots
            .get_mut(i)
            .filter(|s| s.generation == generation)?;
        let value = slot.value.take()?;
        self.free.push_back(i);
        Some(*value)
    }

    /// The live objects with their numbers, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let value = s.value.as_deref()?;
            Some(((s.generation << BITS) | i as u32, value))
        })
    }
}

impl<T, const BITS: u32> std::ops::Index<&u32> for Table<T, BITS> {
    type Output = T;

    fn index(&self, number: &u32) -> &T {
        self.get(number).expect("a live number")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_name_their_object_until_it_is_removed_and_are_not_soon_reused() {
        let mut t = Table::<_, QPN_SLOT_BITS>::new(0x00ff_ffff);
        let a = t.insert_with(|n| (n, 'a')).unwrap();
        let b = t.insert_with(|n| (n, 'b')).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.get(&a), Some(&(a, 'a')));
        assert_eq!(t[&b], (b, 'b'));
        assert_eq!(t.remove(&a), Some((a, 'a')));
        assert_eq!(t.get(&a), None, "a removed number names nothing");
        assert_eq!(t.remove(&a), None);
        let mut seen = std::collections::HashSet::from([a, b]);
        // A slot's number returns after MIN_FREE * 63 others, with 24-bit numbers.
        for _ in 0..15_000 {
            let n = t.insert_with(|n| (n, 'x')).unwrap();
            assert!((1 << QPN_SLOT_BITS..=0x00ff_ffff).contains(&n));
            assert_ne!(n, b, "a live number is never handed out again");
            assert!(seen.insert(n), "{n:#x} came back within 15,000 numbers");
            assert_eq!(t.remove(&n).map(|v| v.0), Some(n));
        }
        assert_eq!(t.get(&a), None, "a stale number finds nothing");
        assert_eq!(t.iter().map(|(n, _)| n).collect::<Vec<_>>(), [b]);
    }

    #[test]
    fn generations_wrap_within_the_range_and_a_full_table_refuses() {
        // Two generations: numbers of 17 bits, 16 of them the slot.
        let mut t = Table::<(), 16>::new((1 << 17) | 0xffff);
        let first = t.insert_with(|_| ()).unwrap();
        t.remove(&first);
        let mut numbers = Vec::new();
        while let Some(n) = t.insert_with(|_| ()) {
            numbers.push(n);
        }
        assert_eq!(numbers.len(), 1 << 16, "every slot is taken once");
        let again = *numbers.last().unwrap();
        assert_eq!(again & 0xffff, first & 0xffff, "the freed slot went last");
        assert_eq!(again >> 16, 2, "under its second generation");
        t.remove(&again);
        let third = t.insert_with(|_| ()).unwrap();
        assert_eq!(third, first, "the generation wraps within the range");
        let [x, y] = t.get_pair_mut(&third, &(third + 1));
        assert!(x.is_some() && y.is_some());
        let [x, y] = t.get_pair_mut(&third, &(third + 1 + (1 << 16)));
        assert!(x.is_some() && y.is_none(), "slot 1 has another generation");
        assert!(matches!(t.get_pair_mut(&third, &third), [None, None]));
    }

    #[test]
    fn the_table_grows_to_the_most_live_at_once_plus_its_reserve() {
        let mut t = Table::<(), QPN_SLOT_BITS>::new(0x00ff_ffff);
        let live: Vec<u32> = (0..10).map(|_| t.insert_with(|_| ()).unwrap()).collect();
        for _ in 0..10_000 {
            let n = t.insert_with(|_| ()).unwrap();
            t.remove(&n);
        }
        assert_eq!(t.slots.len(), live.len() + MIN_FREE);
        assert!(live.iter().all(|n| t.get(n).is_some()));
    }

    /// Fills a table of numbers up to `max`; returns how many it held.
    fn fill<const BITS: u32>(max: u32) -> usize {
        let mut t = Table::<(), BITS>::new(max);
        let numbers: Vec<u32> = std::iter::from_fn(|| t.insert_with(|_| ())).collect();
        assert!(numbers.iter().all(|&n| n <= max && t.get(&n).is_some()));
        numbers.len()
    }

    #[test]
    fn the_fabrics_tables_hold_their_widths() {
        // QP numbers (24 bits): 2^18 live; lkeys (31 bits) and CQ numbers (32): 2^20.
        assert_eq!(fill::<QPN_SLOT_BITS>(0x00ff_ffff), 1 << 18);
        assert_eq!(fill::<KEY_SLOT_BITS>(0x7fff_ffff), 1 << 20);
        assert_eq!(fill::<KEY_SLOT_BITS>(u32::MAX), 1 << 20);
    }
}
