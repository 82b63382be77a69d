//! One-sided communication (MPI-3.1 chapter 11): windows, the operations on them, and their
//! synchronisation.
//!
//! Every operation is a message from the origin to the target in the window's own context
//! (a duplicate of the communicator it was made on), applied at the target by the engine's
//! progress ([`crate::engine::Engine`] advances every window in each round), in the order
//! the messages arrived: operations from one origin are applied in the order it issued them,
//! which gives the standard's default accumulate ordering (§11.7.2) and lets every
//! synchronisation be a marker behind the operations it completes. A `Get` and the fetching
//! operations send their result back in the same context, and results from one target reach
//! an origin in the order it asked.
//!
//! `MPI_Win_fence` (§11.5.1) sends a fence marker to every member and waits until it has
//! applied one from every member: then every operation of the closing epoch that targets this
//! process is applied (it travelled ahead of its origin's marker), and every member has
//! entered the fence, so no operation of the next epoch reaches memory that a member may
//! still be storing to in the closing one. Passive-target locks are granted by the target.
//!
//! The target reaches its memory through [`WindowMemory`], given by whoever made the window
//! (the shim: the application's memory), so that this crate stays free of raw memory access.
//! Operations that travel in the same context as every other message are drained by a switch
//! like any other, so an open epoch survives a switch unchanged.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::comm::Comm;
use crate::core::{Core, RecvBuf, ReqId, SendData, ANY_SOURCE};
use crate::datatype::{Block, Datatype, Primitive};
use crate::error::{err, ErrorClass, MpiResult};
use crate::op::{self, PredefinedOp};

/// Tag of the messages that carry operations and synchronisation to a target.
pub const TAG_OP: i32 = 1;
/// Tag of the results a target sends back (`Get`, the fetching operations, lock grants,
/// acknowledgements of unlock and flush).
pub const TAG_REPLY: i32 = 2;

/// Most bytes one operation may move (a hostile or broken message must not make the target
/// pack terabytes): 16 GiB, beyond any window on the machines kawarimi runs on.
pub const MAX_OPERATION_BYTES: usize = 1 << 34;

/// Most runs a target datatype may be described with on the wire (each is 17 bytes).
pub const MAX_TARGET_RUNS: usize = 1 << 20;

/// A window's memory at this process, as the target side reaches it.
pub trait WindowMemory: Send {
    /// Runs `f` on the window's bytes `[lo, hi)`, offsets as operations name them (from the
    /// window's start; in a dynamic window, addresses). `ErrorClass::RmaRange` when they are
    /// not all the window's.
    fn with_range(&mut self, lo: usize, hi: usize, f: &mut dyn FnMut(&mut [u8]) -> MpiResult<()>) -> MpiResult<()>;
}

/// What an operation message asks of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    Put = 1,
    Get = 2,
    /// `MPI_Accumulate` with its op (MPI_REPLACE is a put that keeps accumulate ordering).
    Accumulate = 3,
    /// `MPI_Get_accumulate` and `MPI_Fetch_and_op`: the old contents back, then the op.
    GetAccumulate = 4,
    /// `MPI_Compare_and_swap`: the payload is the new value then the compare value.
    CompareAndSwap = 5,
    /// An origin's fence marker.
    Fence = 6,
    /// Lock requests (granted by a reply), unlock and flush (acknowledged by a reply once
    /// everything the origin sent before them is applied).
    LockShared = 7,
    LockExclusive = 8,
    Unlock = 9,
    Flush = 10,
    /// General active target (§11.5.2): a target's `MPI_Win_post` tells each origin of its
    /// group, an origin's `MPI_Win_complete` tells each target (behind its operations).
    Post = 11,
    Complete = 12,
    /// A target could not apply an operation of this origin: the payload is the error's class
    /// name, a newline and its detail. The origin's next synchronisation on the window reports
    /// it (the operation was the origin's, so its error is too).
    Error = 13,
}

impl OpKind {
    const ALL: [OpKind; 13] = [
        OpKind::Put,
        OpKind::Get,
        OpKind::Accumulate,
        OpKind::GetAccumulate,
        OpKind::CompareAndSwap,
        OpKind::Fence,
        OpKind::LockShared,
        OpKind::LockExclusive,
        OpKind::Unlock,
        OpKind::Flush,
        OpKind::Post,
        OpKind::Complete,
        OpKind::Error,
    ];

