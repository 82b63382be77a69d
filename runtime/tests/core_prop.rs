//! Property tests of the sans-IO point-to-point core (`kawarimi_runtime::core`) against the
//! matching rules of MPI-3.1 §3.5 (matching, non-overtaking), §3.8.1 (probe) and §3.8.4
//! (cancel).
//!
//! # The network
//! N cores (2..=5), each with its own small eager limit (0..=64 bytes) and chunk size
//! (1..=32 bytes), so that eager, synchronous eager, rendezvous and chunked data all run.
//! Frames from `poll_transmit` go onto the kit's `Wires`, one FIFO queue per (src, dst) pair. A generated
//! schedule decides, step by step, whether a rank runs the next operation of its program or
//! which non-empty queue delivers its head: per-pair FIFO as the transport guarantees,
//! anything across pairs. When the schedule runs out, a fixed policy drives the rest.
//!
//! # The trace
//! Every step gets a time. The test records, per rank, when each receive matched which send:
//! a remote rendezvous match shows up as the `Cts` frame, which names both requests; an eager
//! or loopback match completes the receive in the same step, and the message is identified by
//! its envelope, length and bytes (each message's first byte is unique). When several arrived,
//! unmatched messages of one sender explain a completion equally well, the earliest sent is
//! taken, which is what a correct core must have done; a wrong choice shows up later as a
//! completion nothing explains.
//!
//! # What is checked
//! Rather than one legal outcome (wildcards allow several), the rules themselves:
//! - envelopes: a receive matches only its context, its source (or `ANY_SOURCE`) and its tag
//!   (or `ANY_TAG`), and the status names the message's source and tag;
//! - exactly once: every message is matched by exactly one receive, every receive by at most
//!   one message, and the bytes are the message's own;
//! - truncation: a message longer than the buffer gives `Truncate`, `len == capacity` and the
//!   first `capacity` bytes; otherwise `len` is the message's length and no error. No byte
//!   past `len` is written;
//! - non-overtaking, sender side: a receive never matches a message while an earlier message
//!   of the same sender, on the same context, that it also matches is still unmatched;
//! - non-overtaking, receiver side: a message never matches a receive while an earlier-posted
//!   receive of the same rank that also matches it is still pending;
//! - synchronous sends (and rendezvous sends, by the core's design) complete no earlier than
//!   the match of their message;
//! - `iprobe` sees exactly the arrived, unmatched messages, honours non-overtaking, and a
//!   receive with the probe's envelope posted right after gets the probed message;
//! - `cancel_recv` succeeds exactly for receives that have not matched, completes them as
//!   cancelled with the buffer untouched, and a receive reposted after it gets the message;
//! - quiescence: with every queue empty, no posted receive is left while an arrived message it
//!   matches is unmatched; without wildcards every receive matched; a receive no send matches
//!   (tag 7) is left posted and is the only state left (`live_requests`, no frames, nothing to
//!   probe); the number of frames per message is exactly what its protocol needs;
//! - liveness: after cancelling leftover receives and posting exact receives for leftover
//!   messages, everything drains, every request completes and `live_requests()` is 0.
//!
//! A second property duplicates, replays or advances one frame of a recorded exchange: the
//! core must reject it with `Intern` naming the expected sequence number, and the exchange
//! must then finish as if the bad frame had never been offered.
//!
//! `KAWARIMI_PROP_CASES=N cargo test -p kawarimi-runtime --test core_prop -- --ignored`
//! runs the soak variants with N cases each.

use std::collections::HashMap;
use std::fmt;

use kawarimi_runtime::core::{Core, CoreConfig, ProbeInfo, RecvBuf, ReqId, SendData, Status, ANY_SOURCE, ANY_TAG};
use kawarimi_runtime::error::ErrorClass;
use kawarimi_transports::wire::{FrameKind, Header};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

mod kit;
use kit::{pattern, Wires};

/// Returns `Err(message)` from the enclosing check when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

type Check<T = ()> = Result<T, String>;

const MAX_RANKS: u32 = 5;
const TAGS: i32 = 3;
const MAX_LEN: usize = 96;
/// No send uses this tag, so a receive for it never matches.
const ORPHAN_TAG: i32 = 7;
/// Receive buffers start filled with this, so writes past `status.len` are visible.
const FILL: u8 = 0xA5;
/// Far above what any generated program needs (a few thousand steps): past it, the protocol
/// is taken to be looping.
const STEP_LIMIT: u64 = 200_000;

/// Cases of each property in the normal run (the file stays well under 20 s in debug).
const CASES: u32 = 1024;
/// Cases of each soak property unless `KAWARIMI_PROP_CASES` says otherwise.
const SOAK_CASES_DEFAULT: u32 = 20_000;

// ---------------------------------------------------------------------------------------------
// The generated case.

/// Receive capacity relative to the length of the send the receive was generated for.
#[derive(Clone, Copy, Debug)]
enum Cap {
    Exact,
    Plus(u8),
    Minus(u8),
}

#[derive(Clone, Debug)]
struct SendSpec {
    src: u32,
    dst: u32,
    ctx: u32,
    tag: i32,
    len: usize,
    sync: bool,
    /// `free_request` right after `isend` (standard sends only).
    free: bool,
    static_data: bool,
    /// Position in the sender's program (ties keep generation order).
    key: u8,
}

/// The receive generated for one send, at its destination.
#[derive(Clone, Debug)]
struct RecvSpec {
    any_source: bool,
    any_tag: bool,
    cap: Cap,
    /// `iprobe` with the same envelope just before posting.
    probe: bool,
    /// Cancel this many positions later (and repost if the cancel succeeded).
    cancel_after: Option<u8>,
    static_buf: bool,
    /// Observe completion with `peek_status` only and take it at the very end.
    lazy: bool,
    key: u8,
}

/// A receive that no send matches.
#[derive(Clone, Debug)]
struct OrphanSpec {
    rank: u32,
    any_source: bool,
    src: u32,
    ctx: u32,
    key: u8,
}

/// One generated case. Ranks are reduced modulo `n`, so shrinking `n` keeps cases valid.
/// Its `Debug` prints the program it stands for.
#[derive(Clone)]
struct Spec {
    n: u32,
    /// `(eager_limit_bytes, chunk_bytes)` per rank.
    configs: Vec<(usize, usize)>,
    pairs: Vec<(SendSpec, RecvSpec)>,
    orphans: Vec<OrphanSpec>,
    schedule: Vec<u16>,
}

fn cap_strategy() -> impl Strategy<Value = Cap> {
    prop_oneof![
        3 => Just(Cap::Exact),
        1 => (1u8..=8).prop_map(Cap::Plus),
        1 => (1u8..=8).prop_map(Cap::Minus),
    ]
}

fn send_strategy() -> impl Strategy<Value = SendSpec> {
    let len = prop_oneof![1 => Just(0usize), 8 => 0usize..=MAX_LEN];
    (
        0..MAX_RANKS,
        0..MAX_RANKS,
        0u32..2,
        0..TAGS,
        len,
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.2),
        any::<u8>(),
    )
        .prop_map(|(src, dst, ctx, tag, len, sync, free, static_data, key)| SendSpec {
            src,
            dst,
            ctx,
            tag,
            len,
            sync,
            free: free && !sync,
            static_data,
            key,
        })
}

fn recv_strategy() -> impl Strategy<Value = RecvSpec> {
    (
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.25),
        cap_strategy(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.15, 0u8..16),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        any::<u8>(),
    )
        .prop_map(|(any_source, any_tag, cap, probe, cancel_after, static_buf, lazy, key)| RecvSpec {
            any_source,
            any_tag,
            cap,
            probe,
            cancel_after,
            static_buf,
            lazy,
            key,
        })
}

