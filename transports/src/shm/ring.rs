//! A single-producer single-consumer ring of frames in memory that two processes share: the
//! small-message path of the shared-memory transport, one ring per ordered pair of ranks.
//!
//! Layout of a ring of `capacity` bytes (a power of two), `region_bytes(capacity)` in all:
//!
//! ```text
//!   0  head: u64   the consumer's position (bytes consumed, ever); only the consumer writes it
//!   8  notes: [u64; NOTES]  words the consumer writes for the producer (see below)
//!  64  tail: u64   the producer's position (bytes published, ever); only the producer writes it
//! 128  data[capacity]
//! ```
//!
//! Head and tail sit on separate cache lines, so the two ends never write the same line, and
//! each end keeps the last value it read of the other's, so that the fast path touches the
//! other's line only when the ring looks full (producer) or empty (consumer). No lock and no
//! system call: a push is a copy and one release store, a pop a copy and one release store.
//!
//! A record is the frame's length as a little-endian u64, then the frame, then padding to a
//! multiple of 8; records start on multiples of 8, so a length word never wraps, while a
//! frame may (it is then copied in two pieces). Positions are `u64` byte counts that never
//! wrap in practice (2^64 bytes).
//!
//! The notes share the head's cache line because the consumer alone writes both: the layer
//! above uses them to tell the producer things that are not frames (the transport: how many
//! of the producer's payloads it has finished reading from the producer's own memory, and
//! whether it can read them there at all).
//!
//! A *skip record* has the top bit of its length word set and covers the rest of its lap of
//! the data area (the low bits give its bytes, length word included): the next record starts
//! at the data area's beginning. A producer set to rewind ([`Producer::rewind_when_idle_past`])
//! writes one when it finds the ring empty, or holding no more than [`REWIND_UNREAD_BYTES`]
//! unread, past a given offset, so that traffic the consumer keeps up with stays in the head of
//! the ring: pages already faulted in and lines still in cache, where it would otherwise stream
//! through every page of the ring. (A frame still unread is read before the skip record that
//! follows it, and the space accounting keeps the records after the skip clear of it.)
//!
//! The consumer trusts nothing it reads: a length that does not fit what the producer
//! published is refused as a corrupt ring, naming the position, and the ring is then dead.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of the header before the data: head and tail, a cache line each.
pub const HEADER_BYTES: usize = 128;
const TAIL_OFFSET: usize = 64;
/// Words on the consumer's cache line after the head, for [`Consumer::set_note`].
pub const NOTES: usize = 7;
/// The length word of a record.
const LEN_BYTES: usize = 8;
/// Records start on multiples of this.
const ALIGN: u64 = 8;
/// The length word's top bit: a skip record, not a frame.
const SKIP: u64 = 1 << 63;
/// A producer rewinds a ring that holds at most this many bytes unread: a collective's small
/// frame is often still in flight when the next large one goes (a barrier's before a
/// broadcast), so a producer that waited for an empty ring never rewound under that traffic.
pub const REWIND_UNREAD_BYTES: u64 = 4096;
/// A producer looking for an idle ring to rewind reads the consumer's head at most once per
/// this many bytes it publishes (the head's line is the consumer's to write), or per a
/// sixteenth of a smaller ring, and before every record at least as large.
const REWIND_LOOK_EVERY: u64 = 4096;

/// Bytes of shared memory a ring of `capacity` data bytes needs.
pub fn region_bytes(capacity: usize) -> usize {
    HEADER_BYTES + capacity
}

/// The largest frame a ring of `capacity` bytes carries (an empty ring holds exactly one).
pub fn max_frame_bytes(capacity: usize) -> usize {
    capacity - LEN_BYTES
}

/// Why a ring refused a frame or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("a frame of {len} bytes exceeds the ring's largest, {max}")]
    TooLarge { len: usize, max: usize },
    #[error("corrupt ring at position {at}: {what}")]
    Corrupt { at: u64, what: String },
}