    fn from_u8(v: u8) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// Whether the target sends a reply.
    pub fn replies(self) -> bool {
        matches!(
            self,
            OpKind::Get
                | OpKind::GetAccumulate
                | OpKind::CompareAndSwap
                | OpKind::LockShared
                | OpKind::LockExclusive
                | OpKind::Unlock
                | OpKind::Flush
        )
    }

    fn carries_data(self) -> bool {
        matches!(self, OpKind::Put | OpKind::Get | OpKind::Accumulate | OpKind::GetAccumulate | OpKind::CompareAndSwap)
    }
}

/// Where in the target's window an operation goes: `count` elements of `datatype` from byte
/// `offset`.
#[derive(Debug, Clone)]
pub struct Target {
    pub offset: usize,
    pub count: usize,
    pub datatype: Arc<Datatype>,
}

const HEADER_BYTES: usize = 40;
const RUN_BYTES: usize = 17;

fn prim_code(p: Primitive) -> u8 {
    Primitive::ALL.iter().position(|&q| q == p).expect("every primitive is listed") as u8
}

/// The message of one operation: header, the target datatype as its runs, then `payload`.
///
/// Header (little endian): kind u8, op u8, 2 reserved, runs u32, offset u64, count u64,
/// lb i64, extent i64. A run is disp i64, count u64, primitive u8.
pub fn encode(kind: OpKind, op: PredefinedOp, target: Option<&Target>, payload: &[u8]) -> MpiResult<Vec<u8>> {
    let mut runs = Vec::new();
    if let Some(t) = target {
        // Counted first, without expanding: a type of 10^8 runs is refused at once.
        if t.datatype.run_count() > MAX_TARGET_RUNS {
            return err(
                ErrorClass::Unsupported,
                format!("a target datatype of more than {MAX_TARGET_RUNS} runs is not supported"),
            );
        }
        t.datatype.for_each_block(|b| runs.push(b));
    }
    let mut m = Vec::with_capacity(HEADER_BYTES + runs.len() * RUN_BYTES + payload.len());
    m.extend_from_slice(&[kind as u8, PredefinedOp::ALL.iter().position(|&o| o == op).unwrap_or(0) as u8, 0, 0]);
    m.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    let (offset, count, lb, extent) = target.map_or((0, 0, 0, 0), |t| {
        (t.offset as u64, t.count as u64, t.datatype.lb() as i64, t.datatype.extent() as i64)
    });
    for v in [offset, count] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    for v in [lb, extent] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    for b in &runs {
        m.extend_from_slice(&(b.disp as i64).to_le_bytes());
        m.extend_from_slice(&(b.count as u64).to_le_bytes());
        m.push(prim_code(b.prim));
    }
    m.extend_from_slice(payload);
    Ok(m)
}

/// An operation message, read and checked.
#[derive(Debug)]
pub struct Decoded {
    pub kind: OpKind,
    pub op: PredefinedOp,
    pub target: Option<Target>,
    pub payload: Vec<u8>,
}

fn malformed<T>(what: &str) -> MpiResult<T> {
    err(ErrorClass::Intern, format!("malformed one-sided operation message: {what}"))
}

