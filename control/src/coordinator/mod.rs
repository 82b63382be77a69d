//! The job coordinator's logic, sans-IO: connections, requests and timers go in; replies and
//! connection closes come out. [`crate::server`] drives it over TCP.
//!
//! # Use
//! Inputs: [`Coordinator::handle_connect`], [`Coordinator::handle_request`],
//! [`Coordinator::handle_malformed`], [`Coordinator::handle_disconnect`],
//! [`Coordinator::handle_timeout`]. Outputs, polled after every input:
//! [`Coordinator::poll_reply`], [`Coordinator::poll_close`], [`Coordinator::poll_log`], then
//! [`Coordinator::poll_timeout`] for when to call `handle_timeout` next.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use crate::fanout::ConnId;
use crate::fanout::{goal_phase, level_margin, Fanout, GroupReport, Outbox, Outcome};
use crate::proto::{
    JobStatus, Member, RankDone, RankInfo, RelayInfo, Reply, Request, SwitchCommand, SwitchPhase, CONTROL_VERSION,
};

/// Bounds that keep a misbehaving client from exhausting the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How long a fence waits for its last rank before failing, naming the missing ones.
    pub fence_timeout: Duration,
    /// Most keys one rank may publish.
    pub max_keys_per_rank: usize,
    /// Longest key and value (hex characters).
    pub max_key_len: usize,
    pub max_value_len: usize,
    /// Most ranks a job may have.
    pub max_ranks: u32,
    /// Most relays attached to the coordinator, and to each relay: host leaders beyond
    /// that are redirected below earlier ones, making a tree of this arity.
    pub relay_fanout: usize,
    /// Budget of each step of a repair (the switch a rank asks for when a data link died
    /// under it). The drain waits for the other end of the pair to notice the loss too.
    pub repair_step_timeout: Duration,
    /// A pair of ranks the coordinator has repaired this many times within
    /// `pair_repair_window` is not repaired again: a link that keeps dying is a fault to fix,
    /// not to hide behind switches. Its ranks then fail once their wait for a repair ends,
    /// each naming the other.
    pub pair_repair_limit: usize,
    pub pair_repair_window: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            fence_timeout: Duration::from_secs(60),
            max_keys_per_rank: 256,
            max_key_len: 256,
            max_value_len: 64 << 10,
            max_ranks: 1 << 20,
            relay_fanout: 32,
            repair_step_timeout: Duration::from_secs(60),
            pair_repair_limit: 5,
            pair_repair_window: Duration::from_secs(600),
        }
    }
}

/// Environment variable setting [`CoordinatorConfig::relay_fanout`] (read where the
/// coordinator starts: `kawarimi run`, or rank 0 under plain `mpirun`).
pub const RELAY_FANOUT_ENV: &str = "KAWARIMI_CTL_FANOUT";

impl CoordinatorConfig {
    /// The defaults, with `KAWARIMI_CTL_FANOUT` applied.
    pub fn from_env() -> Result<CoordinatorConfig, String> {
        let mut c = CoordinatorConfig::default();
        if let Ok(v) = std::env::var(RELAY_FANOUT_ENV) {
            c.relay_fanout = v
                .trim()
                .parse()
                .ok()
                .filter(|&k| k > 0)
                .ok_or_else(|| format!("{RELAY_FANOUT_ENV}={v:?} is not a positive number of relays"))?;
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Authenticated, has not said hello.
    New,
    Rank(u32),
    /// A rank's control thread attached directly: receives switch commands, sends reports.
    Subscriber(u32),
    /// A host leader's relay: carries commands and reports for the ranks below it.
    Relay,
    Ctl,
}

/// Where the job is in the switch protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobPhase {
    Running,
    Quiescing,
    Quiesced,
    Resuming,
}

impl JobPhase {
    fn name(self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Quiescing => "quiescing",
            JobPhase::Quiesced => "quiesced",
            JobPhase::Resuming => "resuming",
        }
    }
}