/// The mapping both ends address: its header and data area.
#[derive(Debug)]
struct Region {
    base: *mut u8,
    /// Data bytes, a power of two.
    capacity: usize,
}

// SAFETY: a `Region` is a pointer into memory mapped for as long as the end that owns it lives
// (the contract of `producer`/`consumer`); each end is used by one thread at a time.
unsafe impl Send for Region {}

impl Region {
    /// # Safety
    /// As for [`producer`].
    unsafe fn new(base: *mut u8, capacity: usize) -> Region {
        assert!(capacity.is_power_of_two() && capacity >= 64, "ring capacity {capacity} is not a power of two >= 64");
        assert_eq!(base as usize % 64, 0, "ring region not aligned to a cache line");
        Region { base, capacity }
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: the first 8 bytes of the region, aligned, mapped while `self` lives, and only
        // ever accessed atomically by both ends.
        unsafe { &*(self.base as *const AtomicU64) }
    }

    fn note(&self, i: usize) -> &AtomicU64 {
        assert!(i < NOTES, "note {i} of {NOTES}");
        // SAFETY: word `1 + i` of the head's line (i < NOTES = 7), aligned, mapped while
        // `self` lives, and only ever accessed atomically by both ends.
        unsafe { &*(self.base.add(8 * (1 + i)) as *const AtomicU64) }
    }

    fn tail(&self) -> &AtomicU64 {
        // SAFETY: as for `head`, at offset 64.
        unsafe { &*(self.base.add(TAIL_OFFSET) as *const AtomicU64) }
    }

    fn offset(&self, pos: u64) -> usize {
        (pos as usize) & (self.capacity - 1)
    }

    /// Copies `bytes` into the data area from position `pos`, wrapping at the end.
    ///
    /// # Safety
    /// `[pos, pos + bytes.len())` must be free space that only this producer writes.
    unsafe fn write(&self, pos: u64, bytes: &[u8]) {
        let at = self.offset(pos);
        let first = bytes.len().min(self.capacity - at);
        // SAFETY: both pieces lie inside the data area (`at + first <= capacity`, the rest
        // from its start), which the consumer does not read until the tail passes them.
        unsafe {
            let data = self.base.add(HEADER_BYTES);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(at), first);
            // Most writes do not wrap: no second call.
            if first < bytes.len() {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), data, bytes.len() - first);
            }
        }
    }

    /// The `len` bytes from position `pos` as one or two slices (two when they wrap).
    ///
    /// # Safety
    /// `[pos, pos + len)` must be published data this consumer has not consumed.
    unsafe fn read(&self, pos: u64, len: usize) -> (&[u8], &[u8]) {
        let at = self.offset(pos);
        let first = len.min(self.capacity - at);
        // SAFETY: inside the data area, and the producer does not write it again until the
        // head passes it.
        unsafe {
            let data = self.base.add(HEADER_BYTES);
            (std::slice::from_raw_parts(data.add(at), first), std::slice::from_raw_parts(data, len - first))
        }
    }
}

fn record_bytes(len: usize) -> u64 {
    (LEN_BYTES as u64 + len as u64).next_multiple_of(ALIGN)
}

/// A frame as it lies in the ring: its bytes in one slice, or in two when it wraps (the
/// second then starts at the data area's beginning).
pub type InRing<'a> = (&'a [u8], &'a [u8]);

/// The producing end of a ring.
#[derive(Debug)]
pub struct Producer {
    region: Region,
    /// Where the next record goes; published to the consumer by the tail.
    tail: u64,
    /// The consumer's head as last read.
    head_seen: u64,
    /// Past this offset in a lap, an idle ring is rewound (the capacity: never).
    rewind_after: usize,
    /// Bytes published between two looks at the head for an idle ring.
    rewind_look_every: u64,
    /// The tail when the head was last read to look for an idle ring.
    rewind_looked: u64,
}

