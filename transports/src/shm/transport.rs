//! The shared-memory transport between co-located ranks.
//!
//! Each rank creates one segment ([`super::segment`]) holding its *inbound* rings, one per
//! co-located peer, and maps each peer's segment to produce into the ring the peer keeps for
//! it. A frame (header and payload) is one ring record; frames a full ring cannot take wait in
//! a bounded queue of the sender's and go at the next progress. The reader feeds each record
//! to the same [`FrameDecoder`] the stream transports use, so a frame is validated exactly as
//! one from TCP or verbs, and a record that is not exactly one frame takes the link down.
//!
//! Segment layout (`SEGMENT_HEADER_BYTES`, then the rings):
//!
//! ```text
//!    0  magic "KWRMSHM1"     8  owner rank: u32   12  slots: u32   16  ring capacity: u64
//!   64  doorbell: u32 (futex; producers bump it to wake a sleeping owner)
//!  128  sleeping: u32 (the owner sleeps on the doorbell)
//!  256  slot table: the rank of each slot's producer, u32 each
//! 4096  ring of slot 0, ring of slot 1, ...
//! ```
//!
//! A rank that waits for frames sleeps on its doorbell (a futex in the shared segment, so
//! producers in other processes can wake it) after saying so in `sleeping`; a producer that
//! sees `sleeping` after publishing a frame bumps the doorbell and wakes it. Both sides fence
//! between their store and their load, so a frame is never published unseen by a sleeper.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::ring::{self, Consumer, Producer};
use super::segment::Segment;
use crate::wire::{FrameDecoder, Header, HEADER_LEN};
use crate::{Event, Payload, PeerId, Transport, TransportError, TransportKind, TransportResult, Waker};

const MAGIC: &[u8; 8] = b"KWRMSHM1";
/// The segment's header, before the first ring (a page, so rings start page-aligned).
pub const SEGMENT_HEADER_BYTES: usize = 4096;
const DOORBELL: usize = 64;
const SLEEPING: usize = 128;
const SLOT_TABLE: usize = 256;
/// The most co-located peers one segment has rings for.
pub const MAX_SLOTS: usize = (SEGMENT_HEADER_BYTES - SLOT_TABLE) / 4;
/// Bytes a sender may hold queued for one peer whose ring is full before `send` refuses.
const QUEUE_LIMIT_BYTES: usize = 256 << 20;
/// Frames read from one peer per progress, so that one busy peer cannot starve the others.
const FRAMES_PER_PEER: usize = 64;

/// Ring capacity for frames of up to `max_frame` bytes (header included): room for two, so a
/// sender can fill one while the reader drains the other.
pub fn ring_capacity(max_frame: usize) -> usize {
    (2 * (max_frame + 64)).next_power_of_two().max(4096)
}

fn segment_bytes(slots: usize, capacity: usize) -> usize {
    SEGMENT_HEADER_BYTES + slots * ring::region_bytes(capacity)
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> TransportError {
    move |source| TransportError::Io { context, source }
}

/// The parts of a segment's header both ends use.
struct Bell<'a> {
    doorbell: &'a AtomicU32,
    sleeping: &'a AtomicU32,
}

fn bell(seg: &Segment) -> Bell<'_> {
    // SAFETY: both words lie in the segment's header page, aligned, mapped while `seg` lives,
    // and are only ever accessed atomically, by every process that maps the segment.
    unsafe {
        Bell {
            doorbell: &*(seg.as_ptr().add(DOORBELL) as *const AtomicU32),
            sleeping: &*(seg.as_ptr().add(SLEEPING) as *const AtomicU32),
        }
    }
}

impl Bell<'_> {
    /// Wakes the segment's owner if it sleeps (or is about to).
    fn ring(&self) {
        self.doorbell.fetch_add(1, Ordering::SeqCst);
        futex_wake(self.doorbell);
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on an aligned u32 that stays mapped for the call; it only wakes.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, std::ptr::null::<libc::timespec>());
    }
}

/// Sleeps while `word` holds `seen`, at most `timeout`.
fn futex_wait(word: &AtomicU32, seen: u32, timeout: Duration) {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: FUTEX_WAIT on an aligned u32 that stays mapped for the call, with a relative
    // timeout; it returns at once if the word no longer holds `seen`.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, seen, &ts as *const libc::timespec);
    }
}