fn orphan_strategy() -> impl Strategy<Value = OrphanSpec> {
    (0..MAX_RANKS, any::<bool>(), 0..MAX_RANKS, 0u32..2, any::<u8>())
        .prop_map(|(rank, any_source, src, ctx, key)| OrphanSpec { rank, any_source, src, ctx, key })
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        2u32..=MAX_RANKS,
        prop::collection::vec((0usize..=64, 1usize..=32), MAX_RANKS as usize),
        prop::collection::vec((send_strategy(), recv_strategy()), 1..=20),
        prop::collection::vec(orphan_strategy(), 0..=2),
        prop::collection::vec(any::<u16>(), 0..=400),
    )
        .prop_map(|(n, configs, pairs, orphans, schedule)| Spec { n, configs, pairs, orphans, schedule })
}

// ---------------------------------------------------------------------------------------------
// The program a case stands for.

#[derive(Clone, Debug)]
struct MsgPlan {
    src: u32,
    dst: u32,
    ctx: u32,
    tag: i32,
    data: Vec<u8>,
    sync: bool,
    free: bool,
    static_data: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Generated for the send of the same index.
    Program,
    /// Matches no send.
    Orphan,
    /// Posted after the cancel of the receive named succeeded.
    Repost(usize),
    /// Posted by the clean-up for a message left unmatched.
    MopUp,
}

#[derive(Clone, Debug)]
struct RecvPlan {
    rank: u32,
    source: i32,
    ctx: u32,
    tag: i32,
    cap: usize,
    probe: bool,
    static_buf: bool,
    lazy: bool,
    origin: Origin,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Send(usize),
    Recv(usize),
    /// Cancel the receive; if that succeeded, post the same envelope again.
    Cancel(usize),
}

struct Program {
    n: u32,
    configs: Vec<CoreConfig>,
    msgs: Vec<MsgPlan>,
    recvs: Vec<RecvPlan>,
    ops: Vec<Vec<Op>>,
    /// Some program receive uses a wildcard, so a receive may legally stay unmatched.
    wildcards: bool,
}

/// The bytes of message `i`: the first byte differs between any two of the (at most 256)
/// messages of a case.
fn payload(i: usize, len: usize) -> Vec<u8> {
    pattern(i as u64, 0, len)
}

fn program(spec: &Spec) -> Program {
    let n = spec.n;
    let configs = spec.configs[..n as usize]
        .iter()
        .map(|&(eager, chunk)| CoreConfig { eager_limit_bytes: eager, chunk_bytes: chunk, ..CoreConfig::default() })
        .collect();
    let mut msgs = Vec::new();
    let mut recvs = Vec::new();
    // (position key, kind order, index, op): a cancel with the same key as its receive sorts
    // after it.
    let mut keyed: Vec<Vec<(u32, u8, usize, Op)>> = vec![Vec::new(); n as usize];
    for (i, (s, r)) in spec.pairs.iter().enumerate() {
        let (src, dst) = (s.src % n, s.dst % n);
        msgs.push(MsgPlan {
            src,
            dst,
            ctx: s.ctx,
            tag: s.tag,
            data: payload(i, s.len),
            sync: s.sync,
            free: s.free && !s.sync,
            static_data: s.static_data,
        });
        let cap = match r.cap {
            Cap::Exact => s.len,
            Cap::Plus(k) => s.len + usize::from(k),
            Cap::Minus(k) => s.len.saturating_sub(usize::from(k)),
        };
        recvs.push(RecvPlan {
            rank: dst,
            source: if r.any_source { ANY_SOURCE } else { src as i32 },
            ctx: s.ctx,
            tag: if r.any_tag { ANY_TAG } else { s.tag },
            cap,
            probe: r.probe,
            static_buf: r.static_buf,
            lazy: r.lazy,
            origin: Origin::Program,
        });
        keyed[src as usize].push((u32::from(s.key), 0, i, Op::Send(i)));
        keyed[dst as usize].push((u32::from(r.key), 1, i, Op::Recv(i)));
        if let Some(d) = r.cancel_after {
            keyed[dst as usize].push((u32::from(r.key) + u32::from(d), 2, i, Op::Cancel(i)));
        }
    }
    let wildcards = recvs.iter().any(|r| r.source == ANY_SOURCE || r.tag == ANY_TAG);
    for o in &spec.orphans {
        let j = recvs.len();
        let rank = o.rank % n;
        recvs.push(RecvPlan {
            rank,
            source: if o.any_source { ANY_SOURCE } else { (o.src % n) as i32 },
            ctx: o.ctx,
            tag: ORPHAN_TAG,
            cap: 8,
            probe: false,
            static_buf: false,
            lazy: false,
            origin: Origin::Orphan,
        });
        keyed[rank as usize].push((u32::from(o.key), 1, j, Op::Recv(j)));
    }
    let ops = keyed
        .into_iter()
        .map(|mut v| {
            v.sort_by_key(|&(key, kind, idx, _)| (key, kind, idx));
            v.into_iter().map(|(_, _, _, op)| op).collect()
        })
        .collect();
    Program { n, configs, msgs, recvs, ops, wildcards }
}

fn show_source(s: i32) -> String {
    if s == ANY_SOURCE {
        "ANY".to_string()
    } else {
        s.to_string()
    }
}

fn show_tag(t: i32) -> String {
    if t == ANY_TAG {
        "ANY".to_string()
    } else {
        t.to_string()
    }
}

impl Program {
    fn describe(&self, op: Op) -> String {
        match op {
            Op::Send(i) => {
                let m = &self.msgs[i];
                format!(
                    "m{i}: isend to {} ctx {} tag {} len {}{}{}{}",
                    m.dst,
                    m.ctx,
                    m.tag,
                    m.data.len(),
                    if m.sync { " sync" } else { "" },
                    if m.free { " then free_request" } else { "" },
                    if m.static_data { " (static)" } else { "" },
                )
            }
            Op::Recv(j) => {
                let r = &self.recvs[j];
                format!(
                    "r{j}: {}irecv from {} ctx {} tag {} cap {}{}{}{}",
                    if r.probe { "iprobe + " } else { "" },
                    show_source(r.source),
                    r.ctx,
                    show_tag(r.tag),
                    r.cap,
                    if r.static_buf { " (static)" } else { "" },
                    if r.lazy { " (taken at the end)" } else { "" },
                    if r.origin == Origin::Orphan { " (matches no send)" } else { "" },
                )
            }
            Op::Cancel(j) => format!("cancel r{j}, repost it if cancelled"),
        }
    }
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = program(self);
        writeln!(f, "Spec of {} ranks", p.n)?;
        for (r, c) in p.configs.iter().enumerate() {
            writeln!(f, "  rank {r}: eager_limit {} chunk {}", c.eager_limit_bytes, c.chunk_bytes)?;
        }
        for (r, ops) in p.ops.iter().enumerate() {
            writeln!(f, "  rank {r} program:")?;
            for &op in ops {
                writeln!(f, "    {}", p.describe(op))?;
            }
        }
        writeln!(f, "  schedule ({} choices): {:?}", self.schedule.len(), self.schedule)
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated job and its trace.

#[derive(Debug, Default)]
struct MsgState {
    /// Sent by rendezvous (longer than the sender's eager limit).
    rndv: bool,
    send_id: Option<ReqId>,
    sent_at: Option<u64>,
    /// When its `Eager`/`EagerSync`/`Rts` frame was handed to the receiver (or, to itself,
    /// when it was sent).
    arrived_at: Option<u64>,
    /// (receive, time).
    matched: Option<(usize, u64)>,
    send_done_at: Option<u64>,
    /// Frames of this message's exchange seen on the network, both directions.
    frames: usize,
    /// Rendezvous bytes streamed so far.
    data_sent: usize,
}

#[derive(Debug)]
struct RecvState {
    plan: RecvPlan,
    id: Option<ReqId>,
    posted_at: Option<u64>,
    /// (message, time).
    matched: Option<(usize, u64)>,
    cancelled_at: Option<u64>,
    done_at: Option<u64>,
    /// What `iprobe` returned just before posting.
    probed: Option<Option<ProbeInfo>>,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    App(u32),
    Deliver(u32, u32),
}

#[derive(Clone, Copy, Debug)]
enum Live {
    Send(usize),
    Recv(usize),
}

/// How often a case hit the paths worth covering (for the coverage test).
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    rndv_matches: u64,
    eager_matches: u64,
    loopback_matches: u64,
    truncations: u64,
    cancels_ok: u64,
    cancels_late: u64,
    probes_hit: u64,
    probes_miss: u64,
    stuck_receives: u64,
    orphans: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.rndv_matches += o.rndv_matches;
        self.eager_matches += o.eager_matches;
        self.loopback_matches += o.loopback_matches;
        self.truncations += o.truncations;
        self.cancels_ok += o.cancels_ok;
        self.cancels_late += o.cancels_late;
        self.probes_hit += o.probes_hit;
        self.probes_miss += o.probes_miss;
        self.stuck_receives += o.stuck_receives;
        self.orphans += o.orphans;
    }
}

