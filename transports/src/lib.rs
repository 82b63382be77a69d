//! kawarimi's transports.
//!
//! A transport moves whole frames (a [`wire::Header`] plus payload) between the ranks of a
//! job, reliably and in order per peer, and nothing else: matching, rendezvous and the switch
//! protocol are the runtime's. The runtime drives a transport through the [`Transport`] trait
//! and can drop it at any moment to release every device resource it holds (drop order is
//! teardown order).

pub mod auth;
pub mod bootstrap;
#[doc(hidden)]
pub mod fuzzing;
pub mod process;
pub mod routed;
pub mod shm;
pub mod sim;
pub mod tcp;
pub mod verbs;
pub mod wire;

use std::time::Duration;

/// A rank in `MPI_COMM_WORLD`: the only peer address the runtime knows.
pub type PeerId = u32;

/// Which mechanism carries a peer's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    Shm,
    Verbs,
    Tcp,
    Sim,
}

/// The bytes that follow a header.
///
/// `Static` lets the runtime send straight from an application buffer. Whoever builds one
/// promises that the memory stays valid and unmodified until the transport reports the frame
/// written ([`Transport::queued_bytes`] drops), which is what MPI's rules on send buffers
/// guarantee until the send request completes. (The runtime completes such a send only once
/// the peer has confirmed every frame of it, so the memory also outlives its own copy of the
/// frame, kept for a repair.)
#[derive(Debug)]
pub enum Payload {
    Empty,
    Owned(Vec<u8>),
    Static(&'static [u8]),
    /// `len` bytes at `start` of a buffer shared by several frames (the chunks of one
    /// rendezvous message), so that cutting a message into frames copies nothing.
    Shared {
        data: std::sync::Arc<Vec<u8>>,
        start: usize,
        len: usize,
    },
    /// A small payload held in place: a copy of it costs no allocation, where a small
    /// message would otherwise take two (its bytes, and the handle the sender keeps).
    Inline {
        len: u8,
        bytes: [u8; INLINE_BYTES],
    },
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        Payload::Owned(v)
    }
}

/// The largest payload [`Payload::copied`] holds inline.
pub const INLINE_BYTES: usize = 48;

impl Payload {
    /// A copy of `bytes`: inline when small, else owned.
    pub fn copied(bytes: &[u8]) -> Payload {
        if bytes.len() <= INLINE_BYTES {
            let mut inline = [0; INLINE_BYTES];
            inline[..bytes.len()].copy_from_slice(bytes);
            return Payload::Inline { len: bytes.len() as u8, bytes: inline };
        }
        Payload::Owned(bytes.to_vec())
    }

