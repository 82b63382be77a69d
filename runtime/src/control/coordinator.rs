//! The job coordinator's logic, sans-IO: connections, requests and timers go in; replies and
//! connection closes come out. [`super::server`] drives it over TCP.
//!
//! # Use
//! Inputs: [`Coordinator::handle_connect`], [`Coordinator::handle_request`],
//! [`Coordinator::handle_malformed`], [`Coordinator::handle_disconnect`],
//! [`Coordinator::handle_timeout`]. Outputs, polled after every input:
//! [`Coordinator::poll_reply`], [`Coordinator::poll_close`], [`Coordinator::poll_log`], then
//! [`Coordinator::poll_timeout`] for when to call `handle_timeout` next.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::proto::{JobStatus, RankInfo, Reply, Request, SwitchCommand, SwitchPhase, CONTROL_VERSION};

/// Identifies one control connection.
pub type ConnId = u64;

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
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            fence_timeout: Duration::from_secs(60),
            max_keys_per_rank: 256,
            max_key_len: 256,
            max_value_len: 64 << 10,
            max_ranks: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Authenticated, has not said hello.
    New,
    Rank(u32),
    /// A rank's control thread: receives switch commands, sends reports.
    Subscriber(u32),
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

/// A switch step in progress: sent to every rank, waiting for each one's report.
#[derive(Debug)]
struct SwitchOp {
    command: SwitchCommand,
    epoch: u32,
    /// The control client that asked; it gets the answer.
    ctl: ConnId,
    started: Instant,
    deadline: Instant,
    /// Ranks that reported, with the time their step took.
    reported: BTreeMap<u32, f64>,
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
    ranks: BTreeMap<u32, (ConnId, RankInfo)>,
    kv: HashMap<(u32, String), String>,
    fence: Option<Fence>,
    /// Rank → its control thread's connection.
    subs: BTreeMap<u32, ConnId>,
    /// Switches completed.
    epoch: u32,
    phase: JobPhase,
    op: Option<SwitchOp>,
    replies: VecDeque<(ConnId, Reply)>,
    closes: VecDeque<ConnId>,
    log: VecDeque<String>,
}

impl Coordinator {
    pub fn new(job: impl Into<String>, config: CoordinatorConfig) -> Coordinator {
        Coordinator {
            job: job.into(),
            config,
            size: None,
            conns: HashMap::new(),
            ranks: BTreeMap::new(),
            kv: HashMap::new(),
            fence: None,
            subs: BTreeMap::new(),
            epoch: 0,
            phase: JobPhase::Running,
            op: None,
            replies: VecDeque::new(),
            closes: VecDeque::new(),
            log: VecDeque::new(),
        }
    }

    pub fn status(&self) -> JobStatus {
        JobStatus {
            job: self.job.clone(),
            size: self.size,
            ranks: self.ranks.values().map(|(_, info)| info.clone()).collect(),
            epoch: self.epoch,
            phase: self.phase.name().to_string(),
        }
    }

    fn reply(&mut self, conn: ConnId, r: Reply) {
        self.replies.push_back((conn, r));
    }

