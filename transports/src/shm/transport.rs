//! The shared-memory transport between co-located ranks.
//!
//! Each rank creates one segment ([`super::segment`]) holding its *inbound* rings, one per
//! co-located peer, and maps each peer's segment to produce into the ring the peer keeps for
//! it. A frame (header and payload) is one ring record; frames a full ring cannot take wait in
//! a bounded queue of the sender's and go at the next progress. The reader feeds each record
//! to the same [`FrameDecoder`] the stream transports use, so a frame is validated exactly as
//! one from TCP or verbs, and a record that is not exactly one frame takes the link down.
//!
//! Large payloads (from `single_copy_min_bytes`) cross in one copy where the kernel allows it:
//! the sender leaves the payload where it is (the application's buffer, or the runtime's) and
//! puts only its address in the ring ([`wire::FLAG_DESCRIBED`]); the receiver copies it
//! straight from the sender's memory into the receive buffer with `process_vm_readv`, after
//! asking the runtime where it goes ([`Event::Incoming`]). It then counts the read in a note
//! of the ring ([`ring::Consumer::set_note`]), and the sender lets go of payloads up to that
//! count. Whether this rank can read a peer is tried at wire-up on a probe word whose address
//! the peer's segment header gives; a peer it cannot read (ptrace forbidden, say) gets every
//! payload through the ring: two copies, pipelined in chunks by the runtime's rendezvous.
//!
//! Segment layout (`SEGMENT_HEADER_BYTES`, the collective slots of [`super::slots`], then the
//! rings):
//!
//! ```text
//!    0  magic "KWRMSHM1"     8  owner rank: u32   12  slots: u32   16  ring capacity: u64
//!   24  owner pid: u32      32  address of the owner's probe word, for single-copy reads: u64
//!   40  owner's start time (clock ticks after boot): u64
//!   64  doorbell: u32 (futex; producers bump it to wake a sleeping owner)
//!  128  sleeping: u32 (the owner sleeps on the doorbell)
//!  256  slot table: the rank of each slot's producer, u32 each
//! 4096  collective slots (`slots::REGION_BYTES`)
//!  ...  ring of slot 0, ring of slot 1, ...
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
use super::slots::{self, CollSlots, SlotWait};
use crate::wire::{self, FrameDecoder, Header, FLAG_DESCRIBED, HEADER_LEN};
use crate::{Event, Payload, PeerId, Placement, Transport, TransportError, TransportKind, TransportResult, Waker};

const MAGIC: &[u8; 8] = b"KWRMSHM1";
/// The segment's header, before the first ring (a page, so rings start page-aligned).
pub const SEGMENT_HEADER_BYTES: usize = 4096;
const OWNER_PID: usize = 24;
const PROBE_ADDR: usize = 32;
const OWNER_STARTED: usize = 40;
/// How often a rank that sleeps waiting for frames checks that its peers' processes still
/// run: a peer that died without closing anything (a ring has no end to close) would
/// otherwise leave it waiting forever.
const LIVENESS_EVERY: Duration = Duration::from_millis(100);
const DOORBELL: usize = 64;
const SLEEPING: usize = 128;
const SLOT_TABLE: usize = 256;
/// The most co-located peers one segment has rings for.
pub const MAX_SLOTS: usize = (SEGMENT_HEADER_BYTES - SLOT_TABLE) / 4;
/// Bytes a sender may hold queued for one peer whose ring is full before `send` refuses.
const QUEUE_LIMIT_BYTES: usize = 256 << 20;
/// Frames read from one peer per progress, so that one busy peer cannot starve the others.
const FRAMES_PER_PEER: usize = 64;
/// A frame whose payload is at least this large waits in the ring while the runtime is asked
/// where the payload goes, so that it is copied once, from the ring into the receive buffer,
/// rather than into a buffer of its own and then again. Below it, the extra round the answer
/// takes costs more than the copy it saves.
pub const PLACE_FROM_RING_MIN_BYTES: usize = 4096;
/// Ring notes (written by the ring's consumer, read by its producer): how many of the
/// producer's described payloads the consumer has finished reading (running count), and 1
/// once the consumer has read the producer's probe word, so single copy works between them.
const NOTE_READS_DONE: usize = 0;
const NOTE_CAN_READ: usize = 1;
/// What a peer reads at the address its segment header gives, to prove it can read this
/// process's memory.
static PROBE: [u8; 16] = *b"kawarimi-cma-ok!";

/// How large payloads cross between co-located ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Single copy to every peer whose memory this rank can read, two copies to the others.
    Auto,
    /// Single copy, and a wire-up that fails when some peer cannot be read.
    Single,
    /// Always through the rings.
    Two,
}

/// The shared-memory transport's tunables.
#[derive(Debug, Clone)]
pub struct ShmConfig {
    /// Largest frame (header included) a ring must carry.
    pub max_frame: usize,
    pub copy: CopyMode,
    /// Payloads of at least this many bytes go by single copy where it works.
    pub single_copy_min_bytes: usize,
}

impl ShmConfig {
    /// The defaults for frames of up to `max_frame` bytes, with the environment's overrides:
    /// `KAWARIMI_SHM_COPY` (`auto`, `single`, `two`) and `KAWARIMI_SHM_SINGLE_COPY_MIN_BYTES`.
    pub fn from_env(max_frame: usize) -> Result<ShmConfig, String> {
        let copy = match std::env::var("KAWARIMI_SHM_COPY").as_deref().map(str::trim) {
            Err(_) | Ok("auto") => CopyMode::Auto,
            Ok("single") => CopyMode::Single,
            Ok("two") => CopyMode::Two,
            Ok(other) => return Err(format!("KAWARIMI_SHM_COPY={other:?} is not auto, single or two")),
        };
        let single_copy_min_bytes = match std::env::var("KAWARIMI_SHM_SINGLE_COPY_MIN_BYTES") {
            // Below this the rings win on the machines measured: `process_vm_readv` costs a few
            // microseconds a call (it pins the peer's pages), and the ring's two copies of a
            // chunk run on both ranks' cores at once (docs/shm.md has the figures).
            Err(_) => 256 << 10,
            Ok(v) => {
                v.trim().parse().map_err(|_| format!("KAWARIMI_SHM_SINGLE_COPY_MIN_BYTES={v:?} is not a byte count"))?
            }
        };
        Ok(ShmConfig { max_frame, copy, single_copy_min_bytes: single_copy_min_bytes.max(1) })
    }
}

