//! The core's requests by id: a slab, so that posting, matching, testing and completing a
//! request index a vector instead of hashing (each small message touches its request three
//! or four times).
//!
//! An id is the slot's index plus one in its low 32 bits and the slot's generation in the
//! high 32: a slot's generation moves on when its request is removed, so an id that outlived
//! its request (a late frame naming it, a stale handle) finds nothing rather than the
//! request that took the slot next. Ids are never 0.

use super::ReqId;

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

#[derive(Debug)]
pub(super) struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// Indices of empty slots, reused last-freed first (its memory is the warmest).
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

fn id_of(index: u32, generation: u32) -> ReqId {
    (u64::from(generation) << 32) | (u64::from(index) + 1)
}

impl<T> Slab<T> {
    /// The id the next [`Slab::insert`] returns (a request's frames name it before the
    /// request is stored).
    pub fn next_id(&self) -> ReqId {
        match self.free.last() {
            Some(&i) => id_of(i, self.slots[i as usize].generation),
            None => id_of(self.slots.len() as u32, 0),
        }
    }

    pub fn insert(&mut self, value: T) -> ReqId {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slots[i as usize];
                debug_assert!(slot.value.is_none(), "slot {i} on the free list holds a value");
                slot.value = Some(value);
                id_of(i, slot.generation)
            }
            None => {
                let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 requests at once");
                self.slots.push(Slot { generation: 0, value: Some(value) });
                id_of(i, 0)
            }
        }
    }

    /// The slot `id` names, if it is still that id's.
    fn slot(&self, id: ReqId) -> Option<(usize, &Slot<T>)> {
        let index = (id as u32).checked_sub(1)? as usize;
        let slot = self.slots.get(index)?;
        (slot.generation == (id >> 32) as u32).then_some((index, slot))
    }

    pub fn get(&self, id: ReqId) -> Option<&T> {
        self.slot(id)?.1.value.as_ref()
    }

    pub fn get_mut(&mut self, id: ReqId) -> Option<&mut T> {
        let (index, _) = self.slot(id)?;
        self.slots[index].value.as_mut()
    }

    pub fn remove(&mut self, id: ReqId) -> Option<T> {
        let (index, _) = self.slot(id)?;
        let slot = &mut self.slots[index];
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.len -= 1;
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_finds_its_value_until_removed_and_never_the_next_one_in_its_slot() {
        let mut s = Slab::default();
        assert_eq!(s.next_id(), s.next_id(), "next_id takes nothing");
        let want = s.next_id();
        let a = s.insert("a");
        assert_eq!(a, want);
        assert_ne!(a, 0);
        let b = s.insert("b");
        assert_eq!((s.get(a), s.get(b), s.len()), (Some(&"a"), Some(&"b"), 2));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!((s.get(a), s.len()), (None, 1));
        // The freed slot is reused under a new id; the old id still finds nothing.
        let want = s.next_id();
        let c = s.insert("c");
        assert_eq!(c, want);
        assert_ne!(c, a);
        assert_eq!(c as u32, a as u32, "the freed slot is reused");
        assert_eq!((s.get(a), s.get(c)), (None, Some(&"c")));
        *s.get_mut(c).unwrap() = "c2";
        assert_eq!(s.get(c), Some(&"c2"));
        assert_eq!(s.get_mut(a), None);
        // Ids that were never handed out find nothing.
        assert_eq!((s.get(0), s.get(u64::MAX), s.get(99)), (None, None, None));
    }
}