/// A switch step in progress (the fan-out tracks who has answered).
#[derive(Debug)]
struct SwitchOp {
    /// The control client that asked; it gets the answer. `None`: a repair, which the
    /// coordinator runs (quiesce, then resume at once) for a rank whose link died.
    ctl: Option<ConnId>,
    started: Instant,
}

#[derive(Debug)]
struct Fence {
    seq: u64,
    deadline: Instant,
    arrived: BTreeSet<u32>,
}

/// The coordinator of one job.
#[derive(Debug)]
pub struct Coordinator {
    job: String,
    config: CoordinatorConfig,
    size: Option<u32>,
    conns: HashMap<ConnId, Role>,
    ranks: BTreeMap<u32, RankInfo>,
    /// Rank → its wire-up connection (`Hello`), which fences are answered on.
    hellos: BTreeMap<u32, ConnId>,
    kv: HashMap<(u32, String), String>,
    fence: Option<Fence>,
    /// Switch commands go down, and reports come up, through this.
    fanout: Fanout,
    /// Every relay that joined, in order: the tree's shape.
    relays: Vec<RelayInfo>,
    /// Switches completed.
    epoch: u32,
    phase: JobPhase,
    op: Option<SwitchOp>,
    /// Pairs of ranks whose data link died, as the ranks reported them when they detached;
    /// the next resume repairs them.
    broken_pairs: BTreeSet<(u32, u32)>,
    /// Pairs whose link died in the epoch a resume under way starts (or reported after that
    /// resume began): a repair follows the resume.
    pending_repairs: BTreeSet<(u32, u32)>,
    /// The pairs the last completed resume repaired, and its epoch (a duplicate or late
    /// report of them is no new loss).
    last_repaired: (u32, BTreeSet<(u32, u32)>),
    /// When the coordinator began each of its recent repairs of a pair (at most
    /// `pair_repair_limit` each, none older than `pair_repair_window`).
    pair_repairs: BTreeMap<(u32, u32), VecDeque<Instant>>,
    /// Repairs run so far (for the log).
    repairs: u32,
    /// Replies, closes and log lines for the IO to carry out.
    pub out: Outbox,
}

impl Coordinator {
    pub fn new(job: impl Into<String>, config: CoordinatorConfig) -> Coordinator {
        Coordinator {
            job: job.into(),
            config,
            size: None,
            conns: HashMap::new(),
            ranks: BTreeMap::new(),
            hellos: BTreeMap::new(),
            kv: HashMap::new(),
            fence: None,
            fanout: Fanout::new(),
            relays: Vec::new(),
            epoch: 0,
            phase: JobPhase::Running,
            op: None,
            broken_pairs: BTreeSet::new(),
            pending_repairs: BTreeSet::new(),
            last_repaired: (0, BTreeSet::new()),
            pair_repairs: BTreeMap::new(),
            repairs: 0,
            out: Outbox::default(),
        }
    }

    pub fn status(&self) -> JobStatus {
        JobStatus {
            job: self.job.clone(),
            size: self.size,
            ranks: self.ranks.values().cloned().collect(),
            epoch: self.epoch,
            phase: self.phase.name().to_string(),
            relays: self.relays.clone(),
        }
    }

    fn reply(&mut self, conn: ConnId, r: Reply) {
        self.out.reply(conn, r);
    }

    /// Refuses `conn`: says why, logs it, closes it.
    fn refuse(&mut self, conn: ConnId, why: String) {
        self.out.refuse("", conn, why);
    }

    /// An authenticated connection arrived.
    pub fn handle_connect(&mut self, conn: ConnId) {
        let prev = self.conns.insert(conn, Role::New);
        assert!(prev.is_none(), "connection id {conn} reused");
    }

    /// A line that is not a valid request: refused, the connection closed, the job unaffected.
    pub fn handle_malformed(&mut self, conn: ConnId, error: &str) {
        self.refuse(conn, format!("malformed control request: {error}"));
    }

