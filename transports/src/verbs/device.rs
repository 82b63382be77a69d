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
    ExtendedQueuePair, PostRecvError, PostSendGuard, QueuePair, QueuePairAttribute, QueuePairState,
    SetScatterGatherEntry, WorkRequestFlags,
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
        }
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

/// In a frame's header flags (which the runtime leaves zero): the payload is not in the
/// stream but a [`ReadDescriptor`] of where the peer may read it.
const FLAG_READ: u32 = 1 << 31;
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
    Ready(wire::Header, Vec<u8>),
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
/// A peer whose device completes none of this side's posted work requests for this long is
/// down. The queue pairs' own bound (ack timeout 2^14 x 4.096 us, 7 retries: about 0.5 s) ends
/// such requests with an error on a hardware HCA, but Soft-RoCE (Linux 6.1) retransmits to a
/// vanished peer for ever; with the keep-alive an idle peer always has a request posted.
const STALLED_AFTER: Duration = Duration::from_secs(5);

/// One peer: its queue pair, its channel, and the send buffers that are free.
struct PeerQp {
    peer: PeerId,
    qp: ExtendedQueuePair,
    channel: Channel,
    free_send: Vec<usize>,
    /// Send-queue entries in use (sends and credit writes not yet completed).
    sq_used: u32,
    /// When the peer's device last completed a request of ours, or when one was posted with
    /// none in flight: what [`STALLED_AFTER`] is measured from.
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
}