/// Reads an operation message; anything that does not parse is an error naming what.
pub fn decode(mut m: Vec<u8>) -> MpiResult<Decoded> {
    if m.len() < HEADER_BYTES {
        return malformed(&format!("{} bytes, shorter than its header", m.len()));
    }
    let Some(kind) = OpKind::from_u8(m[0]) else { return malformed(&format!("unknown kind {}", m[0])) };
    let Some(&op) = PredefinedOp::ALL.get(m[1] as usize) else { return malformed(&format!("unknown op {}", m[1])) };
    let word = |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().expect("8 bytes"));
    let nruns = u32::from_le_bytes(m[4..8].try_into().expect("4 bytes")) as usize;
    let (offset, count, lb, extent) = (word(8), word(16), word(24) as i64, word(32) as i64);
    let runs_end = match nruns.checked_mul(RUN_BYTES).and_then(|n| n.checked_add(HEADER_BYTES)) {
        Some(e) if e <= m.len() && nruns <= MAX_TARGET_RUNS => e,
        _ => return malformed(&format!("{nruns} runs do not fit in {} bytes", m.len())),
    };
    let target = if kind.carries_data() {
        let mut runs = Vec::with_capacity(nruns);
        for r in m[HEADER_BYTES..runs_end].chunks_exact(RUN_BYTES) {
            let disp = i64::from_le_bytes(r[0..8].try_into().expect("8 bytes"));
            let n = u64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
            let Some(&prim) = Primitive::ALL.get(r[16] as usize) else {
                return malformed(&format!("unknown primitive {}", r[16]));
            };
            let (Ok(disp), Ok(n)) = (isize::try_from(disp), usize::try_from(n)) else {
                return malformed("a run does not fit an address");
            };
            runs.push(Block { disp, prim, count: n });
        }
        let (Ok(offset), Ok(count), Ok(lb), Ok(extent)) =
            (usize::try_from(offset), usize::try_from(count), isize::try_from(lb), isize::try_from(extent))
        else {
            return malformed("offset, count or bounds do not fit an address");
        };
        let datatype = match Datatype::from_runs(&runs, lb, extent) {
            Ok(d) => Arc::new(d),
            Err(e) => return malformed(&format!("target datatype: {}", e.detail)),
        };
        Some(Target { offset, count, datatype })
    } else {
        None
    };
    let payload = m.split_off(runs_end);
    Ok(Decoded { kind, op, target, payload })
}

/// The byte range `[lo, hi)` that `count` elements of `datatype` from `offset` touch
/// (`lo == hi` when nothing); `RmaRange` when it is not within the address range.
pub fn span_of(t: &Target) -> MpiResult<(usize, usize)> {
    check_range(usize::MAX >> 1, t)
}

/// Checks that `count` elements of `datatype` from byte `offset` lie inside a window of
/// `len` bytes; returns the byte range they touch.
pub fn check_range(len: usize, t: &Target) -> MpiResult<(usize, usize)> {
    let outside = || {
        err(
            ErrorClass::RmaRange,
            format!(
                "{} elements of a {}-byte datatype at byte {} reach outside a window of {len} bytes",
                t.count,
                t.datatype.size(),
                t.offset
            ),
        )
    };
    let Some((lo, hi)) = t.datatype.checked_span(t.count) else { return outside() };
    let (Ok(at), Ok(len_i)) = (isize::try_from(t.offset), isize::try_from(len)) else { return outside() };
    match (at.checked_add(lo), at.checked_add(hi)) {
        (Some(a), Some(b)) if lo == hi || (a >= 0 && b <= len_i) => Ok((a.max(0) as usize, b.max(0) as usize)),
        _ => outside(),
    }
}

/// The lock a target holds for its window (§11.5.3).
#[derive(Debug, Default)]
struct LockState {
    /// Origins holding it shared.
    shared: Vec<i32>,
    exclusive: Option<i32>,
    /// Requests waiting, in arrival order: origin and whether exclusive.
    waiting: VecDeque<(i32, bool)>,
}

impl LockState {
    fn can_grant(&self, exclusive: bool) -> bool {
        self.exclusive.is_none() && (!exclusive || self.shared.is_empty())
    }
}

/// Markers of one kind from each member: arrived, and taken by the calls that wait for them.
#[derive(Debug)]
struct Counted {
    arrived: Vec<u64>,
    taken: Vec<u64>,
}

impl Counted {
    fn new(n: usize) -> Counted {
        Counted { arrived: vec![0; n], taken: vec![0; n] }
    }

    fn take(&mut self, ranks: &[i32]) -> bool {
        let ready = ranks.iter().all(|&r| {
            let r = r as usize;
            r < self.arrived.len() && self.arrived[r] > self.taken[r]
        });
        if ready {
            for &r in ranks {
                self.taken[r as usize] += 1;
            }
        }
        ready
    }
}

/// One window at this process: the target side (applying what arrives), and what the origin
/// side needs to synchronise.
pub struct Window {
    pub comm: Arc<Comm>,
    /// Each member's window size in bytes and displacement unit, by rank in `comm`.
    pub sizes: Vec<usize>,
    pub disp_units: Vec<usize>,
    memory: Box<dyn WindowMemory>,
    /// Operation messages being received, applied from the front in arrival order.
    receiving: VecDeque<ReqId>,
    /// Fence markers applied from each member, and fences this process has entered.
    fences_from: Vec<u64>,
    fences: u64,
    /// `MPI_Win_post` and `MPI_Win_complete` markers applied from each member, and how
    /// many of them a start or a wait has taken.
    posts: Counted,
    completes: Counted,
    lock: LockState,
    /// The first error met applying an operation: reported by the next synchronisation.
    failed: Option<crate::error::MpiError>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window").field("sizes", &self.sizes).field("fences", &self.fences).finish()
    }
}