/// Where a described payload lies in the sender's memory: the ring carries this in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Described {
    addr: u64,
    len: u32,
}

impl Described {
    const LEN: usize = 16;

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN);
        b.extend_from_slice(&self.addr.to_le_bytes());
        b.extend_from_slice(&u64::from(self.len).to_le_bytes());
        b
    }

    /// Refused unless it is one and names a payload the wire allows.
    fn decode(payload: &[u8]) -> Result<Described, String> {
        if payload.len() != Self::LEN {
            return Err(format!("a payload description of {} bytes, not {}", payload.len(), Self::LEN));
        }
        let addr = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(payload[8..].try_into().expect("8 bytes"));
        if len == 0 || len > u64::from(wire::MAX_PAYLOAD_LEN) {
            return Err(format!("a payload description of {len} bytes of payload"));
        }
        Ok(Described { addr, len: len as u32 })
    }
}

/// Ring capacity for frames of up to `max_frame` bytes (header included): room for two, so a
/// sender can fill one while the reader drains the other.
pub fn ring_capacity(max_frame: usize) -> usize {
    (2 * (max_frame + 64)).next_power_of_two().max(4096)
}

/// Where the rings start: after the header and the collective slots.
const RINGS_AT: usize = SEGMENT_HEADER_BYTES + slots::REGION_BYTES;

fn segment_bytes(slots: usize, capacity: usize) -> usize {
    RINGS_AT + slots * ring::region_bytes(capacity)
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> TransportError {
    move |source| TransportError::Io { context, source }
}

/// The parts of a segment's header both ends use.
pub(crate) struct Bell<'a> {
    doorbell: &'a AtomicU32,
    pub(crate) sleeping: &'a AtomicU32,
}

pub(crate) fn bell(seg: &Segment) -> Bell<'_> {
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
    pub(crate) fn ring(&self) {
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
    config: ShmConfig,
    capacity: usize,
    /// The peers with a slot in `own`, slot order, and the consuming end of each one's ring
    /// (taken by `connect`). Declared before `own`: the ends go before the mapping.
    slots: Vec<PeerId>,
    rx: Vec<Option<Consumer>>,
    own: Segment,
    /// The peers' segments mapped so far: the slot of this rank's ring in each, and the
    /// peer's pid when this rank can read its memory (single copy).
    mapped: Vec<Mapped>,
    /// Why this rank cannot read some peers' memory.
    unreadable: Vec<(PeerId, String)>,
}

struct Mapped {
    peer: PeerId,
    seg: Segment,
    slot: usize,
    readable_pid: Option<u32>,
    /// The peer's process: pid and start time, to tell whether it still runs.
    owner: (u32, u64),
}

impl std::fmt::Debug for ShmEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmEndpoint").field("me", &self.me).field("segment", &self.own.name()).finish_non_exhaustive()
    }
}