impl VerbsEndpoint {
    /// Opens `port`'s device and prepares a queue pair for each of `peers`.
    pub fn open(port: &VerbsPort, me: PeerId, peers: &[PeerId], config: VerbsConfig) -> TransportResult<VerbsEndpoint> {
        let list = DeviceList::new().map_err(|e| verbs_error("verbs device list".into(), e))?;
        let device = list
            .iter()
            .find(|d| d.name() == port.device)
            .ok_or_else(|| verbs_error(format!("verbs device {}", port.device), "no longer present"))?;
        let context = device.open().map_err(|e| verbs_error(format!("opening {}", port.device), e))?;
        drop(list);
        let pd = context.alloc_pd().map_err(|e| verbs_error("protection domain".into(), e))?;
        let n = peers.len();
        let slots = config.slots as usize;
        let per_peer = slots * config.slot_bytes;
        let events = CompletionChannel::new(&context).map_err(|e| verbs_error("completion channel".into(), e))?;
        events.set_nonblocking(true).map_err(|e| io_error("completion channel", e))?;
        let cq = context
            .create_cq_builder()
            .setup_cqe((2 * slots * n + n + 16) as u32)
            .setup_comp_channel(&events, 0)
            .build()
            .map_err(|e| verbs_error("completion queue".into(), e))?;
        let recv_buf = DeviceBuffer::new(per_peer * n)?;
        let send_buf = DeviceBuffer::new(per_peer * n)?;
        let credit_buf = DeviceBuffer::new(CREDIT_WORD_LEN * n)?;
        let credit_src = DeviceBuffer::new(CREDIT_WORD_LEN * n)?;
        let local = AccessFlags::LocalWrite;
        // SAFETY: each buffer outlives its registration (field order of `Resources`).
        let (recv_mr, send_mr, credit_mr, credit_src_mr) = unsafe {
            (
                pd.reg_mr(recv_buf.addr(0) as usize, recv_buf.len, local),
                pd.reg_mr(send_buf.addr(0) as usize, send_buf.len, local),
                pd.reg_mr(credit_buf.addr(0) as usize, credit_buf.len, local | AccessFlags::RemoteWrite),
                pd.reg_mr(credit_src.addr(0) as usize, credit_src.len, local),
            )
        };
        let reg = |r: Result<Arc<MemoryRegion>, _>| r.map_err(|e| verbs_error("memory registration".into(), e));
        let (recv_mr, send_mr, credit_mr, credit_src_mr) =
            (reg(recv_mr)?, reg(send_mr)?, reg(credit_mr)?, reg(credit_src_mr)?);
        let mut qps = Vec::with_capacity(n);
        for &peer in peers {
            let cq_handle = GenericCompletionQueue::from(Arc::clone(&cq));
            let mut qp = pd
                .create_qp_builder()
                .setup_max_inline_data(16)
                .setup_send_cq(cq_handle.clone())
                .setup_recv_cq(cq_handle)
                .setup_max_send_wr(config.slots + 4)
                .setup_max_recv_wr(config.slots + 1)
                .build_ex()
                .map_err(|e| verbs_error(format!("queue pair for rank {peer}"), e))?;
            let mut attr = QueuePairAttribute::new();
            attr.setup_state(QueuePairState::Init)
                .setup_pkey_index(0)
                .setup_port(port.port)
                .setup_access_flags(AccessFlags::LocalWrite | AccessFlags::RemoteWrite | AccessFlags::RemoteRead);
            qp.modify(&attr).map_err(|e| verbs_error(format!("queue pair for rank {peer} to INIT"), e))?;
            qps.push(PeerQp {
                peer,
                qp,
                channel: Channel::new(peer, config.slots, config.slot_bytes, config.queue_limit_bytes),
                free_send: (0..slots).rev().collect(),
                sq_used: 0,
                last_progress: Instant::now(),
                remote_credit: None,
                down: false,
                credit_in_flight: false,
                unposted: Vec::new(),
                active: false,
                exposed: VecDeque::new(),
                exposed_bytes: 0,
                arrivals: VecDeque::new(),
                next_token: 0,
            });
        }
        let index = peers.iter().enumerate().map(|(i, &p)| (p, i)).collect();
        let mut res = Resources {
            peers: qps,
            cq,
            events,
            recv_mr,
            send_mr,
            credit_mr,
            credit_src_mr,
            cache: RegCache::new(
                &memory::PROCESS_LOG,
                config.cache_max_entries,
                cache_max_bytes(&config),
                memory::page_size(),
            ),
            recv_buf,
            send_buf,
            credit_buf,
            credit_src,
            pd,
            _context: context,
        };
        for (i, peer) in peers.iter().enumerate() {
            for slot in 0..slots {
                if !res.post_recv(&config, i, slot)? {
                    return Err(verbs_error(format!("posting receive buffers for rank {peer}"), "queue full"));
                }
            }
        }
        // Different on every open, so a stale packet of an earlier connection never fits.
        let psn = (std::process::id().wrapping_mul(2_654_435_761) ^ me.wrapping_mul(40_503)) & 0xff_ffff;
        Ok(VerbsEndpoint { res, port: port.clone(), config, index, psn })
    }

    /// This rank's address for `peer`'s queue pair.
    pub fn address_for(&self, peer: PeerId) -> Option<QpAddress> {
        let &i = self.index.get(&peer)?;
        Some(QpAddress {
            lid: self.port.lid,
            gid: self.port.gid.gid.octets(),
            qpn: self.res.peers[i].qp.qp_number(),
            psn: self.psn,
            credit_addr: self.res.credit_buf.addr(CREDIT_WORD_LEN * i),
            credit_rkey: self.res.credit_mr.rkey(),
        })
    }