impl Window {
    pub fn new(comm: Arc<Comm>, sizes: Vec<usize>, disp_units: Vec<usize>, memory: Box<dyn WindowMemory>) -> Window {
        let n = sizes.len();
        Window {
            comm,
            sizes,
            disp_units,
            memory,
            receiving: VecDeque::new(),
            fences_from: vec![0; n],
            fences: 0,
            posts: Counted::new(n),
            completes: Counted::new(n),
            lock: LockState::default(),
            failed: None,
        }
    }

    fn world(&self, rank: i32) -> MpiResult<i32> {
        match self.comm.group.world_rank(rank) {
            Some(w) => Ok(w as i32),
            None => err(ErrorClass::Rank, format!("rank {rank} is not in a window of {}", self.sizes.len())),
        }
    }

    /// Sends one operation message to `target` (a rank of the window); the send finishes in
    /// the background. The message owns its bytes, so the origin's buffer is free at once.
    pub fn send(&self, core: &mut Core, target: i32, message: Vec<u8>) -> MpiResult<()> {
        let id = core.isend(self.world(target)?, self.comm.p2p_ctx(), TAG_OP, SendData::Owned(message), false)?;
        core.free_request(id)
    }

    /// Posts the receive of a reply from `target` into `buf`.
    pub fn recv_reply(&self, core: &mut Core, target: i32, buf: RecvBuf) -> MpiResult<ReqId> {
        core.irecv(self.world(target)?, self.comm.p2p_ctx(), TAG_REPLY, buf)
    }

    /// Enters a fence: one marker to every member (this one included). The fence is over
    /// when [`Window::fence_done`] says so.
    pub fn enter_fence(&mut self, core: &mut Core) -> MpiResult<()> {
        self.fences += 1;
        let marker = encode(OpKind::Fence, PredefinedOp::NoOp, None, &[])?;
        for r in 0..self.sizes.len() as i32 {
            self.send(core, r, marker.clone())?;
        }
        Ok(())
    }

    /// Every member's marker of the last fence entered has been applied (and with it every
    /// operation sent before it).
    pub fn fence_done(&self) -> bool {
        self.fences_from.iter().all(|&f| f >= self.fences)
    }

    /// Sends a marker of `kind` (a post or a complete) to each of `ranks`.
    pub fn send_markers(&mut self, core: &mut Core, kind: OpKind, ranks: &[i32]) -> MpiResult<()> {
        let marker = encode(kind, PredefinedOp::NoOp, None, &[])?;
        for &r in ranks {
            self.send(core, r, marker.clone())?;
        }
        Ok(())
    }

    /// Takes one post (`OpKind::Post`) or complete marker from each of `ranks` if every one
    /// has arrived; says whether it did.
    pub fn take_markers(&mut self, kind: OpKind, ranks: &[i32]) -> bool {
        let c = if kind == OpKind::Post { &mut self.posts } else { &mut self.completes };
        c.take(ranks)
    }

    /// The first error met applying an operation, if any (taken: reported once).
    pub fn take_failure(&mut self) -> MpiResult<()> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes what has arrived and applies what is complete, in arrival order. Returns whether
    /// it did anything.
    pub fn advance(&mut self, core: &mut Core) -> MpiResult<bool> {
        let ctx = self.comm.p2p_ctx();
        let mut did = false;
        while let Some((message, info)) = core.improbe(ANY_SOURCE, ctx, TAG_OP) {
            let id = core.mrecv(message, RecvBuf::Owned(vec![0; info.len]))?;
            self.receiving.push_back(id);
            did = true;
        }
        while let Some(&id) = self.receiving.front() {
            if !core.is_complete(id) {
                break;
            }
            self.receiving.pop_front();
            did = true;
            let Some(done) = core.take_completion(id) else { continue };
            let origin = self.comm.rank_of_world(done.status.source as u32);
            let Some(RecvBuf::Owned(mut bytes)) = done.recv_buf else { continue };
            bytes.truncate(done.status.len);
            if let Err(e) = self.apply(core, origin, bytes) {
                if origin < 0 {
                    // Not from a member: this process's own next synchronisation says so.
                    self.failed.get_or_insert(e);
                } else {
                    // The origin's error: it learns it behind everything this process sends it
                    // before its next acknowledgement or marker.
                    let me = self.comm.rank;
                    let text = format!(
                        "{}\nrank {me} could not apply an operation of this process's: {}",
                        e.class.name(),
                        e.detail
                    );
                    let notice = encode(OpKind::Error, PredefinedOp::NoOp, None, text.as_bytes())?;
                    self.send(core, origin, notice)?;
                }
            }
        }
        Ok(did)
    }