/// This rank's half of the shared-memory wire-up: its segment of inbound rings, created
/// before the peers know its name, and the peers' segments it has mapped.
pub struct ShmEndpoint {
    me: PeerId,
    own: Segment,
    capacity: usize,
    /// The peers with a slot in `own`, slot order.
    slots: Vec<PeerId>,
    /// The peers' segments mapped so far, with the slot of this rank's ring in each.
    mapped: Vec<(PeerId, Segment, usize)>,
}

impl std::fmt::Debug for ShmEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmEndpoint").field("me", &self.me).field("segment", &self.own.name()).finish_non_exhaustive()
    }
}

impl ShmEndpoint {
    /// Creates rank `me`'s segment with a ring for each of `peers` (the co-located ranks),
    /// each taking frames of up to `max_frame` bytes; `tag` keeps segments of different
    /// wire-ups apart (an epoch).
    pub fn create(me: PeerId, peers: &[PeerId], max_frame: usize, tag: &str) -> TransportResult<ShmEndpoint> {
        if peers.len() > MAX_SLOTS {
            return Err(TransportError::Bootstrap(format!(
                "{} co-located peers is more than one segment's {MAX_SLOTS}",
                peers.len()
            )));
        }
        let capacity = ring_capacity(max_frame);
        let own = Segment::create(&format!("r{me}-{tag}"), segment_bytes(peers.len(), capacity))
            .map_err(io(format!("shared-memory segment of rank {me}")))?;
        // SAFETY: the new segment's header page, which no other process has mapped yet.
        unsafe {
            let p = own.as_ptr();
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), p, 8);
            std::ptr::write(p.add(8) as *mut u32, me);
            std::ptr::write(p.add(12) as *mut u32, peers.len() as u32);
            std::ptr::write(p.add(16) as *mut u64, capacity as u64);
            for (i, &peer) in peers.iter().enumerate() {
                std::ptr::write(p.add(SLOT_TABLE + 4 * i) as *mut u32, peer);
            }
        }
        Ok(ShmEndpoint { me, own, capacity, slots: peers.to_vec(), mapped: Vec::new() })
    }

    /// The name peers map this rank's segment by.
    pub fn segment_name(&self) -> &str {
        self.own.name()
    }

    /// Maps `peer`'s segment `name` and checks it is the segment rank `peer` made for this
    /// rank's frames: its magic, owner, ring size and a slot for this rank. Proof that the
    /// two processes share memory, not just a host name.
    pub fn attach(&mut self, peer: PeerId, name: &str) -> Result<(), String> {
        let seg = Segment::open_whole(name).map_err(|e| e.to_string())?;
        if seg.len() < SEGMENT_HEADER_BYTES {
            return Err(format!("segment {name} has {} bytes, less than a header", seg.len()));
        }
        let header = &seg;
        let read = |at: usize| {
            // SAFETY: inside the header page just mapped; the creator wrote it before it
            // published the name.
            unsafe { std::ptr::read(header.as_ptr().add(at) as *const u32) }
        };
        // SAFETY: as above.
        let magic = unsafe { std::slice::from_raw_parts(header.as_ptr(), 8) };
        if magic != MAGIC {
            return Err(format!("segment {name} is not a kawarimi ring segment"));
        }
        let (owner, slots) = (read(8), read(12) as usize);
        // SAFETY: as above.
        let capacity = unsafe { std::ptr::read(header.as_ptr().add(16) as *const u64) } as usize;
        if owner != peer || slots > MAX_SLOTS || capacity != self.capacity {
            return Err(format!(
                "segment {name} belongs to rank {owner} with {slots} rings of {capacity} bytes, \
                 not to rank {peer} with rings of {} bytes",
                self.capacity
            ));
        }
        let Some(slot) = (0..slots).find(|&i| read(SLOT_TABLE + 4 * i) == self.me) else {
            return Err(format!("segment {name} of rank {peer} has no ring for rank {}", self.me));
        };
        if seg.len() != segment_bytes(slots, capacity) {
            let want = segment_bytes(slots, capacity);
            return Err(format!("segment {name} has {} bytes, not the {want} its header gives", seg.len()));
        }
        self.mapped.push((peer, seg, slot));
        Ok(())
    }

    /// The transport to `peers` (those whose segments this rank mapped and that mapped this
    /// rank's: both ends must agree). Unlinks this rank's segment name: every peer that uses
    /// it has it mapped, and nothing of it then outlives the processes.
    pub fn connect(mut self, peers: &[PeerId]) -> TransportResult<ShmTransport> {
        self.own.unlink().map_err(io(format!("unlinking the segment of rank {}", self.me)))?;
        let own = Arc::new(self.own);
        let mut inbound = Vec::new();
        for (slot, &peer) in self.slots.iter().enumerate() {
            if !peers.contains(&peer) {
                continue;
            }
            // SAFETY: slot `slot`'s ring in this rank's segment, which `own` keeps mapped for
            // as long as the transport (the rings are dropped first, see `ShmTransport`);
            // this rank is its one consumer and `peer` its one producer.
            let rx = unsafe { ring::consumer(ring_base(&own, slot, self.capacity), self.capacity) };
            inbound.push(Inbound { peer, rx, decoder: FrameDecoder::new(peer) });
        }
        let mut outbound = Vec::new();
        for (peer, seg, slot) in self.mapped {
            if !peers.contains(&peer) {
                continue;
            }
            // SAFETY: the ring `peer` keeps for this rank in its segment, mapped by `seg` for
            // as long as the `Outbound` holding both; this rank is its one producer.
            let tx = unsafe { ring::producer(ring_base(&seg, slot, self.capacity), self.capacity) };
            outbound.push(Outbound { peer, tx, queue: VecDeque::new(), queued_bytes: 0, seg });
        }
        inbound.sort_by_key(|i| i.peer);
        outbound.sort_by_key(|o| o.peer);
        Ok(ShmTransport { me: self.me, inbound, outbound, own, frame: Vec::new(), next_start: 0 })
    }
}