    /// Connects the queue pair of every peer in `remote` to that peer's (ready to receive,
    /// then to send); the others stay unused.
    pub fn connect(mut self, remote: &BTreeMap<PeerId, QpAddress>) -> TransportResult<VerbsTransport> {
        for p in &mut self.res.peers {
            let Some(r) = remote.get(&p.peer) else { continue };
            let mut av = AddressHandleAttribute::new();
            av.setup_dest_lid(r.lid).setup_port(self.port.port).setup_service_level(0);
            if self.port.fabric == Fabric::Ethernet || r.lid == 0 {
                av.setup_grh_src_gid_index(self.port.gid.index as u8)
                    .setup_grh_dest_gid(&Gid::from(std::net::Ipv6Addr::from(r.gid)))
                    .setup_grh_hop_limit(64);
            }
            let mut attr = QueuePairAttribute::new();
            attr.setup_state(QueuePairState::ReadyToReceive)
                .setup_path_mtu(Mtu::Mtu1024)
                .setup_dest_qp_num(r.qpn)
                .setup_rq_psn(r.psn)
                .setup_max_dest_read_atomic(4)
                .setup_min_rnr_timer(12)
                .setup_address_vector(&av);
            p.qp.modify(&attr).map_err(|e| verbs_error(format!("queue pair for rank {} to RTR", p.peer), e))?;
            let mut attr = QueuePairAttribute::new();
            attr.setup_state(QueuePairState::ReadyToSend)
                .setup_sq_psn(self.psn)
                .setup_timeout(14)
                .setup_retry_cnt(7)
                .setup_rnr_retry(7)
                .setup_max_read_atomic(4);
            p.qp.modify(&attr).map_err(|e| verbs_error(format!("queue pair for rank {} to RTS", p.peer), e))?;
            p.remote_credit = Some((r.credit_addr, r.credit_rkey));
            p.active = true;
        }
        let mut index = self.index;
        index.retain(|peer, _| remote.contains_key(peer));
        Ok(VerbsTransport {
            res: self.res,
            config: self.config,
            index,
            taken: Vec::new(),
            ask_placement: false,
            last_activity: Instant::now(),
        })
    }
}

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

impl VerbsTransport {
    /// Sends and credit writes posted and not yet completed (on a reliable connection a send
    /// completes once the peer's device has acknowledged it).
    pub fn sends_in_flight(&self) -> u32 {
        self.res.peers.iter().map(|p| p.sq_used).sum()
    }

    /// Moves what the completion queue holds to `taken`.
    fn take_completions(&mut self) {
        let before = self.taken.len();
        if let Ok(mut poller) = self.res.cq.start_poll() {
            for wc in &mut poller {
                self.taken.push((wc.wr_id(), wc.status(), wc.byte_len()));
            }
        }
        if self.taken.len() > before {
            self.last_activity = Instant::now();
        }
    }

    /// Whether some peer has frames waiting that only credits can let go, or payloads it is
    /// reading: credits and read reports come back by RDMA write, which raises no completion
    /// event, so such a wait must look again soon.
    fn waiting_for_credits(&self) -> bool {
        self.res.peers.iter().any(|p| p.active && !p.down && (p.channel.queued_bytes() > 0 || !p.exposed.is_empty()))
    }