/// The consuming end of a ring.
#[derive(Debug)]
pub struct Consumer {
    region: Region,
    /// Where the next record starts; published to the producer by the head.
    head: u64,
    /// The producer's tail as last read.
    tail_seen: u64,
    /// The length of the frame [`Consumer::front`] last returned, until it is consumed.
    front_len: Option<u64>,
    /// Set once the ring was found corrupt: it is never read again.
    dead: Option<RingError>,
}

/// The producing end of the ring at `base`.
///
/// # Safety
/// `base` must point to `region_bytes(capacity)` bytes, aligned to 64, that stay mapped while
/// the returned end lives and were zeroed before either end first used them (a new mapping
/// is); exactly one producer and one consumer may use one ring.
pub unsafe fn producer(base: *mut u8, capacity: usize) -> Producer {
    // SAFETY: forwarded contract.
    let region = unsafe { Region::new(base, capacity) };
    let tail = region.tail().load(Ordering::Relaxed);
    let head_seen = region.head().load(Ordering::Acquire);
    let rewind_look_every = REWIND_LOOK_EVERY.min(capacity as u64 / 16);
    Producer { region, tail, head_seen, rewind_after: capacity, rewind_look_every, rewind_looked: tail }
}

/// The consuming end of the ring at `base`.
///
/// # Safety
/// As for [`producer`].
pub unsafe fn consumer(base: *mut u8, capacity: usize) -> Consumer {
    // SAFETY: forwarded contract.
    let region = unsafe { Region::new(base, capacity) };
    let head = region.head().load(Ordering::Relaxed);
    let tail_seen = region.tail().load(Ordering::Acquire);
    Consumer { region, head, tail_seen, front_len: None, dead: None }
}

impl Producer {
    /// Appends one frame, the concatenation of `parts` (a header and its payload, say).
    /// `Ok(false)` when the ring has no room for it now: nothing was written, and the caller
    /// keeps the frame and tries again once the consumer has read.
    pub fn push(&mut self, parts: &[&[u8]]) -> Result<bool, RingError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let max = max_frame_bytes(self.region.capacity);
        if len > max {
            return Err(RingError::TooLarge { len, max });
        }
        let need = record_bytes(len);
        let capacity = self.region.capacity as u64;
        self.rewind_if_idle(need);
        if self.tail - self.head_seen + need > capacity {
            self.head_seen = self.region.head().load(Ordering::Acquire);
            if self.tail - self.head_seen + need > capacity {
                return Ok(false);
            }
        }
        let mut pos = self.tail;
        // SAFETY: `[tail, tail + need)` is free: the consumer's head is at most `capacity`
        // behind it, and only this producer writes past the tail.
        unsafe {
            self.region.write(pos, &(len as u64).to_le_bytes());
            pos += LEN_BYTES as u64;
            for p in parts {
                self.region.write(pos, p);
                pos += p.len() as u64;
            }
        }
        self.tail += need;
        // Release: the record's bytes are visible before the tail that publishes them.
        self.region.tail().store(self.tail, Ordering::Release);
        Ok(true)
    }

    /// Makes the producer start again at the beginning of the data area whenever it finds
    /// the ring empty, or nearly ([`REWIND_UNREAD_BYTES`]), past `offset` bytes into a lap
    /// (see the module doc).
    pub fn rewind_when_idle_past(&mut self, offset: usize) {
        self.rewind_after = offset.min(self.region.capacity);
    }

    /// Writes and publishes a skip record to the end of the lap when the ring is found empty
    /// or nearly past `rewind_after`, before a record of `need` bytes. A record of a look's
    /// worth or more always looks: the look is cheap beside writing it, and a look made before
    /// a small record (a barrier's, say) while a large one was still being read must not leave
    /// the next large one streaming on.
    fn rewind_if_idle(&mut self, need: u64) {
        let at = self.region.offset(self.tail);
        let look_due = self.tail >= self.rewind_looked + self.rewind_look_every || need >= self.rewind_look_every;
        if at == 0 || at < self.rewind_after || !look_due {
            return;
        }
        self.rewind_looked = self.tail;
        self.head_seen = self.region.head().load(Ordering::Acquire);
        // What is unread must also be at most `at`: the skip and what is unread together are
        // then at most a ring's worth, as the consumer requires of what is published.
        if self.tail - self.head_seen > REWIND_UNREAD_BYTES.min(at as u64) {
            return;
        }
        let skip = (self.region.capacity - at) as u64;
        // SAFETY: at most `at` bytes are unread and `at` is a multiple of 8 below the capacity,
        // so the 8 bytes at the tail are free; the length word does not wrap (the tail is a
        // multiple of 8, and so is the capacity).
        unsafe { self.region.write(self.tail, &(SKIP | skip).to_le_bytes()) };
        self.tail += skip;
        self.rewind_looked = self.tail;
        // Published on its own: the frame after it may not fit until the consumer has passed
        // the skip.
        self.region.tail().store(self.tail, Ordering::Release);
    }

    /// The consumer's note `i` (zero until it sets one).
    pub fn note(&self, i: usize) -> u64 {
        self.region.note(i).load(Ordering::Acquire)
    }

    /// Whether the consumer has read everything published.
    pub fn is_drained(&mut self) -> bool {
        self.head_seen = self.region.head().load(Ordering::Acquire);
        self.head_seen == self.tail
    }
}