    pub fn handle_request(&mut self, conn: ConnId, req: Request, now: Instant) {
        let Some(&role) = self.conns.get(&conn) else {
            return;
        };
        match (role, req) {
            (Role::New, Request::Hello { version, rank, size, host, pid }) => {
                self.hello(conn, version, rank, size, host, pid);
            }
            (Role::New, Request::CtlHello { version }) => {
                if version != CONTROL_VERSION {
                    return self.refuse(conn, format!("control protocol {version}, expected {CONTROL_VERSION}"));
                }
                self.conns.insert(conn, Role::Ctl);
                let job = self.job.clone();
                self.reply(conn, Reply::Welcome { job });
            }
            (Role::New, Request::Subscribe { version, rank, transport, host, pid }) => {
                self.subscribe(conn, version, rank, transport, host, pid)
            }
            (Role::New, Request::Join { version, size, leader, listen }) => {
                self.join(conn, version, size, leader, listen)
            }
            (Role::New, other) => self.refuse(conn, format!("expected hello, got {other:?}")),
            (Role::Subscriber(r), Request::Report { epoch, phase, millis, detail, transport, broken }) => {
                self.note_broken(r, &broken, epoch);
                self.start_pending_repair(now);
                let outcome = if phase == SwitchPhase::Failed {
                    self.set_phase(r, phase);
                    let why = format!("rank {r} failed: {}", detail.unwrap_or_default());
                    self.fanout.on_failed(conn, epoch, vec![r], why)
                } else {
                    self.fanout.on_done(conn, epoch, phase, vec![RankDone { rank: r, millis, transport, broken }])
                };
                self.finish_switch(outcome, now);
            }
            (Role::Subscriber(r), Request::Goodbye {}) => {
                self.finalized(r);
                let outcome = self.fanout.remove_ranks(&[r], "finalized");
                self.finish_switch(outcome, now);
            }
            (Role::Relay, Request::Members { members }) => self.members(conn, members, now),
            (Role::Relay, Request::GroupReport { epoch, phase, done, missing, detail, timed_out }) => {
                for d in &done {
                    self.note_broken(d.rank, &d.broken, epoch);
                }
                self.start_pending_repair(now);
                if phase == SwitchPhase::Failed {
                    for &r in &missing {
                        self.set_phase(r, SwitchPhase::Failed);
                    }
                }
                let report = GroupReport { epoch, phase, done, missing, detail, timed_out };
                let outcome = self.fanout.on_group_report(conn, report);
                self.finish_switch(outcome, now);
            }
            (Role::Subscriber(r), Request::Repair { rank, peer, reason, epoch }) if rank == r => {
                self.repair(rank, peer, &reason, epoch, now)
            }
            (Role::Relay, Request::Repair { rank, peer, reason, epoch }) => {
                self.repair(rank, peer, &reason, epoch, now)
            }
            (Role::Ctl, Request::Quiesce { timeout_ms }) => {
                self.start_switch(Some(conn), SwitchCommand::Quiesce, timeout_ms, None, now)
            }
            (Role::Ctl, Request::Resume { timeout_ms, transport }) => {
                self.start_switch(Some(conn), SwitchCommand::Resume, timeout_ms, transport, now)
            }
            (Role::Rank(r), Request::Put { key, value }) => self.put(conn, r, key, value),
            (Role::Rank(r), Request::Fence { seq }) => self.fence(conn, r, seq, now),
            (Role::Rank(r), Request::Goodbye {}) => self.finalized(r),
            (Role::Rank(_) | Role::Ctl, Request::Get { rank, key }) => {
                let value = self.kv.get(&(rank, key.clone())).cloned();
                self.reply(conn, Reply::Value { rank, key, value });
            }
            (Role::Rank(_) | Role::Ctl, Request::Status {}) => {
                let status = self.status();
                self.reply(conn, Reply::Status { status });
            }
            (role, other) => self.refuse(conn, format!("{other:?} is not allowed for {role:?}")),
        }
    }