    /// Refuses `conn`: says why, logs it, closes it.
    fn refuse(&mut self, conn: ConnId, why: String) {
        self.log.push_back(format!("connection {conn} refused: {why}"));
        self.reply(conn, Reply::Error { message: why });
        self.closes.push_back(conn);
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
        let Some(&role) = self.conns.get(&conn) else { return };
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
            (Role::New, Request::Subscribe { version, rank, transport }) => {
                self.subscribe(conn, version, rank, transport)
            }
            (Role::New, other) => self.refuse(conn, format!("expected hello, got {other:?}")),
            (Role::Subscriber(r), Request::Report { epoch, phase, millis, detail, transport }) => {
                if let (Some(t), Some((_, info))) = (transport, self.ranks.get_mut(&r)) {
                    info.transport = t;
                }
                self.report(r, epoch, phase, millis, detail, now)
            }
            (Role::Ctl, Request::Quiesce { timeout_ms }) => {
                self.start_switch(conn, SwitchCommand::Quiesce, timeout_ms, None, now)
            }
            (Role::Ctl, Request::Resume { timeout_ms, transport }) => {
                self.start_switch(conn, SwitchCommand::Resume, timeout_ms, transport, now)
            }
            (Role::Rank(r), Request::Put { key, value }) => self.put(conn, r, key, value),
            (Role::Rank(r), Request::Fence { seq }) => self.fence(conn, r, seq, now),
            (Role::Rank(r), Request::Goodbye {}) => {
                if let Some((_, info)) = self.ranks.get_mut(&r) {
                    info.finalized = true;
                }
            }
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

    fn hello(&mut self, conn: ConnId, version: u32, rank: u32, size: u32, host: String, pid: u32) {
        if version != CONTROL_VERSION {
            return self.refuse(conn, format!("control protocol {version}, expected {CONTROL_VERSION}"));
        }
        if size == 0 || size > self.config.max_ranks || rank >= size {
            return self.refuse(conn, format!("rank {rank} of {size} is not a valid place in a job"));
        }
        match self.size {
            Some(s) if s != size => {
                return self.refuse(conn, format!("rank {rank} says the job has {size} ranks, others said {s}"))
            }
            _ => self.size = Some(size),
        }
        if let Some((_, info)) = self.ranks.get(&rank) {
            if info.connected {
                return self
                    .refuse(conn, format!("rank {rank} is already connected (pid {} on {})", info.pid, info.host));
            }
        }
        self.conns.insert(conn, Role::Rank(rank));
        self.ranks.insert(
            rank,
            (
                conn,
                RankInfo {
                    rank,
                    host,
                    pid,
                    connected: true,
                    finalized: false,
                    switch_phase: SwitchPhase::Running,
                    subscribed: false,
                    transport: "?".into(),
                },
            ),
        );
        let job = self.job.clone();
        self.reply(conn, Reply::Welcome { job });
    }

    fn subscribe(&mut self, conn: ConnId, version: u32, rank: u32, transport: Option<String>) {
        if version != CONTROL_VERSION {
            return self.refuse(conn, format!("control protocol {version}, expected {CONTROL_VERSION}"));
        }
        let Some((_, info)) = self.ranks.get_mut(&rank) else {
            return self.refuse(conn, format!("rank {rank} subscribes before saying hello"));
        };
        if info.subscribed {
            return self.refuse(conn, format!("rank {rank} is already subscribed"));
        }
        info.subscribed = true;
        if let Some(t) = transport {
            info.transport = t;
        }
        self.conns.insert(conn, Role::Subscriber(rank));
        self.subs.insert(rank, conn);
        let job = self.job.clone();
        self.reply(conn, Reply::Welcome { job });
    }

    /// Starts a quiesce or resume: sends the command to every rank's control thread.
    fn start_switch(
        &mut self,
        ctl: ConnId,
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
            let why = format!("cannot {command:?} a job that is {}", self.phase.name());
            return self.reply(ctl, Reply::SwitchFailed { epoch, missing: Vec::new(), reason: why });
        }
        let Some(size) = self.size else {
            return self.reply(
                ctl,
                Reply::SwitchFailed { epoch, missing: Vec::new(), reason: "no rank has connected yet".into() },
            );
        };
        let missing: Vec<u32> = (0..size).filter(|r| !self.subs.contains_key(r)).collect();
        if !missing.is_empty() {
            let reason = "these ranks have no control thread connected (not started, finished, or lost)".to_string();
            return self.reply(ctl, Reply::SwitchFailed { epoch, missing, reason });
        }
        let timeout = Duration::from_millis(timeout_ms.clamp(1, 24 * 3600 * 1000));
        self.phase = next;
        self.op =
            Some(SwitchOp { command, epoch, ctl, started: now, deadline: now + timeout, reported: BTreeMap::new() });
        let subs: Vec<ConnId> = self.subs.values().copied().collect();
        for conn in subs {
            self.reply(conn, Reply::Command { command, epoch, transport: transport.clone() });
        }
    }

