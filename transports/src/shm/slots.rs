//! Collective slots: each rank's segment holds, between its header and its rings, `AREAS`
//! areas of two slots each, where the rank publishes its part of a small blocking collective
//! for its co-located peers to read in place. A collective on a communicator whose members
//! all share memory then costs each rank one publish and one look at each member's slot,
//! instead of a tree of frames through the rings.
//!
//! The runtime gives each such communicator one area (the same index at every member, agreed
//! among them) and numbers its collectives through the slots `1, 2, 3, ...`; instance `seq`
//! uses slot `seq % 2`. A rank publishes instance `seq + 1` only after it has finished with
//! instance `seq`, and it finishes an instance only once every member has published it, so a
//! slot is never written again while some member still reads it: two slots per area suffice.
//!
//! Slot layout (`SLOT_STRIDE` bytes, cache-line aligned; the first 48 bytes of data share the
//! line of the sequence number, so a small part costs the reader one line):
//!
//! ```text
//!    0  seq: u64 (release-stored after the data; 0: never published)
//!    8  len: u32
//!   16  data: up to SLOT_DATA_BYTES
//! ```
//!
//! A reader trusts nothing it reads: a length that is not the one the collective expects is
//! an error naming the rank, never a short or long copy.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use super::segment::Segment;
use super::transport::{bell, SEGMENT_HEADER_BYTES};
use crate::PeerId;

/// Areas per segment: communicators that can use the slots at once (per switch epoch).
pub const AREAS: usize = 64;
/// The largest part one rank publishes in one collective.
pub const SLOT_DATA_BYTES: usize = 4096;
const DATA_AT: usize = 16;
const SLOT_STRIDE: usize = (DATA_AT + SLOT_DATA_BYTES).next_multiple_of(64);
/// Bytes of a segment's slot region (whole pages, so the rings after it stay page-aligned).
/// Its pages are not touched until an area is used.
pub const REGION_BYTES: usize = (AREAS * 2 * SLOT_STRIDE).next_multiple_of(4096);

/// What a rank waiting in a collective waits for: every one of `members` having published
/// instance `seq` in `area`.
#[derive(Debug, Clone, Copy)]
pub struct SlotWait<'a> {
    pub area: usize,
    pub seq: u64,
    pub members: &'a [PeerId],
}

/// This rank's slots and those of the co-located peers whose segments it maps.
pub struct CollSlots {
    me: PeerId,
    own: Arc<Segment>,
    /// Each peer's segment, by rank (`None`: not on shared memory with this rank).
    peers: Vec<Option<Arc<Segment>>>,
}

impl std::fmt::Debug for CollSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollSlots").field("me", &self.me).finish_non_exhaustive()
    }
}

/// The start of slot `seq % 2` of `area` in `seg`.
fn slot(seg: &Segment, area: usize, seq: u64) -> *mut u8 {
    assert!(area < AREAS, "slot area {area} of {AREAS}");
    let at = SEGMENT_HEADER_BYTES + (area * 2 + (seq % 2) as usize) * SLOT_STRIDE;
    // SAFETY: inside the slot region, which every segment has right after its header page.
    unsafe { seg.as_ptr().add(at) }
}

fn seq_word<'a>(p: *mut u8) -> &'a AtomicU64 {
    // SAFETY: the first word of a slot: 8-byte aligned (slots are cache-line aligned in a
    // page-aligned mapping), mapped while the segment lives, and only accessed atomically.
    unsafe { &*(p as *const AtomicU64) }
}

impl CollSlots {
    pub(crate) fn new(me: PeerId, own: Arc<Segment>, peers: Vec<(PeerId, Arc<Segment>)>) -> CollSlots {
        let mut by_rank: Vec<Option<Arc<Segment>>> = Vec::new();
        for (peer, seg) in peers {
            let i = peer as usize;
            if by_rank.len() <= i {
                by_rank.resize(i + 1, None);
            }
            by_rank[i] = Some(seg);
        }
        CollSlots { me, own, peers: by_rank }
    }

    fn segment(&self, rank: PeerId) -> Option<&Segment> {
        if rank == self.me {
            return Some(&self.own);
        }
        self.peers.get(rank as usize).and_then(|s| s.as_deref())
    }

    /// Whether `rank`'s slots are readable here (this rank's own, or a peer on shared memory).
    pub fn reaches(&self, rank: PeerId) -> bool {
        self.segment(rank).is_some()
    }