impl ShmEndpoint {
    /// Creates rank `me`'s segment with a ring for each of `peers` (the co-located ranks);
    /// `tag` keeps segments of different wire-ups apart (an epoch).
    pub fn create(me: PeerId, peers: &[PeerId], config: ShmConfig, tag: &str) -> TransportResult<ShmEndpoint> {
        if peers.len() > MAX_SLOTS {
            return Err(TransportError::Bootstrap(format!(
                "{} co-located peers is more than one segment's {MAX_SLOTS}",
                peers.len()
            )));
        }
        let capacity = ring_capacity(config.max_frame);
        let own = Segment::create(&format!("r{me}-{tag}"), segment_bytes(peers.len(), capacity))
            .map_err(io(format!("shared-memory segment of rank {me}")))?;
        // SAFETY: the new segment's header page, which no other process has mapped yet.
        unsafe {
            let p = own.as_ptr();
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), p, 8);
            std::ptr::write(p.add(8) as *mut u32, me);
            std::ptr::write(p.add(12) as *mut u32, peers.len() as u32);
            std::ptr::write(p.add(16) as *mut u64, capacity as u64);
            std::ptr::write(p.add(OWNER_PID) as *mut u32, std::process::id());
            std::ptr::write(p.add(PROBE_ADDR) as *mut u64, PROBE.as_ptr() as u64);
            let started = crate::process::start_ticks(std::process::id()).unwrap_or(0);
            std::ptr::write(p.add(OWNER_STARTED) as *mut u64, started);
            for (i, &peer) in peers.iter().enumerate() {
                std::ptr::write(p.add(SLOT_TABLE + 4 * i) as *mut u32, peer);
            }
        }
        // SAFETY: slot `i`'s ring in this rank's segment, which `own` keeps mapped for as long
        // as the endpoint and then the transport (ends are dropped first, by field order);
        // this rank is its one consumer and `peers[i]` its one producer.
        let rx =
            (0..peers.len()).map(|i| Some(unsafe { ring::consumer(ring_base(&own, i, capacity), capacity) })).collect();
        Ok(ShmEndpoint {
            me,
            config,
            capacity,
            slots: peers.to_vec(),
            rx,
            own,
            mapped: Vec::new(),
            unreadable: Vec::new(),
        })
    }

    /// The name peers map this rank's segment by.
    pub fn segment_name(&self) -> &str {
        self.own.name()
    }

    /// Maps `peer`'s segment `name` and checks it is the segment rank `peer` made for this
    /// rank's frames: its magic, owner, ring size and a slot for this rank. Proof that the
    /// two processes share memory, not just a host name. Then, unless the copy mode is
    /// [`CopyMode::Two`], tries to read the peer's probe word from its memory, and tells the
    /// peer (a note in the ring it produces into) when that works: it then describes large
    /// payloads instead of copying them. Why it does not work is kept for
    /// [`ShmEndpoint::unreadable`].
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
        let read64 = |at: usize| {
            // SAFETY: as above.
            unsafe { std::ptr::read(header.as_ptr().add(at) as *const u64) }
        };
        // SAFETY: as above.
        let magic = unsafe { std::slice::from_raw_parts(header.as_ptr(), 8) };
        if magic != MAGIC {
            return Err(format!("segment {name} is not a kawarimi ring segment"));
        }
        let (owner, slots, capacity) = (read(8), read(12) as usize, read64(16) as usize);
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
        let (pid, probe, started) = (read(OWNER_PID), read64(PROBE_ADDR), read64(OWNER_STARTED));
        let readable_pid = match self.config.copy {
            CopyMode::Two => None,
            CopyMode::Auto | CopyMode::Single => match probe_peer(pid, probe) {
                Ok(()) => Some(pid),
                Err(why) => {
                    self.unreadable.push((peer, why));
                    None
                }
            },
        };
        if readable_pid.is_some() {
            if let Some(rx) = self.slots.iter().position(|&p| p == peer).and_then(|i| self.rx[i].as_ref()) {
                rx.set_note(NOTE_CAN_READ, 1);
            }
        }
        self.mapped.push(Mapped { peer, seg, slot, readable_pid, owner: (pid, started) });
        Ok(())
    }

    /// The peers whose memory this rank cannot read, and why: they get large payloads
    /// through the rings (an error for the wire-up when the copy mode is
    /// [`CopyMode::Single`]).
    pub fn unreadable(&self) -> &[(PeerId, String)] {
        &self.unreadable
    }

    /// An error naming the first peer this rank cannot read when single copy was forced
    /// ([`CopyMode::Single`]).
    pub fn check_single_copy(&self) -> Result<(), String> {
        match self.unreadable.first() {
            Some((peer, why)) if self.config.copy == CopyMode::Single => {
                Err(format!("single copy was forced, but rank {} cannot read rank {peer}'s memory: {why}", self.me))
            }
            _ => Ok(()),
        }
    }

    /// The transport to `peers` (those whose segments this rank mapped and that mapped this
    /// rank's: both ends must agree). Unlinks this rank's segment name: every peer that uses
    /// it has it mapped, and nothing of it then outlives the processes.
    pub fn connect(mut self, peers: &[PeerId]) -> TransportResult<ShmTransport> {
        self.own.unlink().map_err(io(format!("unlinking the segment of rank {}", self.me)))?;
        let mut inbound = Vec::new();
        for (slot, &peer) in self.slots.iter().enumerate() {
            let Some(m) = self.mapped.iter().find(|m| m.peer == peer) else { continue };
            if !peers.contains(&peer) {
                continue;
            }
            let rx = self.rx[slot].take().expect("each ring's end is taken once");
            inbound.push(Inbound {
                peer,
                rx,
                decoder: FrameDecoder::new(peer),
                readable_pid: m.readable_pid,
                owner: m.owner,
                gone: None,
                reads_done: 0,
                reading: None,
            });
        }
        let mut outbound = Vec::new();
        for Mapped { peer, seg, slot, .. } in self.mapped {
            if !peers.contains(&peer) {
                continue;
            }
            // SAFETY: the ring `peer` keeps for this rank in its segment, mapped by `seg` for
            // as long as the `Outbound` holding both; this rank is its one producer.
            let mut tx = unsafe { ring::producer(ring_base(&seg, slot, self.capacity), self.capacity) };
            // Traffic the peer keeps up with stays in the warm head of the ring.
            tx.rewind_when_idle_past(REWIND_PAST_BYTES);
            // The peer set the note in its attach, before the fence this rank passed since.
            let single_copy = self.config.copy != CopyMode::Two && tx.note(NOTE_CAN_READ) == 1;
            outbound.push(Outbound {
                peer,
                tx,
                queue: VecDeque::new(),
                queued_bytes: 0,
                single_copy,
                exposed: VecDeque::new(),
                exposed_bytes: 0,
                exposed_count: 0,
                seg: Arc::new(seg),
            });
        }
        inbound.sort_by_key(|i| i.peer);
        outbound.sort_by_key(|o| o.peer);
        // The ends of rings no peer connected go before the segment they point into.
        drop(std::mem::take(&mut self.rx));
        let own = Arc::new(self.own);
        let peer_segments = outbound.iter().map(|o| (o.peer, o.seg.clone())).collect();
        Ok(ShmTransport {
            me: self.me,
            config: self.config,
            slots: CollSlots::new(self.me, own.clone(), peer_segments),
            inbound,
            outbound,
            own,
            frame: Vec::new(),
            next_start: 0,
            ask_placement: false,
            liveness_checked: std::time::Instant::now(),
            next_token: 0,
            single_copy_reads: 0,
        })
    }
}

/// Reads `PROBE` at `addr` in process `pid`: whether this rank can read that peer's memory.
fn probe_peer(pid: u32, addr: u64) -> Result<(), String> {
    let mut got = [0u8; PROBE.len()];
    match crate::process::read_memory(pid, addr, &mut got) {
        Ok(()) if got == PROBE => Ok(()),
        Ok(()) => Err(format!("process {pid}'s probe word reads {got:?}")),
        Err(e) => Err(format!("process_vm_readv of process {pid}: {e}")),
    }
}

/// Past this offset a producer that finds its ring empty, or nearly, starts again at the ring's
/// head ([`ring::Producer::rewind_when_idle_past`]): traffic the consumer keeps up with then stays
/// on pages already faulted in and lines still in cache. Streamed through all 4 MiB of fresh
/// ring, each small message paid a page fault per page on every first pass (about 3.5 us a
/// fault here: a 32 KiB ping-pong took 28 us instead of 3.6), and populating whole rings at
/// wire-up instead made every switch allocate and free all of them.
const REWIND_PAST_BYTES: usize = 64 << 10;

fn ring_base(seg: &Segment, slot: usize, capacity: usize) -> *mut u8 {
    // SAFETY: inside the segment, sized for every slot by `segment_bytes`.
    unsafe { seg.as_ptr().add(RINGS_AT + slot * ring::region_bytes(capacity)) }
}

struct Inbound {
    peer: PeerId,
    rx: Consumer,
    decoder: FrameDecoder,
    /// The peer's pid, when this rank can read the peer's memory (single copy).
    readable_pid: Option<u32>,
    /// The peer's process (pid, start time), and why it is known to be gone: reported once
    /// as the link going down.
    owner: (u32, u64),
    gone: Option<Gone>,
    /// Described payloads of the peer's read so far (the running count in the ring's note).
    reads_done: u64,
    /// A described payload waiting for the runtime to say where it goes; the ring is not
    /// read past it, so frames stay in order.
    reading: Option<Reading>,
}

enum Gone {
    Unreported(String),
    Reported,
}

/// A payload waiting for the runtime to say where it goes.
struct Reading {
    /// The frame's header, with the payload's length.
    header: Header,
    from: Source,
    token: u64,
    target: Target,
}

enum Source {
    /// Described: in the peer's memory, read by single copy.
    Peer(Described),
    /// In the record at the front of the ring, which waits there.
    Ring,
}

