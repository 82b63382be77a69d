//! The verbs transport on a device: one reliable-connected queue pair per peer, each with
//! `slots` receive buffers kept posted and as many send buffers, one completion queue polled
//! by `progress`, and a credit word per peer that the peer writes by RDMA (see
//! [`super::channel`], which makes every decision; this file only posts and polls).
//!
//! Set-up is two steps, because the peers' queue-pair numbers are only known once every rank
//! has created its own: [`VerbsEndpoint::open`] creates everything and posts the receive
//! buffers; its [`VerbsEndpoint::address_for`] each peer goes through the wire-up; then
//! [`VerbsEndpoint::connect`] takes the peers' addresses and moves every queue pair to
//! ready-to-send.
//!
//! Dropping the transport is the detach: queue pairs go first, then the completion queue, the
//! memory registrations, the buffers, the protection domain and last the device context, so
//! afterwards no uverbs descriptor is open ([`super::open_uverbs_fds`]).
//!
//! Files: this one holds the sizes, addresses, buffers and resources; `endpoint.rs` opens
//! the device and connects; `transport.rs` is the transport that posts and polls.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sideway::ibverbs::address::{AddressHandleAttribute, Gid};
use sideway::ibverbs::completion::{
    BasicCompletionQueue, CompletionChannel, CompletionQueue, GenericCompletionQueue, WorkCompletionStatus,
};
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::{DeviceContext, Mtu};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{
    ExtendedQueuePair, ModifyQueuePairErrorKind, PostRecvError, PostSendGuard, QueuePair, QueuePairAttribute,
    QueuePairState, SetScatterGatherEntry, WorkRequestFlags,
};
use sideway::ibverbs::AccessFlags;

use super::channel::{Channel, CreditWord};
use super::memory;
use super::regcache::{Access, RegCache};
use super::{Fabric, VerbsPort};
use crate::{wire, Event, Payload, PeerId, Placement, Transport, TransportError, TransportKind, TransportResult};

/// Sizes of the transport.
#[derive(Debug, Clone, Copy)]
pub struct VerbsConfig {
    /// Receive (and send) buffers per peer.
    pub slots: u32,
    /// Bytes of each buffer: the largest message.
    pub slot_bytes: usize,
    /// Frame bytes that may wait for credits per peer before `send` answers `QueueFull`.
    pub queue_limit_bytes: usize,
    /// Payloads of at least this many bytes are not copied through the buffers: the peer
    /// reads them by RDMA read from where they are (registered for the purpose).
    pub read_min_bytes: usize,
    /// Payloads one peer may be reading at once (each holds a memory registration); past it
    /// large payloads go through the buffers.
    pub max_exposed: usize,
    /// Registrations of stable memory kept for use again ([`super::regcache`]), and the
    /// memory they may pin together (further bounded by half of `RLIMIT_MEMLOCK`).
    pub cache_max_entries: usize,
    pub cache_max_bytes: usize,
    /// How long a queue pair waits for the peer's device to acknowledge a request before it
    /// sends it again (7 times, then the request fails). The device rounds it up to
    /// 4.096 us x 2^n ([`VerbsConfig::ack_timeout_exponent`]). Default 67 ms (n = 14);
    /// `KAWARIMI_VERBS_ACK_TIMEOUT_MS` sets it. Emulated guests, whose acknowledgements can
    /// lag by more than that, want longer: every needless retransmission is work for a slow
    /// device, and Soft-RoCE's retransmission paths are where it has been seen to wedge.
    pub ack_timeout: Duration,
    /// A peer whose device completes none of this side's posted work requests for this long
    /// is down. The queue pairs' own bound (the ack timeout, 7 retries: about 0.5 s by
    /// default) ends such requests with an error on a hardware HCA, but Soft-RoCE (Linux 6.1)
    /// retransmits to a vanished peer for ever; with the keep-alive an idle peer always has a
    /// request posted. Default 5 s; `KAWARIMI_VERBS_STALL_MS` ([`VerbsConfig::from_env`])
    /// sets it, e.g. longer for emulated guests on a loaded host, whose devices can pause for
    /// seconds.
    pub stall_after: Duration,
}

