//! The point-to-point protocol core: MPI matching, eager and rendezvous messaging, per-peer
//! ordered channels. Sans-IO: it never touches a socket, a clock or a thread.
//!
//! # Use
//! - Inputs: [`Core::isend`], [`Core::irecv`], [`Core::iprobe`], [`Core::cancel_recv`] from the
//!   application side; [`Core::handle_frame`] for every frame a transport delivered.
//! - Outputs: [`Core::poll_transmit`] yields the frames to hand to the transport, in order.
//!   Call it until it returns `None` after every input.
//! - Getters: [`Core::is_complete`], [`Core::take_completion`].
//! - A switch (`drain.rs`): [`Core::begin_drain`] sends a `Marker` to every peer and holds
//!   every later frame; [`Core::is_drained`] says when nothing is in flight either way
//!   ([`Core::markers_missing`] names who holds it up); [`Core::resume`] stamps the new epoch
//!   on the held frames and lets them out.
//! - A repair (`drain.rs`, `channel.rs`): a link that dies is reported with
//!   [`Core::mark_broken`], a frame that skips numbers shows in [`Core::take_gaps`];
//!   [`Core::broken_peers`] are the pairs the next switch repairs, and [`Core::resume`] sends
//!   each of them again every frame it had not confirmed ([`Core::unconfirmed`]).
//!
//! Files: this one holds the requests and the frame dispatch; `matching.rs` the matching and
//! probes; `channel.rs` the per-peer sequence numbers and confirmations; `drain.rs` the
//! switch and repair; `config.rs` the tunables (and their environment overrides, read once by
//! the caller that builds the core).
//!
//! # Matching (MPI-3.1 §3.5)
//! A message is matched by `(ctx, source, tag)`; `source` and `tag` may be wildcards on the
//! receive side. Receives are matched in the order they were posted and messages in the order
//! they arrived; per-peer channels are FIFO, so two messages from one sender that both match a
//! receive are received in the order they were sent (non-overtaking). Matching is done here,
//! never by a NIC, so that unplugging a device cannot take matching state with it.
//!
//! # Protocols
//! - Eager (payload ≤ `eager_limit_bytes`): the whole message travels in one frame. A
//!   synchronous send uses `EagerSync`, answered by `SyncAck` when it is matched.
//! - Rendezvous: `Rts` carries the envelope and length; when a receive matches it the receiver
//!   answers `Cts` naming its request; the sender then streams `Data` chunks of at most
//!   `chunk_bytes`. Chunks of an application buffer (`SendData::Static`) are sent from it
//!   without a copy, and the send completes when the receiver confirms the last one (it asks
//!   for that with `FLAG_CONFIRM`); chunks of an owned buffer share it, and the send completes
//!   when they are queued.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use kawarimi_transports::wire::{FrameKind, Header, FLAG_CONFIRM, FLAG_PLACED, FLAG_REPLAY, MAX_PAYLOAD_LEN};
use kawarimi_transports::{Payload, PeerId, Placement};

use crate::error::{err, ErrorClass, MpiResult};

mod channel;
mod config;
mod drain;
mod matching;
mod slab;

use channel::{numbered, Channel, MAX_GAP_REPAIRS};
pub use channel::{ACK_EVERY_BYTES, ACK_EVERY_FRAMES};
pub use config::CoreConfig;
use matching::{source_matches, tag_matches};
use slab::Slab;

/// `MPI_ANY_SOURCE` / `MPI_ANY_TAG` as the core sees them (wire values are world ranks and
/// non-negative tags, so negative numbers are free).
pub const ANY_SOURCE: i32 = -1;
pub const ANY_TAG: i32 = -1;

/// Identifies a request inside the core.
pub type ReqId = u64;

/// The data a send reads.
///
/// `Static` is an application buffer the shim has vouched for: MPI forbids the application
/// to modify it until the send completes. An eager send copies it; a rendezvous send reads it
/// in place and completes once the receiver has confirmed every byte.
#[derive(Debug)]
pub enum SendData {
    Owned(Vec<u8>),
    Static(&'static [u8]),
}

impl SendData {
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as a vector of their own: an owned one as it is, a static one copied.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            SendData::Owned(v) => v,
            SendData::Static(s) => s.to_vec(),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            SendData::Owned(v) => v,
            SendData::Static(s) => s,
        }
    }
}