/// Where a payload waiting in a [`Reading`] lands.
enum Target {
    /// The runtime has been asked and has not answered yet.
    Undecided,
    /// A buffer of the transport's, handed on in the frame.
    Own,
    /// The application's receive buffer, as the runtime said.
    User(Placement),
}

struct Outbound {
    peer: PeerId,
    tx: Producer,
    /// Frames the ring had no room for, in order.
    queue: VecDeque<([u8; HEADER_LEN], Payload)>,
    queued_bytes: usize,
    /// Whether the peer reads large payloads from this rank's memory.
    single_copy: bool,
    /// Described payloads the peer may still be reading, oldest first: kept unchanged until
    /// its note counts them read. `exposed_count` counts every payload ever described.
    exposed: VecDeque<Payload>,
    exposed_bytes: usize,
    exposed_count: u64,
    /// The peer's segment (shared with the collective slots); declared after `tx`, so it is
    /// unmapped after the ring end goes.
    seg: Arc<Segment>,
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

    /// Queues one frame, straight into the ring when nothing waits before it.
    fn put(&mut self, h: [u8; HEADER_LEN], payload: Payload) -> TransportResult<()> {
        if self.try_push(&h, payload.as_slice())? {
            return Ok(());
        }
        self.enqueue(h, payload)
    }

    /// As `put`, with the payload copied from `bytes` only when it must wait in the queue.
    fn put_copy(&mut self, h: [u8; HEADER_LEN], bytes: &[u8]) -> TransportResult<()> {
        if self.try_push(&h, bytes)? {
            return Ok(());
        }
        self.enqueue(h, Payload::copied(bytes))
    }

    /// Writes the frame into the ring if nothing waits before it and it fits now.
    fn try_push(&mut self, h: &[u8; HEADER_LEN], payload: &[u8]) -> TransportResult<bool> {
        if self.queue.is_empty() && self.tx.push(&[h, payload]).map_err(|e| self.down(e))? {
            self.nudge();
            return Ok(true);
        }
        Ok(false)
    }

    fn enqueue(&mut self, h: [u8; HEADER_LEN], payload: Payload) -> TransportResult<()> {
        if self.queued_bytes + HEADER_LEN + payload.len() > QUEUE_LIMIT_BYTES {
            return Err(TransportError::QueueFull { peer: self.peer, limit: QUEUE_LIMIT_BYTES });
        }
        self.queued_bytes += HEADER_LEN + payload.len();
        self.queue.push_back((h, payload));
        Ok(())
    }

    /// Lets go of the payloads the peer has finished reading.
    fn release_read(&mut self) -> TransportResult<()> {
        let done = self.tx.note(NOTE_READS_DONE);
        let released = self.exposed_count - self.exposed.len() as u64;
        if done < released || done > self.exposed_count {
            return Err(TransportError::LinkDown {
                peer: self.peer,
                reason: format!(
                    "the peer says it read {done} payloads of this rank's, with {released} read before and {} described",
                    self.exposed_count
                ),
            });
        }
        for _ in released..done {
            let p = self.exposed.pop_front().expect("counted above");
            self.exposed_bytes -= p.len();
        }
        Ok(())
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
    config: ShmConfig,
    /// The collective slots of this rank and of every peer it produces into.
    slots: CollSlots,
    // Rings before segments: fields drop in declaration order.
    inbound: Vec<Inbound>,
    outbound: Vec<Outbound>,
    own: Arc<Segment>,
    /// One record gathered from its two slices when it wraps.
    frame: Vec<u8>,
    /// The inbound ring read first next time, turning, for fairness.
    next_start: usize,
    /// Whether the runtime places described payloads ([`Transport::ask_placement`]).
    ask_placement: bool,
    /// When the peers' processes were last checked (see `LIVENESS_EVERY`).
    liveness_checked: std::time::Instant,
    /// Names the next [`Event::Incoming`].
    next_token: u64,
    single_copy_reads: u64,
}

impl std::fmt::Debug for ShmTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTransport").field("me", &self.me).field("peers", &self.inbound.len()).finish_non_exhaustive()
    }
}

/// What reading an inbound ring did.
#[derive(Default)]
struct Read {
    /// Described payloads read from the peer's memory: the peer may be waiting to let go.
    payloads: bool,
}

impl ShmTransport {
    fn anything_to_read(&mut self) -> bool {
        self.inbound.iter_mut().any(|i| {
            matches!(&i.reading, Some(Reading { target: Target::Own | Target::User(_), .. }))
                || matches!(i.gone, Some(Gone::Unreported(_)))
                || !matches!(i.rx.front(), Ok(None))
        })
    }

    /// Notes the peers whose processes are gone (at most every `LIVENESS_EVERY`, and only
    /// from `wait`, so the fast path never pays for it); the next progress reports each
    /// one's link down once it has read what the peer published.
    fn check_liveness(&mut self) {
        if self.liveness_checked.elapsed() < LIVENESS_EVERY {
            return;
        }
        self.liveness_checked = std::time::Instant::now();
        for inb in self.inbound.iter_mut().filter(|i| i.gone.is_none()) {
            let (pid, started) = inb.owner;
            if !crate::process::is_alive(pid, started) {
                let why = format!("the process of rank {} (pid {pid}) is gone, and its ring with it", inb.peer);
                inb.gone = Some(Gone::Unreported(why));
            }
        }
    }