struct Sim<'p> {
    p: &'p Program,
    cores: Vec<Core>,
    /// Frames on their way, a FIFO per pair of ranks.
    wires: Wires,
    msgs: Vec<MsgState>,
    recvs: Vec<RecvState>,
    next_op: Vec<usize>,
    /// Requests not yet taken, per rank, with the status they were observed complete with.
    live: Vec<Vec<(ReqId, Live, Option<Status>)>>,
    send_ids: HashMap<(u32, ReqId), usize>,
    recv_ids: HashMap<(u32, ReqId), usize>,
    /// Time of the last match per rank: the trace relies on at most one match per rank and
    /// step, which holds because each input brings at most one message or one receive.
    last_match: Vec<Option<u64>>,
    now: u64,
    stats: Stats,
}

fn compatible(r: &RecvPlan, m: &MsgPlan) -> bool {
    m.dst == r.rank
        && m.ctx == r.ctx
        && (r.source == ANY_SOURCE || r.source == m.src as i32)
        && (r.tag == ANY_TAG || r.tag == m.tag)
}

fn explains(m: &MsgPlan, cap: usize, status: &Status, bytes: Option<&[u8]>) -> bool {
    let n = m.data.len().min(cap);
    let error = (m.data.len() > cap).then_some(ErrorClass::Truncate);
    status.len == n && status.error == error && bytes.is_none_or(|b| b.get(..n) == Some(&m.data[..n]))
}