impl Default for VerbsConfig {
    fn default() -> VerbsConfig {
        VerbsConfig {
            slots: 32,
            slot_bytes: 16 << 10,
            queue_limit_bytes: 64 << 20,
            read_min_bytes: 64 << 10,
            max_exposed: 16,
            cache_max_entries: 128,
            cache_max_bytes: 1 << 30,
            ack_timeout: Duration::from_micros(4096 * (1 << 14) / 1000),
            stall_after: Duration::from_secs(5),
        }
    }
}

impl VerbsConfig {
    /// The defaults with the environment's overrides: `KAWARIMI_VERBS_STALL_MS` and
    /// `KAWARIMI_VERBS_ACK_TIMEOUT_MS`.
    pub fn from_env() -> Result<VerbsConfig, String> {
        let mut c = VerbsConfig::default();
        if let Some(ms) = positive_ms_from_env("KAWARIMI_VERBS_STALL_MS")? {
            c.stall_after = Duration::from_millis(ms);
        }
        if let Some(ms) = positive_ms_from_env("KAWARIMI_VERBS_ACK_TIMEOUT_MS")? {
            c.ack_timeout = Duration::from_millis(ms);
            if c.ack_timeout > MAX_ACK_TIMEOUT {
                return Err(format!("KAWARIMI_VERBS_ACK_TIMEOUT_MS={ms} is more than a device can wait (8796093 ms)"));
            }
        }
        Ok(c)
    }

    /// Requests one queue pair may have on its send queue: a message per send buffer, and
    /// room for credit writes and reads beside them.
    pub fn send_queue_depth(&self) -> u32 {
        self.slots + 4
    }

    /// Receives one queue pair keeps posted: one per receive buffer, and one spare.
    pub fn recv_queue_depth(&self) -> u32 {
        self.slots + 1
    }

    /// The queue pair's timeout attribute: the least n in 1..=31 with 4.096 us x 2^n at least
    /// [`VerbsConfig::ack_timeout`] (0 would mean "wait for ever", which no setting asks for).
    pub fn ack_timeout_exponent(&self) -> u8 {
        let ns = self.ack_timeout.as_nanos();
        (1u8..=31).find(|&n| 4096u128 << n >= ns).unwrap_or(31)
    }
}

/// The longest ack timeout a queue pair can hold: 4.096 us x 2^31.
const MAX_ACK_TIMEOUT: Duration = Duration::from_nanos(4096 << 31);

/// A positive count of milliseconds from the environment variable `name`, if it is set.
fn positive_ms_from_env(name: &str) -> Result<Option<u64>, String> {
    let Ok(v) = std::env::var(name) else { return Ok(None) };
    match v.trim().parse::<u64>() {
        Ok(0) => Err(format!("{name} must be more than 0")),
        Ok(ms) => Ok(Some(ms)),
        Err(_) => Err(format!("{name}={v:?} is not milliseconds")),
    }
}

/// What a peer needs to connect its queue pair for this rank to this rank's queue pair for
/// it: travels through the wire-up as text ([`QpAddress::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpAddress {
    pub lid: u16,
    pub gid: [u8; 16],
    pub qpn: u32,
    pub psn: u32,
    /// Where the peer writes its credit count for this rank, and the key to do it.
    pub credit_addr: u64,
    pub credit_rkey: u32,
}

impl QpAddress {
    /// `lid:gid(hex):qpn:psn:credit_addr:credit_rkey`, every number in hex.
    pub fn encode(&self) -> String {
        let gid: String = self.gid.iter().map(|b| format!("{b:02x}")).collect();
        format!("{:x}:{gid}:{:x}:{:x}:{:x}:{:x}", self.lid, self.qpn, self.psn, self.credit_addr, self.credit_rkey)
    }