    /// Checks a rank's claim to a place in the job and records the job's size.
    fn check_place(&mut self, conn: ConnId, rank: u32, size: u32) -> bool {
        if size == 0 || size > self.config.max_ranks || rank >= size {
            self.refuse(conn, format!("rank {rank} of {size} is not a valid place in a job"));
            return false;
        }
        match self.size {
            Some(s) if s != size => {
                self.refuse(conn, format!("rank {rank} says the job has {size} ranks, others said {s}"));
                false
            }
            _ => {
                self.size = Some(size);
                true
            }
        }
    }

    fn rank_info(&mut self, rank: u32) -> &mut RankInfo {
        self.ranks.entry(rank).or_insert_with(|| RankInfo {
            rank,
            host: String::new(),
            pid: 0,
            connected: false,
            finalized: false,
            switch_phase: SwitchPhase::Running,
            subscribed: false,
            transport: "?".into(),
        })
    }

    fn set_phase(&mut self, rank: u32, phase: SwitchPhase) {
        if let Some(info) = self.ranks.get_mut(&rank) {
            info.switch_phase = phase;
        }
    }

    fn finalized(&mut self, rank: u32) {
        if let Some(info) = self.ranks.get_mut(&rank) {
            info.finalized = true;
        }
    }

    fn hello(&mut self, conn: ConnId, version: u32, rank: u32, size: u32, host: String, pid: u32) {
        if version != CONTROL_VERSION {
            return self.refuse(conn, format!("control protocol {version}, expected {CONTROL_VERSION}"));
        }
        if !self.check_place(conn, rank, size) {
            return;
        }
        if let Some(info) = self.ranks.get(&rank).filter(|i| self.hellos.contains_key(&rank) && i.connected) {
            let why = format!("rank {rank} is already connected (pid {} on {})", info.pid, info.host);
            return self.refuse(conn, why);
        }
        self.conns.insert(conn, Role::Rank(rank));
        self.hellos.insert(rank, conn);
        let info = self.rank_info(rank);
        (info.host, info.pid, info.connected, info.finalized) = (host, pid, true, false);
        let job = self.job.clone();
        self.reply(conn, Reply::Welcome { job });
    }

    /// A rank's control thread attaches directly (a job without relays, and the simulator).
    fn subscribe(
        &mut self,
        conn: ConnId,
        version: u32,
        rank: u32,
        transport: Option<String>,
        host: Option<String>,
        pid: Option<u32>,
    ) {
        if version != CONTROL_VERSION {
            return self.refuse(conn, format!("control protocol {version}, expected {CONTROL_VERSION}"));
        }
        if !self.ranks.contains_key(&rank) && host.is_none() {
            return self.refuse(conn, format!("rank {rank} subscribes before saying hello"));
        }
        if self.fanout.reaches(rank) {
            return self.refuse(conn, format!("rank {rank} is already subscribed"));
        }
        if self.size.is_some_and(|s| rank >= s) {
            return self.refuse(conn, format!("rank {rank} is not in a job of {} ranks", self.size.unwrap_or(0)));
        }
        self.fanout.add(conn, rank).expect("checked: not reached yet");
        self.conns.insert(conn, Role::Subscriber(rank));
        let info = self.rank_info(rank);
        info.subscribed = true;
        info.connected = true;
        if let Some(t) = transport {
            info.transport = t;
        }
        if let Some(h) = host {
            info.host = h;
        }
        if let Some(p) = pid {
            info.pid = p;
        }
        let job = self.job.clone();
        self.reply(conn, Reply::Welcome { job });
    }