fn ring_base(seg: &Segment, slot: usize, capacity: usize) -> *mut u8 {
    // SAFETY: inside the segment, sized for every slot by `segment_bytes`.
    unsafe { seg.as_ptr().add(SEGMENT_HEADER_BYTES + slot * ring::region_bytes(capacity)) }
}

struct Inbound {
    peer: PeerId,
    rx: Consumer,
    decoder: FrameDecoder,
}

struct Outbound {
    peer: PeerId,
    tx: Producer,
    /// Frames the ring had no room for, in order.
    queue: VecDeque<([u8; HEADER_LEN], Payload)>,
    queued_bytes: usize,
    /// The peer's segment; declared after `tx`, so it is unmapped after the ring end goes.
    seg: Segment,
}

impl Outbound {
    /// Pushes queued frames while the ring takes them; whether any went.
    fn flush(&mut self) -> TransportResult<bool> {
        let mut moved = false;
        while let Some((h, p)) = self.queue.front() {
            if !self.tx.push(&[h, p.as_slice()]).map_err(|e| self.down(e))? {
                break;
            }
            let (_, p) = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= HEADER_LEN + p.len();
            moved = true;
        }
        Ok(moved)
    }

    fn down(&self, e: ring::RingError) -> TransportError {
        TransportError::LinkDown { peer: self.peer, reason: format!("shared-memory ring: {e}") }
    }

    /// Wakes the peer if it sleeps waiting for frames.
    fn nudge(&self) {
        fence(Ordering::SeqCst);
        let b = bell(&self.seg);
        if b.sleeping.load(Ordering::SeqCst) != 0 {
            b.ring();
        }
    }
}

/// Frames to and from the co-located peers through shared memory.
pub struct ShmTransport {
    me: PeerId,
    // Rings before segments: fields drop in declaration order.
    inbound: Vec<Inbound>,
    outbound: Vec<Outbound>,
    own: Arc<Segment>,
    /// One record gathered from its two slices when it wraps.
    frame: Vec<u8>,
    /// The inbound ring read first next time, turning, for fairness.
    next_start: usize,
}

impl std::fmt::Debug for ShmTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTransport").field("me", &self.me).field("peers", &self.inbound.len()).finish_non_exhaustive()
    }
}

impl ShmTransport {
    fn anything_to_read(&mut self) -> bool {
        self.inbound.iter_mut().any(|i| !matches!(i.rx.front(), Ok(None)))
    }