impl Consumer {
    /// The next frame, as one slice or two (when it wraps), without taking it; `Ok(None)` when
    /// none is published. [`Consumer::consume`] then frees its space.
    pub fn front(&mut self) -> Result<Option<InRing<'_>>, RingError> {
        if let Some(e) = &self.dead {
            return Err(e.clone());
        }
        if self.head == self.tail_seen {
            // Acquire: the records before the tail are visible once the tail is.
            self.tail_seen = self.region.tail().load(Ordering::Acquire);
            if self.head == self.tail_seen {
                return Ok(None);
            }
        }
        let published = self.tail_seen - self.head;
        if published > self.region.capacity as u64 || !published.is_multiple_of(ALIGN) {
            return Err(self.die(format!("the producer published {published} bytes")));
        }
        // SAFETY: at least one record (8 bytes or more) is published from `head`, which is a
        // multiple of 8, so its length word does not wrap.
        let (word, _) = unsafe { self.region.read(self.head, LEN_BYTES) };
        let len = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        if len & SKIP != 0 {
            let skip = len & !SKIP;
            let lap_rest = (self.region.capacity - self.region.offset(self.head)) as u64;
            if skip != lap_rest || skip > published {
                return Err(self.die(format!(
                    "a skip of {skip} bytes where the lap has {lap_rest} left and {published} are published"
                )));
            }
            self.head += skip;
            // Release, as for a consumed frame: the producer may write there again.
            self.region.head().store(self.head, Ordering::Release);
            return self.front();
        }
        if len > published - LEN_BYTES as u64 {
            return Err(self.die(format!("a frame of {len} bytes where {published} are published")));
        }
        self.front_len = Some(len);
        // SAFETY: the frame lies inside what was published, checked just above.
        Ok(Some(unsafe { self.region.read(self.head + LEN_BYTES as u64, len as usize) }))
    }

    /// Frees the space of the frame [`Consumer::front`] returned.
    ///
    /// # Panics
    /// If `front` returned no frame since the last `consume`.
    pub fn consume(&mut self) {
        let len = self.front_len.take().expect("consume of a frame front did not return");
        self.head += record_bytes(len as usize);
        // Release: the producer reuses the space only after every read of it is done.
        self.region.head().store(self.head, Ordering::Release);
    }

    /// Copies the next frame into `out` (replacing what it held) and frees its space; whether
    /// there was one.
    pub fn pop_into(&mut self, out: &mut Vec<u8>) -> Result<bool, RingError> {
        let Some((a, b)) = self.front()? else { return Ok(false) };
        out.clear();
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        self.consume();
        Ok(true)
    }

    /// Publishes `value` as note `i` to the producer. Release: whatever this end did before
    /// (a read of the producer's memory) happens before the producer sees the note.
    pub fn set_note(&self, i: usize, value: u64) {
        self.region.note(i).store(value, Ordering::Release);
    }

    fn die(&mut self, what: String) -> RingError {
        let e = RingError::Corrupt { at: self.head, what };
        self.dead = Some(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// One cache line (only its memory is used).
    #[derive(Clone)]
    #[repr(C, align(64))]
    struct Line {
        _bytes: [u8; 64],
    }

    /// A zeroed, cache-line-aligned region for a ring of `capacity` bytes, as a mapping is.
    struct TestRegion(Vec<Line>);

    impl TestRegion {
        fn new(capacity: usize) -> TestRegion {
            TestRegion(vec![Line { _bytes: [0; 64] }; region_bytes(capacity).div_ceil(64)])
        }
        fn base(&mut self) -> *mut u8 {
            self.0.as_mut_ptr() as *mut u8
        }
        fn ends(&mut self, capacity: usize) -> (Producer, Consumer) {
            // SAFETY: the region outlives both ends in every test, is zeroed and aligned.
            unsafe { (producer(self.base(), capacity), consumer(self.base(), capacity)) }
        }
    }

    /// A small deterministic generator (the tests need no crate for it).
    fn next(x: &mut u64) -> u64 {
        *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn frame(i: u64, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i as usize * 131 + j * 7) as u8).collect()
    }

    /// Random pushes and pops against a model queue: FIFO, every byte intact, and a push is
    /// refused exactly when the record does not fit beside what is unread.
    #[test]
    fn frames_cross_in_order_and_full_is_exact() {
        for capacity in [64usize, 256, 4096] {
            let mut region = TestRegion::new(capacity);
            let (mut tx, mut rx) = region.ends(capacity);
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut used = 0u64;
            let mut seed = capacity as u64;
            let mut out = Vec::new();
            for i in 0..20_000u64 {
                if next(&mut seed).is_multiple_of(2) {
                    let len = (next(&mut seed) % (max_frame_bytes(capacity) as u64 + 1)) as usize;
                    let f = frame(i, len);
                    let (head, tail) = f.split_at(len / 3);
                    let fits = used + record_bytes(len) <= capacity as u64;
                    assert_eq!(tx.push(&[head, tail]).unwrap(), fits, "capacity {capacity}, used {used}, len {len}");
                    if fits {
                        used += record_bytes(len);
                        model.push_back(f);
                    }
                } else {
                    let got = rx.pop_into(&mut out).unwrap();
                    assert_eq!(got, !model.is_empty());
                    if let Some(want) = model.pop_front() {
                        assert_eq!(out, want, "frame {i} of capacity {capacity}");
                        used -= record_bytes(want.len());
                    }
                }
            }
            while let Some(want) = model.pop_front() {
                assert!(rx.pop_into(&mut out).unwrap());
                assert_eq!(out, want);
            }
            assert!(!rx.pop_into(&mut out).unwrap());
            assert!(tx.is_drained());
        }
    }

    #[test]
    fn a_frame_larger_than_the_ring_is_refused_by_size() {
        let mut region = TestRegion::new(64);
        let (mut tx, _rx) = region.ends(64);
        assert_eq!(tx.push(&[&[0; 57]]), Err(RingError::TooLarge { len: 57, max: 56 }));
        assert_eq!(tx.push(&[&[0; 56]]), Ok(true), "the largest fits an empty ring");
    }

    /// Notes travel from the consumer to the producer beside the frames and never disturb
    /// them: every note keeps its own value while frames come and go.
    #[test]
    fn notes_reach_the_producer_and_leave_the_frames_alone() {
        let mut region = TestRegion::new(256);
        let (mut tx, mut rx) = region.ends(256);
        assert!((0..NOTES).all(|i| tx.note(i) == 0), "zero until set");
        let mut out = Vec::new();
        for round in 1..100u64 {
            for i in 0..NOTES {
                rx.set_note(i, round * 10 + i as u64);
            }
            assert!(tx.push(&[&frame(round, 50)]).unwrap());
            assert!(rx.pop_into(&mut out).unwrap());
            assert_eq!(out, frame(round, 50));
            for i in 0..NOTES {
                assert_eq!(tx.note(i), round * 10 + i as u64, "note {i} in round {round}");
            }
        }
        assert!(tx.is_drained());
    }

    /// What a broken or hostile peer writes is refused, not read past the published bytes.
    #[test]
    fn a_corrupt_length_or_tail_is_refused_and_the_ring_stays_dead() {
        let mut region = TestRegion::new(256);
        let (mut tx, mut rx) = region.ends(256);
        tx.push(&[b"hello"]).unwrap();
        // The length word says 200 bytes where one 16-byte record was published.
        // SAFETY: the test's own region; no end is reading or writing concurrently.
        unsafe { std::ptr::write(region.base().add(HEADER_BYTES) as *mut u64, 200u64.to_le()) };
        let err = rx.front().unwrap_err();
        assert!(err.to_string().contains("a frame of 200 bytes where 16 are published"), "{err}");
        assert_eq!(rx.front().unwrap_err(), err, "a dead ring stays dead");

        let mut region = TestRegion::new(256);
        let (_tx, mut rx) = region.ends(256);
        // SAFETY: as above; a tail far past anything the ring can hold.
        unsafe { (*(region.base().add(TAIL_OFFSET) as *const AtomicU64)).store(1 << 20, Ordering::Release) };
        let err = rx.front().unwrap_err();
        assert!(err.to_string().contains("published 1048576 bytes"), "{err}");
    }

    /// A producer set to rewind keeps traffic its consumer keeps up with in the head of the
    /// ring: frames cross in order and intact, and nearly every record starts before the
    /// rewind offset plus one look's worth of bytes (a look that finds the ring busy waits for
    /// the next; it is a best effort, bounded in what it reads of the consumer's line), while
    /// the producer goes round many laps.
    #[test]
    fn an_empty_ring_is_rewound_and_frames_still_cross_in_order() {
        let capacity = 4096;
        let mut region = TestRegion::new(capacity);
        let (mut tx, mut rx) = region.ends(capacity);
        tx.rewind_when_idle_past(1024);
        let (mut seed, mut out) = (3u64, Vec::new());
        let (mut records, mut far) = (0u64, 0u64);
        for i in 0..20_000u64 {
            // One or two frames at a time, then all read: the ring is often empty.
            let burst = 1 + next(&mut seed) % 2;
            let frames: Vec<Vec<u8>> = (0..burst).map(|k| frame(i * 2 + k, (next(&mut seed) % 200) as usize)).collect();
            for f in &frames {
                assert!(tx.push(&[f]).unwrap(), "an emptied ring takes a small frame");
                records += 1;
                far += u64::from(tx.region.offset(tx.tail - record_bytes(f.len())) > 1024 + capacity / 16 + 216);
            }
            for f in &frames {
                assert!(rx.pop_into(&mut out).unwrap());
                assert_eq!(&out, f, "round {i}");
            }
            assert!(!rx.pop_into(&mut out).unwrap());
        }
        assert!(far * 20 < records, "{far} of {records} records started past the head the ring keeps to");
        assert!(tx.tail > 50 * capacity as u64, "only {} bytes published: it never rewound", tx.tail);
        assert!(tx.is_drained());
    }

    /// A collective's traffic: the producer's small frame after a large one (a barrier's after
    /// a broadcast's) goes while the large one is still being read, and the next large one
    /// while a small one is unread. The producer rewinds all the same, so records stay in the
    /// head of the ring (one that waited for an empty ring, or looked only once per 4 KiB
    /// published, never rewound here and faulted in every page of its ring on the first lap),
    /// and every frame crosses once, in order, intact.
    #[test]
    fn a_ring_with_a_small_frame_unread_is_rewound_too() {
        let capacity = 1 << 16;
        let mut region = TestRegion::new(capacity);
        let (mut tx, mut rx) = region.ends(capacity);
        tx.rewind_when_idle_past(8192);
        let (mut records, mut far, mut out) = (0u64, 0u64, Vec::new());
        let mut unread: Vec<Vec<u8>> = Vec::new();
        for i in 0..5000u64 {
            // Larger than a look's worth: the small frame after it is due a look.
            let big = frame(3 * i, 5000);
            assert!(tx.push(&[&big]).unwrap(), "round {i}: the ring has room");
            records += 1;
            far += u64::from(tx.region.offset(tx.tail - record_bytes(big.len())) > 8192 + 5008);
            // A small frame while the large one is unread.
            let small = frame(3 * i + 1, 16);
            assert!(tx.push(&[&small]).unwrap());
            unread.extend([big, small]);
            for f in unread.drain(..) {
                assert!(rx.pop_into(&mut out).unwrap());
                assert_eq!(out, f, "round {i}");
            }
            // And one left unread when the next large one goes.
            let small = frame(3 * i + 2, 16);
            assert!(tx.push(&[&small]).unwrap());
            unread.push(small);
        }
        assert!(far * 20 < records, "{far} of {records} large records started past the head the ring keeps to");
        assert!(tx.tail > 50 * capacity as u64, "only {} bytes published: too few laps to tell", tx.tail);
    }

    /// A skip record must end its lap exactly and lie inside what was published.
    #[test]
    fn a_skip_that_does_not_end_its_lap_is_refused() {
        let mut region = TestRegion::new(256);
        let (mut tx, mut rx) = region.ends(256);
        tx.push(&[&[1; 24]]).unwrap();
        // SAFETY: the test's own region; no end is reading or writing concurrently.
        unsafe { std::ptr::write(region.base().add(HEADER_BYTES) as *mut u64, (SKIP | 32).to_le()) };
        let err = rx.front().unwrap_err();
        assert!(err.to_string().contains("a skip of 32 bytes where the lap has 256 left"), "{err}");
    }

    /// Two threads, one at each end, a ring small enough to wrap constantly: every frame
    /// arrives once, in order, intact, with the producer rewinding an empty ring or not.
    /// Each wait is bounded.
    #[test]
    fn two_threads_stream_through_a_small_ring() {
        for rewind in [false, true] {
            two_threads_stream(rewind);
        }
    }

    fn two_threads_stream(rewind: bool) {
        const FRAMES: u64 = 50_000;
        let capacity = 256;
        let mut region = TestRegion::new(capacity);
        let (mut tx, mut rx) = region.ends(capacity);
        if rewind {
            tx.rewind_when_idle_past(64);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut seed = 7;
                for i in 0..FRAMES {
                    let f = frame(i, (next(&mut seed) % 120) as usize);
                    while !tx.push(&[&f]).unwrap() {
                        assert!(std::time::Instant::now() < deadline, "the consumer stopped reading");
                        std::thread::yield_now();
                    }
                }
            });
            let mut seed = 7;
            let mut out = Vec::new();
            for i in 0..FRAMES {
                while !rx.pop_into(&mut out).unwrap() {
                    assert!(std::time::Instant::now() < deadline, "frame {i} never came");
                    std::thread::yield_now();
                }
                assert_eq!(out, frame(i, (next(&mut seed) % 120) as usize), "frame {i}");
            }
        });
    }
}