    /// A host leader's relay joins. The first `relay_fanout` attach here; each later one is
    /// sent below an earlier one (relay `i` under relay `i / k - 1`), so the relays form a
    /// k-ary tree whose depth grows with the logarithm of the number of hosts.
    fn join(&mut self, conn: ConnId, version: u32, size: u32, leader: u32, listen: Option<String>) {
        if version != CONTROL_VERSION {
            return self.refuse(conn, format!("control protocol {version}, expected {CONTROL_VERSION}"));
        }
        if !self.check_place(conn, leader, size) {
            return;
        }
        let k = self.config.relay_fanout.max(1);
        let index = self.relays.len();
        if index >= k {
            if let Some(parent) = self.relays[index / k - 1].listen.clone() {
                self.relays.push(RelayInfo { leader, listen, parent: Some(parent.clone()) });
                self.reply(conn, Reply::Redirect { parent });
                self.out.close(conn);
                return;
            }
        }
        self.relays.push(RelayInfo { leader, listen, parent: None });
        self.conns.insert(conn, Role::Relay);
        let job = self.job.clone();
        self.reply(conn, Reply::Welcome { job });
    }

    /// A relay's news about the ranks below it.
    fn members(&mut self, conn: ConnId, members: Vec<Member>, now: Instant) {
        let (errors, outcome) = self.fanout.apply_members(conn, &members, self.size);
        for e in errors {
            self.out.log(e);
        }
        let size = self.size;
        for m in members.into_iter().filter(|m| size.is_none_or(|s| m.rank < s)) {
            let subscribed = self.fanout.reaches(m.rank);
            let info = self.rank_info(m.rank);
            (info.host, info.pid, info.transport) = (m.host, m.pid, m.transport);
            (info.connected, info.finalized, info.subscribed) = (m.connected, m.finalized, subscribed);
        }
        self.finish_switch(outcome, now);
    }

    /// Levels of relays below the coordinator (0 without relays).
    fn relay_depth(&self) -> u32 {
        let index: HashMap<&str, usize> =
            self.relays.iter().enumerate().filter_map(|(i, r)| Some((r.listen.as_deref()?, i))).collect();
        let mut depth = vec![0u32; self.relays.len()];
        // A relay joins after its parent, so one pass in join order suffices.
        for (i, r) in self.relays.iter().enumerate() {
            depth[i] = 1 + r.parent.as_deref().and_then(|p| index.get(p)).map_or(0, |&p| depth[p]);
        }
        depth.into_iter().max().unwrap_or(0)
    }

    /// Answers whoever asked for the step (a repair logs instead).
    fn answer(&mut self, ctl: Option<ConnId>, r: Reply) {
        match ctl {
            Some(conn) => self.reply(conn, r),
            None => self.out.log(format!("repair {}: {r:?}", self.repairs)),
        }
    }

    /// Starts a quiesce or resume: the command goes down the tree to every rank.
    fn start_switch(
        &mut self,
        ctl: Option<ConnId>,
        command: SwitchCommand,
        timeout_ms: u64,
        transport: Option<String>,
        now: Instant,
    ) {
        let (expected, next) = match command {
            SwitchCommand::Quiesce => (JobPhase::Running, JobPhase::Quiescing),
            SwitchCommand::Resume => (JobPhase::Quiesced, JobPhase::Resuming),
        };
        let epoch = self.epoch + 1;
        if self.phase != expected {
            let repairing = self.op.as_ref().is_some_and(|op| op.ctl.is_none());
            let why = match repairing {
                true => format!(
                    "cannot {command:?} a job that is {}: repair {} of rank pairs {:?} is under way",
                    self.phase.name(),
                    self.repairs,
                    self.broken_pairs
                ),
                false => format!("cannot {command:?} a job that is {}", self.phase.name()),
            };
            return self.answer(ctl, Reply::SwitchFailed { epoch, missing: Vec::new(), reason: why });
        }
        if self.size.is_none() {
            return self.answer(
                ctl,
                Reply::SwitchFailed { epoch, missing: Vec::new(), reason: "no rank has connected yet".into() },
            );
        }
        let missing = self.unreachable_ranks();
        // A repair's resume goes to the ranks it reaches even without some: they detached for
        // the repair and must not wait for ever. Their reconnection fence then fails, naming
        // the ranks that are gone, and the job ends with that error.
        let repair_resume = ctl.is_none() && command == SwitchCommand::Resume;
        if !missing.is_empty() && !repair_resume {
            let reason = "these ranks have no control thread connected (not started, finished, or lost)".to_string();
            return self.answer(ctl, Reply::SwitchFailed { epoch, missing, reason });
        }
        if !missing.is_empty() {
            self.out.log(format!(
                "repair {}: resuming without ranks {missing:?}, which have no control thread",
                self.repairs
            ));
        }
        let timeout = Duration::from_millis(timeout_ms.clamp(1, 24 * 3600 * 1000));
        self.phase = next;
        self.op = Some(SwitchOp { ctl, started: now });
        let margin = level_margin(timeout, self.relay_depth());
        let repair: Vec<(u32, u32)> = self.broken_pairs.iter().copied().collect();
        let outcome = self.fanout.start(command, epoch, transport, &repair, now, timeout, margin);
        while let Some((conn, c)) = self.fanout.poll_command() {
            self.reply(conn, c);
        }
        self.finish_switch(outcome, now);
    }