    /// Reads up to `FRAMES_PER_PEER` frames from inbound ring `k`.
    fn read_from(&mut self, k: usize, events: &mut Vec<Event>) {
        let inb = &mut self.inbound[k];
        let peer = inb.peer;
        for _ in 0..FRAMES_PER_PEER {
            let (a, b) = match inb.rx.front() {
                Ok(Some(parts)) => parts,
                Ok(None) => return,
                Err(e) => {
                    events.push(Event::LinkDown { peer, reason: format!("shared-memory ring: {e}") });
                    return;
                }
            };
            let mut emit = |header: Header, payload: Vec<u8>| events.push(Event::Frame { peer, header, payload });
            let fed = if b.is_empty() {
                inb.decoder.feed(a, &mut emit)
            } else {
                self.frame.clear();
                self.frame.extend_from_slice(a);
                self.frame.extend_from_slice(b);
                inb.decoder.feed(&self.frame, &mut emit)
            };
            inb.rx.consume();
            let whole = !inb.decoder.mid_frame();
            if let Err(e) = fed {
                events
                    .push(Event::LinkDown { peer, reason: format!("malformed frame in the shared-memory ring: {e}") });
                return;
            }
            if !whole {
                events.push(Event::LinkDown {
                    peer,
                    reason: "a shared-memory record that is not one whole frame".into(),
                });
                return;
            }
        }
    }
}