    pub fn decode(s: &str) -> Result<QpAddress, String> {
        let bad = || format!("malformed verbs address {s:?}");
        let f: Vec<&str> = s.split(':').collect();
        if f.len() != 6 || f[1].len() != 32 {
            return Err(bad());
        }
        let mut gid = [0u8; 16];
        for (i, b) in gid.iter_mut().enumerate() {
            *b = u8::from_str_radix(&f[1][2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(QpAddress {
            lid: u16::from_str_radix(f[0], 16).map_err(|_| bad())?,
            gid,
            qpn: u32::from_str_radix(f[2], 16).map_err(|_| bad())?,
            psn: u32::from_str_radix(f[3], 16).map_err(|_| bad())? & 0xff_ffff,
            credit_addr: u64::from_str_radix(f[4], 16).map_err(|_| bad())?,
            credit_rkey: u32::from_str_radix(f[5], 16).map_err(|_| bad())?,
        })
    }
}

/// Kinds of work request, in the top byte of its id; the peer's index and the buffer follow.
const WR_RECV: u64 = 1;
const WR_SEND: u64 = 2;
const WR_CREDIT: u64 = 3;
const WR_READ: u64 = 4;

/// In a frame's header flags: the payload is not in the stream but a [`ReadDescriptor`] of
/// where the peer may read it.
const FLAG_READ: u32 = wire::FLAG_DESCRIBED;
/// Bytes of a credit word: re-posted buffers, then payloads read (two running counts).
const CREDIT_WORD_LEN: usize = 8;

/// Where a payload lies in the sender's memory, for the receiver's RDMA read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReadDescriptor {
    addr: u64,
    rkey: u32,
    len: u32,
}

impl ReadDescriptor {
    const LEN: usize = 16;

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN);
        b.extend_from_slice(&self.addr.to_le_bytes());
        b.extend_from_slice(&self.rkey.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b
    }

    /// The descriptor a frame carries, refused unless it is one and names a payload the
    /// wire allows.
    fn decode(payload: &[u8]) -> Result<ReadDescriptor, String> {
        if payload.len() != Self::LEN {
            return Err(format!("read descriptor of {} bytes, not {}", payload.len(), Self::LEN));
        }
        let d = ReadDescriptor {
            addr: u64::from_le_bytes(payload[..8].try_into().expect("8 bytes")),
            rkey: u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes")),
            len: u32::from_le_bytes(payload[12..16].try_into().expect("4 bytes")),
        };
        if d.len == 0 || d.len > wire::MAX_PAYLOAD_LEN {
            return Err(format!("read descriptor of {} bytes of payload", d.len));
        }
        Ok(d)
    }
}

/// A payload the peer may be reading: registered, held unchanged until the peer says it has
/// read it. (The registration is dropped before the memory: field order.) The peer's report
/// of the read reaches this side before its confirmation of the frame does (see
/// `post_peer`), so a send from the application's buffer is let go here before the runtime
/// completes it.
struct Exposed {
    _mr: Arc<MemoryRegion>,
    payload: Payload,
}

/// A frame from the peer, in arrival order: ready, or with its payload still to be read.
enum Arrival {
    Ready(wire::Header, Payload),
    Reading(Reading),
}

/// A payload being read from the peer (into memory registered by `mr` once posted).
struct Reading {
    mr: Option<Arc<MemoryRegion>>,
    target: Target,
    header: wire::Header,
    from: ReadDescriptor,
    /// Names it in [`Event::Incoming`] and [`Transport::place`].
    token: u64,
    done: bool,
}

/// Where a payload read from the peer lands.
enum Target {
    /// The runtime has been asked and has not answered yet: not read until it does.
    Undecided,
    /// A buffer of the transport's, handed on in the frame.
    Own(Vec<u8>),
    /// The application's receive buffer, as the runtime said.
    User(Placement),
}

fn wr_id(kind: u64, peer_index: usize, slot: usize) -> u64 {
    (kind << 56) | ((peer_index as u64) << 24) | slot as u64
}

fn split_wr_id(id: u64) -> (u64, usize, usize) {
    (id >> 56, ((id >> 24) & 0xffff_ffff) as usize, (id & 0xff_ffff) as usize)
}

/// A page-aligned, zeroed buffer the device reads and writes; freed only after the memory
/// registration on it (field order in [`Resources`]).
struct DeviceBuffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by one transport, used from one thread at a time.
unsafe impl Send for DeviceBuffer {}

impl DeviceBuffer {
    fn new(len: usize) -> TransportResult<DeviceBuffer> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 4096)
            .map_err(|e| io_error("buffer layout", std::io::Error::other(e)))?;
        // SAFETY: a non-zero size with a valid alignment.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io_error("buffer allocation", std::io::Error::from(std::io::ErrorKind::OutOfMemory)));
        }
        Ok(DeviceBuffer { ptr, len })
    }

    fn addr(&self, offset: usize) -> u64 {
        self.ptr as u64 + offset as u64
    }

    fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset + len <= self.len);
        // SAFETY: in bounds of the allocation; the device writes a receive buffer only while
        // it is posted, and a completed one is read here before it is posted again.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) }
    }

    fn slice_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset + len <= self.len);
        // SAFETY: in bounds; a send buffer is written only while no send of it is posted.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
    }

    /// The word at `offset`, which the peer writes by RDMA at any time.
    fn read_word(&self, offset: usize) -> u32 {
        assert!(offset + 4 <= self.len && offset.is_multiple_of(4));
        // SAFETY: aligned and in bounds; volatile because the device writes it behind the
        // compiler's back (a torn read cannot happen for an aligned 4-byte RDMA write).
        unsafe { std::ptr::read_volatile(self.ptr.add(offset) as *const u32) }
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len.max(1), 4096).expect("checked at allocation");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