    fn reply(&self, core: &mut Core, origin: i32, bytes: Vec<u8>) -> MpiResult<()> {
        let id = core.isend(self.world(origin)?, self.comm.p2p_ctx(), TAG_REPLY, SendData::Owned(bytes), false)?;
        core.free_request(id)
    }

    fn apply(&mut self, core: &mut Core, origin: i32, bytes: Vec<u8>) -> MpiResult<()> {
        if origin < 0 {
            return malformed("an operation from outside the window");
        }
        let d = decode(bytes)?;
        match d.kind {
            OpKind::Fence => {
                self.fences_from[origin as usize] += 1;
                Ok(())
            }
            OpKind::LockShared | OpKind::LockExclusive => {
                let exclusive = d.kind == OpKind::LockExclusive;
                self.lock.waiting.push_back((origin, exclusive));
                self.grant_locks(core)
            }
            OpKind::Unlock => {
                self.lock.shared.retain(|&o| o != origin);
                if self.lock.exclusive == Some(origin) {
                    self.lock.exclusive = None;
                }
                // Everything the origin sent before is applied: acknowledge, then let the
                // next in line in.
                self.reply(core, origin, Vec::new())?;
                self.grant_locks(core)
            }
            OpKind::Flush => self.reply(core, origin, Vec::new()),
            OpKind::Post => {
                self.posts.arrived[origin as usize] += 1;
                Ok(())
            }
            OpKind::Complete => {
                self.completes.arrived[origin as usize] += 1;
                Ok(())
            }
            OpKind::Error => {
                let text = String::from_utf8_lossy(&d.payload);
                let (class, detail) = text.split_once('\n').unwrap_or(("", &text));
                let class = ErrorClass::from_name(class).unwrap_or(ErrorClass::Other);
                self.failed.get_or_insert(crate::error::MpiError::new(class, detail.to_string()));
                Ok(())
            }
            _ => {
                let Some(t) = d.target else { return malformed("a data operation without a target") };
                let result = self.access(d.kind, d.op, &t, &d.payload);
                if d.kind.replies() {
                    // The origin waits for a reply: on failure it gets none of the data, and
                    // the error reaches this side's next synchronisation.
                    let out = match &result {
                        Ok(old) => old.clone(),
                        Err(_) => Vec::new(),
                    };
                    self.reply(core, origin, out)?;
                }
                result.map(|_| ())
            }
        }
    }

    /// Grants waiting lock requests in order while the lock allows.
    fn grant_locks(&mut self, core: &mut Core) -> MpiResult<()> {
        while let Some(&(origin, exclusive)) = self.lock.waiting.front() {
            if !self.lock.can_grant(exclusive) {
                break;
            }
            self.lock.waiting.pop_front();
            if exclusive {
                self.lock.exclusive = Some(origin);
            } else {
                self.lock.shared.push(origin);
            }
            self.reply(core, origin, Vec::new())?;
        }
        Ok(())
    }