impl Transport for ShmTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Shm
    }

    fn send(&mut self, peer: PeerId, header: &Header, payload: Payload) -> TransportResult<()> {
        let out = self.outbound.iter_mut().find(|o| o.peer == peer).ok_or(TransportError::NoRoute { peer })?;
        let h = header.encode();
        if out.queue.is_empty() && out.tx.push(&[&h, payload.as_slice()]).map_err(|e| out.down(e))? {
            out.nudge();
            return Ok(());
        }
        if out.queued_bytes + HEADER_LEN + payload.len() > QUEUE_LIMIT_BYTES {
            return Err(TransportError::QueueFull { peer, limit: QUEUE_LIMIT_BYTES });
        }
        out.queued_bytes += HEADER_LEN + payload.len();
        out.queue.push_back((h, payload));
        Ok(())
    }

    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        for out in &mut self.outbound {
            if !out.queue.is_empty() && out.flush()? {
                out.nudge();
            }
        }
        let n = self.inbound.len();
        for j in 0..n {
            self.read_from((self.next_start + j) % n, events);
        }
        if n > 0 {
            self.next_start = (self.next_start + 1) % n;
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> TransportResult<()> {
        if self.anything_to_read() || timeout.is_zero() {
            return Ok(());
        }
        // A sender with a full ring must come back soon to push the rest: sleep briefly then.
        let timeout = if self.outbound.iter().any(|o| !o.queue.is_empty()) {
            timeout.min(Duration::from_micros(50))
        } else {
            timeout
        };
        let own = self.own.clone();
        let b = bell(&own);
        let seen = b.doorbell.load(Ordering::SeqCst);
        b.sleeping.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.anything_to_read() {
            futex_wait(b.doorbell, seen, timeout);
        }
        b.sleeping.store(0, Ordering::SeqCst);
        Ok(())
    }

    fn queued_bytes(&self) -> usize {
        self.outbound.iter().map(|o| o.queued_bytes).sum()
    }

    fn waker(&self) -> Option<Waker> {
        // Weak: a waker kept after the transport is gone must not keep its memory mapped
        // (a detached rank maps no segment).
        let own: Weak<Segment> = Arc::downgrade(&self.own);
        Some(Arc::new(move || {
            if let Some(seg) = own.upgrade() {
                bell(&seg).ring();
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameKind;

    /// Ranks 0..n of one process, wired to each other through real segments.
    fn mesh(n: u32, max_frame: usize, tag: &str) -> Vec<ShmTransport> {
        let mut eps: Vec<ShmEndpoint> = (0..n)
            .map(|r| {
                let peers: Vec<PeerId> = (0..n).filter(|&p| p != r).collect();
                ShmEndpoint::create(r, &peers, max_frame, tag).unwrap()
            })
            .collect();
        let names: Vec<String> = eps.iter().map(|e| e.segment_name().to_string()).collect();
        for (r, ep) in eps.iter_mut().enumerate() {
            for (p, name) in names.iter().enumerate() {
                if p != r {
                    ep.attach(p as PeerId, name).unwrap();
                }
            }
        }
        eps.into_iter()
            .enumerate()
            .map(|(r, ep)| ep.connect(&(0..n).filter(|&p| p != r as u32).collect::<Vec<_>>()).unwrap())
            .collect()
    }

    fn frame(src: PeerId, seq: u64, len: usize) -> (Header, Payload) {
        let mut h = Header::new(FrameKind::Eager);
        h.src = src;
        h.seq = seq;
        h.payload_len = len as u32;
        (h, Payload::Owned((0..len).map(|i| (i as u64 * 7 + seq) as u8).collect()))
    }

    #[test]
    fn frames_of_every_size_cross_in_order_with_a_full_ring_queued() {
        let mut t = mesh(3, 64 << 10, "t-order");
        let sizes = [0usize, 1, 55, 56, 4000, 64 << 10];
        let mut seq = 0;
        // Far more than a ring holds: the rest waits in the sender's queue.
        for round in 0..40 {
            for &len in &sizes {
                for dst in [1u32, 2] {
                    let (h, p) = frame(0, seq + dst as u64 * 1_000_000, len);
                    t[0].send(dst, &h, p).unwrap();
                }
                seq += 1;
            }
            let _ = round;
        }
        assert!(t[0].queued_bytes() > 0, "the rings filled up");
        let mut got = vec![Vec::new(); 3];
        for _ in 0..10_000 {
            let mut events = Vec::new();
            t[0].progress(&mut events).unwrap();
            for r in [1usize, 2] {
                t[r].progress(&mut events).unwrap();
            }
            for e in events {
                match e {
                    Event::Frame { peer, header, payload } => {
                        assert_eq!(peer, 0);
                        let dst = (header.seq / 1_000_000) as usize;
                        let (want_h, want_p) = frame(0, header.seq, payload.len());
                        assert_eq!(header, want_h);
                        assert_eq!(payload, want_p.as_slice());
                        got[dst].push(header.seq % 1_000_000);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if got[1].len() == 240 && got[2].len() == 240 {
                break;
            }
        }
        for dst in [1, 2] {
            assert_eq!(got[dst], (0..240).collect::<Vec<_>>(), "rank {dst} got every frame once, in order");
        }
        assert_eq!(t[0].queued_bytes(), 0);
    }

    #[test]
    fn a_sleeping_reader_is_woken_by_a_frame_and_by_its_waker() {
        let mut t = mesh(2, 4096, "t-wake");
        let mut reader = t.pop().unwrap();
        let mut writer = t.pop().unwrap();
        let start = std::time::Instant::now();
        reader.wait(Duration::from_millis(30)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(25), "nothing to read: it slept its time");
        let waker = reader.waker().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                let (h, p) = frame(0, 1, 8);
                writer.send(1, &h, p).unwrap();
            });
            let start = std::time::Instant::now();
            reader.wait(Duration::from_secs(20)).unwrap();
            assert!(start.elapsed() < Duration::from_secs(10), "the frame woke the reader");
        });
        let mut events = Vec::new();
        reader.progress(&mut events).unwrap();
        assert!(matches!(events.as_slice(), [Event::Frame { peer: 0, .. }]), "{events:?}");
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                waker();
            });
            let start = std::time::Instant::now();
            reader.wait(Duration::from_secs(20)).unwrap();
            assert!(start.elapsed() < Duration::from_secs(10), "the waker woke the reader");
        });
        drop(reader);
        waker(); // after the transport is gone: nothing to wake, and nothing mapped
    }

    #[test]
    fn a_segment_for_someone_else_is_refused_and_nothing_stays_in_dev_shm() {
        let mut a = ShmEndpoint::create(0, &[1], 4096, "t-refuse").unwrap();
        let b = ShmEndpoint::create(1, &[2], 4096, "t-refuse").unwrap();
        let err = a.attach(1, b.segment_name()).unwrap_err();
        assert!(err.contains("has no ring for rank 0"), "{err}");
        let err = a.attach(2, b.segment_name()).unwrap_err();
        assert!(err.contains("belongs to rank 1"), "{err}");
        let c = ShmEndpoint::create(1, &[0], 1 << 20, "t-refuse2").unwrap();
        let err = a.attach(1, c.segment_name()).unwrap_err();
        assert!(err.contains("rings of"), "{err}");
        let names = [a.segment_name().to_string(), b.segment_name().to_string(), c.segment_name().to_string()];
        let t = a.connect(&[]).unwrap();
        drop((t, b, c));
        for n in names {
            assert!(!std::path::Path::new(super::super::segment::SHM_DIR).join(&n).exists(), "{n} left behind");
        }
    }

    #[test]
    fn a_malformed_record_takes_the_link_down() {
        let mut t = mesh(2, 4096, "t-bad");
        // A record that is not a frame: garbage where a header belongs.
        t[0].outbound[0].tx.push(&[&[0xAB; 70]]).unwrap();
        let mut events = Vec::new();
        t[1].progress(&mut events).unwrap();
        assert!(
            matches!(&events[..], [Event::LinkDown { peer: 0, reason }] if reason.contains("malformed")),
            "{events:?}"
        );
    }
}