/// Where a receive writes: its capacity is the buffer's length.
#[derive(Debug)]
pub enum RecvBuf {
    /// The application's own contiguous buffer.
    Static(&'static mut [u8]),
    /// A staging buffer (for non-contiguous datatypes); the caller unpacks it at completion.
    Owned(Vec<u8>),
}

impl RecvBuf {
    /// The most bytes it takes.
    pub fn len(&self) -> usize {
        match self {
            RecvBuf::Static(s) => s.len(),
            RecvBuf::Owned(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            RecvBuf::Static(s) => s,
            RecvBuf::Owned(v) => v,
        }
    }
    fn capacity(&self) -> usize {
        match self {
            RecvBuf::Static(s) => s.len(),
            RecvBuf::Owned(v) => v.len(),
        }
    }
}

/// The envelope and outcome of a completed operation (the runtime's `MPI_Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Sender's world rank (translated to a communicator rank by the caller).
    pub source: i32,
    pub tag: i32,
    /// Bytes received (packed representation).
    pub len: usize,
    pub cancelled: bool,
    /// `Some(Truncate)` when the message was longer than the receive buffer.
    pub error: Option<ErrorClass>,
}

/// What `take_completion` hands back.
#[derive(Debug)]
pub struct Completion {
    pub status: Status,
    /// The receive buffer, returned so an `Owned` staging buffer can be unpacked.
    pub recv_buf: Option<RecvBuf>,
}

/// One frame for the transport.
#[derive(Debug)]
pub struct Transmit {
    pub peer: PeerId,
    pub header: Header,
    pub payload: Payload,
}

/// How [`Core::send_eager`] sent a message.
#[derive(Debug)]
pub enum EagerSend {
    /// The frame is stamped and kept: the caller hands `header` and the bytes to the
    /// transport now.
    Direct { peer: PeerId, header: Header },
    /// The frame went the usual way (the outbox, the held frames, or loopback).
    Queued,
}

#[derive(Debug)]
enum SendPhase {
    /// Eager frame queued; complete for a standard send, waiting for `SyncAck` for a sync one.
    AwaitSyncAck,
    /// `Rts` sent, waiting for `Cts`.
    AwaitCts,
    /// Data sent from the application's buffer, waiting for the receiver to confirm it.
    AwaitConfirm,
    Done,
}

#[derive(Debug)]
struct SendReq {
    peer: PeerId,
    ctx: u32,
    tag: i32,
    data: SendData,
    phase: SendPhase,
}

#[derive(Debug)]
enum RecvPhase {
    /// In the posted queue, not matched.
    Posted,
    /// Matched to an eager frame that the transport still holds, whose payload it copies
    /// straight into the buffer (see [`Core::placement`]); the frame completes it.
    Placing,
    /// Matched a rendezvous; `Cts` sent, `received` of `total` bytes arrived.
    Receiving {
        total: usize,
        received: usize,
    },
    Done,
}

#[derive(Debug)]
struct RecvReq {
    buf: Option<RecvBuf>,
    phase: RecvPhase,
    status: Status,
}

/// A receive in the posted queue and what it matches.
#[derive(Debug, Clone, Copy)]
struct Posted {
    id: ReqId,
    ctx: u32,
    /// World rank or ANY_SOURCE.
    source: i32,
    tag: i32,
}

#[derive(Debug)]
enum Req {
    Send(SendReq),
    Recv(RecvReq),
    /// Completed by the engine rather than by frames (a collective schedule); `None` while
    /// in progress.
    External(Option<Status>),
}

/// A message that arrived before a matching receive was posted.
#[derive(Debug)]
struct Unexpected {
    src: PeerId,
    ctx: u32,
    tag: i32,
    kind: UnexpectedKind,
}

#[derive(Debug)]
enum UnexpectedKind {
    Eager { data: Payload, sync_msg_id: Option<u64> },
    Rts { msg_id: u64, total: usize },
}

impl Unexpected {
    fn len(&self) -> usize {
        match &self.kind {
            UnexpectedKind::Eager { data, .. } => data.len(),
            UnexpectedKind::Rts { total, .. } => *total,
        }
    }
}

/// Result of a probe (`MPI_Iprobe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeInfo {
    pub source: i32,
    pub tag: i32,
    pub len: usize,
}