    fn report(&mut self, rank: u32, epoch: u32, phase: SwitchPhase, millis: f64, detail: Option<String>, now: Instant) {
        if let Some((_, info)) = self.ranks.get_mut(&rank) {
            info.switch_phase = phase;
        }
        let Some(op) = &mut self.op else { return };
        if op.epoch != epoch {
            return;
        }
        let done_phase = match op.command {
            SwitchCommand::Quiesce => SwitchPhase::Detached,
            SwitchCommand::Resume => SwitchPhase::Running,
        };
        if phase == SwitchPhase::Failed {
            let why = format!("rank {rank} failed: {}", detail.unwrap_or_default());
            return self.fail_switch(&why, vec![rank]);
        }
        if phase != done_phase {
            return;
        }
        op.reported.insert(rank, millis);
        if op.reported.len() as u32 == self.size.unwrap_or(0) {
            let op = self.op.take().expect("checked");
            let total_ms = now.duration_since(op.started).as_secs_f64() * 1e3;
            let slowest_rank_ms = op.reported.values().copied().fold(0.0, f64::max);
            let ranks = op.reported.len() as u32;
            let reply = match op.command {
                SwitchCommand::Quiesce => {
                    self.phase = JobPhase::Quiesced;
                    Reply::SafeToUnplug { epoch, ranks, total_ms, slowest_rank_ms }
                }
                SwitchCommand::Resume => {
                    self.phase = JobPhase::Running;
                    self.epoch = epoch;
                    Reply::Resumed { epoch, ranks, total_ms, slowest_rank_ms }
                }
            };
            self.reply(op.ctl, reply);
        }
    }

    /// Fails the switch in progress. The job stays where it is (a failed quiesce leaves it
    /// quiescing: the ranks that detached wait for a resume, and one that died ends the job).
    fn fail_switch(&mut self, reason: &str, missing: Vec<u32>) {
        let Some(op) = self.op.take() else { return };
        self.log.push_back(format!("switch {} ({:?}) failed: {reason}; ranks {missing:?}", op.epoch, op.command));
        // Either way the ranks that finished their step wait for a resume, which can be
        // asked for again.
        self.phase = JobPhase::Quiesced;
        self.reply(op.ctl, Reply::SwitchFailed { epoch: op.epoch, missing, reason: reason.to_string() });
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
        let (Some(size), Some(f)) = (self.size, &self.fence) else { return };
        if f.arrived.len() as u32 == size {
            let f = self.fence.take().expect("checked");
            for r in f.arrived {
                let conn = self.ranks[&r].0;
                self.reply(conn, Reply::FenceDone { seq: f.seq });
            }
        }
    }

    /// Fails the open fence, naming every rank that has not arrived.
    fn fail_fence(&mut self, reason: &str) {
        let Some(f) = self.fence.take() else { return };
        let size = self.size.unwrap_or(0);
        let missing: Vec<u32> = (0..size).filter(|r| !f.arrived.contains(r)).collect();
        self.log.push_back(format!("fence {} failed: {reason}; missing ranks {missing:?}", f.seq));
        for r in f.arrived {
            let conn = self.ranks[&r].0;
            self.reply(conn, Reply::FenceFailed { seq: f.seq, missing: missing.clone(), reason: reason.to_string() });
        }
    }