/// A registration of `range` for `access`: kept by `cache` where the memory is stable
/// ([`memory::is_stable`]), else made for this use.
fn registration(
    cache: &mut RegCache<Arc<MemoryRegion>>,
    pd: &Arc<ProtectionDomain>,
    range: Range<usize>,
    access: Access,
) -> Result<Arc<MemoryRegion>, String> {
    let flags = match access {
        Access::RemoteRead => AccessFlags::RemoteRead,
        Access::LocalWrite => AccessFlags::LocalWrite,
    };
    let stable = memory::is_stable(&range);
    cache.get(range, access, stable, |pages| {
        // SAFETY: whole pages around memory the caller is using, so mapped. The device writes
        // registered memory only where a posted read says, and reads it only for a peer's
        // read of a payload in it; a registration kept after its use pins the pages, which
        // stay the process's (and the cache drops it once they are given back).
        unsafe { pd.reg_mr(pages.start, pages.len(), flags) }.map_err(|e| e.to_string())
    })
}

/// What the cache may pin: the configured bound, and at most half of what the process may
/// lock, the rest being for the buffers and the payloads in flight.
fn cache_max_bytes(config: &VerbsConfig) -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct passed.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    // SAFETY: geteuid has no preconditions. (The kernel does not hold root, which has
    // CAP_IPC_LOCK, to the limit when it pins memory for a registration.)
    let root = unsafe { libc::geteuid() } == 0;
    let lockable = match got {
        0 if !root && limit.rlim_cur != libc::RLIM_INFINITY => {
            usize::try_from(limit.rlim_cur / 2).unwrap_or(usize::MAX)
        }
        _ => usize::MAX,
    };
    config.cache_max_bytes.min(lockable)
}

fn io_error(context: &str, source: std::io::Error) -> TransportError {
    TransportError::Io { context: context.to_string(), source }
}

fn verbs_error(context: String, e: impl std::fmt::Display) -> TransportError {
    TransportError::Io { context, source: std::io::Error::other(e.to_string()) }
}

/// How long `wait` sleeps when it cannot sleep on completion events.
const SHORT_WAIT: Duration = Duration::from_micros(50);
/// The longest sleep on completion events.
const LONGEST_WAIT: Duration = Duration::from_millis(5);
/// After this long without a completion, every idle peer gets its credit word written again:
/// a rank that only waits posts nothing, and a link that died under it would never show.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);