    /// Whether the bytes stay at their address when the payload is moved: what a transport
    /// that lets the peer read them from this process's memory needs. Not an inline payload,
    /// which moves with its handle.
    pub fn stays_put(&self) -> bool {
        !matches!(self, Payload::Inline { .. })
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Inline { len, bytes } => &bytes[..*len as usize],
            Payload::Empty => &[],
            Payload::Owned(v) => v,
            Payload::Static(s) => s,
            Payload::Shared { data, start, len } => &data[*start..*start + *len],
        }
    }

    /// The bytes as an owned vector (moved when owned, copied otherwise).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Owned(v) => v,
            other => other.as_slice().to_vec(),
        }
    }
    /// A second handle on the same bytes, for a sender that keeps what it sent: an owned
    /// payload becomes shared in place (moved, not copied); a `Static` one is the same
    /// reference again (its promise covers the sender's copy too, see [`Payload`]).
    pub fn share(&mut self) -> Payload {
        let data = match std::mem::replace(self, Payload::Empty) {
            Payload::Empty => return Payload::Empty,
            Payload::Owned(v) => std::sync::Arc::new(v),
            Payload::Static(s) => {
                *self = Payload::Static(s);
                return Payload::Static(s);
            }
            Payload::Inline { len, bytes } => {
                *self = Payload::Inline { len, bytes };
                return Payload::Inline { len, bytes };
            }
            Payload::Shared { data, start, len } => {
                *self = Payload::Shared { data: data.clone(), start, len };
                return Payload::Shared { data, start, len };
            }
        };
        let len = data.len();
        *self = Payload::Shared { data: data.clone(), start: 0, len };
        Payload::Shared { data, start: 0, len }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a transport reports from [`Transport::progress`].
#[derive(Debug)]
pub enum Event {
    /// A complete, validated frame from `peer`. A small payload arrives inline
    /// ([`Payload::Inline`], no allocation per frame), a larger one owned.
    Frame { peer: PeerId, header: wire::Header, payload: Payload },
    /// The link to `peer` failed or was closed by the other side; `reason` says how.
    LinkDown { peer: PeerId, reason: String },
    /// (Only after [`Transport::ask_placement`].) The payload of this frame from `peer` is
    /// about to be read from the peer's memory: the runtime answers with
    /// [`Transport::place`], naming where it should land or leaving it to the transport.
    Incoming { peer: PeerId, token: u64, header: wire::Header },
}

/// Where a payload should land: `len` bytes at `ptr` in the application's receive buffer,
/// which stays valid and untouched by the runtime until the frame is delivered.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: a placement is an address the runtime hands to its own transport; the memory is
// written only by the device, for the transport, while the runtime leaves that range alone,
// whichever thread drives the two.
unsafe impl Send for Placement {}

impl Placement {
    /// Its bytes, for the transport to write the payload into.
    pub(crate) fn bytes<'a>(self) -> &'a mut [u8] {
        // SAFETY: the runtime placed the payload in `len` bytes at `ptr` of a receive buffer
        // (a transport checks the length equal to the payload's when it takes the answer),
        // which nothing else touches until the frame is delivered.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("no connection to rank {peer}")]
    NoRoute { peer: PeerId },
    #[error("send queue to rank {peer} is full ({limit} bytes)")]
    QueueFull { peer: PeerId, limit: usize },
    #[error("link to rank {peer} is down: {reason}")]
    LinkDown { peer: PeerId, reason: String },
    #[error("malformed frame from rank {peer}: {source}")]
    Malformed { peer: PeerId, source: wire::WireError },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("bootstrap: {0}")]
    Bootstrap(String),
}

pub type TransportResult<T> = Result<T, TransportError>;

/// Wakes a thread sleeping in [`Transport::wait`] from another thread.
pub type Waker = std::sync::Arc<dyn Fn() + Send + Sync>;

/// A data-path transport between this rank and its peers.
///
/// Call order: `send` queues (never blocks); `progress` writes what it can and reads what has
/// arrived, appending events; `wait` sleeps until a descriptor is ready or the timeout ends,
/// so a rank blocked in `MPI_Wait` does not take a core from the others.
pub trait Transport: Send {
    fn kind(&self) -> TransportKind;
    /// Queues one frame for `peer`. Fails with `QueueFull` past the per-peer bound.
    fn send(&mut self, peer: PeerId, header: &wire::Header, payload: Payload) -> TransportResult<()>;
    /// As `send`, with the payload copied from `bytes` before it returns (a small message
    /// leaving from the application's buffer). A transport that can write the frame where it
    /// goes at once overrides this to save the copy into a payload of its own.
    fn send_copy(&mut self, peer: PeerId, header: &wire::Header, bytes: &[u8]) -> TransportResult<()> {
        self.send(peer, header, Payload::copied(bytes))
    }
    /// Non-blocking: flush queued frames, read arrived ones.
    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()>;
    /// Blocks until there is something to read or write, or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> TransportResult<()>;
    /// Bytes queued but not yet handed to the kernel/device, over all peers.
    fn queued_bytes(&self) -> usize;
    /// Something another thread can call to end a `wait` at once (the control thread uses
    /// it when a switch command arrives). `None`: `wait` only ends on data or timeout.
    fn waker(&self) -> Option<Waker> {
        None
    }
    /// What carries the data, for `ctl status`: the kind, or with several the kinds and how
    /// many peers each carries (`verbs:3+tcp:1`).
    fn summary(&self) -> String {
        format!("{:?}", self.kind()).to_lowercase()
    }
    /// Asks the transport to report payloads it reads from a peer before reading them
    /// ([`Event::Incoming`]), so that they can land in the application's buffer. A transport
    /// that reads nothing ignores it.
    fn ask_placement(&mut self) {}
    /// Answers an [`Event::Incoming`]: where its payload goes (`None`: into a buffer of the
    /// transport's, delivered in the frame as usual). Delivered with [`wire::FLAG_PLACED`]
    /// and no payload when placed.
    fn place(&mut self, _peer: PeerId, _token: u64, _at: Option<Placement>) -> TransportResult<()> {
        Ok(())
    }
    /// Frame bytes (headers included) handed to each kind of transport so far, best kind
    /// first; empty when the transport does not count them ([`routed::Routed`] does).
    fn sent_by_kind(&self) -> Vec<(TransportKind, u64)> {
        Vec::new()
    }
    /// Counts of the transport's own work, for people (`("registrations reused", 97)`);
    /// [`routed::Routed`] sums them by name. Empty when the transport counts nothing.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The collective slots this rank shares with its co-located peers (the shared-memory
    /// transport's, [`shm::slots`]); `None` where no peer shares memory with it.
    fn coll_slots(&self) -> Option<&shm::slots::CollSlots> {
        None
    }
    /// As [`Transport::wait`], and also returns once every member in `want` has published
    /// (a transport with slots checks it before it sleeps, and publishers wake it).
    fn wait_slots(&mut self, timeout: Duration, _want: &shm::slots::SlotWait<'_>) -> TransportResult<()> {
        self.wait(timeout)
    }
    /// The process of `peer` when this rank may read and write its memory directly: a
    /// co-located peer that the kernel lets it reach with `process_vm_readv`/`_writev`
    /// ([`process::copy_pieces`]). One-sided operations then copy straight between the two
    /// processes. `None` for a peer on another host, or where the kernel forbids it.
    fn peer_process(&self, _peer: PeerId) -> Option<u32> {
        None
    }
    /// Whether a frame this transport accepted for `peer` can be lost only with the peer's
    /// process or with memory the two share going corrupt, both the end of the pair: shared
    /// memory, whose rings live in the peer's segment. The runtime keeps no copy of such a
    /// frame for a repair (a network link can drop what it accepted and be repaired; this
    /// one cannot be).
    fn loses_no_accepted_frame(&self, _peer: PeerId) -> bool {
        false
    }
}