    /// Sleeps on the doorbell until a frame comes, `want` (if any) is met, the waker rings, or
    /// `timeout` passes.
    fn wait_until(&mut self, timeout: Duration, want: Option<&SlotWait<'_>>) -> TransportResult<()> {
        if self.anything_to_read() || timeout.is_zero() || want.is_some_and(|w| self.slots.ready(w)) {
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
        if !self.anything_to_read() && !want.is_some_and(|w| self.slots.ready(w)) {
            futex_wait(b.doorbell, seen, timeout);
        }
        b.sleeping.store(0, Ordering::SeqCst);
        self.check_liveness();
        Ok(())
    }

    /// The peers whose memory this rank reads large payloads from.
    pub fn single_copy_peers(&self) -> Vec<PeerId> {
        self.inbound.iter().filter(|i| i.readable_pid.is_some()).map(|i| i.peer).collect()
    }

    /// Reads up to `FRAMES_PER_PEER` frames from inbound ring `k`, first finishing the read
    /// of a described payload the runtime has placed.
    fn read_from(&mut self, k: usize, events: &mut Vec<Event>) -> Read {
        let mut did = Read::default();
        let ask = self.ask_placement;
        let inb = &mut self.inbound[k];
        let peer = inb.peer;
        // What the peer published before it died is read first: frames after the last one
        // can never come.
        if matches!(inb.gone, Some(Gone::Unreported(_))) && matches!(inb.rx.front(), Ok(None)) {
            if let Some(Gone::Unreported(reason)) = inb.gone.replace(Gone::Reported) {
                events.push(Event::LinkDown { peer, reason });
            }
            return did;
        }
        for _ in 0..FRAMES_PER_PEER {
            if let Some(r) = &inb.reading {
                if matches!(r.target, Target::Undecided) {
                    return did;
                }
                let r = inb.reading.take().expect("just seen");
                let read = match r.from {
                    Source::Peer(from) => inb.read_payload(r.header, from, r.target, events).map(|()| {
                        self.single_copy_reads += 1;
                        did.payloads = true;
                    }),
                    Source::Ring => inb.take_placed(r.header, r.target, &mut self.frame, events),
                };
                if let Err(e) = read {
                    events.push(Event::LinkDown { peer, reason: e });
                    return did;
                }
                continue;
            }
            let (a, b) = match inb.rx.front() {
                Ok(Some(parts)) => parts,
                Ok(None) => return did,
                Err(e) => {
                    events.push(Event::LinkDown { peer, reason: format!("shared-memory ring: {e}") });
                    return did;
                }
            };
            if ask && b.is_empty() && a.len() >= HEADER_LEN + PLACE_FROM_RING_MIN_BYTES {
                // A large payload: the runtime is asked where it goes, and the record waits.
                // (A header the decoder would refuse goes on to it, which says why.)
                if let Ok(header) = inb.decoder.peek_header(a) {
                    if header.flags & FLAG_DESCRIBED == 0 && HEADER_LEN + header.payload_len as usize == a.len() {
                        let token = self.next_token;
                        self.next_token += 1;
                        events.push(Event::Incoming { peer, token, header });
                        inb.reading = Some(Reading { header, from: Source::Ring, token, target: Target::Undecided });
                        continue;
                    }
                }
            }
            let fed = decode_record(&mut inb.decoder, peer, a, b, &mut self.frame, events);
            inb.rx.consume();
            let described = match fed {
                Ok(described) => described,
                Err(reason) => {
                    events.push(Event::LinkDown { peer, reason });
                    return did;
                }
            };
            let Some((header, payload)) = described else { continue };
            let from = match Described::decode(payload.as_slice()) {
                Ok(_) if inb.readable_pid.is_none() => {
                    Err("a described payload from a peer whose memory this rank cannot read".into())
                }
                other => other,
            };
            let from = match from {
                Ok(from) => from,
                Err(e) => {
                    events.push(Event::LinkDown { peer, reason: format!("shared-memory ring: {e}") });
                    return did;
                }
            };
            let header = Header { flags: header.flags & !FLAG_DESCRIBED, payload_len: from.len, ..header };
            let token = self.next_token;
            self.next_token += 1;
            let target = if ask {
                events.push(Event::Incoming { peer, token, header });
                Target::Undecided
            } else {
                Target::Own
            };
            inb.reading = Some(Reading { header, from: Source::Peer(from), token, target });
        }
        did
    }
}

impl Inbound {
    /// Copies a described payload from the peer's memory where `r` says, counts it read for
    /// the peer, and delivers its frame.
    fn read_payload(
        &mut self,
        header: Header,
        from: Described,
        target: Target,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        let pid = self.readable_pid.expect("described payloads come only from readable peers");
        let len = from.len as usize;
        let mut own = Vec::new();
        let (dst, header) = match target {
            Target::User(at) => (at.bytes(), Header { flags: header.flags | wire::FLAG_PLACED, ..header }),
            Target::Own | Target::Undecided => {
                own = vec![0; len];
                (&mut own[..], header)
            }
        };
        crate::process::read_memory(pid, from.addr, dst)
            .map_err(|e| format!("single-copy read of {len} bytes from rank {}'s memory: {e}", self.peer))?;
        self.reads_done += 1;
        self.rx.set_note(NOTE_READS_DONE, self.reads_done);
        events.push(Event::Frame { peer: self.peer, header, payload: Payload::Owned(own) });
        Ok(())
    }