    pub fn handle_disconnect(&mut self, conn: ConnId) {
        let Some(role) = self.conns.remove(&conn) else { return };
        if let Role::Subscriber(r) = role {
            self.subs.remove(&r);
            let finalized = self.ranks.get_mut(&r).map(|(_, info)| {
                info.subscribed = false;
                info.finalized
            });
            let waiting_on_it = self.op.as_ref().is_some_and(|op| !op.reported.contains_key(&r));
            if waiting_on_it {
                let why = if finalized == Some(true) { "finalized" } else { "lost its control connection" };
                self.fail_switch(&format!("rank {r} {why} during the switch"), vec![r]);
            }
        }
        if let Role::Rank(r) = role {
            if let Some((c, info)) = self.ranks.get_mut(&r) {
                if *c == conn {
                    info.connected = false;
                    if !info.finalized {
                        self.log.push_back(format!("rank {r} (pid {} on {}) disconnected", info.pid, info.host));
                    }
                    if self.fence.as_ref().is_some_and(|f| !f.arrived.contains(&r)) {
                        self.fail_fence(&format!("rank {r} disconnected"));
                    }
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.fence.as_ref().is_some_and(|f| now >= f.deadline) {
            let t = self.config.fence_timeout;
            self.fail_fence(&format!("timed out after {t:?}"));
        }
        if let Some(op) = self.op.as_ref().filter(|op| now >= op.deadline) {
            let size = self.size.unwrap_or(0);
            let missing: Vec<u32> = (0..size).filter(|r| !op.reported.contains_key(r)).collect();
            let why = format!("timed out after {:?}", op.deadline.duration_since(op.started));
            self.fail_switch(&why, missing);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let fence = self.fence.as_ref().map(|f| f.deadline);
        let op = self.op.as_ref().map(|o| o.deadline);
        fence.into_iter().chain(op).min()
    }

    pub fn poll_reply(&mut self) -> Option<(ConnId, Reply)> {
        self.replies.pop_front()
    }

    pub fn poll_close(&mut self) -> Option<ConnId> {
        self.closes.pop_front()
    }

    /// Lines worth logging (refusals, failures), oldest first.
    pub fn poll_log(&mut self) -> Option<String> {
        self.log.pop_front()
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
        assert_eq!(c.poll_reply(), Some((conn, Reply::Welcome { job: "j".into() })));
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
        assert_eq!(c.poll_reply(), None, "no answer before the last rank");
        c.handle_request(2, Request::Fence { seq: 1 }, now);
        let mut done: Vec<_> = std::iter::from_fn(|| c.poll_reply()).collect();
        done.sort_by_key(|d| d.0);
        assert_eq!(done, (0..3).map(|r| (r, Reply::FenceDone { seq: 1 })).collect::<Vec<_>>());
        c.handle_request(0, Request::Get { rank: 2, key: "a".into() }, now);
        assert_eq!(c.poll_reply(), Some((0, Reply::Value { rank: 2, key: "a".into(), value: Some("02".into()) })));
        c.handle_request(0, Request::Get { rank: 2, key: "b".into() }, now);
        assert_eq!(c.poll_reply(), Some((0, Reply::Value { rank: 2, key: "b".into(), value: None })));
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
        assert_eq!(c.poll_reply(), None);
        c.handle_timeout(now + Duration::from_secs(5));
        let r = c.poll_reply().unwrap();
        assert!(matches!(&r.1, Reply::FenceFailed { seq: 7, missing, .. } if missing == &vec![1, 3]), "{r:?}");
        assert!(c.poll_log().unwrap().contains("missing ranks [1, 3]"));
    }

    #[test]
    fn a_rank_that_disconnects_fails_the_fence_at_once() {
        let now = Instant::now();
        let mut c = Coordinator::new("j", CoordinatorConfig::default());
        hello(&mut c, 0, 0, 2, now);
        hello(&mut c, 1, 1, 2, now);
        c.handle_request(0, Request::Fence { seq: 1 }, now);
        c.handle_disconnect(1);
        assert!(
            matches!(c.poll_reply(), Some((0, Reply::FenceFailed { ref missing, ref reason, .. })) if missing == &vec![1] && reason.contains("rank 1 disconnected"))
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
        assert!(matches!(c.poll_reply(), Some((9, Reply::Error { .. }))));
        assert_eq!(c.poll_close(), Some(9));
        // Inconsistent size, duplicate rank, wrong version.
        c.handle_connect(10);
        c.handle_request(
            10,
            Request::Hello { version: CONTROL_VERSION, rank: 1, size: 3, host: "x".into(), pid: 1 },
            now,
        );
        assert!(matches!(c.poll_reply(), Some((10, Reply::Error { ref message })) if message.contains("3 ranks")));
        c.handle_connect(11);
        c.handle_request(
            11,
            Request::Hello { version: CONTROL_VERSION, rank: 0, size: 2, host: "x".into(), pid: 1 },
            now,
        );
        assert!(
            matches!(c.poll_reply(), Some((11, Reply::Error { ref message })) if message.contains("already connected"))
        );
        c.handle_connect(12);
        c.handle_request(12, Request::CtlHello { version: 99 }, now);
        assert!(matches!(c.poll_reply(), Some((12, Reply::Error { .. }))));
        c.handle_connect(13);
        c.handle_malformed(13, "expected value at line 1");
        assert!(matches!(c.poll_reply(), Some((13, Reply::Error { ref message })) if message.contains("malformed")));
        // A ctl client may read status but not publish.
        c.handle_connect(14);
        c.handle_request(14, Request::CtlHello { version: CONTROL_VERSION }, now);
        assert!(matches!(c.poll_reply(), Some((14, Reply::Welcome { .. }))));
        c.handle_request(14, Request::Put { key: "k".into(), value: "00".into() }, now);
        assert!(matches!(c.poll_reply(), Some((14, Reply::Error { .. }))));
        // The rank that was connected is still there and still served.
        c.handle_request(0, Request::Status {}, now);
        assert!(
            matches!(c.poll_reply(), Some((0, Reply::Status { ref status })) if status.ranks[0].connected && status.size == Some(2))
        );
    }
}