    /// Publishes `data` as this rank's part of instance `seq` (from 1) in `area`, then wakes
    /// those of `members` that sleep.
    pub fn publish(&self, area: usize, seq: u64, data: &[u8], members: &[PeerId]) {
        assert!(seq > 0 && data.len() <= SLOT_DATA_BYTES, "slot publish of {} bytes as {seq}", data.len());
        let p = slot(&self.own, area, seq);
        // SAFETY: this rank's own slot; no member reads it until the release store of `seq`
        // below, and none still reads the instance it held before (see the module's
        // protocol), so the data and length are written with no reader.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(DATA_AT), data.len());
            std::ptr::write(p.add(8) as *mut u32, data.len() as u32);
        }
        seq_word(p).store(seq, Ordering::Release);
        // As a ring producer does: a member about to sleep has said so before its last look.
        fence(Ordering::SeqCst);
        for &m in members.iter().filter(|&&m| m != self.me) {
            if let Some(seg) = self.segment(m) {
                let b = bell(seg);
                if b.sleeping.load(Ordering::SeqCst) != 0 {
                    b.ring();
                }
            }
        }
    }

    /// Whether `rank` has published instance `seq` in `area`.
    pub fn has_published(&self, rank: PeerId, area: usize, seq: u64) -> bool {
        self.segment(rank).is_some_and(|seg| seq_word(slot(seg, area, seq)).load(Ordering::Acquire) == seq)
    }

    /// Whether every member `w` waits for has published.
    pub fn ready(&self, w: &SlotWait<'_>) -> bool {
        w.members.iter().all(|&m| self.has_published(m, w.area, w.seq))
    }

    /// `rank`'s part of instance `seq` in `area`, which must have been published (see
    /// [`CollSlots::ready`]) with exactly `len` bytes. The slice points into the shared slot,
    /// which the member leaves unchanged until this rank publishes the next instance.
    pub fn part(&self, rank: PeerId, area: usize, seq: u64, len: usize) -> Result<&[u8], String> {
        let seg = self.segment(rank).ok_or_else(|| format!("rank {rank} shares no memory with rank {}", self.me))?;
        let p = slot(seg, area, seq);
        if seq_word(p).load(Ordering::Acquire) != seq {
            return Err(format!("rank {rank} has not published collective {seq} in slot area {area}"));
        }
        // SAFETY: the length word of a slot the member published (acquire above).
        let published = unsafe { std::ptr::read(p.add(8) as *const u32) } as usize;
        if published != len {
            return Err(format!(
                "rank {rank} gave {published} bytes to collective {seq} where rank {} gives {len}: \
                 the members' counts or types do not match",
                self.me
            ));
        }
        // SAFETY: `len` (at most `SLOT_DATA_BYTES`, as the publisher checked and `len` equals
        // what it wrote) bytes of the slot's data, published before `seq` and unchanged while
        // this rank has not published the next instance.
        Ok(unsafe { std::slice::from_raw_parts(p.add(DATA_AT), len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(tag: &str) -> Arc<Segment> {
        Arc::new(Segment::create(tag, SEGMENT_HEADER_BYTES + REGION_BYTES).expect("segment"))
    }

    #[test]
    fn a_part_is_seen_once_published_and_only_with_the_expected_length() {
        let (a, b) = (segment("slots-a"), segment("slots-b"));
        let at_a = CollSlots::new(0, a.clone(), vec![(1, b.clone())]);
        let at_b = CollSlots::new(1, b, vec![(0, a)]);
        let w = SlotWait { area: 3, seq: 1, members: &[0, 1] };
        assert!(!at_a.ready(&w) && !at_b.ready(&w));
        at_a.publish(3, 1, b"from a", &[0, 1]);
        assert!(at_b.has_published(0, 3, 1) && !at_b.ready(&w));
        at_b.publish(3, 1, b"from b!", &[0, 1]);
        assert!(at_a.ready(&w) && at_b.ready(&w));
        assert_eq!(at_b.part(0, 3, 1, 6).unwrap(), b"from a");
        assert_eq!(at_a.part(1, 3, 1, 7).unwrap(), b"from b!");
        assert_eq!(at_a.part(0, 3, 1, 6).unwrap(), b"from a", "a rank reads its own part too");
        let e = at_a.part(1, 3, 1, 6).unwrap_err();
        assert!(e.contains("rank 1 gave 7 bytes"), "{e}");
        // The next instance uses the other slot and leaves this one's part in place.
        at_a.publish(3, 2, b"second", &[0, 1]);
        assert!(at_b.has_published(0, 3, 1));
        assert_eq!(at_b.part(0, 3, 1, 6).unwrap(), b"from a");
        assert!(at_b.has_published(0, 3, 2) && !at_b.ready(&SlotWait { seq: 2, ..w }));
        assert!(at_a.part(1, 3, 2, 7).is_err(), "rank 1 has not published instance 2");
        // Other areas are untouched.
        assert!(!at_b.has_published(0, 4, 1));
        assert!(!at_a.reaches(2));
    }
}