/// The point-to-point protocol state of one rank.
#[derive(Debug)]
pub struct Core {
    me: PeerId,
    size: u32,
    epoch: u32,
    config: CoreConfig,
    channels: Vec<Channel>,
    requests: Slab<Req>,
    /// Numbers the messages that have no request (a blocking eager send's frame, a message a
    /// matched probe took) for logs and `MPI_Message` handles.
    next_message_id: u64,
    /// Receives not yet matched, in posting order, with what they match: a message is
    /// matched without looking its candidates up in `requests`.
    posted: VecDeque<Posted>,
    /// Messages not yet matched, in arrival order.
    unexpected: VecDeque<Unexpected>,
    unexpected_bytes: usize,
    outbox: VecDeque<Transmit>,
    /// Frames a rank sends to itself, delivered without a transport.
    loopback: VecDeque<(Header, Vec<u8>)>,
    /// The code of the first `MPI_Abort` a peer announced: this rank's exit status too.
    peer_abort_code: Option<i32>,
    /// Requests freed by the application while still active; dropped when they complete.
    detached: Vec<ReqId>,
    /// Set from `begin_drain` until `resume`: frames emitted now wait in `held` for the
    /// next transport instead of entering the outbox.
    holding: bool,
    /// Frames emitted after this rank's drain markers, in order, for after the switch.
    held: VecDeque<Transmit>,
    /// Messages taken by a matched probe, waiting for their `mrecv`.
    probed: FxHashMap<u64, Unexpected>,
    /// Frames kept unconfirmed, over all channels (bounded like the outbox).
    unconfirmed_frames: usize,
    /// Peers whose frames went missing, and how, for the engine to have repaired.
    gaps: Vec<(PeerId, String)>,
}

impl Core {
    pub fn new(me: PeerId, size: u32, config: CoreConfig) -> Core {
        assert!(me < size, "rank {me} outside a job of {size}");
        assert!(config.chunk_bytes > 0 && config.chunk_bytes <= MAX_PAYLOAD_LEN as usize);
        assert!(config.eager_limit_bytes <= MAX_PAYLOAD_LEN as usize);
        Core {
            me,
            size,
            epoch: 0,
            config,
            channels: (0..size).map(|_| Channel::default()).collect(),
            requests: Slab::default(),
            next_message_id: 1,
            posted: VecDeque::new(),
            unexpected: VecDeque::new(),
            unexpected_bytes: 0,
            outbox: VecDeque::new(),
            loopback: VecDeque::new(),
            peer_abort_code: None,
            detached: Vec::new(),
            holding: false,
            held: VecDeque::new(),
            probed: FxHashMap::default(),
            unconfirmed_frames: 0,
            gaps: Vec::new(),
        }
    }