    /// Takes the frame whose record waited at the front of the ring (`header` peeked from it)
    /// now that the runtime has said where its payload goes: copied straight there, or
    /// decoded into a buffer of its own like any record.
    fn take_placed(
        &mut self,
        header: Header,
        target: Target,
        frame: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        let (a, b) = match self.rx.front() {
            Ok(Some(parts)) => parts,
            Ok(None) => return Err("a shared-memory record that waited for its placement is gone".into()),
            Err(e) => return Err(format!("shared-memory ring: {e}")),
        };
        let Target::User(at) = target else {
            let fed = decode_record(&mut self.decoder, self.peer, a, b, frame, events);
            self.rx.consume();
            return match fed? {
                None => Ok(()),
                Some(_) => Err("a described frame in the shared-memory ring waited for a placement".into()),
            };
        };
        at.bytes().copy_from_slice(&a[HEADER_LEN..]);
        // The decoder did not see this frame: it stays between frames, as it was.
        self.rx.consume();
        let header = Header { flags: header.flags | wire::FLAG_PLACED, ..header };
        events.push(Event::Frame { peer: self.peer, header, payload: Payload::Empty });
        Ok(())
    }
}

/// Decodes record `a` + `b` (its second part when it wraps), which must be exactly one frame
/// (refused otherwise), for the caller to consume: the frame goes into `events`, except a described one, which is
/// returned (its payload is the description). `frame` is scratch space for a record that
/// wraps.
fn decode_record(
    decoder: &mut FrameDecoder,
    peer: PeerId,
    a: &[u8],
    b: &[u8],
    frame: &mut Vec<u8>,
    events: &mut Vec<Event>,
) -> Result<Option<(Header, Payload)>, String> {
    let record = if b.is_empty() {
        a
    } else {
        frame.clear();
        frame.extend_from_slice(a);
        frame.extend_from_slice(b);
        frame
    };
    let (header, payload) =
        decoder.whole(record).map_err(|e| format!("malformed frame in the shared-memory ring: {e}"))?;
    if header.flags & FLAG_DESCRIBED != 0 {
        return Ok(Some((header, payload)));
    }
    events.push(Event::Frame { peer, header, payload });
    Ok(None)
}

/// The outbound ring to `peer`, `NoRoute` when shared memory does not carry it.
fn outbound_to(outbound: &mut [Outbound], peer: PeerId) -> TransportResult<&mut Outbound> {
    outbound.iter_mut().find(|o| o.peer == peer).ok_or(TransportError::NoRoute { peer })
}

impl Transport for ShmTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Shm
    }

    fn peer_process(&self, peer: PeerId) -> Option<u32> {
        // Reading is what start-up probed; writing needs the same permission (ptrace
        // attach), so the probe answers for both.
        self.inbound.iter().find(|i| i.peer == peer).and_then(|i| i.readable_pid)
    }

    fn loses_no_accepted_frame(&self, peer: PeerId) -> bool {
        // A frame is in the peer's ring, or in this rank's queue for it, until the peer takes
        // it; the link goes down only with a dead process or a corrupt ring.
        self.outbound.iter().any(|o| o.peer == peer)
    }

    fn send(&mut self, peer: PeerId, header: &Header, payload: Payload) -> TransportResult<()> {
        let out = outbound_to(&mut self.outbound, peer)?;
        if !(out.single_copy && payload.len() >= self.config.single_copy_min_bytes && payload.stays_put()) {
            return out.put(header.encode(), payload);
        }
        // The payload stays where it is (owned bytes on the heap, a `Static` buffer by its
        // promise) and unchanged in `exposed` until the peer has read it.
        let from = Described { addr: payload.as_slice().as_ptr() as u64, len: payload.len() as u32 };
        let described = Header { flags: header.flags | FLAG_DESCRIBED, payload_len: Described::LEN as u32, ..*header };
        out.put(described.encode(), Payload::Owned(from.encode()))?;
        out.exposed_bytes += payload.len();
        out.exposed_count += 1;
        out.exposed.push_back(payload);
        Ok(())
    }

    /// Straight into the ring when nothing waits before it; never described for a single
    /// copy (the bytes are the application's only until this returns).
    fn send_copy(&mut self, peer: PeerId, header: &Header, bytes: &[u8]) -> TransportResult<()> {
        outbound_to(&mut self.outbound, peer)?.put_copy(header.encode(), bytes)
    }

    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        for out in &mut self.outbound {
            if !out.exposed.is_empty() {
                out.release_read()?;
            }
            if !out.queue.is_empty() && out.flush()? {
                out.nudge();
            }
        }
        let n = self.inbound.len();
        // Rings from `next_start` round to just before it (no division: this runs every
        // round of a wait).
        for k in (self.next_start..n).chain(0..self.next_start) {
            if self.read_from(k, events).payloads {
                // A sender waiting to let go of its payloads (a drain) may be asleep.
                let peer = self.inbound[k].peer;
                if let Some(out) = self.outbound.iter().find(|o| o.peer == peer) {
                    out.nudge();
                }
            }
        }
        self.next_start += 1;
        if self.next_start >= n {
            self.next_start = 0;
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> TransportResult<()> {
        self.wait_until(timeout, None)
    }

    fn coll_slots(&self) -> Option<&CollSlots> {
        Some(&self.slots)
    }

    fn wait_slots(&mut self, timeout: Duration, want: &SlotWait<'_>) -> TransportResult<()> {
        self.wait_until(timeout, Some(want))
    }

    /// Frame bytes not yet in a ring, and payloads the peers have not finished reading: a
    /// drain must wait for both.
    fn queued_bytes(&self) -> usize {
        self.outbound.iter().map(|o| o.queued_bytes + o.exposed_bytes).sum()
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

    fn ask_placement(&mut self) {
        self.ask_placement = true;
    }

    fn place(&mut self, peer: PeerId, token: u64, at: Option<Placement>) -> TransportResult<()> {
        let what = || format!("placing payload {token} from rank {peer}");
        let reading = self.inbound.iter_mut().find(|i| i.peer == peer).and_then(|i| i.reading.as_mut());
        let Some(r) = reading.filter(|r| r.token == token && matches!(r.target, Target::Undecided)) else {
            return Err(TransportError::Io { context: what(), source: std::io::Error::other("no such read waits") });
        };
        r.target = match at {
            None => Target::Own,
            Some(at) if at.len == r.header.payload_len as usize => Target::User(at),
            Some(at) => {
                let why = format!("{} bytes offered for {}", at.len, r.header.payload_len);
                return Err(TransportError::Io { context: what(), source: std::io::Error::other(why) });
            }
        };
        Ok(())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("single-copy peers", self.single_copy_peers().len() as u64),
            ("single-copy reads", self.single_copy_reads),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameKind;

    fn config(max_frame: usize, copy: CopyMode) -> ShmConfig {
        ShmConfig { max_frame, copy, single_copy_min_bytes: 16 << 10 }
    }

    /// Ranks 0..n of one process, wired to each other through real segments, large payloads
    /// through the rings.
    fn mesh(n: u32, max_frame: usize, tag: &str) -> Vec<ShmTransport> {
        mesh_with(n, config(max_frame, CopyMode::Two), tag)
    }

    fn mesh_with(n: u32, config: ShmConfig, tag: &str) -> Vec<ShmTransport> {
        let mut eps: Vec<ShmEndpoint> = (0..n)
            .map(|r| {
                let peers: Vec<PeerId> = (0..n).filter(|&p| p != r).collect();
                ShmEndpoint::create(r, &peers, config.clone(), tag).unwrap()
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
                        assert_eq!(payload.as_slice(), want_p.as_slice());
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
        let mut a = ShmEndpoint::create(0, &[1], config(4096, CopyMode::Auto), "t-refuse").unwrap();
        let b = ShmEndpoint::create(1, &[2], config(4096, CopyMode::Auto), "t-refuse").unwrap();
        let err = a.attach(1, b.segment_name()).unwrap_err();
        assert!(err.contains("has no ring for rank 0"), "{err}");
        let err = a.attach(2, b.segment_name()).unwrap_err();
        assert!(err.contains("belongs to rank 1"), "{err}");
        let c = ShmEndpoint::create(1, &[0], config(1 << 20, CopyMode::Auto), "t-refuse2").unwrap();
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

    /// Drives `from` and `to` until `to` reports an event, and returns those events.
    fn next_events(t: &mut [ShmTransport], from: usize, to: usize) -> Vec<Event> {
        for _ in 0..1000 {
            let mut events = Vec::new();
            t[from].progress(&mut events).unwrap();
            assert!(events.is_empty(), "{events:?}");
            t[to].progress(&mut events).unwrap();
            if !events.is_empty() {
                return events;
            }
        }
        panic!("no event at rank {to}");
    }

    /// Large payloads cross by one copy from the sender's memory: into the buffer the runtime
    /// names when it places them, into the transport's own otherwise. The sender keeps each
    /// payload (counted as queued, so a drain waits) until the receiver has read it; small
    /// frames keep their order around the large ones.
    #[test]
    fn a_large_payload_is_read_from_the_senders_memory_where_the_runtime_places_it() {
        let mut t = mesh_with(2, config(64 << 10, CopyMode::Auto), "t-single");
        assert_eq!(t[1].single_copy_peers(), vec![0], "this process can read itself");
        t[1].ask_placement();
        let (h_big, p_big) = frame(0, 1, 200_000);
        let want = p_big.as_slice().to_vec();
        let (h_small, p_small) = frame(0, 2, 100);
        t[0].send(1, &h_big, p_big).unwrap();
        t[0].send(1, &h_small, p_small).unwrap();
        assert_eq!(t[0].queued_bytes(), 200_000, "the payload waits in the sender's memory");
        let events = next_events(&mut t, 0, 1);
        let [Event::Incoming { peer: 0, token, header }] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(header.payload_len, 200_000);
        assert_eq!(header.flags & FLAG_DESCRIBED, 0, "the transport's own flag is not the runtime's");
        let mut buf = vec![0u8; 200_000];
        t[1].place(0, *token, Some(Placement { ptr: buf.as_mut_ptr(), len: buf.len() })).unwrap();
        let events = next_events(&mut t, 0, 1);
        let [Event::Frame { header: placed, payload, .. }, Event::Frame { header: small, .. }] = events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert!(placed.flags & wire::FLAG_PLACED != 0 && payload.is_empty() && placed.seq == 1);
        assert_eq!(small.seq, 2, "the small frame after the large one, in order");
        assert_eq!(buf, want);
        t[0].progress(&mut Vec::new()).unwrap();
        assert_eq!(t[0].queued_bytes(), 0, "read, so let go");
        assert_eq!(t[1].counters()[1], ("single-copy reads", 1));

        // Not placed: the transport reads it into a buffer of its own.
        let (h_big, p_big) = frame(0, 3, 50_000);
        let want = p_big.as_slice().to_vec();
        t[0].send(1, &h_big, p_big).unwrap();
        let events = next_events(&mut t, 0, 1);
        let [Event::Incoming { token, .. }] = events.as_slice() else { panic!("{events:?}") };
        t[1].place(0, *token, None).unwrap();
        let err = t[1].place(0, *token, None).unwrap_err();
        assert!(err.to_string().contains("no such read waits"), "{err}");
        let events = next_events(&mut t, 0, 1);
        let [Event::Frame { header, payload, .. }] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!((header.flags & wire::FLAG_PLACED, payload.as_slice()), (0, want.as_slice()));
    }

    /// A payload of [`PLACE_FROM_RING_MIN_BYTES`] or more that crosses in the ring waits
    /// there while the runtime is asked where it goes, and the frames behind it wait too:
    /// placed, it is copied from the ring straight into the buffer given, and its frame comes
    /// flagged and empty; not placed, it comes as any frame does. A smaller payload is not
    /// asked about.
    #[test]
    fn a_large_payload_in_the_ring_waits_there_for_its_placement() {
        let mut t = mesh(2, 64 << 10, "t-ring-place");
        t[1].ask_placement();
        let big = PLACE_FROM_RING_MIN_BYTES + 100;
        let (h_big, p_big) = frame(0, 1, big);
        let want = p_big.as_slice().to_vec();
        let (h_small, p_small) = frame(0, 2, PLACE_FROM_RING_MIN_BYTES - 1);
        t[0].send(1, &h_big, p_big).unwrap();
        t[0].send(1, &h_small, p_small).unwrap();
        let events = next_events(&mut t, 0, 1);
        let [Event::Incoming { peer: 0, token, header }] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!((header.seq, header.payload_len), (1, big as u32), "the frame behind it waits");
        let mut events = Vec::new();
        for _ in 0..3 {
            t[1].progress(&mut events).unwrap();
        }
        assert!(events.is_empty(), "nothing moves before the answer: {events:?}");
        let mut buf = vec![0u8; big];
        t[1].place(0, *token, Some(Placement { ptr: buf.as_mut_ptr(), len: big })).unwrap();
        let events = next_events(&mut t, 0, 1);
        let [Event::Frame { header: placed, payload, .. }, Event::Frame { header: small, payload: p_small, .. }] =
            events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert!(placed.flags & wire::FLAG_PLACED != 0 && payload.is_empty() && placed.seq == 1, "{placed}");
        assert_eq!(placed.payload_len, big as u32, "the placed frame still says how long its payload was");
        assert_eq!(buf, want, "the payload is in the buffer given");
        assert_eq!((small.seq, p_small.len()), (2, PLACE_FROM_RING_MIN_BYTES - 1), "then the frame behind it");

        // Not placed: it comes with its bytes.
        let (h_big, p_big) = frame(0, 3, big);
        let want = p_big.as_slice().to_vec();
        t[0].send(1, &h_big, p_big).unwrap();
        let events = next_events(&mut t, 0, 1);
        let [Event::Incoming { token, .. }] = events.as_slice() else { panic!("{events:?}") };
        t[1].place(0, *token, None).unwrap();
        let events = next_events(&mut t, 0, 1);
        let [Event::Frame { header, payload, .. }] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!((header.seq, header.flags & wire::FLAG_PLACED), (3, 0));
        assert_eq!(payload.as_slice(), want.as_slice());

        // A placement of the wrong length is refused, and the record still waits.
        let (h_big, p_big) = frame(0, 4, big);
        t[0].send(1, &h_big, p_big).unwrap();
        let events = next_events(&mut t, 0, 1);
        let [Event::Incoming { token, .. }] = events.as_slice() else { panic!("{events:?}") };
        let err = t[1].place(0, *token, Some(Placement { ptr: buf.as_mut_ptr(), len: big - 1 })).unwrap_err();
        assert!(err.to_string().contains("bytes offered for"), "{err}");
        t[1].place(0, *token, None).unwrap();
        let events = next_events(&mut t, 0, 1);
        assert!(matches!(events.as_slice(), [Event::Frame { header, .. }] if header.seq == 4), "{events:?}");
    }

    /// An inline payload moves with its handle, so it is never described, whatever the
    /// threshold: it crosses in the ring, intact.
    #[test]
    fn an_inline_payload_is_copied_into_the_ring_even_when_everything_else_is_described() {
        let mut t = mesh_with(2, ShmConfig { single_copy_min_bytes: 1, ..config(4096, CopyMode::Single) }, "t-inline");
        t[1].ask_placement();
        let (h, _) = frame(0, 1, 40);
        let p = Payload::copied(&[7; 40]);
        assert!(!p.stays_put());
        t[0].send(1, &h, p).unwrap();
        assert_eq!(t[0].queued_bytes(), 0, "nothing exposed");
        let events = next_events(&mut t, 0, 1);
        assert!(
            matches!(events.as_slice(), [Event::Frame { payload, .. }] if payload.as_slice() == [7; 40]),
            "{events:?}"
        );
    }

    /// Copy mode `two`, or a peer whose memory cannot be read: every payload goes through
    /// the rings, and forcing single copy then is an error that names the peer.
    #[test]
    fn a_peer_that_cannot_be_read_gets_its_payloads_through_the_ring() {
        let mut t = mesh_with(2, config(64 << 10, CopyMode::Two), "t-two");
        assert!(t[1].single_copy_peers().is_empty());
        let (h, p) = frame(0, 1, 60_000);
        let want = p.as_slice().to_vec();
        t[0].send(1, &h, p).unwrap();
        let events = next_events(&mut t, 0, 1);
        assert!(
            matches!(events.as_slice(), [Event::Frame { payload, .. }] if payload.as_slice() == want),
            "{events:?}"
        );

        for copy in [CopyMode::Auto, CopyMode::Single] {
            let mut a = ShmEndpoint::create(0, &[1], config(4096, copy), "t-unreadable").unwrap();
            let b = ShmEndpoint::create(1, &[0], config(4096, copy), "t-unreadable").unwrap();
            // Rank 1's header names a process that does not exist.
            // SAFETY: rank 1's header page, which no one else reads or writes now.
            unsafe { std::ptr::write(b.own.as_ptr().add(OWNER_PID) as *mut u32, u32::MAX / 2) };
            a.attach(1, b.segment_name()).unwrap();
            assert_eq!(a.unreadable().len(), 1);
            assert!(a.unreadable()[0].1.contains("process_vm_readv of process"), "{:?}", a.unreadable());
            let forced = a.check_single_copy();
            match copy {
                CopyMode::Single => {
                    let e = forced.unwrap_err();
                    assert!(e.contains("single copy was forced, but rank 0 cannot read rank 1's memory"), "{e}");
                }
                _ => forced.unwrap(),
            }
        }
    }

    /// A peer whose process is gone is noticed by a rank that waits for frames (a ring has
    /// no end that closes): what it published is still delivered, then its link goes down,
    /// once, naming it.
    #[test]
    fn a_peer_whose_process_is_gone_takes_its_link_down_after_its_last_frame() {
        let config = config(4096, CopyMode::Two);
        let mut a = ShmEndpoint::create(0, &[1], config.clone(), "t-gone").unwrap();
        let mut b = ShmEndpoint::create(1, &[0], config, "t-gone").unwrap();
        // Rank 1's header names a process that does not exist: rank 0 sees it as gone.
        // SAFETY: rank 1's header page, which no one else reads or writes now.
        unsafe { std::ptr::write(b.own.as_ptr().add(OWNER_PID) as *mut u32, u32::MAX / 2) };
        let (na, nb) = (a.segment_name().to_string(), b.segment_name().to_string());
        a.attach(1, &nb).unwrap();
        b.attach(0, &na).unwrap();
        let (mut a, mut b) = (a.connect(&[1]).unwrap(), b.connect(&[0]).unwrap());
        let (h, p) = frame(1, 1, 10);
        b.send(0, &h, p).unwrap();
        let mut events = Vec::new();
        let start = std::time::Instant::now();
        while !events.iter().any(|e| matches!(e, Event::LinkDown { .. })) {
            assert!(start.elapsed() < Duration::from_secs(10), "the dead peer was never noticed: {events:?}");
            a.wait(Duration::from_millis(20)).unwrap();
            a.progress(&mut events).unwrap();
        }
        assert!(matches!(&events[0], Event::Frame { peer: 1, .. }), "the last frame first: {events:?}");
        let downs: Vec<_> = events.iter().filter(|e| matches!(e, Event::LinkDown { .. })).collect();
        assert!(
            matches!(downs.as_slice(), [Event::LinkDown { peer: 1, reason }] if reason.contains("rank 1") && reason.contains("is gone")),
            "{downs:?}"
        );
        for _ in 0..10 {
            a.wait(Duration::from_millis(20)).unwrap();
            let mut more = Vec::new();
            a.progress(&mut more).unwrap();
            assert!(more.is_empty(), "reported once: {more:?}");
        }
        // The live side is never reported.
        b.wait(Duration::from_millis(150)).unwrap();
        let mut theirs = Vec::new();
        b.progress(&mut theirs).unwrap();
        assert!(theirs.is_empty(), "{theirs:?}");
    }

    /// A peer that describes a payload to a rank that said it cannot read it, or that claims
    /// more reads than were described, takes its link down.
    #[test]
    fn described_payloads_and_read_counts_from_a_broken_peer_are_refused() {
        let mut t = mesh_with(2, config(64 << 10, CopyMode::Two), "t-lie");
        let (mut h, _) = frame(0, 1, 0);
        h.flags |= FLAG_DESCRIBED;
        h.payload_len = Described::LEN as u32;
        let d = Described { addr: 4096, len: 100 }.encode();
        t[0].outbound[0].put(h.encode(), Payload::Owned(d)).unwrap();
        let events = next_events(&mut t, 0, 1);
        assert!(
            matches!(&events[..], [Event::LinkDown { peer: 0, reason }] if reason.contains("cannot read")),
            "{events:?}"
        );

        let mut t = mesh_with(2, config(64 << 10, CopyMode::Auto), "t-lie2");
        t[1].inbound[0].rx.set_note(NOTE_READS_DONE, 3);
        let (h, p) = frame(0, 1, 20_000);
        t[0].send(1, &h, p).unwrap();
        let err = t[0].progress(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("says it read 3 payloads"), "{err}");
        assert!(Described::decode(&[0; 15]).is_err() && Described::decode(&[0; 16]).is_err());
    }
}