/// One peer: its queue pair, its channel, and the send buffers that are free.
struct PeerQp {
    peer: PeerId,
    qp: ExtendedQueuePair,
    channel: Channel,
    free_send: Vec<usize>,
    /// Send-queue entries in use (sends and credit writes not yet completed).
    sq_used: u32,
    /// When the peer's device last completed a request of ours, or when one was posted with
    /// none in flight: what [`VerbsConfig::stall_after`] is measured from.
    last_progress: Instant,
    /// Where to write this rank's credit count in the peer's memory.
    remote_credit: Option<(u64, u32)>,
    down: bool,
    /// A credit write is in flight (its source word must not change until it completes).
    credit_in_flight: bool,
    /// Receive buffers waiting to be posted again: the device can report a receive queue full
    /// for a moment after the completion that freed an entry (Soft-RoCE does), so a failed
    /// post is retried at the next progress rather than failing the link.
    unposted: Vec<usize>,
    /// Connected (a peer the wire-up gave to another transport keeps its idle queue pair
    /// until the transport is dropped).
    active: bool,
    /// This side's payloads the peer may be reading, oldest first (it reads in order).
    exposed: VecDeque<Exposed>,
    exposed_bytes: usize,
    /// Frames from the peer not yet handed on: a frame waits for the reads before it.
    arrivals: VecDeque<Arrival>,
    next_token: u64,
}

/// Everything the transport holds on the device, in teardown order.
struct Resources {
    peers: Vec<PeerQp>,
    /// A basic (`ibv_poll_cq`) queue: Soft-RoCE's extended-poll completions came back with
    /// zero work-request ids in the lab, the basic ones are right everywhere.
    cq: Arc<BasicCompletionQueue>,
    /// Where the queue's completion events arrive (a descriptor `wait` sleeps on).
    events: Arc<CompletionChannel>,
    recv_mr: Arc<MemoryRegion>,
    send_mr: Arc<MemoryRegion>,
    credit_mr: Arc<MemoryRegion>,
    credit_src_mr: Arc<MemoryRegion>,
    /// Registrations of the application's (and the runtime's) memory kept for use again.
    cache: RegCache<Arc<MemoryRegion>>,
    recv_buf: DeviceBuffer,
    send_buf: DeviceBuffer,
    credit_buf: DeviceBuffer,
    /// Where each peer's credit count is written from (Soft-RoCE fails an inline RDMA write
    /// with a local QP operation error, so the write reads registered memory).
    credit_src: DeviceBuffer,
    pd: Arc<ProtectionDomain>,
    _context: Arc<DeviceContext>,
}

/// An opened, not yet connected verbs endpoint.
pub struct VerbsEndpoint {
    res: Resources,
    port: VerbsPort,
    config: VerbsConfig,
    index: BTreeMap<PeerId, usize>,
    psn: u32,
}

/// A connected verbs transport.
pub struct VerbsTransport {
    res: Resources,
    config: VerbsConfig,
    index: BTreeMap<PeerId, usize>,
    /// Completions taken from the queue (work request id, status, bytes) and not yet handled:
    /// `wait` must look at the queue after arming it, and what it finds waits here.
    taken: Vec<(u64, u32, u32)>,
    /// Report payloads to be read to the runtime first ([`Transport::ask_placement`]).
    ask_placement: bool,
    /// When the last completion came (or the last keep-alive went).
    last_activity: Instant,
    /// Peers whose route took the kernel more than one attempt to resolve at connect.
    slow_routes: Vec<SlowRoute>,
}

/// A peer whose queue pair needed several attempts to resolve its route (see
/// `ROUTE_RESOLVE_LIMIT` in `endpoint`); worth telling an operator, since it usually means a
/// cold neighbour table on a busy or slow network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowRoute {
    pub peer: PeerId,
    pub attempts: u32,
    pub took: Duration,
}

impl VerbsTransport {
    /// The peers whose route resolved only after several attempts when this transport connected.
    pub fn slow_routes(&self) -> &[SlowRoute] {
        &self.slow_routes
    }
}

mod endpoint;
mod transport;