    pub fn rank(&self) -> PeerId {
        self.me
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Number of requests not yet taken by `take_completion` or freed.
    pub fn live_requests(&self) -> usize {
        self.requests.len()
    }

    fn alloc_message_id(&mut self) -> u64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    fn check_peer(&self, peer: i32) -> MpiResult<PeerId> {
        if peer < 0 || peer as u32 >= self.size {
            return err(ErrorClass::Rank, format!("rank {peer} is not in a job of {} ranks", self.size));
        }
        Ok(peer as PeerId)
    }

    /// Queues a frame for `peer`, stamping the channel's epoch, sequence number and `ack`. A
    /// numbered frame to another rank is also kept until the peer confirms it.
    fn emit(&mut self, peer: PeerId, header: Header, mut payload: Payload) -> MpiResult<()> {
        let header = self.stamp(peer, header, payload.len())?;
        if peer == self.me {
            self.loopback.push_back((header, payload.into_vec()));
            return Ok(());
        }
        if numbered(header.kind) {
            self.keep_for_repair(peer, header, || payload.share());
        }
        if self.holding {
            self.held.push_back(Transmit { peer, header, payload });
        } else {
            self.outbox.push_back(Transmit { peer, header, payload });
        }
        Ok(())
    }

    /// Keeps numbered frame `header` (its payload made by `payload`) until `peer` confirms it,
    /// unless the link to the peer loses no frame it accepted. An outbox frame reaches that
    /// link before the drain that would end it completes; a held frame goes over the next
    /// link, which may drop it, and is kept.
    fn keep_for_repair(&mut self, peer: PeerId, header: Header, payload: impl FnOnce() -> Payload) {
        let chan = &mut self.channels[peer as usize];
        if chan.lossless_from.is_some() && !self.holding {
            chan.unkept_end = header.seq + 1;
        } else {
            self.keep_unconfirmed(Transmit { peer, header, payload: payload() });
        }
    }

    /// Says which peers the transport now in use reaches over a link that loses no frame it
    /// accepted ([`kawarimi_transports::Transport::loses_no_accepted_frame`]): frames to
    /// them are no longer copied and kept for a repair. Call whenever a transport is put in
    /// place ([`Core::resume`] forgets it: the new links are not known to it).
    pub fn set_lossless(&mut self, lossless: impl Fn(PeerId) -> bool) {
        let me = self.me;
        for (p, c) in self.channels.iter_mut().enumerate() {
            let p = p as PeerId;
            c.lossless_from = (p != me && lossless(p)).then_some(c.next_send_seq);
        }
    }

    /// How many frames sent to `peer` over its lossless link without a copy kept are not
    /// confirmed: what a repair of that link could not send again. (After a resume none is
    /// left: the peer had taken all of them before the drain let the ranks detach.)
    pub fn unrepairable(&self, peer: PeerId) -> u64 {
        let Some(c) = self.channels.get(peer as usize) else { return 0 };
        c.lossless_from.map_or(0, |from| c.unkept_end.saturating_sub(from.max(c.confirmed_seq)))
    }

    /// Keeps a numbered frame sent to another rank until that rank confirms it (a repair
    /// sends it again).
    fn keep_unconfirmed(&mut self, kept: Transmit) {
        self.channels[kept.peer as usize].unconfirmed.push_back(kept);
        self.unconfirmed_frames += 1;
    }

    /// Fills in the channel's part of a frame for `peer` about to be emitted (epoch, source,
    /// sequence number, `ack`), within the bounds on frames queued and unconfirmed.
    fn stamp(&mut self, peer: PeerId, mut header: Header, payload_len: usize) -> MpiResult<Header> {
        let limit = self.config.outbox_limit_frames;
        if self.outbox.len() + self.held.len() >= limit {
            return err(ErrorClass::Intern, format!("outbox holds {limit} frames, the limit"));
        }
        if self.unconfirmed_frames >= 2 * limit {
            return err(
                ErrorClass::Intern,
                format!("{} frames sent are not confirmed by their receivers, the limit", self.unconfirmed_frames),
            );
        }
        let chan = &mut self.channels[peer as usize];
        header.epoch = self.epoch;
        header.src = self.me;
        header.seq = chan.next_send_seq;
        header.ack = chan.next_recv_seq as u32;
        chan.ack_told = chan.next_recv_seq;
        chan.bytes_since_ack = 0;
        header.payload_len = payload_len as u32;
        if numbered(header.kind) {
            chan.next_send_seq += 1;
        }
        Ok(header)
    }

    /// Starts a send of `data` to world rank `dest` (MPI-3.1 §3.4, §3.7).
    /// `sync` selects synchronous mode: completion then implies the receive was matched.
    pub fn isend(&mut self, dest: i32, ctx: u32, tag: i32, data: SendData, sync: bool) -> MpiResult<ReqId> {
        let peer = self.check_peer(dest)?;
        let id = self.requests.next_id();
        let len = data.as_slice().len();
        let phase = if len <= self.config.eager_limit_bytes {
            self.emit_eager(peer, ctx, tag, id, data, sync)?;
            let phase = if sync { SendPhase::AwaitSyncAck } else { SendPhase::Done };
            (phase, SendData::Owned(Vec::new()))
        } else {
            let header = Header { ctx, tag, msg_id: id, arg: len as u64, ..Header::new(FrameKind::Rts) };
            self.emit(peer, header, Payload::Empty)?;
            (SendPhase::AwaitCts, data)
        };
        let (phase, data) = phase;
        let stored = self.requests.insert(Req::Send(SendReq { peer, ctx, tag, data, phase }));
        debug_assert_eq!(stored, id, "emitting frames stores no request");
        self.deliver_loopback()?;
        Ok(id)
    }

    /// Sends `bytes` to world rank `dest` in standard mode if they go eagerly, which completes
    /// the send at once: no request is made (a blocking `MPI_Send` of a small message).
    /// `None` when they are too large for that (the caller then uses [`Core::isend`]).
    ///
    /// When the caller's transport `may_go_direct` and nothing queued may have to go before
    /// the frame (the outbox is empty and no drain holds frames back), the frame is not
    /// queued: [`EagerSend::Direct`] gives its header,
    /// and the caller hands it and `bytes` to the transport at once (one copy, from the
    /// application's buffer into the transport). Unless the link loses no frame it accepted
    /// ([`Core::set_lossless`]), the core keeps its own copy until the peer
    /// confirms it, as for every numbered frame.
    pub fn send_eager(
        &mut self,
        dest: i32,
        ctx: u32,
        tag: i32,
        bytes: &[u8],
        may_go_direct: bool,
    ) -> MpiResult<Option<EagerSend>> {
        let peer = self.check_peer(dest)?;
        if bytes.len() > self.config.eager_limit_bytes {
            return Ok(None);
        }
        let id = self.alloc_message_id();
        let header = Header { ctx, tag, msg_id: id, ..Header::new(FrameKind::Eager) };
        if !may_go_direct || peer == self.me || self.holding || !self.outbox.is_empty() {
            self.emit(peer, header, Payload::copied(bytes))?;
            self.deliver_loopback()?;
            return Ok(Some(EagerSend::Queued));
        }
        let header = self.stamp(peer, header, bytes.len())?;
        self.keep_for_repair(peer, header, || Payload::copied(bytes));
        Ok(Some(EagerSend::Direct { peer, header }))
    }

    /// Queues the eager frame of message `id`.
    fn emit_eager(&mut self, peer: PeerId, ctx: u32, tag: i32, id: ReqId, data: SendData, sync: bool) -> MpiResult<()> {
        let kind = if sync { FrameKind::EagerSync } else { FrameKind::Eager };
        let header = Header { ctx, tag, msg_id: id, ..Header::new(kind) };
        // The frame owns a copy, so the send is complete as soon as it is queued. A small one
        // is held inline: the handle the core keeps until the peer confirms it is then a
        // copy, where a vector would be shared behind a new allocation.
        let payload = match data {
            SendData::Owned(v) if v.len() > kawarimi_transports::INLINE_BYTES => Payload::Owned(v),
            SendData::Owned(v) => Payload::copied(&v),
            SendData::Static(s) => Payload::copied(s),
        };
        self.emit(peer, header, payload)
    }

    /// Posts a receive from world rank `source` (or `ANY_SOURCE`) (MPI-3.1 §3.4, §3.7).
    pub fn irecv(&mut self, source: i32, ctx: u32, tag: i32, buf: RecvBuf) -> MpiResult<ReqId> {
        if source != ANY_SOURCE {
            self.check_peer(source)?;
        }
        let req = RecvReq { buf: Some(buf), phase: RecvPhase::Posted, status: Status::default() };
        let id = self.requests.insert(Req::Recv(req));
        let found = self
            .unexpected
            .iter()
            .position(|u| u.ctx == ctx && source_matches(source, u.src) && tag_matches(tag, u.tag));
        match found {
            Some(i) => {
                let u = self.unexpected.remove(i).expect("index from position");
                if let UnexpectedKind::Eager { data, .. } = &u.kind {
                    self.unexpected_bytes -= data.len();
                }
                self.match_message(id, u)?;
            }
            None => self.posted.push_back(Posted { id, ctx, source, tag }),
        }
        Ok(id)
    }

    /// A request the engine completes itself ([`Core::complete_external`]).
    pub fn new_external(&mut self) -> ReqId {
        self.requests.insert(Req::External(None))
    }

    /// Completes an external request with `status`.
    pub fn complete_external(&mut self, id: ReqId, status: Status) {
        if let Some(Req::External(s)) = self.requests.get_mut(id) {
            *s = Some(status);
        }
        self.reap_detached();
    }

    pub fn is_complete(&self, id: ReqId) -> bool {
        match self.requests.get(id) {
            Some(Req::Send(s)) => matches!(s.phase, SendPhase::Done),
            Some(Req::Recv(r)) => matches!(r.phase, RecvPhase::Done),
            Some(Req::External(s)) => s.is_some(),
            None => false,
        }
    }

    /// Whether request `id` exists and has not completed (a completed one whose owner took
    /// it no longer exists).
    pub fn is_pending(&self, id: ReqId) -> bool {
        self.requests.get(id).is_some() && !self.is_complete(id)
    }

    /// The status of a completed request, without taking it (`MPI_Request_get_status`).
    pub fn peek_status(&self, id: ReqId) -> Option<Status> {
        if !self.is_complete(id) {
            return None;
        }
        match self.requests.get(id)? {
            Req::Send(_) => Some(Status::default()),
            Req::Recv(r) => Some(r.status),
            Req::External(s) => *s,
        }
    }

    /// Removes a completed request and returns its outcome; `None` if it is not complete.
    pub fn take_completion(&mut self, id: ReqId) -> Option<Completion> {
        if !self.is_complete(id) {
            return None;
        }
        match self.requests.remove(id)? {
            Req::Send(_) => Some(Completion { status: Status::default(), recv_buf: None }),
            Req::Recv(mut r) => Some(Completion { status: r.status, recv_buf: r.buf.take() }),
            Req::External(s) => Some(Completion { status: s.unwrap_or_default(), recv_buf: None }),
        }
    }

    /// Queues a `Bye` to every peer: this rank is finalizing and sends nothing more.
    pub fn say_bye(&mut self) -> MpiResult<()> {
        let me = self.me;
        for peer in (0..self.size).filter(|&p| p != me) {
            self.emit(peer, Header::new(FrameKind::Bye), Payload::Empty)?;
        }
        Ok(())
    }

    /// The code of the first `MPI_Abort` a peer announced, if one did.
    pub fn peer_abort_code(&self) -> Option<i32> {
        self.peer_abort_code
    }

    /// Queues an `Abort` carrying `code` and `message` to every peer.
    pub fn say_abort(&mut self, code: i32, message: &str) {
        let me = self.me;
        for peer in (0..self.size).filter(|&p| p != me) {
            let h = Header { arg: code as u64, ..Header::new(FrameKind::Abort) };
            // Best effort: a full outbox only means the peers learn of the abort from the
            // launcher instead.
            let _ = self.emit(peer, h, Payload::Owned(message.as_bytes().to_vec()));
        }
    }

    /// Whether `peer`'s drain marker of the current switch has arrived.
    pub fn peer_marker_seen(&self, peer: PeerId) -> bool {
        self.channels.get(peer as usize).is_some_and(|c| c.marker_seen)
    }

    pub fn peer_said_bye(&self, peer: PeerId) -> bool {
        self.channels.get(peer as usize).is_some_and(|c| c.said_bye)
    }

    /// Next frame to hand to the transport. Frames for a peer whose link is broken are
    /// dropped on the way: the numbered ones are kept unconfirmed and go again after the
    /// repair.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            let t = self.outbox.pop_front()?;
            if !self.channels[t.peer as usize].broken {
                return Some(t);
            }
        }
    }

    /// Puts back a frame the transport could not take yet (its queue was full), so that
    /// per-peer order is kept.
    pub fn unpoll_transmit(&mut self, t: Transmit) {
        self.outbox.push_front(t);
    }

    pub fn has_transmit(&self) -> bool {
        !self.outbox.is_empty()
    }

    fn deliver_loopback(&mut self) -> MpiResult<()> {
        // Bounded by the frames queued so far: handling a frame may queue more (a Cts answer),
        // which the loop then also delivers; each message produces a finite exchange.
        while let Some((h, p)) = self.loopback.pop_front() {
            self.handle_frame(self.me, h, Payload::Owned(p))?;
        }
        Ok(())
    }

    /// Handles one frame a transport delivered from `peer`.
    pub fn handle_frame(&mut self, peer: PeerId, header: Header, payload: impl Into<Payload>) -> MpiResult<()> {
        let payload = payload.into();
        if peer >= self.size || header.src != peer {
            return err(ErrorClass::Intern, format!("frame claims source {} but arrived from rank {peer}", header.src));
        }
        // A rejected frame consumes nothing: the epoch is checked before the sequence number.
        if header.epoch != self.epoch {
            return err(
                ErrorClass::Intern,
                format!("channel from rank {peer}: expected epoch {}, got {} ({header})", self.epoch, header.epoch),
            );
        }
        let chan = &mut self.channels[peer as usize];
        if header.flags & FLAG_REPLAY != 0 && header.seq < chan.next_recv_seq && numbered(header.kind) {
            // Sent again by a repair, and taken before the link died. A sender that waits for
            // our confirmation of it gets one again.
            if header.flags & FLAG_CONFIRM != 0 && peer != self.me {
                self.emit(peer, Header::new(FrameKind::Ack), Payload::Empty)?;
            }
            return Ok(());
        }
        if header.seq > chan.next_recv_seq && peer != self.me && chan.gap_repairs < MAX_GAP_REPAIRS {
            // Frames went missing: a link of an earlier epoch lost them, and the switch after
            // it did not send them again (its two ends learned of the loss too late to be
            // named in it). The sender still keeps them until confirmed: a repair sends them.
            if !std::mem::replace(&mut chan.gap, true) {
                chan.gap_repairs += 1;
                let why = format!("frames went missing: expected seq {}, got {header}", chan.next_recv_seq);
                self.gaps.push((peer, why));
            }
            return Ok(());
        }
        if header.seq != chan.next_recv_seq {
            return err(
                ErrorClass::Intern,
                format!("channel from rank {peer}: expected seq {}, got {} ({header})", chan.next_recv_seq, header.seq),
            );
        }
        self.take_ack(peer, header.ack)?;
        let chan = &mut self.channels[peer as usize];
        if numbered(header.kind) {
            if header.flags & FLAG_REPLAY != 0 {
                // A repair filled what went missing.
                chan.gap_repairs = 0;
            }
            chan.next_recv_seq += 1;
            // (A placed payload arrived without bytes in the frame: its length counts.)
            chan.bytes_since_ack += header.payload_len as usize;
            let behind = chan.next_recv_seq - chan.ack_told;
            let asked = header.flags & FLAG_CONFIRM != 0;
            if peer != self.me && (asked || behind >= ACK_EVERY_FRAMES || chan.bytes_since_ack >= ACK_EVERY_BYTES) {
                self.emit(peer, Header::new(FrameKind::Ack), Payload::Empty)?;
            }
        }
        match header.kind {
            FrameKind::Eager | FrameKind::EagerSync if header.flags & FLAG_PLACED != 0 => {
                self.take_placed_eager(peer, &header, None)?
            }
            // Matched while its transport placed it, then lost with the link: a repair sends
            // it again with its bytes, and it completes the receive it was matched to.
            FrameKind::Eager | FrameKind::EagerSync
                if self.channels[peer as usize].placing.is_some() && header.flags & FLAG_REPLAY != 0 =>
            {
                self.take_placed_eager(peer, &header, Some(payload.as_slice()))?
            }
            FrameKind::Eager | FrameKind::EagerSync => {
                if self.channels[peer as usize].placing.is_some() {
                    return err(
                        ErrorClass::Intern,
                        format!("rank {peer}'s frame {header} came before the one being placed"),
                    );
                }
                let sync_msg_id = (header.kind == FrameKind::EagerSync).then_some(header.msg_id);
                let u = Unexpected {
                    src: peer,
                    ctx: header.ctx,
                    tag: header.tag,
                    kind: UnexpectedKind::Eager { data: payload, sync_msg_id },
                };
                self.arrive(u)?;
            }
            FrameKind::Rts => {
                let u = Unexpected {
                    src: peer,
                    ctx: header.ctx,
                    tag: header.tag,
                    kind: UnexpectedKind::Rts { msg_id: header.msg_id, total: header.arg as usize },
                };
                self.arrive(u)?;
            }
            FrameKind::Cts => self.handle_cts(peer, header.msg_id, header.arg)?,
            FrameKind::Data => {
                // A placed payload is already in the receive buffer; the frame carries none.
                let placed = (header.flags & FLAG_PLACED != 0).then_some(header.payload_len as usize);
                self.handle_data(peer, header.msg_id, header.arg as usize, payload, placed)?
            }
            FrameKind::SyncAck => match self.requests.get_mut(header.msg_id) {
                Some(Req::Send(s)) if matches!(s.phase, SendPhase::AwaitSyncAck) && s.peer == peer => {
                    s.phase = SendPhase::Done;
                    s.data = SendData::Owned(Vec::new());
                }
                _ => {
                    return err(
                        ErrorClass::Intern,
                        format!("SyncAck from rank {peer} for unknown send {}", header.msg_id),
                    )
                }
            },
            FrameKind::Bye => self.channels[peer as usize].said_bye = true,
            FrameKind::Abort => {
                let msg = String::from_utf8_lossy(payload.as_slice());
                self.peer_abort_code.get_or_insert(header.arg as i32);
                return err(
                    ErrorClass::Other,
                    format!("rank {peer} aborted the job (code {}): {msg}", header.arg as i32),
                );
            }
            FrameKind::Ack => {}
            FrameKind::Marker => {
                let chan = &mut self.channels[peer as usize];
                if std::mem::replace(&mut chan.marker_seen, true) {
                    return err(
                        ErrorClass::Intern,
                        format!("two drain markers from rank {peer} in epoch {}", self.epoch),
                    );
                }
            }
        }
        self.reap_detached();
        Ok(())
    }

    fn handle_cts(&mut self, peer: PeerId, msg_id: u64, recv_id: u64) -> MpiResult<()> {
        let chunk = self.config.chunk_bytes;
        let Some(Req::Send(s)) = self.requests.get_mut(msg_id) else {
            return err(ErrorClass::Intern, format!("Cts from rank {peer} for unknown send {msg_id}"));
        };
        if s.peer != peer || !matches!(s.phase, SendPhase::AwaitCts) {
            return err(ErrorClass::Intern, format!("Cts from rank {peer} for send {msg_id} in phase {:?}", s.phase));
        }
        let (ctx, tag) = (s.ctx, s.tag);
        let data_header =
            |start: usize| Header { ctx, tag, msg_id: recv_id, arg: start as u64, ..Header::new(FrameKind::Data) };
        if let (SendData::Static(buf), false) = (&s.data, peer == self.me) {
            // Straight from the application's buffer: the send completes when the receiver
            // confirms the last chunk (MPI forbids touching the buffer until then).
            let buf: &'static [u8] = buf;
            s.phase = SendPhase::AwaitConfirm;
            let total = buf.len();
            for start in (0..total).step_by(chunk) {
                let len = chunk.min(total - start);
                let mut h = data_header(start);
                if start + len == total {
                    h.flags |= FLAG_CONFIRM;
                }
                self.emit(peer, h, Payload::Static(&buf[start..start + len]))?;
            }
            let chan = &mut self.channels[peer as usize];
            chan.confirm_waiters.push_back((chan.next_send_seq - 1, msg_id));
            return Ok(());
        }
        s.phase = SendPhase::Done;
        let data = std::mem::replace(&mut s.data, SendData::Owned(Vec::new()));
        // Complete once its chunks are queued: an owned buffer is shared by its chunks
        // without copying; a `Static` one to this very rank is copied once.
        let data = match data {
            SendData::Owned(v) => std::sync::Arc::new(v),
            SendData::Static(s) => std::sync::Arc::new(s.to_vec()),
        };
        let total = data.len();
        for start in (0..total).step_by(chunk) {
            let len = chunk.min(total - start);
            self.emit(peer, data_header(start), Payload::Shared { data: data.clone(), start, len })?;
        }
        Ok(())
    }

    /// Where the payload of rendezvous data `header` from `peer` should land, if straight in
    /// the receive's buffer: the application's contiguous buffer, or the staging buffer of a
    /// receive that unpacks or of a collective (a heap block that does not move while the
    /// receive holds it), with room for all of it (a truncating receive takes it through a
    /// copy). The buffer stays untouched here until the frame is delivered with
    /// [`FLAG_PLACED`].
    ///
    /// An eager frame is matched here instead, to a posted receive with room for all of it
    /// (see [`Core::eager_placement`]).
    pub fn placement(&mut self, peer: PeerId, header: &Header) -> Option<Placement> {
        match header.kind {
            FrameKind::Data => {}
            FrameKind::Eager | FrameKind::EagerSync => return self.eager_placement(peer, header),
            _ => return None,
        }
        let Some(Req::Recv(r)) = self.requests.get_mut(header.msg_id) else { return None };
        let RecvPhase::Receiving { total, .. } = r.phase else { return None };
        let (offset, len) = (header.arg as usize, header.payload_len as usize);
        let buf = r.buf.as_mut()?.as_mut_slice();
        if r.status.source != peer as i32 || offset + len > total || offset + len > buf.len() || len == 0 {
            return None;
        }
        Some(Placement { ptr: buf[offset..].as_mut_ptr(), len })
    }

    /// Takes rendezvous data: `payload`, or `placed` bytes the transport already wrote into
    /// the receive buffer where [`Core::placement`] said.
    fn handle_data(
        &mut self,
        peer: PeerId,
        recv_id: u64,
        offset: usize,
        payload: Payload,
        placed: Option<usize>,
    ) -> MpiResult<()> {
        let Some(Req::Recv(r)) = self.requests.get_mut(recv_id) else {
            return err(ErrorClass::Intern, format!("Data from rank {peer} for unknown receive {recv_id}"));
        };
        let RecvPhase::Receiving { total, received } = &mut r.phase else {
            return err(ErrorClass::Intern, format!("Data from rank {peer} for receive {recv_id} not receiving"));
        };
        let n_payload = placed.unwrap_or(payload.len());
        if r.status.source != peer as i32 || offset + n_payload > *total {
            return err(
                ErrorClass::Intern,
                format!("Data from rank {peer} at {offset}+{n_payload} outside message of {total} bytes"),
            );
        }
        match r.buf.as_mut().expect("receiving request holds its buffer") {
            _ if placed.is_some() => {}
            // A whole message in one frame into a staging buffer of exactly its size: take the
            // frame's bytes instead of copying them.
            RecvBuf::Owned(v)
                if offset == 0
                    && n_payload == *total
                    && v.len() == n_payload
                    && matches!(payload, Payload::Owned(_)) =>
            {
                *v = payload.into_vec()
            }
            buf => {
                let buf = buf.as_mut_slice();
                // Bytes past the buffer's end are dropped: the status already says
                // MPI_ERR_TRUNCATE.
                if offset < buf.len() {
                    let n = n_payload.min(buf.len() - offset);
                    buf[offset..offset + n].copy_from_slice(&payload.as_slice()[..n]);
                }
            }
        }
        *received += n_payload;
        if *received == *total {
            r.phase = RecvPhase::Done;
        }
        Ok(())
    }

    /// Frees a request the application will not wait for (`MPI_Request_free`): a completed one
    /// is dropped now; an active send finishes in the background and is dropped then.
    pub fn free_request(&mut self, id: ReqId) -> MpiResult<()> {
        match self.requests.get(id) {
            None => err(ErrorClass::Request, format!("request {id} does not exist")),
            Some(_) if self.is_complete(id) => {
                self.requests.remove(id);
                Ok(())
            }
            Some(_) => {
                self.detached.push(id);
                Ok(())
            }
        }
    }

    /// Drops detached requests that have completed since they were freed.
    fn reap_detached(&mut self) {
        if self.detached.is_empty() {
            return;
        }
        let mut detached = std::mem::take(&mut self.detached);
        detached.retain(|&id| {
            if self.is_complete(id) {
                self.requests.remove(id);
                false
            } else {
                true
            }
        });
        self.detached = detached;
    }
}