    /// Answers the control client once the step ended below.
    fn finish_switch(&mut self, outcome: Option<Outcome>, now: Instant) {
        let Some(outcome) = outcome else { return };
        let Some(op) = self.op.take() else { return };
        match outcome {
            Outcome::Done { command, epoch, done } => {
                let total_ms = now.duration_since(op.started).as_secs_f64() * 1e3;
                let slowest_rank_ms = done.iter().map(|d| d.millis).fold(0.0, f64::max);
                let ranks = done.len() as u32;
                let phase = goal_phase(command);
                for d in done {
                    let info = self.rank_info(d.rank);
                    info.switch_phase = phase;
                    if let Some(t) = d.transport {
                        info.transport = t;
                    }
                }
                let reply = match command {
                    SwitchCommand::Quiesce => {
                        self.phase = JobPhase::Quiesced;
                        Reply::SafeToUnplug { epoch, ranks, total_ms, slowest_rank_ms }
                    }
                    SwitchCommand::Resume => {
                        self.phase = JobPhase::Running;
                        self.epoch = epoch;
                        let pairs = std::mem::take(&mut self.broken_pairs);
                        if !pairs.is_empty() {
                            self.out.log(format!("switch {epoch} repaired the links of rank pairs {pairs:?}"));
                        }
                        self.last_repaired = (epoch, pairs);
                        Reply::Resumed { epoch, ranks, total_ms, slowest_rank_ms }
                    }
                };
                self.answer(op.ctl, reply);
                if op.ctl.is_none() && command == SwitchCommand::Quiesce {
                    // A repair goes on at once: nothing outside the job has to happen between.
                    let timeout_ms = self.config.repair_step_timeout.as_millis() as u64;
                    self.start_switch(None, SwitchCommand::Resume, timeout_ms, None, now);
                }
                self.start_pending_repair(now);
            }
            Outcome::Failed { command, epoch, missing, reason, .. } => {
                self.out.log(format!("switch {epoch} ({command:?}) failed: {reason}; ranks {missing:?}"));
                // Either way the ranks that finished their step wait for a resume, which can
                // be asked for again. (A failed quiesce leaves the job quiescing: the ranks
                // that detached wait for a resume, and one that died ends the job.)
                self.phase = JobPhase::Quiesced;
                // (Links that died while a resume was under way stay pending: their ranks run
                // already, and a resume, which they ignore, cannot repair them; a repair
                // follows the next resume that completes.)
                self.answer(op.ctl, Reply::SwitchFailed { epoch, missing, reason });
                if op.ctl.is_none() && command == SwitchCommand::Quiesce {
                    // No operator will decide for a repair: the ranks that detached are resumed
                    // at once. Without the late ranks their reconnection fence fails, naming
                    // them, and the job ends with that error instead of waiting for ever.
                    self.out.log(format!("repair {}: resuming the ranks that detached", self.repairs));
                    let timeout_ms = self.config.repair_step_timeout.as_millis() as u64;
                    self.start_switch(None, SwitchCommand::Resume, timeout_ms, None, now);
                }
            }
        }
    }

