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

    /// Rank `rank` lost its data link to `peer` outside a switch: a switch repairs it. While
    /// the job is running, the coordinator quiesces it (the pair's ends drain without each
    /// other) and resumes it at once, and the resume tells both ends to send each other again
    /// what the other may have lost and to connect by TCP. During a switch nothing more is
    /// needed: the ranks report the loss when they detach, and the resume repairs it.
    fn repair(&mut self, rank: u32, peer: u32, reason: &str, epoch: u32, now: Instant) {
        if self.size.is_none_or(|s| rank >= s || peer >= s) || rank == peer {
            let why = format!("ignored a repair request for ranks {rank} and {peer}: not a pair of this job");
            return self.out.log(why);
        }
        self.out.log(format!("rank {rank} lost its data link to rank {peer} in epoch {epoch}: {reason}"));
        let pair = (rank.min(peer), rank.max(peer));
        // Where the loss happened decides who repairs it. In the epoch a resume has started
        // (under way, or failed with some ranks running it already): those ranks ignore a
        // second resume, so a repair follows the next resume that completes. In the epoch
        // being quiesced: its detach reports carry it, and the next resume repairs it.
        // Earlier: a switch since has repaired it (the request was on its way meanwhile).
        if epoch > self.epoch {
            self.pending_repairs.insert(pair);
            return self.out.log("its ranks run the epoch a resume started: a repair follows that resume".into());
        }
        if epoch < self.epoch || self.phase == JobPhase::Resuming {
            return self.out.log(format!("(a switch since epoch {epoch} repaired it)"));
        }
        if matches!(self.phase, JobPhase::Quiescing | JobPhase::Quiesced) {
            self.broken_pairs.insert(pair);
            return self.out.log(format!("the job is {}: the next resume repairs the link", self.phase.name()));
        }
        let missing = self.unreachable_ranks();
        if !missing.is_empty() {
            let why =
                format!("cannot repair it: ranks {missing:?} have no control thread (not started, finished, or lost)");
            return self.out.log(why);
        }
        if !self.may_repair(pair, now) {
            return;
        }
        // Named in the quiesce, so that the other end does not wait for a marker from a rank
        // that no longer sends on that link (it may not have noticed the loss yet).
        self.broken_pairs.insert(pair);
        self.repairs += 1;
        self.out.log(format!("repair {}: quiescing the job to move the pair off that link", self.repairs));
        let timeout_ms = self.config.repair_step_timeout.as_millis() as u64;
        self.start_switch(None, SwitchCommand::Quiesce, timeout_ms, None, now);
    }

    /// Records the peers `rank` reported broken when it detached. Normally the resume of that
    /// switch repairs them; a report that comes after the resume began (late, from a step
    /// that failed) is repaired by a repair that follows the resume.
    fn note_broken(&mut self, rank: u32, peers: &[u32], epoch: u32) {
        for &peer in peers.iter().filter(|&&p| p != rank && self.size.is_none_or(|s| p < s)) {
            let pair = (rank.min(peer), rank.max(peer));
            match self.phase {
                JobPhase::Quiescing | JobPhase::Quiesced => {
                    self.broken_pairs.insert(pair);
                }
                // Named by the resume under way (a report sent twice), or late: its quiesce
                // failed and the resume does not name it.
                JobPhase::Resuming if self.broken_pairs.contains(&pair) => {}
                JobPhase::Resuming => {
                    self.pending_repairs.insert(pair);
                }
                JobPhase::Running => {
                    let (repaired_epoch, repaired) = &self.last_repaired;
                    if epoch == self.epoch && !(*repaired_epoch == epoch && repaired.contains(&pair)) {
                        self.pending_repairs.insert(pair);
                    }
                }
            }
        }
    }

    /// Starts the repair of the links that died while a resume was under way (or were
    /// reported late), once the job runs with no step under way.
    fn start_pending_repair(&mut self, now: Instant) {
        if self.phase != JobPhase::Running || self.op.is_some() || self.pending_repairs.is_empty() {
            return;
        }
        if !self.unreachable_ranks().is_empty() {
            // Kept for when every rank can take part again.
            return;
        }
        let pending = std::mem::take(&mut self.pending_repairs);
        self.broken_pairs = pending.into_iter().filter(|&pair| self.may_repair(pair, now)).collect();
        if self.broken_pairs.is_empty() {
            return;
        }
        self.repairs += 1;
        let pairs = &self.broken_pairs;
        self.out.log(format!("repair {}: the links of rank pairs {pairs:?} died during the last resume", self.repairs));
        let timeout_ms = self.config.repair_step_timeout.as_millis() as u64;
        self.start_switch(None, SwitchCommand::Quiesce, timeout_ms, None, now);
    }

    /// The ranks no switch command can reach (no control thread subscribed).
    fn unreachable_ranks(&self) -> Vec<u32> {
        let size = self.size.unwrap_or(0);
        (0..size).filter(|&r| !self.fanout.reaches(r)).collect()
    }

    /// Whether the coordinator may repair `pair` once more now ([`CoordinatorConfig::pair_repair_limit`]);
    /// counts the repair if so.
    fn may_repair(&mut self, pair: (u32, u32), now: Instant) -> bool {
        let (limit, window) = (self.config.pair_repair_limit, self.config.pair_repair_window);
        let times = self.pair_repairs.entry(pair).or_default();
        while times.front().is_some_and(|&t| now.saturating_duration_since(t) > window) {
            times.pop_front();
        }
        if times.len() >= limit {
            let (a, b) = pair;
            self.out.log(format!(
                "not repairing ranks {a} and {b} again: their link was repaired {} times within {window:?}; \
                 they fail once their wait for a repair ends",
                times.len()
            ));
            return false;
        }
        times.push_back(now);
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(c: &mut Coordinator, conn: ConnId, rank: u32, size: u32, now: Instant) {
        c.handle_connect(conn);
        c.handle_request(
            conn,
            Request::Hello { version: CONTROL_VERSION, rank, size, host: "h".into(), pid: 100 + rank },
            now,
        );
        assert_eq!(c.out.poll_reply(), Some((conn, Reply::Welcome { job: "j".into() })));
    }

    /// A coordinator whose `n` ranks said hello (conns 10..) and subscribed (conns 1..=n).
    fn subscribed(n: u32, cfg: CoordinatorConfig, now: Instant) -> Coordinator {
        let mut c = Coordinator::new("j", cfg);
        for r in 0..n {
            hello(&mut c, 10 + r as u64, r, n, now);
            let conn = 1 + r as u64;
            c.handle_connect(conn);
            let sub = Request::Subscribe { version: CONTROL_VERSION, rank: r, transport: None, host: None, pid: None };
            c.handle_request(conn, sub, now);
            assert!(matches!(c.out.poll_reply(), Some((_, Reply::Welcome { .. }))));
        }
        c
    }

    /// A rank's report of a step of switch `epoch`.
    fn report(
        epoch: u32,
        phase: SwitchPhase,
        detail: Option<&str>,
        transport: Option<&str>,
        broken: Vec<u32>,
    ) -> Request {
        Request::Report {
            epoch,
            phase,
            millis: 1.0,
            detail: detail.map(String::from),
            transport: transport.map(String::from),
            broken,
        }
    }

    /// Rank 0 asks for a repair of its link to rank 1: the quiesce goes to all `n` ranks.
    fn repair_begins(c: &mut Coordinator, n: usize, now: Instant) {
        c.handle_request(1, Request::Repair { rank: 0, peer: 1, reason: "reset".into(), epoch: 0 }, now);
        assert_eq!(std::iter::from_fn(|| c.out.poll_reply()).count(), n, "the repair's quiesce");
    }

    /// Checks that `cmds` are `command` for epoch 1 to every subscribed child, each naming the
    /// repaired pairs of its own ranks (`want(conn)`).
    fn assert_repair_lists(cmds: &[(ConnId, Reply)], command: SwitchCommand, want: impl Fn(ConnId) -> Vec<(u32, u32)>) {
        for (conn, cmd) in cmds {
            let Reply::Command { command: got, epoch: 1, repair, .. } = cmd else { panic!("{cmd:?}") };
            assert_eq!(*got, command, "to conn {conn}");
            assert_eq!(repair, &want(*conn), "the {command:?} to conn {conn}");
        }
    }

    #[test]
    fn fence_completes_when_all_arrive_and_values_are_served() {
        let now = Instant::now();
        let mut c = Coordinator::new("j", CoordinatorConfig::default());
        for r in 0..3 {
            hello(&mut c, r as u64, r, 3, now);
            c.handle_request(r as u64, Request::Put { key: "a".into(), value: format!("{r:02x}") }, now);
        }
        for r in 0..2 {
            c.handle_request(r as u64, Request::Fence { seq: 1 }, now);
        }
        assert_eq!(c.out.poll_reply(), None, "no answer before the last rank");
        c.handle_request(2, Request::Fence { seq: 1 }, now);
        let mut done: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
        done.sort_by_key(|d| d.0);
        assert_eq!(done, (0..3).map(|r| (r, Reply::FenceDone { seq: 1 })).collect::<Vec<_>>());
        c.handle_request(0, Request::Get { rank: 2, key: "a".into() }, now);
        assert_eq!(c.out.poll_reply(), Some((0, Reply::Value { rank: 2, key: "a".into(), value: Some("02".into()) })));
        c.handle_request(0, Request::Get { rank: 2, key: "b".into() }, now);
        assert_eq!(c.out.poll_reply(), Some((0, Reply::Value { rank: 2, key: "b".into(), value: None })));
    }

    #[test]
    fn fence_times_out_naming_the_missing_ranks() {
        let now = Instant::now();
        let cfg = CoordinatorConfig { fence_timeout: Duration::from_secs(5), ..Default::default() };
        let mut c = Coordinator::new("j", cfg);
        for r in 0..4 {
            hello(&mut c, r as u64, r, 4, now);
        }
        c.handle_request(0, Request::Fence { seq: 7 }, now);
        c.handle_request(2, Request::Fence { seq: 7 }, now);
        assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(5)));
        c.handle_timeout(now + Duration::from_secs(4));
        assert_eq!(c.out.poll_reply(), None);
        c.handle_timeout(now + Duration::from_secs(5));
        let r = c.out.poll_reply().unwrap();
        assert!(matches!(&r.1, Reply::FenceFailed { seq: 7, missing, .. } if missing == &vec![1, 3]), "{r:?}");
        assert!(c.out.poll_log().unwrap().contains("missing ranks [1, 3]"));
    }

    #[test]
    fn a_rank_that_disconnects_fails_the_fence_at_once() {
        let now = Instant::now();
        let mut c = Coordinator::new("j", CoordinatorConfig::default());
        hello(&mut c, 0, 0, 2, now);
        hello(&mut c, 1, 1, 2, now);
        c.handle_request(0, Request::Fence { seq: 1 }, now);
        c.handle_disconnect(1, now);
        assert!(
            matches!(c.out.poll_reply(), Some((0, Reply::FenceFailed { ref missing, ref reason, .. })) if missing == &vec![1] && reason.contains("rank 1 disconnected"))
        );
        assert!(!c.status().ranks[1].connected);
    }

    #[test]
    fn bad_requests_are_refused_and_the_job_goes_on() {
        let now = Instant::now();
        let mut c = Coordinator::new("j", CoordinatorConfig::default());
        hello(&mut c, 0, 0, 2, now);
        // Before hello: only hello is allowed.
        c.handle_connect(9);
        c.handle_request(9, Request::Fence { seq: 1 }, now);
        assert!(matches!(c.out.poll_reply(), Some((9, Reply::Error { .. }))));
        assert_eq!(c.out.poll_close(), Some(9));
        // Inconsistent size, duplicate rank, wrong version.
        c.handle_connect(10);
        c.handle_request(
            10,
            Request::Hello { version: CONTROL_VERSION, rank: 1, size: 3, host: "x".into(), pid: 1 },
            now,
        );
        assert!(matches!(c.out.poll_reply(), Some((10, Reply::Error { ref message })) if message.contains("3 ranks")));
        c.handle_connect(11);
        c.handle_request(
            11,
            Request::Hello { version: CONTROL_VERSION, rank: 0, size: 2, host: "x".into(), pid: 1 },
            now,
        );
        assert!(
            matches!(c.out.poll_reply(), Some((11, Reply::Error { ref message })) if message.contains("already connected"))
        );
        c.handle_connect(12);
        c.handle_request(12, Request::CtlHello { version: 99 }, now);
        assert!(matches!(c.out.poll_reply(), Some((12, Reply::Error { .. }))));
        c.handle_connect(13);
        c.handle_malformed(13, "expected value at line 1");
        assert!(
            matches!(c.out.poll_reply(), Some((13, Reply::Error { ref message })) if message.contains("malformed"))
        );
        // A ctl client may read status but not publish.
        c.handle_connect(14);
        c.handle_request(14, Request::CtlHello { version: CONTROL_VERSION }, now);
        assert!(matches!(c.out.poll_reply(), Some((14, Reply::Welcome { .. }))));
        c.handle_request(14, Request::Put { key: "k".into(), value: "00".into() }, now);
        assert!(matches!(c.out.poll_reply(), Some((14, Reply::Error { .. }))));
        // The rank that was connected is still there and still served.
        c.handle_request(0, Request::Status {}, now);
        assert!(
            matches!(c.out.poll_reply(), Some((0, Reply::Status { ref status })) if status.ranks[0].connected && status.size == Some(2))
        );
    }

    #[test]
    fn a_repair_is_a_quiesce_and_a_resume_the_coordinator_runs_itself_naming_the_pair() {
        let now = Instant::now();
        // Three ranks subscribed directly (conns 1..=3); a ctl client on 99.
        let mut c = subscribed(3, CoordinatorConfig::default(), now);
        // A rank may only speak for itself.
        c.handle_request(1, Request::Repair { rank: 2, peer: 1, reason: "x".into(), epoch: 0 }, now);
        assert!(matches!(c.out.poll_reply(), Some((1, Reply::Error { .. }))), "rank 0 cannot ask for rank 2");
        c.handle_request(2, Request::Repair { rank: 1, peer: 0, reason: "verbs send failed".into(), epoch: 0 }, now);
        let quiesce: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
        assert_eq!(quiesce.len(), 3, "a quiesce to every rank: {quiesce:?}");
        // Each child hears of the pairs of its own ranks: rank 2 (conn 3) of none.
        let pairs_of = |conn| if conn == 3 { vec![] } else { vec![(0, 1)] };
        assert_repair_lists(&quiesce, SwitchCommand::Quiesce, pairs_of);
        // A second request for the same loss during the repair starts nothing more.
        c.handle_request(1, Request::Repair { rank: 0, peer: 1, reason: "reset".into(), epoch: 0 }, now);
        assert_eq!(c.out.poll_reply(), None);
        // An operator's quiesce meanwhile is refused, saying why.
        c.handle_connect(99);
        c.handle_request(99, Request::CtlHello { version: CONTROL_VERSION }, now);
        c.out.poll_reply();
        c.handle_request(99, Request::Quiesce { timeout_ms: 8000 }, now);
        let refused = c.out.poll_reply();
        assert!(
            matches!(&refused, Some((99, Reply::SwitchFailed { reason, .. })) if reason.contains("repair 1 of rank pairs {(0, 1)} is under way")),
            "{refused:?}"
        );
        c.handle_request(1, report(1, SwitchPhase::Detached, None, None, vec![1]), now);
        c.handle_request(2, report(1, SwitchPhase::Detached, None, None, vec![0]), now);
        assert_eq!(c.out.poll_reply(), None, "no resume before every rank detached");
        c.handle_request(3, report(1, SwitchPhase::Detached, None, None, vec![]), now);
        let resume: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
        assert_eq!(resume.len(), 3, "the resume follows at once, with no ctl client: {resume:?}");
        assert_repair_lists(&resume, SwitchCommand::Resume, pairs_of);
        for conn in 1..=3 {
            c.handle_request(conn, report(1, SwitchPhase::Running, None, Some("tcp:2"), vec![]), now);
        }
        assert_eq!(c.status().phase, "running");
        assert_eq!(c.status().epoch, 1);
        let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
        assert!(log.iter().any(|l| l.contains("repaired the links of rank pairs {(0, 1)}")), "{log:?}");
        // The pairs were repaired: an operator's next switch names none.
        c.handle_request(99, Request::Quiesce { timeout_ms: 8000 }, now);
        for (_, cmd) in std::iter::from_fn(|| c.out.poll_reply()) {
            assert!(matches!(cmd, Reply::Command { ref repair, .. } if repair.is_empty()), "{cmd:?}");
        }
    }

    #[test]
    fn a_repair_whose_quiesce_fails_resumes_the_ranks_rather_than_leave_them_waiting() {
        let now = Instant::now();
        let mut c = subscribed(2, CoordinatorConfig::default(), now);
        repair_begins(&mut c, 2, now);
        c.handle_request(1, report(1, SwitchPhase::Detached, None, None, vec![1]), now);
        c.handle_request(2, report(1, SwitchPhase::Failed, Some("drain stuck"), None, vec![]), now);
        let resume: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
        assert_eq!(resume.len(), 2, "both ranks are told to resume: {resume:?}");
        assert!(resume.iter().all(|(_, r)| matches!(r, Reply::Command { command: SwitchCommand::Resume, .. })));
        let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
        assert!(log.iter().any(|l| l.contains("failed") && l.contains("drain stuck")), "{log:?}");
    }

    #[test]
    fn a_repair_that_lost_a_rank_still_resumes_the_others() {
        let now = Instant::now();
        let mut c = subscribed(3, CoordinatorConfig::default(), now);
        repair_begins(&mut c, 3, now);
        c.handle_request(1, report(1, SwitchPhase::Detached, None, None, vec![1]), now);
        c.handle_request(2, report(1, SwitchPhase::Detached, None, None, vec![0]), now);
        // Rank 2's control thread goes (its process died, say) before it detached.
        c.handle_disconnect(3, now);
        c.handle_timeout(now + Duration::from_secs(61));
        let resume: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
        assert_eq!(resume.iter().map(|(conn, _)| *conn).collect::<Vec<_>>(), vec![1, 2], "{resume:?}");
        assert_repair_lists(&resume, SwitchCommand::Resume, |_| vec![(0, 1)]);
        let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
        assert!(log.iter().any(|l| l.contains("resuming without ranks [2]")), "{log:?}");
    }

    #[test]
    fn a_repair_that_cannot_start_does_not_count_against_the_pair() {
        let now = Instant::now();
        let cfg = CoordinatorConfig { pair_repair_limit: 1, ..Default::default() };
        let mut c = subscribed(3, cfg, now);
        c.handle_disconnect(3, now);
        c.handle_request(1, Request::Repair { rank: 0, peer: 1, reason: "reset".into(), epoch: 0 }, now);
        assert_eq!(c.out.poll_reply(), None, "no quiesce without rank 2");
        let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
        assert!(log.iter().any(|l| l.contains("cannot repair it: ranks [2] have no control thread")), "{log:?}");
        c.handle_connect(4);
        let sub = Request::Subscribe { version: CONTROL_VERSION, rank: 2, transport: None, host: None, pid: None };
        c.handle_request(4, sub, now);
        c.out.poll_reply();
        repair_begins(&mut c, 3, now);
    }

    #[test]
    fn a_pair_whose_link_keeps_dying_is_repaired_only_so_often() {
        let t0 = Instant::now();
        let cfg = CoordinatorConfig {
            pair_repair_limit: 2,
            pair_repair_window: Duration::from_secs(60),
            ..Default::default()
        };
        let mut c = subscribed(3, cfg, t0);
        // Runs one whole repair of `pair` (asked by its first rank) at `now`; returns whether
        // the coordinator began it.
        let repair = |c: &mut Coordinator, (a, b): (u32, u32), now: Instant| -> bool {
            let epoch = c.status().epoch;
            let ask = Request::Repair { rank: a, peer: b, reason: "reset".into(), epoch };
            c.handle_request(1 + a as u64, ask, now);
            let quiesce: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
            if quiesce.is_empty() {
                return false;
            }
            let e = epoch + 1;
            for r in 0..3u32 {
                let broken = if r == a { vec![b] } else { vec![] };
                c.handle_request(1 + r as u64, report(e, SwitchPhase::Detached, None, None, broken), now);
            }
            assert_eq!(std::iter::from_fn(|| c.out.poll_reply()).count(), 3, "the resume");
            for r in 0..3u64 {
                c.handle_request(1 + r, report(e, SwitchPhase::Running, None, Some("tcp:2"), vec![]), now);
            }
            assert_eq!(c.status().phase, "running");
            true
        };
        assert!(repair(&mut c, (0, 1), t0));
        assert!(repair(&mut c, (1, 0), t0 + Duration::from_secs(10)), "asked by the other end: the same pair");
        assert!(!repair(&mut c, (0, 1), t0 + Duration::from_secs(20)), "a third time within the window");
        let log: Vec<String> = std::iter::from_fn(|| c.out.poll_log()).collect();
        assert!(log.iter().any(|l| l.contains("not repairing ranks 0 and 1 again")), "{log:?}");
        assert!(repair(&mut c, (1, 2), t0 + Duration::from_secs(20)), "another pair is repaired");
        assert!(repair(&mut c, (0, 1), t0 + Duration::from_secs(65)), "once the first repair left the window");
    }

    #[test]
    fn relays_beyond_the_fanout_are_placed_below_earlier_ones_and_a_switch_is_one_message_each() {
        let now = Instant::now();
        let cfg = CoordinatorConfig { relay_fanout: 2, ..Default::default() };
        let mut c = Coordinator::new("j", cfg);
        // Five host leaders of 2 ranks each join: relays 0 and 1 attach here, 2 and 3 go
        // under relay 0, 4 under relay 1.
        let mut parents = Vec::new();
        for h in 0..5u32 {
            let conn = 10 + h as u64;
            c.handle_connect(conn);
            let listen = Some(format!("10.0.0.{h}:1"));
            c.handle_request(conn, Request::Join { version: CONTROL_VERSION, size: 10, leader: 2 * h, listen }, now);
            match c.out.poll_reply() {
                Some((_, Reply::Welcome { .. })) => parents.push(None),
                Some((_, Reply::Redirect { parent })) => {
                    assert_eq!(c.out.poll_close(), Some(conn));
                    parents.push(Some(parent));
                }
                other => panic!("{other:?}"),
            }
        }
        let p = |s: &str| Some(s.to_string());
        assert_eq!(parents, vec![None, None, p("10.0.0.0:1"), p("10.0.0.0:1"), p("10.0.0.1:1")]);
        // The two attached relays speak for all ten ranks.
        let member = |rank| Member {
            rank,
            host: format!("h{}", rank / 2),
            pid: rank,
            transport: "tcp".into(),
            connected: true,
            finalized: false,
        };
        c.handle_request(10, Request::Members { members: [0, 1, 4, 5, 6, 7].into_iter().map(member).collect() }, now);
        c.handle_request(11, Request::Members { members: [2, 3, 8, 9].into_iter().map(member).collect() }, now);
        assert!(c.status().ranks.iter().all(|r| r.subscribed && r.connected), "{:?}", c.status());
        c.handle_connect(99);
        c.handle_request(99, Request::CtlHello { version: CONTROL_VERSION }, now);
        c.out.poll_reply();
        c.handle_request(99, Request::Quiesce { timeout_ms: 8000 }, now);
        let sent: Vec<_> = std::iter::from_fn(|| c.out.poll_reply()).collect();
        assert_eq!(sent.len(), 2, "one command per attached relay: {sent:?}");
        let done = |ranks: &[u32]| {
            ranks.iter().map(|&rank| RankDone { rank, millis: rank as f64, transport: None, broken: vec![] }).collect()
        };
        let report = |d| Request::GroupReport {
            epoch: 1,
            phase: SwitchPhase::Detached,
            done: d,
            missing: vec![],
            detail: None,
            timed_out: false,
        };
        c.handle_request(10, report(done(&[0, 1, 4, 5, 6, 7])), now);
        assert_eq!(c.out.poll_reply(), None);
        c.handle_request(11, report(done(&[2, 3, 8, 9])), now);
        match c.out.poll_reply() {
            Some((99, Reply::SafeToUnplug { ranks: 10, slowest_rank_ms, .. })) => assert_eq!(slowest_rank_ms, 9.0),
            other => panic!("{other:?}"),
        }
        // A relay lost during the next step fails it, naming the ranks it carried.
        c.handle_request(99, Request::Resume { timeout_ms: 8000, transport: None }, now);
        while c.out.poll_reply().is_some() {}
        c.handle_disconnect(11, now);
        match c.out.poll_reply() {
            Some((99, Reply::SwitchFailed { missing, .. })) => {
                assert_eq!(missing, vec![2, 3, 8, 9])
            }
            other => panic!("{other:?}"),
        }
    }
}