    /// Sleeps on the completion channel until the next completion or `timeout`.
    fn wait_for_event(&mut self, timeout: Duration) -> TransportResult<()> {
        // SAFETY: the queue is alive (it is in `self.res`); arming only asks the provider to
        // raise one event on the channel for the next completion.
        let cq = unsafe { self.res.cq.cq() };
        // SAFETY: as above; `cq` is a valid queue created with this channel.
        if unsafe { rdma_mummy_sys::ibv_req_notify_cq(cq.as_ptr(), 0) } != 0 {
            std::thread::sleep(timeout.min(SHORT_WAIT));
            return Ok(());
        }
        // A completion that came before the arming raised no event: look once more.
        self.take_completions();
        if !self.taken.is_empty() {
            return Ok(());
        }
        let fd = self.res.events.as_raw_fd();
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
        // SAFETY: one valid pollfd and timespec for the duration of the call; no signal mask.
        let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted { Ok(()) } else { Err(io_error("poll", e)) };
        }
        if n > 0 {
            let mut ev_cq: *mut rdma_mummy_sys::ibv_cq = std::ptr::null_mut();
            let mut ev_ctx: *mut std::ffi::c_void = std::ptr::null_mut();
            // SAFETY: the channel is alive and non-blocking; the out-pointers are valid. Every
            // event taken is acknowledged at once (destroying the queue waits for that).
            unsafe {
                let channel = self.res.events.comp_channel();
                if rdma_mummy_sys::ibv_get_cq_event(channel.as_ptr(), &mut ev_cq, &mut ev_ctx) == 0 {
                    rdma_mummy_sys::ibv_ack_cq_events(ev_cq, 1);
                }
            }
        }
        Ok(())
    }

    /// Takes completions: arrived messages become frames, finished sends free their buffers.
    fn poll(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        let slots = self.config.slots as usize;
        self.take_completions();
        let now = Instant::now();
        for (id, status, len) in std::mem::take(&mut self.taken) {
            let (kind, i, slot) = split_wr_id(id);
            let Some(p) = self.res.peers.get_mut(i) else { continue };
            p.last_progress = now;
            if status != WorkCompletionStatus::Success as u32 {
                if !p.down {
                    p.down = true;
                    let what = match kind {
                        WR_RECV => "receive",
                        WR_SEND => "send",
                        _ => "credit write",
                    };
                    let what = if kind == WR_READ { "read" } else { what };
                    let why = format!("{:?}", WorkCompletionStatus::from(status));
                    events.push(Event::LinkDown {
                        peer: p.peer,
                        reason: format!("verbs {what} failed: {why} (work request {id:#x}, {len} bytes)"),
                    });
                }
                continue;
            }
            match kind {
                WR_SEND => {
                    p.free_send.push(slot);
                    p.sq_used -= 1;
                }
                WR_CREDIT => {
                    p.sq_used -= 1;
                    p.credit_in_flight = false;
                }
                WR_RECV => {
                    let offset = (i * slots + slot) * self.config.slot_bytes;
                    let msg = self.res.recv_buf.slice(offset, len as usize);
                    let mut bad = None;
                    let (peer, ask) = (p.peer, self.ask_placement);
                    let (arrivals, next_token) = (&mut p.arrivals, &mut p.next_token);
                    let mut emit = |header: wire::Header, payload: Vec<u8>| {
                        if header.flags & FLAG_READ == 0 {
                            return arrivals.push_back(Arrival::Ready(header, payload));
                        }
                        match ReadDescriptor::decode(&payload) {
                            Ok(from) => {
                                let header =
                                    wire::Header { flags: header.flags & !FLAG_READ, payload_len: from.len, ..header };
                                let token = *next_token;
                                *next_token += 1;
                                let target = if ask {
                                    events.push(Event::Incoming { peer, token, header });
                                    Target::Undecided
                                } else {
                                    Target::Own(vec![0; from.len as usize])
                                };
                                let r = Reading { mr: None, target, header, from, token, done: false };
                                arrivals.push_back(Arrival::Reading(r));
                            }
                            Err(e) => bad = Some(e),
                        }
                    };
                    let result = p.channel.on_message(msg, &mut emit).map_err(|e| e.to_string());
                    if let Some(e) = result.err().or(bad) {
                        p.down = true;
                        events.push(Event::LinkDown { peer: p.peer, reason: format!("bad verbs message: {e}") });
                        continue;
                    }
                    p.unposted.push(slot);
                }
                WR_READ => {
                    p.sq_used -= 1;
                    // Reads on one queue pair complete in the order they were posted.
                    let first = p.arrivals.iter_mut().find_map(|a| match a {
                        Arrival::Reading(r) if r.mr.is_some() && !r.done => Some(r),
                        _ => None,
                    });
                    if let Some(r) = first {
                        r.done = true;
                        r.mr = None;
                        p.channel.read_done();
                    }
                }
                _ => {}
            }
        }
        for p in &mut self.res.peers {
            while let Some(a) = p.arrivals.front() {
                if matches!(a, Arrival::Reading(r) if !r.done) {
                    break;
                }
                let (header, payload) = match p.arrivals.pop_front().expect("front exists") {
                    Arrival::Ready(h, v) => (h, v),
                    Arrival::Reading(Reading { header, target: Target::Own(buf), .. }) => (header, buf),
                    Arrival::Reading(Reading { header, .. }) => {
                        (wire::Header { flags: header.flags | wire::FLAG_PLACED, ..header }, Vec::new())
                    }
                };
                events.push(Event::Frame { peer: p.peer, header, payload });
            }
        }
        Ok(())
    }

    /// Posts the reads of peer `i`'s payloads that wait for room on the send queue, each into
    /// its own buffer, registered for it.
    fn post_reads(&mut self, i: usize) -> TransportResult<()> {
        let sq_limit = self.config.slots + 4;
        let (cache, pd) = (&mut self.res.cache, &self.res.pd);
        let p = &mut self.res.peers[i];
        if p.down || !p.active {
            return Ok(());
        }
        for a in p.arrivals.iter_mut() {
            if p.sq_used >= sq_limit {
                break;
            }
            let Arrival::Reading(r) = a else { continue };
            if r.mr.is_some() || r.done {
                continue;
            }
            let (addr, len) = match &mut r.target {
                Target::Undecided => continue,
                Target::Own(buf) => (buf.as_mut_ptr() as usize, buf.len()),
                Target::User(at) => (at.ptr as usize, at.len),
            };
            // The device writes the buffer only where this read says, and the buffer stays put
            // until the read completes: an own buffer is handed on after it (or dropped with
            // the transport, after the queue pairs), and the runtime leaves the application's
            // receive buffer alone until the frame is delivered, which is after the read.
            let mr = registration(cache, pd, addr..addr + len, Access::LocalWrite)
                .map_err(|e| verbs_error(format!("registering a read buffer for rank {}", p.peer), e))?;
            let mut guard = p.qp.start_post_send();
            let wr = guard.construct_wr(wr_id(WR_READ, i, 0), WorkRequestFlags::Signaled);
            // SAFETY: the local buffer is registered (above) and untouched until the read
            // completes; the remote range is what the peer registered for this read.
            unsafe { wr.setup_read(r.from.rkey, r.from.addr).setup_sge(mr.lkey(), addr as u64, len as u32) };
            guard.post().map_err(|e| verbs_error(format!("posting a read from rank {}", p.peer), e))?;
            r.mr = Some(mr);
            p.sq_used += 1;
        }
        Ok(())
    }

    /// Posts what the channels have to send: messages while send buffers and credits last,
    /// then credit updates. A peer whose posting fails (its queue pair broke, its device is
    /// gone) is reported down; the others go on.
    fn post_sends(&mut self, events: &mut Vec<Event>) {
        let keepalive = self.last_activity.elapsed() >= KEEPALIVE_IDLE;
        if keepalive {
            self.last_activity = Instant::now();
        }
        for i in 0..self.res.peers.len() {
            if self.res.peers[i].down {
                continue;
            }
            if let Err(e) = self.post_peer(i, keepalive) {
                let p = &mut self.res.peers[i];
                p.down = true;
                let reason = match e {
                    TransportError::LinkDown { reason, .. } => reason,
                    other => other.to_string(),
                };
                events.push(Event::LinkDown { peer: p.peer, reason });
            }
        }
    }

    /// [`VerbsTransport::post_sends`] for peer `i`.
    fn post_peer(&mut self, i: usize, keepalive: bool) -> TransportResult<()> {
        let (slots, slot_bytes) = (self.config.slots as usize, self.config.slot_bytes);
        let send_lkey = self.res.send_mr.lkey();
        self.res.repost(&self.config, i)?;
        let word = CreditWord {
            reposted: self.res.credit_buf.read_word(CREDIT_WORD_LEN * i),
            reads_done: self.res.credit_buf.read_word(CREDIT_WORD_LEN * i + 4),
        };
        self.post_reads(i)?;
        let p = &mut self.res.peers[i];
        if p.down || !p.active {
            return Ok(());
        }
        if p.sq_used == 0 {
            p.last_progress = Instant::now();
        } else if p.last_progress.elapsed() > STALLED_AFTER {
            let reason = format!(
                "rank {}'s device completed none of {} posted work requests for {STALLED_AFTER:?}",
                p.peer, p.sq_used
            );
            return Err(TransportError::LinkDown { peer: p.peer, reason });
        }
        let read = p
            .channel
            .on_credit_word(word)
            .map_err(|e| TransportError::LinkDown { peer: p.peer, reason: format!("bad credit word: {e}") })?;
        for _ in 0..read {
            let e = p.exposed.pop_front().expect("the channel counts what is exposed");
            p.exposed_bytes -= e.payload.len();
        }
        let sq_limit = self.config.slots + 4;
        if p.sq_used < sq_limit && !p.credit_in_flight {
            let idle = keepalive && p.sq_used == 0;
            let word = p.channel.credit_update().or_else(|| idle.then(|| p.channel.last_credit_word()));
            if let (Some(word), Some((addr, rkey))) = (word, p.remote_credit) {
                let dst = self.res.credit_src.slice_mut(CREDIT_WORD_LEN * i, CREDIT_WORD_LEN);
                dst[..4].copy_from_slice(&word.reposted.to_le_bytes());
                dst[4..].copy_from_slice(&word.reads_done.to_le_bytes());
                let src = self.res.credit_src.addr(CREDIT_WORD_LEN * i);
                let lkey = self.res.credit_src_mr.lkey();
                let p = &mut self.res.peers[i];
                let mut guard = p.qp.start_post_send();
                let wr = guard.construct_wr(wr_id(WR_CREDIT, i, 0), WorkRequestFlags::Signaled);
                // SAFETY: the source word is registered and not written again until this
                // write completes (`credit_in_flight`).
                unsafe { wr.setup_write(rkey, addr).setup_sge(lkey, src, CREDIT_WORD_LEN as u32) };
                guard.post().map_err(|e| verbs_error(format!("writing credits to rank {}", p.peer), e))?;
                p.sq_used += 1;
                p.credit_in_flight = true;
            }
        }
        // Messages wait while finished reads are not yet reported: the runtime answers the
        // frame of a payload it read with a confirmation that lets the peer complete the send
        // and reuse its buffer, so the peer must learn first that the read is done (it lets go
        // of the payload and its registration then). On one queue pair the credit write lands
        // in the peer's memory before a later send arrives there.
        let p = &mut self.res.peers[i];
        while p.sq_used < sq_limit && !p.channel.reads_unreported() {
            let Some(&slot) = p.free_send.last() else { break };
            let offset = (i * slots + slot) * slot_bytes;
            let Some(n) = p.channel.fill_message(self.res.send_buf.slice_mut(offset, slot_bytes)) else { break };
            p.free_send.pop();
            let addr = self.res.send_buf.addr(offset);
            let mut guard = p.qp.start_post_send();
            let wr = guard.construct_wr(wr_id(WR_SEND, i, slot), WorkRequestFlags::Signaled).setup_send();
            // SAFETY: the send buffer is registered and not written again until this send
            // completes (it is off the free list until then).
            unsafe { wr.setup_sge(send_lkey, addr, n as u32) };
            guard.post().map_err(|e| verbs_error(format!("posting a send to rank {}", p.peer), e))?;
            p.sq_used += 1;
        }
        Ok(())
    }
}