impl<'p> Sim<'p> {
    fn new(p: &'p Program) -> Sim<'p> {
        let n = p.n as usize;
        let msgs = p
            .msgs
            .iter()
            .map(|m| MsgState {
                rndv: m.data.len() > p.configs[m.src as usize].eager_limit_bytes,
                ..MsgState::default()
            })
            .collect();
        let recvs = p
            .recvs
            .iter()
            .map(|plan| RecvState {
                plan: plan.clone(),
                id: None,
                posted_at: None,
                matched: None,
                cancelled_at: None,
                done_at: None,
                probed: None,
            })
            .collect();
        Sim {
            p,
            cores: (0..p.n).map(|r| Core::new(r, p.n, p.configs[r as usize].clone())).collect(),
            wires: Wires::new(p.n),
            msgs,
            recvs,
            next_op: vec![0; n],
            live: vec![Vec::new(); n],
            send_ids: HashMap::new(),
            recv_ids: HashMap::new(),
            last_match: vec![None; n],
            now: 0,
            stats: Stats::default(),
        }
    }

    fn n(&self) -> u32 {
        self.p.n
    }

    fn enabled(&self) -> Vec<Action> {
        let mut acts: Vec<Action> = (0..self.n())
            .filter(|&r| self.next_op[r as usize] < self.p.ops[r as usize].len())
            .map(Action::App)
            .collect();
        acts.extend(self.wires.busy().map(|(s, d)| Action::Deliver(s, d)));
        acts
    }

    /// Follows the generated schedule, then a fixed policy until nothing is left to do.
    fn run(&mut self, schedule: &[u16]) -> Check {
        for &choice in schedule {
            let acts = self.enabled();
            if acts.is_empty() {
                break;
            }
            self.step(acts[usize::from(choice) % acts.len()])?;
        }
        self.drain()
    }

    fn drain(&mut self) -> Check {
        for k in 0usize.. {
            let acts = self.enabled();
            if acts.is_empty() {
                break;
            }
            ensure!(self.now < STEP_LIMIT, "no quiescence after {STEP_LIMIT} steps: the protocol loops");
            self.step(acts[k % acts.len()])?;
        }
        Ok(())
    }

    fn step(&mut self, action: Action) -> Check {
        self.now += 1;
        match action {
            Action::App(r) => {
                let op = self.p.ops[r as usize][self.next_op[r as usize]];
                self.next_op[r as usize] += 1;
                match op {
                    Op::Send(i) => self.isend(i)?,
                    Op::Recv(j) => self.post(j)?,
                    Op::Cancel(j) => self.cancel(j)?,
                }
            }
            Action::Deliver(s, d) => self.deliver(s, d)?,
        }
        self.settle()
    }

    /// After every input: collect the frames it produced, then the completions.
    fn settle(&mut self) -> Check {
        self.collect()?;
        self.sweep()
    }

    fn isend(&mut self, i: usize) -> Check {
        let m = &self.p.msgs[i];
        let data = if m.static_data {
            SendData::Static(Box::leak(m.data.clone().into_boxed_slice()))
        } else {
            SendData::Owned(m.data.clone())
        };
        let core = &mut self.cores[m.src as usize];
        let id = core
            .isend(m.dst as i32, m.ctx, m.tag, data, m.sync)
            .map_err(|e| format!("t{}: rank {} isend of m{i} failed: {e}", self.now, m.src))?;
        ensure!(self.send_ids.insert((m.src, id), i).is_none(), "rank {} reused request id {id}", m.src);
        if m.free {
            core.free_request(id).map_err(|e| format!("rank {}: free_request of m{i} failed: {e}", m.src))?;
        } else {
            self.live[m.src as usize].push((id, Live::Send(i), None));
        }
        let st = &mut self.msgs[i];
        st.send_id = Some(id);
        st.sent_at = Some(self.now);
        if m.src == m.dst {
            st.arrived_at = Some(self.now);
        }
        Ok(())
    }

    /// Arrived, unmatched messages that receive `j`'s envelope matches.
    fn pending_for(&self, j: usize) -> Vec<usize> {
        let plan = &self.recvs[j].plan;
        (0..self.msgs.len())
            .filter(|&i| {
                let st = &self.msgs[i];
                st.arrived_at.is_some() && st.matched.is_none() && compatible(plan, &self.p.msgs[i])
            })
            .collect()
    }

    fn add_recv(&mut self, plan: RecvPlan) -> usize {
        self.recvs.push(RecvState {
            plan,
            id: None,
            posted_at: None,
            matched: None,
            cancelled_at: None,
            done_at: None,
            probed: None,
        });
        self.recvs.len() - 1
    }

    fn post(&mut self, j: usize) -> Check {
        let plan = self.recvs[j].plan.clone();
        let r = plan.rank as usize;
        if plan.probe {
            let info = self.cores[r].iprobe(plan.source, plan.ctx, plan.tag);
            self.check_probe(j, info)?;
            self.recvs[j].probed = Some(info);
        }
        let buf = if plan.static_buf {
            RecvBuf::Static(Box::leak(vec![FILL; plan.cap].into_boxed_slice()))
        } else {
            RecvBuf::Owned(vec![FILL; plan.cap])
        };
        let id = self.cores[r]
            .irecv(plan.source, plan.ctx, plan.tag, buf)
            .map_err(|e| format!("t{}: rank {r} irecv of r{j} failed: {e}", self.now))?;
        ensure!(self.recv_ids.insert((plan.rank, id), j).is_none(), "rank {r} reused request id {id}");
        self.live[r].push((id, Live::Recv(j), None));
        let st = &mut self.recvs[j];
        st.id = Some(id);
        st.posted_at = Some(self.now);
        Ok(())
    }

    fn check_probe(&mut self, j: usize, info: Option<ProbeInfo>) -> Check {
        let pending = self.pending_for(j);
        let Some(info) = info else {
            self.stats.probes_miss += 1;
            ensure!(
                pending.is_empty(),
                "t{}: iprobe for r{j} found nothing, but arrived messages {pending:?} match it",
                self.now
            );
            return Ok(());
        };
        self.stats.probes_hit += 1;
        let hit = pending
            .iter()
            .copied()
            .filter(|&i| {
                let m = &self.p.msgs[i];
                m.src as i32 == info.source && m.tag == info.tag && m.data.len() == info.len
            })
            .min_by_key(|&i| self.msgs[i].sent_at);
        let Some(hit) = hit else {
            return Err(format!(
                "t{}: iprobe for r{j} returned {info:?}, which no arrived, unmatched message it matches \
                 explains (those are {pending:?})",
                self.now
            ));
        };
        let earlier: Vec<usize> = pending
            .iter()
            .copied()
            .filter(|&i| self.p.msgs[i].src as i32 == info.source && self.msgs[i].sent_at < self.msgs[hit].sent_at)
            .collect();
        ensure!(
            earlier.is_empty(),
            "t{}: iprobe for r{j} returned m{hit} although {earlier:?} from the same sender match too and \
             were sent before it",
            self.now
        );
        Ok(())
    }

    fn cancel(&mut self, j: usize) -> Check {
        let plan = self.recvs[j].plan.clone();
        let id = self.recvs[j].id.expect("a cancel follows its receive in program order");
        let matched = self.recvs[j].matched.is_some();
        let core = &mut self.cores[plan.rank as usize];
        if !core.cancel_recv(id) {
            self.stats.cancels_late += 1;
            ensure!(matched, "t{}: cancel_recv(r{j}) returned false but r{j} has not matched", self.now);
            return Ok(());
        }
        self.stats.cancels_ok += 1;
        ensure!(!matched, "t{}: cancel_recv(r{j}) succeeded although r{j} matched already", self.now);
        ensure!(core.is_complete(id), "t{}: r{j} was cancelled but is not complete", self.now);
        self.recvs[j].cancelled_at = Some(self.now);
        let repost = self.add_recv(RecvPlan { origin: Origin::Repost(j), probe: false, ..plan });
        self.post(repost)
    }

    fn deliver(&mut self, s: u32, d: u32) -> Check {
        let (h, payload) = self.wires.link(s, d).pop_front().expect("only busy links deliver");
        if matches!(h.kind, FrameKind::Eager | FrameKind::EagerSync | FrameKind::Rts) {
            let Some(&i) = self.send_ids.get(&(s, h.msg_id)) else {
                return Err(format!("t{}: frame {h} from rank {s} names no send", self.now));
            };
            let (m, st) = (&self.p.msgs[i], &self.msgs[i]);
            let kind = if st.rndv {
                FrameKind::Rts
            } else if m.sync {
                FrameKind::EagerSync
            } else {
                FrameKind::Eager
            };
            ensure!(
                h.kind == kind && m.dst == d && h.ctx == m.ctx && h.tag == m.tag,
                "t{}: frame {h} does not carry m{i} ({m:?}) as a {kind:?}",
                self.now
            );
            if h.kind == FrameKind::Rts {
                ensure!(h.arg == m.data.len() as u64, "t{}: {h} announces the wrong length for m{i}", self.now);
            } else {
                ensure!(payload == m.data, "t{}: {h} carries the wrong bytes for m{i}", self.now);
            }
            ensure!(st.arrived_at.is_none(), "t{}: m{i} arrives a second time with {h}", self.now);
            self.msgs[i].arrived_at = Some(self.now);
        }
        self.cores[d as usize]
            .handle_frame(s, h, payload)
            .map_err(|e| format!("t{}: rank {d} rejected {h} from rank {s}: {e}", self.now))
    }

    /// Moves every frame the cores want to send into the queues, checking each.
    fn collect(&mut self) -> Check {
        let n = self.n();
        for r in 0..n {
            while let Some(t) = self.cores[r as usize].poll_transmit() {
                let h = t.header;
                let bytes = t.payload.as_slice().to_vec();
                let now = self.now;
                ensure!(t.peer < n && t.peer != r, "t{now}: rank {r} sends {h} to rank {}", t.peer);
                ensure!(
                    h.src == r && h.epoch == 0 && h.payload_len as usize == bytes.len(),
                    "t{now}: rank {r} stamps {h} wrongly (payload {} bytes)",
                    bytes.len()
                );
                let cfg = &self.p.configs[r as usize];
                match h.kind {
                    FrameKind::Eager | FrameKind::EagerSync | FrameKind::Rts => {
                        let i = self.send_of(r, h.msg_id, &h)?;
                        self.msgs[i].frames += 1;
                        match h.kind {
                            FrameKind::Rts => ensure!(
                                bytes.is_empty() && h.arg as usize > cfg.eager_limit_bytes,
                                "t{now}: {h} of rank {r} should have been eager (limit {})",
                                cfg.eager_limit_bytes
                            ),
                            _ => ensure!(
                                bytes.len() <= cfg.eager_limit_bytes,
                                "t{now}: eager {h} of rank {r} exceeds its limit {}",
                                cfg.eager_limit_bytes
                            ),
                        }
                    }
                    FrameKind::Cts => {
                        ensure!(bytes.is_empty(), "t{now}: {h} carries a payload");
                        let i = self.send_of(t.peer, h.msg_id, &h)?;
                        let Some(&j) = self.recv_ids.get(&(r, h.arg)) else {
                            return Err(format!("t{now}: {h} of rank {r} names no receive of it"));
                        };
                        ensure!(self.msgs[i].rndv, "t{now}: {h} answers m{i}, which was sent eagerly");
                        self.msgs[i].frames += 1;
                        self.stats.rndv_matches += 1;
                        self.record_match(j, i)?;
                    }
                    FrameKind::Data => {
                        let Some(&j) = self.recv_ids.get(&(t.peer, h.msg_id)) else {
                            return Err(format!("t{now}: {h} of rank {r} names no receive of rank {}", t.peer));
                        };
                        let Some((i, _)) = self.recvs[j].matched else {
                            return Err(format!("t{now}: {h} of rank {r} streams into r{j}, which has not matched"));
                        };
                        let (m, st) = (&self.p.msgs[i], &mut self.msgs[i]);
                        let off = h.arg as usize;
                        ensure!(
                            m.src == r && off == st.data_sent && !bytes.is_empty() && bytes.len() <= cfg.chunk_bytes,
                            "t{now}: {h} of rank {r} for m{i}: expected offset {} and 1..={} bytes",
                            st.data_sent,
                            cfg.chunk_bytes
                        );
                        ensure!(
                            m.data.get(off..off + bytes.len()) == Some(&bytes[..]),
                            "t{now}: {h} of rank {r} carries the wrong bytes of m{i}"
                        );
                        st.data_sent += bytes.len();
                        st.frames += 1;
                    }
                    FrameKind::SyncAck => {
                        ensure!(bytes.is_empty(), "t{now}: {h} carries a payload");
                        let i = self.send_of(t.peer, h.msg_id, &h)?;
                        ensure!(self.p.msgs[i].sync, "t{now}: {h} acknowledges m{i}, which is not synchronous");
                        self.msgs[i].frames += 1;
                    }
                    FrameKind::Ack => ensure!(bytes.is_empty(), "t{now}: {h} carries a payload"),
                    FrameKind::Marker | FrameKind::Bye | FrameKind::Abort => {
                        return Err(format!("t{now}: rank {r} sends {h}, which no input asked for"));
                    }
                }
                self.wires.link(r, t.peer).push_back((h, bytes));
            }
        }
        Ok(())
    }

    fn send_of(&self, rank: u32, id: ReqId, h: &Header) -> Check<usize> {
        self.send_ids
            .get(&(rank, id))
            .copied()
            .ok_or_else(|| format!("t{}: {h} names no send of rank {rank}", self.now))
    }

    fn record_match(&mut self, j: usize, i: usize) -> Check {
        let now = self.now;
        let (r, m) = (&self.recvs[j], &self.p.msgs[i]);
        let rank = r.plan.rank as usize;
        ensure!(r.posted_at.is_some() && r.cancelled_at.is_none(), "t{now}: r{j} matched m{i} while not posted");
        ensure!(r.matched.is_none(), "t{now}: r{j} matched m{i} after matching {:?}", r.matched);
        if let Some((other, at)) = self.msgs[i].matched {
            return Err(format!("t{now}: m{i} received twice: by r{other} at t{at} and by r{j}"));
        }
        ensure!(compatible(&r.plan, m), "t{now}: r{j} ({:?}) matched m{i} ({m:?}) outside its envelope", r.plan);
        ensure!(self.msgs[i].arrived_at.is_some(), "t{now}: r{j} matched m{i} before it arrived");
        ensure!(
            self.last_match[rank] != Some(now),
            "t{now}: two matches at rank {rank} in one step; the trace cannot order them"
        );
        self.last_match[rank] = Some(now);
        self.recvs[j].matched = Some((i, now));
        self.msgs[i].matched = Some((j, now));
        if m.src == m.dst {
            self.stats.loopback_matches += 1;
        } else if !self.msgs[i].rndv {
            self.stats.eager_matches += 1;
        }
        Ok(())
    }

    /// Notices every request that completed in this step and checks its outcome. Sends and
    /// eager receives are taken at once; a lazy receive is only observed (`peek_status`) and
    /// stays in the core until [`Sim::take_lazy`], as when an application tests late.
    fn sweep(&mut self) -> Check {
        for r in 0..self.n() as usize {
            let live = std::mem::take(&mut self.live[r]);
            let mut keep = Vec::with_capacity(live.len());
            for (id, what, seen) in live {
                let core = &mut self.cores[r];
                if seen.is_some() || !core.is_complete(id) {
                    keep.push((id, what, seen));
                    continue;
                }
                let Some(status) = core.peek_status(id) else {
                    return Err(format!("t{}: {what:?} is complete but has no status", self.now));
                };
                if let Live::Recv(j) = what {
                    if self.recvs[j].plan.lazy {
                        self.observe_recv(j, status, None)?;
                        keep.push((id, what, Some(status)));
                        continue;
                    }
                }
                let Some(c) = core.take_completion(id) else {
                    return Err(format!("t{}: {what:?} is complete but take_completion gave nothing", self.now));
                };
                ensure!(status == c.status, "t{}: peek_status {status:?} differs from {:?}", self.now, c.status);
                match what {
                    Live::Send(i) => {
                        ensure!(c.recv_buf.is_none(), "t{}: send m{i} completed with a receive buffer", self.now);
                        ensure!(
                            c.status == Status::default(),
                            "t{}: send m{i} completed with {:?}",
                            self.now,
                            c.status
                        );
                        self.msgs[i].send_done_at = Some(self.now);
                    }
                    Live::Recv(j) => {
                        let bytes = self.recv_bytes(j, c.recv_buf)?;
                        self.observe_recv(j, c.status, Some(&bytes))?;
                        self.check_bytes(j, &c.status, &bytes)?;
                    }
                }
            }
            self.live[r] = keep;
        }
        Ok(())
    }

    /// Takes the lazy receives observed complete: the status must not have changed since.
    fn take_lazy(&mut self) -> Check {
        for r in 0..self.n() as usize {
            let live = std::mem::take(&mut self.live[r]);
            let mut keep = Vec::with_capacity(live.len());
            for (id, what, seen) in live {
                let (Live::Recv(j), Some(status)) = (what, seen) else {
                    keep.push((id, what, seen));
                    continue;
                };
                let Some(c) = self.cores[r].take_completion(id) else {
                    return Err(format!(
                        "t{}: r{j} completed at {:?}, now it cannot be taken",
                        self.now, self.recvs[j].done_at
                    ));
                };
                ensure!(
                    c.status == status,
                    "t{}: r{j} completed with {status:?} at {:?}, but is taken with {:?}",
                    self.now,
                    self.recvs[j].done_at,
                    c.status
                );
                let bytes = self.recv_bytes(j, c.recv_buf)?;
                self.check_bytes(j, &status, &bytes)?;
            }
            self.live[r] = keep;
        }
        Ok(())
    }

    /// The receive buffer handed back, which must be the one posted.
    fn recv_bytes(&self, j: usize, buf: Option<RecvBuf>) -> Check<Vec<u8>> {
        let plan = &self.recvs[j].plan;
        let bytes = match buf {
            Some(RecvBuf::Owned(v)) if !plan.static_buf => v,
            Some(RecvBuf::Static(s)) if plan.static_buf => s.to_vec(),
            other => return Err(format!("t{}: r{j} completed with the wrong buffer {other:?}", self.now)),
        };
        ensure!(
            bytes.len() == plan.cap,
            "t{}: r{j} got back {} bytes of buffer, not {}",
            self.now,
            bytes.len(),
            plan.cap
        );
        Ok(bytes)
    }

    /// A receive completed with `status` (and, if taken, `bytes`): records its match and
    /// checks the status against the message.
    fn observe_recv(&mut self, j: usize, status: Status, bytes: Option<&[u8]>) -> Check {
        let now = self.now;
        let cap = self.recvs[j].plan.cap;
        self.recvs[j].done_at = Some(now);
        if status.cancelled {
            ensure!(self.recvs[j].cancelled_at == Some(now), "t{now}: r{j} completed cancelled unasked");
            return Ok(());
        }
        ensure!(self.recvs[j].cancelled_at.is_none(), "t{now}: cancelled r{j} completed as received");
        let i = match self.recvs[j].matched {
            Some((i, _)) => i,
            None => {
                let i = self.infer(j, &status, bytes)?;
                self.record_match(j, i)?;
                i
            }
        };
        let m = &self.p.msgs[i];
        ensure!(
            status.source == m.src as i32 && status.tag == m.tag,
            "t{now}: r{j} matched m{i} from {} tag {} but its status says {status:?}",
            m.src,
            m.tag
        );
        let truncated = m.data.len() > cap;
        self.stats.truncations += u64::from(truncated);
        ensure!(
            status.len == m.data.len().min(cap) && status.error == truncated.then_some(ErrorClass::Truncate),
            "t{now}: r{j} (cap {cap}) got m{i} of {} bytes with {status:?}",
            m.data.len()
        );
        Ok(())
    }

    /// The buffer holds the message's first `status.len` bytes and nothing was written past
    /// them (a cancelled receive's buffer is untouched).
    fn check_bytes(&self, j: usize, status: &Status, bytes: &[u8]) -> Check {
        let now = self.now;
        let n = if status.cancelled { 0 } else { status.len };
        if let Some((i, _)) = self.recvs[j].matched.filter(|_| !status.cancelled) {
            ensure!(bytes[..n] == self.p.msgs[i].data[..n], "t{now}: r{j} got the wrong bytes of m{i}");
        }
        ensure!(bytes[n..].iter().all(|&b| b == FILL), "t{now}: r{j} ({status:?}) was written past byte {n}");
        Ok(())
    }

    /// Which message explains receive `j` completing with `status` (and `bytes`, when taken):
    /// an arrived, unmatched, eager or loopback message with that source, tag and length (and
    /// bytes); of several, the earliest sent.
    fn infer(&self, j: usize, status: &Status, bytes: Option<&[u8]>) -> Check<usize> {
        let plan = &self.recvs[j].plan;
        let found = (0..self.msgs.len())
            .filter(|&i| {
                let (m, st) = (&self.p.msgs[i], &self.msgs[i]);
                m.dst == plan.rank
                    && m.ctx == plan.ctx
                    && m.src as i32 == status.source
                    && m.tag == status.tag
                    && st.arrived_at.is_some()
                    && st.matched.is_none()
                    // A remote rendezvous match is seen as its Cts, never guessed.
                    && !(st.rndv && m.src != m.dst)
                    && explains(m, plan.cap, status, bytes)
            })
            .min_by_key(|&i| self.msgs[i].sent_at);
        found.ok_or_else(|| {
            format!(
                "t{}: r{j} ({:?}) completed with {status:?} and bytes {bytes:?}, which no arrived, unmatched \
                 message explains (arrived, unmatched and matching its envelope: {:?})",
                self.now,
                plan,
                self.pending_for(j)
            )
        })
    }

    fn pending_recvs(&self) -> Vec<usize> {
        (0..self.recvs.len())
            .filter(|&j| {
                let r = &self.recvs[j];
                r.posted_at.is_some() && r.matched.is_none() && r.cancelled_at.is_none()
            })
            .collect()
    }

    /// Checks the state once every queue is empty and every program has run.
    fn check_quiescent(&mut self) -> Check {
        for (r, core) in self.cores.iter().enumerate() {
            ensure!(!core.has_transmit(), "quiescent rank {r} still has frames to send");
        }
        for (i, st) in self.msgs.iter().enumerate() {
            ensure!(st.arrived_at.is_some(), "m{i} never arrived");
        }
        let pending = self.pending_recvs();
        self.stats.stuck_receives += pending.len() as u64;
        for &j in &pending {
            let stuck = self.pending_for(j);
            ensure!(stuck.is_empty(), "r{j} is still posted although arrived messages {stuck:?} match it");
        }
        for (j, r) in self.recvs.iter().enumerate() {
            if r.matched.is_some() {
                ensure!(r.done_at.is_some(), "r{j} matched {:?} but never completed", r.matched);
            }
        }
        for (i, (m, st)) in self.p.msgs.iter().zip(&self.msgs).enumerate() {
            if !m.free {
                let should = st.matched.is_some() || !(m.sync || st.rndv);
                ensure!(
                    st.send_done_at.is_some() == should,
                    "send m{i} (sync {}, rendezvous {}, matched {:?}) completion: {:?}",
                    m.sync,
                    st.rndv,
                    st.matched,
                    st.send_done_at
                );
            }
        }
        for r in 0..self.n() {
            for ctx in 0..2 {
                let probed = self.cores[r as usize].iprobe(ANY_SOURCE, ctx, ANY_TAG).is_some();
                let left = (0..self.msgs.len())
                    .any(|i| self.msgs[i].matched.is_none() && self.p.msgs[i].dst == r && self.p.msgs[i].ctx == ctx);
                ensure!(probed == left, "rank {r} ctx {ctx}: iprobe(ANY, ANY) says {probed}, the trace {left}");
            }
        }
        self.check_live_requests()?;
        if !self.p.wildcards {
            let unmatched: Vec<usize> =
                pending.iter().copied().filter(|&j| self.recvs[j].plan.origin != Origin::Orphan).collect();
            ensure!(unmatched.is_empty(), "without wildcards every receive matches, but {unmatched:?} did not");
            let orphans = self.recvs.iter().filter(|r| r.plan.origin == Origin::Orphan).count();
            ensure!(pending.len() == orphans, "pending receives {pending:?} are not exactly the {orphans} orphans");
        }
        self.stats.orphans += self.recvs.iter().filter(|r| r.plan.origin == Origin::Orphan).count() as u64;
        self.check_frames()
    }

    /// Each core holds exactly the requests the trace says are live: those not yet taken, and
    /// freed rendezvous sends still waiting for their `Cts`.
    fn check_live_requests(&self) -> Check {
        for r in 0..self.n() {
            let freed = (0..self.msgs.len())
                .filter(|&i| {
                    let (m, st) = (&self.p.msgs[i], &self.msgs[i]);
                    m.src == r && m.free && st.rndv && st.matched.is_none()
                })
                .count();
            let want = self.live[r as usize].len() + freed;
            let got = self.cores[r as usize].live_requests();
            ensure!(got == want, "rank {r} holds {got} requests, the trace expects {want}");
        }
        Ok(())
    }

    /// No phantom traffic: each message used exactly the frames its protocol needs.
    fn check_frames(&self) -> Check {
        for (i, (m, st)) in self.p.msgs.iter().zip(&self.msgs).enumerate() {
            let matched = st.matched.is_some();
            let want = if m.src == m.dst {
                0
            } else if st.rndv {
                let chunk = self.p.configs[m.src as usize].chunk_bytes;
                1 + if matched { 1 + m.data.len().div_ceil(chunk) } else { 0 }
            } else {
                1 + usize::from(m.sync && matched)
            };
            ensure!(st.frames == want, "m{i} used {} frames, its protocol needs {want}", st.frames);
            if st.rndv && matched && m.src != m.dst {
                ensure!(st.data_sent == m.data.len(), "m{i} streamed {} of {} bytes", st.data_sent, m.data.len());
            }
        }
        Ok(())
    }

    /// Cancels every receive left posted and receives every message left unmatched, then
    /// drives the job to the end: everything must complete and no request may be left.
    fn mop_up(&mut self) -> Check {
        for j in self.pending_recvs() {
            self.now += 1;
            let (rank, id) = (self.recvs[j].plan.rank, self.recvs[j].id.expect("pending receives are posted"));
            ensure!(self.cores[rank as usize].cancel_recv(id), "cancel_recv of unmatched r{j} at quiescence failed");
            self.recvs[j].cancelled_at = Some(self.now);
            self.settle()?;
        }
        // One exact receive per unmatched message; which of a sender's messages each gets is
        // up to the core, so the list is fixed before any of them is posted.
        let unmatched: Vec<usize> = (0..self.msgs.len()).filter(|&i| self.msgs[i].matched.is_none()).collect();
        for i in unmatched {
            let m = &self.p.msgs[i];
            let plan = RecvPlan {
                rank: m.dst,
                source: m.src as i32,
                ctx: m.ctx,
                tag: m.tag,
                cap: MAX_LEN,
                probe: false,
                static_buf: false,
                lazy: false,
                origin: Origin::MopUp,
            };
            let j = self.add_recv(plan);
            self.now += 1;
            self.post(j)?;
            self.settle()?;
        }
        self.drain()?;
        self.take_lazy()?;
        for (i, st) in self.msgs.iter().enumerate() {
            ensure!(st.matched.is_some(), "after the clean-up m{i} is still unmatched");
            ensure!(st.send_done_at.is_some() || self.p.msgs[i].free, "after the clean-up send m{i} is not complete");
        }
        for (j, r) in self.recvs.iter().enumerate() {
            ensure!(r.done_at.is_some(), "after the clean-up r{j} is not complete");
        }
        for (r, core) in self.cores.iter().enumerate() {
            ensure!(self.live[r].is_empty(), "after the clean-up rank {r} has untaken requests {:?}", self.live[r]);
            ensure!(
                core.live_requests() == 0,
                "after the clean-up rank {r} still holds {} requests",
                core.live_requests()
            );
        }
        self.check_frames()
    }

    /// The ordering rules, over the whole trace.
    fn check_history(&self) -> Check {
        for (j, r) in self.recvs.iter().enumerate() {
            let Some((i, t)) = r.matched else { continue };
            let m = &self.p.msgs[i];
            // Sender side: no earlier message of the same sender that r also matches may still
            // be unmatched when r matches m.
            for (a, ma) in self.p.msgs.iter().enumerate() {
                if a == i || ma.src != m.src || ma.dst != m.dst || ma.ctx != m.ctx || !compatible(&r.plan, ma) {
                    continue;
                }
                if self.msgs[a].sent_at < self.msgs[i].sent_at {
                    let ok = self.msgs[a].matched.is_some_and(|(_, ta)| ta < t);
                    ensure!(
                        ok,
                        "non-overtaking: r{j} matched m{i} at t{t} while m{a}, sent before it by the same rank \
                         and also matching r{j}, was unmatched (matched {:?})",
                        self.msgs[a].matched
                    );
                }
            }
            // Receiver side: no receive posted before r that also matches m may still be pending
            // when m matches r.
            for (k, rk) in self.recvs.iter().enumerate() {
                if k == j || rk.plan.rank != r.plan.rank || rk.posted_at >= r.posted_at || !compatible(&rk.plan, m) {
                    continue;
                }
                let resolved = rk.matched.map(|(_, tk)| tk).or(rk.cancelled_at);
                ensure!(
                    resolved.is_some_and(|tk| tk < t),
                    "non-overtaking: m{i} matched r{j} at t{t} while r{k}, posted before r{j} and also matching \
                     m{i}, was still pending (resolved at {resolved:?})"
                );
            }
            // A probe's answer is what the receive posted right after it gets.
            match r.probed {
                Some(Some(info)) => ensure!(
                    Some(t) == r.posted_at && (m.src as i32, m.tag, m.data.len()) == (info.source, info.tag, info.len),
                    "r{j} probed {info:?} but then matched m{i} (from {} tag {} len {}) at t{t}, posted at {:?}",
                    m.src,
                    m.tag,
                    m.data.len(),
                    r.posted_at
                ),
                Some(None) => ensure!(
                    Some(t) != r.posted_at,
                    "r{j}'s probe found nothing, yet r{j} matched m{i} when it was posted"
                ),
                None => {}
            }
        }
        for (i, (m, st)) in self.p.msgs.iter().zip(&self.msgs).enumerate() {
            if m.free {
                continue;
            }
            if !(m.sync || st.rndv) {
                // A standard eager send is complete once its frame is queued (core.rs, SendPhase).
                ensure!(
                    st.send_done_at == st.sent_at,
                    "standard eager send m{i} sent at {:?} completed at {:?}",
                    st.sent_at,
                    st.send_done_at
                );
                continue;
            }
            if let Some(done) = st.send_done_at {
                // To itself the match and the completion happen in one call; to a peer the
                // SyncAck or Cts must travel back first, so the completion comes strictly later.
                let matched = st.matched.map(|(_, t)| t);
                let after = |t: u64| if m.src == m.dst { t <= done } else { t < done };
                ensure!(
                    matched.is_some_and(after),
                    "send m{i} (sync {}, rendezvous {}) completed at t{done}, not after its match ({matched:?})",
                    m.sync,
                    st.rndv
                );
            }
        }
        Ok(())
    }
}

fn check_case(spec: &Spec) -> Check<Stats> {
    let p = program(spec);
    let mut sim = Sim::new(&p);
    sim.run(&spec.schedule)?;
    sim.check_quiescent()?;
    sim.mop_up()?;
    sim.check_history()?;
    Ok(sim.stats)
}

// ---------------------------------------------------------------------------------------------
// Sequence checking.

#[derive(Clone, Debug)]
struct SeqSend {
    /// From rank 1 to rank 0 instead of 0 to 1.
    backwards: bool,
    tag: i32,
    len: usize,
    sync: bool,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Offer an earlier frame of the same channel again (the frame itself if none is earlier).
    Replay(u16),
    /// Offer a later frame of the same channel first (a duplicate of this one if none is later).
    Advance(u16),
}

#[derive(Clone, Debug)]
struct SeqCase {
    eager_limit_bytes: usize,
    chunk_bytes: usize,
    sends: Vec<SeqSend>,
    /// Which delivery of the recorded exchange the fault replaces (modulo their number).
    at: u16,
    fault: Fault,
}

fn seq_strategy() -> impl Strategy<Value = SeqCase> {
    let send = (prop::bool::weighted(0.3), 0..TAGS, 0usize..=80, any::<bool>())
        .prop_map(|(backwards, tag, len, sync)| SeqSend { backwards, tag, len, sync });
    let fault = prop_oneof![any::<u16>().prop_map(Fault::Replay), any::<u16>().prop_map(Fault::Advance)];
    (0usize..=64, 1usize..=32, prop::collection::vec(send, 1..=6), any::<u16>(), fault).prop_map(
        |(eager_limit_bytes, chunk_bytes, sends, at, fault)| SeqCase {
            eager_limit_bytes,
            chunk_bytes,
            sends,
            at,
            fault,
        },
    )
}

type Delivery = (u32, u32, Header, Vec<u8>);

/// Two fresh cores with every send and its exact receive posted, and their first frames.
fn seq_start(c: &SeqCase) -> Check<(Vec<Core>, Vec<ReqId>)> {
    let config =
        CoreConfig { eager_limit_bytes: c.eager_limit_bytes, chunk_bytes: c.chunk_bytes, ..CoreConfig::default() };
    let mut cores = vec![Core::new(0, 2, config.clone()), Core::new(1, 2, config)];
    let mut recvs = Vec::new();
    for (i, s) in c.sends.iter().enumerate() {
        let (src, dst) = if s.backwards { (1, 0) } else { (0, 1) };
        let data = payload(i, s.len);
        cores[src].isend(dst as i32, 0, s.tag, SendData::Owned(data), s.sync).map_err(|e| e.to_string())?;
        recvs.push(cores[dst].irecv(src as i32, 0, s.tag, RecvBuf::Owned(vec![0; 80])).map_err(|e| e.to_string())?);
    }
    Ok((cores, recvs))
}

/// Runs the exchange with a fixed alternation and records every delivery in order.
fn seq_record(c: &SeqCase) -> Check<Vec<Delivery>> {
    let (mut cores, _) = seq_start(c)?;
    let mut wires = Wires::new(2);
    let mut log = Vec::new();
    for turn in 0u32.. {
        for core in cores.iter_mut() {
            wires.transmit(core, usize::MAX);
        }
        let s = if wires.link(turn % 2, 1 - turn % 2).is_empty() { 1 - turn % 2 } else { turn % 2 };
        let d = 1 - s;
        let Some((h, p)) = wires.link(s, d).pop_front() else { break };
        cores[d as usize].handle_frame(s, h, p.clone()).map_err(|e| format!("in-order delivery failed: {e}"))?;
        // An `Ack` takes no sequence number and only confirms: delivered twice or late it
        // changes nothing, so it is no misordering to offer; the exchange needs none.
        if h.kind != FrameKind::Ack {
            log.push((s, d, h, p));
        }
    }
    Ok(log)
}

fn check_seq_case(c: &SeqCase) -> Check {
    let log = seq_record(c)?;
    ensure!(!log.is_empty(), "the exchange produced no frame");
    let f = usize::from(c.at) % log.len();
    let (s, d) = (log[f].0, log[f].1);
    let same: Vec<usize> = (0..log.len()).filter(|&k| (log[k].0, log[k].1) == (s, d)).collect();
    let (earlier, later): (Vec<usize>, Vec<usize>) = same.iter().partition(|&&k| k < f);
    let later: Vec<usize> = later.into_iter().filter(|&k| k > f).collect();
    // `skip`: deliver log[f] before the fault (a duplicate of it follows).
    let (bad, skip) = match c.fault {
        Fault::Replay(x) if !earlier.is_empty() => (earlier[usize::from(x) % earlier.len()], false),
        Fault::Advance(x) if !later.is_empty() => (later[usize::from(x) % later.len()], false),
        _ => (f, true),
    };
    let (mut cores, recvs) = seq_start(c)?;
    let upto = if skip { f + 1 } else { f };
    for (s, d, h, p) in &log[..upto] {
        cores[*d as usize].handle_frame(*s, *h, p.clone()).map_err(|e| format!("replay failed: {e}"))?;
    }
    let (_, _, h, p) = &log[bad];
    // A frame from the past (a duplicate) is an error. One from the future means frames went
    // missing: the core drops it and reports the gap, which the engine has repaired (the
    // sender keeps every frame until confirmed and sends them again).
    let ahead = bad > upto;
    match cores[d as usize].handle_frame(s, *h, p.clone()) {
        Ok(()) if ahead => {
            let gaps = cores[d as usize].take_gaps();
            ensure!(
                gaps.len() == 1 && gaps[0].0 == s && gaps[0].1.contains("went missing"),
                "rank {d} dropped {h} (ahead; delivery {bad} offered at {f}) without reporting the gap: {gaps:?}"
            );
        }
        Ok(()) => return Err(format!("rank {d} accepted {h} out of order (delivery {bad} offered at {f})")),
        Err(e) => ensure!(
            !ahead && e.class == ErrorClass::Intern && e.detail.contains("expected seq"),
            "rank {d} rejected {h} out of order with the wrong error: {e}"
        ),
    }
    // The rejected frame must leave no trace: the exchange finishes as recorded.
    for (s, d, h, p) in &log[upto..] {
        cores[*d as usize]
            .handle_frame(*s, *h, p.clone())
            .map_err(|e| format!("after rejecting {h}, the recorded exchange failed: {e}"))?;
    }
    for (i, (s, id)) in c.sends.iter().zip(recvs).enumerate() {
        let dst = if s.backwards { 0 } else { 1 };
        let got = cores[dst].take_completion(id).ok_or_else(|| format!("receive of message {i} did not complete"))?;
        let Some(RecvBuf::Owned(buf)) = got.recv_buf else { return Err("receive lost its buffer".into()) };
        ensure!(got.status.len == s.len && buf[..s.len] == payload(i, s.len)[..], "message {i} arrived damaged");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The properties.

fn config(cases: u32) -> ProptestConfig {
    // No regression files: the tree belongs to other people too; a failure prints its case.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn soak_cases() -> u32 {
    std::env::var("KAWARIMI_PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(SOAK_CASES_DEFAULT)
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn matching_follows_mpi_rules(spec in spec_strategy()) {
        check_case(&spec).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn misordered_frames_are_rejected(case in seq_strategy()) {
        check_seq_case(&case).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(config(soak_cases()))]

    #[test]
    #[ignore = "soak: many cases, set KAWARIMI_PROP_CASES"]
    fn soak_matching_follows_mpi_rules(spec in spec_strategy()) {
        check_case(&spec).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "soak: many cases, set KAWARIMI_PROP_CASES"]
    fn soak_misordered_frames_are_rejected(case in seq_strategy()) {
        check_seq_case(&case).map_err(TestCaseError::fail)?;
    }
}

/// The generator reaches every path the checks are about (so a passing run means something).
#[test]
fn generator_covers_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config(1), rng);
    let strategy = spec_strategy();
    let mut total = Stats::default();
    for _ in 0..64 {
        let spec = strategy.new_tree(&mut runner).expect("strategy generates").current();
        match check_case(&spec) {
            Ok(s) => total.add(&s),
            Err(e) => panic!("{e}\nin {spec:?}"),
        }
    }
    let counts = [
        ("rendezvous matches", total.rndv_matches),
        ("eager matches", total.eager_matches),
        ("loopback matches", total.loopback_matches),
        ("truncations", total.truncations),
        ("successful cancels", total.cancels_ok),
        ("late cancels", total.cancels_late),
        ("probe hits", total.probes_hit),
        ("probe misses", total.probes_miss),
        ("receives legally stuck", total.stuck_receives),
        ("orphan receives", total.orphans),
    ];
    eprintln!("coverage of 64 cases: {total:?}");
    for (what, n) in counts {
        assert!(n > 0, "64 generated cases had no {what}: {total:?}");
    }
}

/// A fixed program, readable without the generator: two exact pairs, one truncated, one
/// rendezvous in 3 chunks, and a receive nothing matches.
#[test]
fn fixed_program_drains() {
    let send = |src, dst, tag, len, sync| SendSpec {
        src,
        dst,
        ctx: 0,
        tag,
        len,
        sync,
        free: false,
        static_data: false,
        key: 0,
    };
    let recv = |cap| RecvSpec {
        any_source: false,
        any_tag: false,
        cap,
        probe: false,
        cancel_after: None,
        static_buf: false,
        lazy: true,
        key: 1,
    };
    let spec = Spec {
        n: 2,
        configs: vec![(8, 4); MAX_RANKS as usize],
        pairs: vec![(send(0, 1, 1, 6, true), recv(Cap::Minus(2))), (send(1, 0, 2, 10, false), recv(Cap::Exact))],
        orphans: vec![OrphanSpec { rank: 1, any_source: true, src: 0, ctx: 1, key: 2 }],
        schedule: vec![],
    };
    let stats = check_case(&spec).unwrap_or_else(|e| panic!("{e}\nin {spec:?}"));
    assert_eq!((stats.truncations, stats.rndv_matches, stats.orphans), (1, 1, 1), "{stats:?}");
}

/// The simplest misordering: the first frame twice.
#[test]
fn duplicate_first_frame_is_rejected() {
    let case = SeqCase {
        eager_limit_bytes: 64,
        chunk_bytes: 8,
        sends: vec![SeqSend { backwards: false, tag: 0, len: 4, sync: false }],
        at: 0,
        fault: Fault::Replay(0),
    };
    check_seq_case(&case).unwrap();
}