    fn put(&mut self, conn: ConnId, rank: u32, key: String, value: String) {
        let keys = self.kv.keys().filter(|(r, _)| *r == rank).count();
        if key.len() > self.config.max_key_len || value.len() > self.config.max_value_len {
            return self.refuse(conn, format!("key or value of rank {rank} too long"));
        }
        if keys >= self.config.max_keys_per_rank && !self.kv.contains_key(&(rank, key.clone())) {
            return self
                .refuse(conn, format!("rank {rank} published more than {} keys", self.config.max_keys_per_rank));
        }
        self.kv.insert((rank, key), value);
    }

    fn fence(&mut self, conn: ConnId, rank: u32, seq: u64, now: Instant) {
        let timeout = self.config.fence_timeout;
        let f = self.fence.get_or_insert_with(|| Fence { seq, deadline: now + timeout, arrived: BTreeSet::new() });
        if f.seq != seq {
            let expected = f.seq;
            return self.refuse(conn, format!("rank {rank} entered fence {seq} while fence {expected} is open"));
        }
        f.arrived.insert(rank);
        self.finish_fence_if_complete();
    }

    fn finish_fence_if_complete(&mut self) {
        let (Some(size), Some(f)) = (self.size, &self.fence) else {
            return;
        };
        if f.arrived.len() as u32 == size {
            let f = self.fence.take().expect("checked");
            for r in f.arrived {
                let Some(&conn) = self.hellos.get(&r) else {
                    continue;
                };
                self.reply(conn, Reply::FenceDone { seq: f.seq });
            }
        }
    }

    /// Fails the open fence, naming every rank that has not arrived.
    fn fail_fence(&mut self, reason: &str) {
        let Some(f) = self.fence.take() else { return };
        let size = self.size.unwrap_or(0);
        let missing: Vec<u32> = (0..size).filter(|r| !f.arrived.contains(r)).collect();
        self.out.log(format!("fence {} failed: {reason}; missing ranks {missing:?}", f.seq));
        for r in f.arrived {
            let Some(&conn) = self.hellos.get(&r) else {
                continue;
            };
            self.reply(conn, Reply::FenceFailed { seq: f.seq, missing: missing.clone(), reason: reason.to_string() });
        }
    }

    pub fn handle_disconnect(&mut self, conn: ConnId, now: Instant) {
        let Some(role) = self.conns.remove(&conn) else {
            return;
        };
        match role {
            Role::Subscriber(_) | Role::Relay => {
                let why = "lost its control connection";
                let (ranks, outcome) = self.fanout.remove_child(conn, why);
                for r in ranks {
                    let info = self.rank_info(r);
                    info.subscribed = false;
                    if role == Role::Relay {
                        info.connected = false;
                    }
                }
                self.finish_switch(outcome, now);
            }
            Role::Rank(r) if self.hellos.get(&r) == Some(&conn) => {
                self.hellos.remove(&r);
                let info = self.rank_info(r);
                info.connected = false;
                if !info.finalized {
                    let line = format!("rank {r} (pid {} on {}) disconnected", info.pid, info.host);
                    self.out.log(line);
                }
                if self.fence.as_ref().is_some_and(|f| !f.arrived.contains(&r)) {
                    self.fail_fence(&format!("rank {r} disconnected"));
                }
            }
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.fence.as_ref().is_some_and(|f| now >= f.deadline) {
            let t = self.config.fence_timeout;
            self.fail_fence(&format!("timed out after {t:?}"));
        }
        let outcome = self.fanout.on_timeout(now);
        self.finish_switch(outcome, now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let fence = self.fence.as_ref().map(|f| f.deadline);
        fence.into_iter().chain(self.fanout.deadline()).min()
    }
}

mod repair;

#[cfg(test)]
mod tests;