impl Transport for VerbsTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Verbs
    }

    fn send(&mut self, peer: PeerId, header: &wire::Header, payload: Payload) -> TransportResult<()> {
        let &i = self.index.get(&peer).ok_or(TransportError::NoRoute { peer })?;
        let p = &mut self.res.peers[i];
        if p.down {
            return Err(TransportError::LinkDown { peer, reason: "verbs queue pair failed".into() });
        }
        // A large payload stays where it is (the runtime's memory or, `Static`, the
        // application's) and the peer reads it; smaller ones, those past the bound on
        // registrations, and memory that cannot be registered go through the buffers.
        let readable = payload.len() >= self.config.read_min_bytes && p.exposed.len() < self.config.max_exposed;
        let bytes = payload.as_slice();
        let (addr, len) = (bytes.as_ptr() as usize, bytes.len());
        // The payload is kept in `exposed`, unmoved (owned bytes live on the heap, a `Static`
        // buffer by its promise) and unchanged, until the peer says it has read it. Remote
        // read only: the memory may be read-only (a send from a constant), which a writable
        // registration would refuse.
        let registered =
            readable.then(|| registration(&mut self.res.cache, &self.res.pd, addr..addr + len, Access::RemoteRead));
        let p = &mut self.res.peers[i];
        let Some(Ok(mr)) = registered else {
            if !p.channel.queue_frame(header, payload) {
                return Err(TransportError::QueueFull { peer, limit: self.config.queue_limit_bytes });
            }
            return Ok(());
        };
        let from = ReadDescriptor { addr: addr as u64, rkey: mr.rkey(), len: len as u32 };
        let described =
            wire::Header { flags: header.flags | FLAG_READ, payload_len: ReadDescriptor::LEN as u32, ..*header };
        if !p.channel.queue_frame(&described, Payload::Owned(from.encode())) {
            return Err(TransportError::QueueFull { peer, limit: self.config.queue_limit_bytes });
        }
        p.channel.payload_exposed();
        p.exposed_bytes += len;
        p.exposed.push_back(Exposed { _mr: mr, payload });
        Ok(())
    }

    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        self.poll(events)?;
        self.post_sends(events);
        Ok(())
    }

    fn ask_placement(&mut self) {
        self.ask_placement = true;
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.res.cache.stats;
        vec![
            ("registrations made", s.made),
            ("reused", s.reused),
            ("dropped when their memory was given back", s.given_back),
            ("evicted", s.evicted),
        ]
    }

    fn place(&mut self, peer: PeerId, token: u64, at: Option<Placement>) -> TransportResult<()> {
        let &i = self.index.get(&peer).ok_or(TransportError::NoRoute { peer })?;
        let reading = self.res.peers[i].arrivals.iter_mut().find_map(|a| match a {
            Arrival::Reading(r) if r.token == token && matches!(r.target, Target::Undecided) => Some(r),
            _ => None,
        });
        let Some(r) = reading else {
            return Err(verbs_error(format!("placing payload {token} from rank {peer}"), "no such read waits"));
        };
        r.target = match at {
            Some(at) if at.len == r.from.len as usize => Target::User(at),
            Some(at) => {
                return Err(verbs_error(
                    format!("placing payload {token} from rank {peer}"),
                    format!("{} bytes offered for {}", at.len, r.from.len),
                ))
            }
            None => Target::Own(vec![0; r.from.len as usize]),
        };
        Ok(())
    }

    /// Sleeps on the completion channel (at most `LONGEST_WAIT`, so that a switch command
    /// that wakes only the TCP transport is seen soon), or briefly while frames wait for
    /// credits, which arrive without an event.
    fn wait(&mut self, timeout: Duration) -> TransportResult<()> {
        if !self.taken.is_empty() {
            return Ok(());
        }
        if self.waiting_for_credits() {
            std::thread::sleep(timeout.min(SHORT_WAIT));
            return Ok(());
        }
        self.wait_for_event(timeout.min(LONGEST_WAIT))
    }

    /// Frame bytes not yet sent, payloads the peers have not finished reading, and (as one
    /// byte) a report of finished reads not yet in the peer's memory: the peer waits for it
    /// before it may let go of its payloads, so a drain must not end without it.
    fn queued_bytes(&self) -> usize {
        let unreported = |p: &PeerQp| usize::from(p.channel.reads_unreported() || p.credit_in_flight);
        // A peer whose link is down takes nothing more: what it holds is lost with the link
        // (the runtime keeps its own copy of every frame until the peer confirms it).
        let live = self.res.peers.iter().filter(|p| !p.down);
        live.map(|p| p.channel.queued_bytes() + p.exposed_bytes + unreported(p)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