impl Resources {
    /// Posts receive buffer `slot` of peer `i`; `false` when the receive queue is full for now.
    fn post_recv(&mut self, config: &VerbsConfig, i: usize, slot: usize) -> TransportResult<bool> {
        let offset = (i * config.slots as usize + slot) * config.slot_bytes;
        let (lkey, addr) = (self.recv_mr.lkey(), self.recv_buf.addr(offset));
        let p = &mut self.peers[i];
        let mut guard = p.qp.start_post_recv();
        let wr = guard.construct_wr(wr_id(WR_RECV, i, slot));
        // SAFETY: the buffer is registered (`recv_mr`) and stays allocated while posted.
        unsafe { wr.setup_sge(lkey, addr, config.slot_bytes as u32) };
        match guard.post() {
            Ok(()) => Ok(true),
            Err(PostRecvError::NotEnoughResources(_)) => Ok(false),
            Err(e) => Err(verbs_error(format!("posting a receive for rank {}", p.peer), e)),
        }
    }

    /// Posts peer `i`'s receive buffers that wait to go back, telling its channel of each.
    fn repost(&mut self, config: &VerbsConfig, i: usize) -> TransportResult<()> {
        while let Some(&slot) = self.peers[i].unposted.last() {
            if !self.post_recv(config, i, slot)? {
                break;
            }
            let p = &mut self.peers[i];
            p.unposted.pop();
            p.channel.buffer_reposted();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_timeout_rounds_up_to_the_next_power_of_two() {
        let exponent = |ms: u64| {
            VerbsConfig { ack_timeout: Duration::from_millis(ms), ..VerbsConfig::default() }.ack_timeout_exponent()
        };
        assert_eq!(VerbsConfig::default().ack_timeout_exponent(), 14, "the default: 67 ms");
        assert_eq!(exponent(67), 14);
        assert_eq!(exponent(68), 15, "4.096 us x 2^14 is 67.1 ms; 68 ms needs 2^15");
        assert_eq!(exponent(1000), 18, "1 s: 2^18 x 4.096 us = 1.07 s");
        assert_eq!(exponent(1), 8, "1 ms: 2^8 x 4.096 us = 1.05 ms");
        assert_eq!(
            VerbsConfig { ack_timeout: Duration::ZERO, ..VerbsConfig::default() }.ack_timeout_exponent(),
            1,
            "never 0, which is no timeout"
        );
        assert_eq!(VerbsConfig { ack_timeout: MAX_ACK_TIMEOUT, ..VerbsConfig::default() }.ack_timeout_exponent(), 31);
    }

    #[test]
    fn read_descriptors_round_trip_and_bad_ones_are_refused() {
        let d = ReadDescriptor { addr: 0x7f12_3456_7000, rkey: 0xabcd, len: 1 << 20 };
        assert_eq!(ReadDescriptor::decode(&d.encode()), Ok(d));
        assert!(ReadDescriptor::decode(&d.encode()[..15]).is_err(), "short");
        let empty = ReadDescriptor { len: 0, ..d };
        assert!(ReadDescriptor::decode(&empty.encode()).is_err(), "nothing to read");
        let huge = ReadDescriptor { len: wire::MAX_PAYLOAD_LEN + 1, ..d };
        assert!(ReadDescriptor::decode(&huge.encode()).is_err(), "more than a frame may carry");
    }

    #[test]
    fn addresses_round_trip_as_text() {
        let a = QpAddress {
            lid: 0x12,
            gid: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
            qpn: 0x11,
            psn: 0xabcdef,
            credit_addr: 0x7f00_1234_5000,
            credit_rkey: 0x1234,
        };
        assert_eq!(QpAddress::decode(&a.encode()), Ok(a));
        assert!(QpAddress::decode("1:2:3").is_err());
        assert!(QpAddress::decode(&a.encode().replace('f', "g")).is_err());
    }

    #[test]
    fn work_request_ids_split_back() {
        assert_eq!(split_wr_id(wr_id(WR_SEND, 1234, 31)), (WR_SEND, 1234, 31));
        assert_eq!(split_wr_id(wr_id(WR_RECV, 0, 0xff_ffff)), (WR_RECV, 0, 0xff_ffff));
    }
}