    /// Applies one data operation to the memory; returns what goes back to the origin (the
    /// old contents, packed, for the fetching kinds).
    fn access(&mut self, kind: OpKind, op: PredefinedOp, t: &Target, payload: &[u8]) -> MpiResult<Vec<u8>> {
        let (lo, hi) = span_of(t)?;
        let total = match t.count.checked_mul(t.datatype.size()) {
            Some(n) if n <= MAX_OPERATION_BYTES => n,
            _ => return malformed(&format!("{} elements of {} bytes", t.count, t.datatype.size())),
        };
        let data_len = match kind {
            OpKind::Get => 0,
            OpKind::GetAccumulate if op == PredefinedOp::NoOp => 0,
            OpKind::CompareAndSwap => 2 * total,
            _ => total,
        };
        if payload.len() != data_len {
            return malformed(&format!("{} bytes of data for {data_len} at the target", payload.len()));
        }
        let prim = t.datatype.primitives();
        if matches!(kind, OpKind::Accumulate | OpKind::GetAccumulate | OpKind::CompareAndSwap)
            && prim.is_none()
            && total > 0
        {
            return err(ErrorClass::Type, "an accumulate's target datatype must be made of one predefined type");
        }
        let mut back = Vec::new();
        if lo == hi {
            // Nothing touched (no elements, or elements of no data).
            return Ok(back);
        }
        // The memory handed over starts at the buffer's address or the first byte touched,
        // whichever is lower (a type whose data starts after its origin touches nothing
        // before), so that the buffer's address has an index in it.
        let start = lo.min(t.offset);
        let (offset, count, dt) = (t.offset - start, t.count, &t.datatype);
        self.memory.with_range(start, hi, &mut |mem| {
            match kind {
                OpKind::Put => dt.unpack(payload, mem, offset, count)?,
                OpKind::Get => dt.pack(mem, offset, count, &mut back),
                OpKind::Accumulate | OpKind::GetAccumulate => {
                    let mut current = Vec::with_capacity(total);
                    dt.pack(mem, offset, count, &mut current);
                    if kind == OpKind::GetAccumulate {
                        back = current.clone();
                    }
                    if op != PredefinedOp::NoOp && total > 0 {
                        let prim = prim.expect("checked above");
                        op::apply(op, prim, payload, &mut current)?;
                        dt.unpack(&current, mem, offset, count)?;
                    }
                }
                OpKind::CompareAndSwap => {
                    dt.pack(mem, offset, count, &mut back);
                    let (new, compare) = payload.split_at(total);
                    if back == compare {
                        dt.unpack(new, mem, offset, count)?;
                    }
                }
                _ => unreachable!("only data operations reach access"),
            }
            Ok(())
        })?;
        Ok(back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_target(offset: usize, count: usize) -> Target {
        Target { offset, count, datatype: Arc::new(Datatype::predefined(Primitive::I32).unwrap()) }
    }

    #[test]
    fn messages_round_trip_and_malformed_ones_are_refused() {
        let i = Datatype::predefined(Primitive::I32).unwrap();
        let v = Datatype::vector(3, 1, 2, &i).unwrap();
        let t = Target { offset: 8, count: 2, datatype: Arc::new(v.clone()) };
        let m = encode(OpKind::Accumulate, PredefinedOp::Sum, Some(&t), &[7; 24]).unwrap();
        let d = decode(m.clone()).unwrap();
        assert_eq!((d.kind, d.op), (OpKind::Accumulate, PredefinedOp::Sum));
        let dt = &d.target.as_ref().unwrap().datatype;
        assert_eq!((dt.size(), dt.extent(), dt.lb()), (v.size(), v.extent(), v.lb()));
        assert_eq!(d.payload, [7; 24]);
        assert_eq!(d.target.unwrap().offset, 8);
        // Short, an unknown kind or primitive, runs past the end.
        assert_eq!(decode(m[..20].to_vec()).unwrap_err().class, ErrorClass::Intern);
        let mut bad = m.clone();
        bad[0] = 99;
        assert!(decode(bad).unwrap_err().detail.contains("unknown kind"));
        let mut bad = m.clone();
        bad[HEADER_BYTES + 16] = 200;
        assert!(decode(bad).unwrap_err().detail.contains("unknown primitive"));
        let mut bad = m;
        bad[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decode(bad).unwrap_err().detail.contains("runs do not fit"));
    }

    #[test]
    fn ranges_outside_the_window_are_refused() {
        assert_eq!(check_range(16, &int_target(12, 1)).unwrap(), (12, 16));
        assert_eq!(check_range(16, &int_target(16, 1)).unwrap_err().class, ErrorClass::RmaRange);
        assert_eq!(check_range(16, &int_target(usize::MAX - 2, 1)).unwrap_err().class, ErrorClass::RmaRange);
        assert!(check_range(0, &int_target(5, 0)).is_ok(), "nothing touched is in range");
    }
}
