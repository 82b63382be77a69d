//! A host leader's relay in the control tree, sans-IO.
//!
//! One rank per host (the leader) runs a relay. The ranks of that host subscribe to it
//! instead of to the coordinator, and relays of other hosts may attach below it, so the
//! coordinator talks to a bounded number of relays however many ranks the job has. A switch
//! command from the parent goes once to every child; the relay answers its parent once, with
//! every rank's time (one [`Request::GroupReport`]), or as soon as the step fails below it,
//! naming the ranks. News about the ranks (new, finalized, lost) goes up batched in
//! [`Request::Members`].
//!
//! # Use
//! Inputs: [`Relay::handle_connect`], [`Relay::handle_request`] (from a child),
//! [`Relay::handle_malformed`], [`Relay::handle_disconnect`], [`Relay::handle_parent`] (a
//! reply from the parent), [`Relay::handle_attached`] (the parent welcomed this relay),
//! [`Relay::handle_timeout`]. Outputs after every input: [`Relay::poll_up`] (requests to the
//! parent), [`Relay::poll_reply`] (to children), [`Relay::poll_close`], [`Relay::poll_log`],
//! then [`Relay::poll_timeout`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::fanout::{level_margin, ConnId, Fanout, GroupReport, Outbox, Outcome};
use crate::proto::{Member, RankDone, Reply, Request, SwitchPhase, CONTROL_VERSION};

/// Members news is batched for this long before going up, so a host whose ranks all start
/// at once sends one message rather than one per rank.
pub const MEMBERS_BATCH: Duration = Duration::from_millis(20);
/// Budget of a step whose command came without one (an older parent).
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    /// Authenticated, has not introduced itself.
    New,
    /// A rank's control thread.
    Rank(u32),
    /// A relay below this one.
    Relay,
}

#[derive(Debug)]
pub struct Relay {
    /// The rank whose process runs this relay (for messages).
    leader: u32,
    size: u32,
    fanout: Fanout,
    conns: HashMap<ConnId, Child>,
    members: BTreeMap<u32, Member>,
    /// Members whose news has not gone up yet, and since when.
    changed: BTreeSet<u32>,
    changed_since: Option<Instant>,
    attached: bool,
    up: VecDeque<Request>,
    /// Replies to children, closes and log lines for the IO to carry out.
    pub out: Outbox,
}

impl Relay {
    pub fn new(leader: u32, size: u32) -> Relay {
        Relay {
            leader,
            size,
            fanout: Fanout::new(),
            conns: HashMap::new(),
            members: BTreeMap::new(),
            changed: BTreeSet::new(),
            changed_since: None,
            attached: false,
            up: VecDeque::new(),
            out: Outbox::default(),
        }
    }

    /// What this relay says when it joins its parent.
    pub fn join_request(&self, listen: Option<String>) -> Request {
        Request::Join { version: CONTROL_VERSION, size: self.size, leader: self.leader, listen }
    }

    /// Ranks reachable through this relay.
    pub fn ranks(&self) -> usize {
        self.fanout.len()
    }

    /// Have all children that ever subscribed finalized or gone?
    pub fn all_finished(&self) -> bool {
        self.members.values().all(|m| m.finalized || !m.connected)
    }

    fn note(&mut self, rank: u32, now: Instant) {
        self.changed.insert(rank);
        self.changed_since.get_or_insert(now);
    }

    /// News that must go up at once, not batched: a lost rank, which a step starting above
    /// may still count on.
    fn note_urgent(&mut self, rank: u32, now: Instant) {
        self.changed.insert(rank);
        self.changed_since = Some(now.checked_sub(MEMBERS_BATCH).unwrap_or(now));
    }

    fn refuse(&mut self, conn: ConnId, why: String) {
        self.out.refuse(&format!("relay of rank {}: ", self.leader), conn, why);
    }

    pub fn handle_connect(&mut self, conn: ConnId) {
        let prev = self.conns.insert(conn, Child::New);
        assert!(prev.is_none(), "connection id {conn} reused");
    }

    pub fn handle_malformed(&mut self, conn: ConnId, error: &str) {
        self.refuse(conn, format!("malformed control request: {error}"));
    }

    /// The parent accepted this relay: everything known goes up (again, after a re-attach).
    pub fn handle_attached(&mut self, now: Instant) {
        self.attached = true;
        self.changed.extend(self.members.keys().copied());
        if !self.changed.is_empty() {
            self.changed_since = Some(now - MEMBERS_BATCH);
        }
        self.flush_members(now);
    }

    pub fn handle_request(&mut self, conn: ConnId, req: Request, now: Instant) {
        let Some(&child) = self.conns.get(&conn) else {
            return;
        };
        match (child, req) {
            (Child::New, Request::Subscribe { version, rank, transport, host, pid }) => {
                if version != CONTROL_VERSION {
                    return self.refuse(conn, format!("control protocol {version}, expected {CONTROL_VERSION}"));
                }
                if rank >= self.size {
                    return self.refuse(conn, format!("rank {rank} is not in a job of {} ranks", self.size));
                }
                if let Err(e) = self.fanout.add(conn, rank) {
                    return self.refuse(conn, e);
                }
                self.conns.insert(conn, Child::Rank(rank));
                let member = Member {
                    rank,
                    host: host.unwrap_or_default(),
                    pid: pid.unwrap_or(0),
                    transport: transport.unwrap_or_else(|| "?".into()),
                    connected: true,
                    finalized: false,
                };
                self.members.insert(rank, member);
                self.note(rank, now);
                self.out.reply(conn, Reply::Welcome { job: format!("relay of rank {}", self.leader) });
            }
            (Child::New, Request::Join { version, size, .. }) => {
                if version != CONTROL_VERSION || size != self.size {
                    return self
                        .refuse(conn, format!("relay of protocol {version} for {size} ranks cannot attach here"));
                }
                self.conns.insert(conn, Child::Relay);
                self.out.reply(conn, Reply::Welcome { job: format!("relay of rank {}", self.leader) });
            }
            (Child::New, other) => self.refuse(conn, format!("expected subscribe or join, got {other:?}")),
            (Child::Relay, Request::Members { members }) => {
                let (errors, outcome) = self.fanout.apply_members(conn, &members, Some(self.size));
                for e in errors {
                    self.out.log(format!("relay of rank {}: {e}", self.leader));
                }
                let size = self.size;
                for m in members.into_iter().filter(|m| m.rank < size) {
                    if m.connected || m.finalized {
                        self.note(m.rank, now);
                    } else {
                        self.note_urgent(m.rank, now);
                    }
                    self.members.insert(m.rank, m);
                }
                self.finish(outcome);
            }
            (Child::Rank(r), Request::Report { epoch, phase, millis, detail, transport, broken }) => {
                if let (Some(t), Some(m)) = (&transport, self.members.get_mut(&r)) {
                    m.transport = t.clone();
                }
                let done = RankDone { rank: r, millis, transport, broken };
                if phase == SwitchPhase::Detached && !done.broken.is_empty() {
                    // Straight up, also when this relay's step is over (it failed, or a resume
                    // follows already): the coordinator needs the broken links it names, to
                    // repair them. (In time, it only tells the coordinator early that the rank
                    // detached.)
                    let done = vec![done.clone()];
                    let detail = None;
                    self.up.push_back(Request::GroupReport {
                        epoch,
                        phase,
                        done,
                        missing: vec![],
                        detail,
                        timed_out: false,
                    });
                }
                let outcome = if phase == SwitchPhase::Failed {
                    let why = format!("rank {r} failed: {}", detail.unwrap_or_default());
                    self.fanout.on_failed(conn, epoch, vec![r], why)
                } else {
                    self.fanout.on_done(conn, epoch, phase, vec![done])
                };
                self.finish(outcome);
            }
            (Child::Rank(r), Request::Repair { rank, peer, reason, epoch }) if rank == r => {
                self.up.push_back(Request::Repair { rank, peer, reason, epoch });
            }
            (Child::Relay, Request::Repair { rank, peer, reason, epoch }) => {
                self.up.push_back(Request::Repair { rank, peer, reason, epoch });
            }
            (Child::Relay, Request::GroupReport { epoch, phase, done, missing, detail, timed_out }) => {
                for d in &done {
                    if let (Some(t), Some(m)) = (&d.transport, self.members.get_mut(&d.rank)) {
                        m.transport = t.clone();
                    }
                }
                // Broken links go straight up, as from a rank below (see there).
                let broken: Vec<RankDone> = done.iter().filter(|d| !d.broken.is_empty()).cloned().collect();
                if phase == SwitchPhase::Detached && !broken.is_empty() {
                    let (missing, detail) = (vec![], None);
                    self.up.push_back(Request::GroupReport {
                        epoch,
                        phase,
                        done: broken,
                        missing,
                        detail,
                        timed_out: false,
                    });
                }
                let report = GroupReport { epoch, phase, done, missing, detail, timed_out };
                let outcome = self.fanout.on_group_report(conn, report);
                self.finish(outcome);
            }
            (Child::Rank(r), Request::Goodbye {}) => {
                if let Some(m) = self.members.get_mut(&r) {
                    m.finalized = true;
                }
                self.note(r, now);
                let outcome = self.fanout.remove_ranks(&[r], "finalized");
                self.finish(outcome);
            }
            (child, other) => self.refuse(conn, format!("{other:?} is not allowed for {child:?}")),
        }
        self.flush_members(now);
    }

    pub fn handle_disconnect(&mut self, conn: ConnId, now: Instant) {
        let Some(child) = self.conns.remove(&conn) else {
            return;
        };
        let (ranks, outcome) = self.fanout.remove_child(conn, "lost its control connection");
        let lost: Vec<u32> = match child {
            Child::Rank(r) => vec![r],
            Child::Relay => ranks,
            Child::New => Vec::new(),
        };
        for r in lost {
            if let Some(m) = self.members.get_mut(&r).filter(|m| !m.finalized && m.connected) {
                m.connected = false;
                self.note_urgent(r, now);
            }
        }
        self.finish(outcome);
        self.flush_members(now);
    }

    /// A reply from the parent (after [`Relay::handle_attached`]).
    pub fn handle_parent(&mut self, reply: Reply, now: Instant) {
        match reply {
            Reply::Command { command, epoch, transport, timeout_ms, margin_ms, repair } => {
                let budget = timeout_ms.map_or(DEFAULT_STEP_TIMEOUT, Duration::from_millis);
                let margin = margin_ms.map_or_else(|| level_margin(budget, 0), Duration::from_millis);
                if self.fanout.busy() {
                    self.out.log(format!(
                        "relay of rank {}: switch {epoch} starts before the previous step ended below",
                        self.leader
                    ));
                }
                let outcome = self.fanout.start(command, epoch, transport, &repair, now, budget, margin);
                while let Some(c) = self.fanout.poll_command() {
                    self.out.reply(c.0, c.1);
                }
                self.finish(outcome);
            }
            Reply::Error { message } => {
                self.out.log(format!("relay of rank {}: the parent refused: {message}", self.leader));
            }
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let outcome = self.fanout.on_timeout(now);
        self.finish(outcome);
        self.flush_members(now);
    }

    fn finish(&mut self, outcome: Option<Outcome>) {
        let Some(outcome) = outcome else { return };
        if let Outcome::Failed { epoch, missing, reason, .. } = &outcome {
            self.out.log(format!("relay of rank {}: switch {epoch} failed: {reason}; ranks {missing:?}", self.leader));
        }
        self.up.push_back(outcome.to_group_report());
    }

    /// Sends the batched members news up once it is due.
    fn flush_members(&mut self, now: Instant) {
        let due = self.changed_since.is_some_and(|t| now >= t + MEMBERS_BATCH);
        if !self.attached || !due {
            return;
        }
        let members =
            std::mem::take(&mut self.changed).into_iter().filter_map(|r| self.members.get(&r).cloned()).collect();
        self.changed_since = None;
        self.up.push_back(Request::Members { members });
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let batch = self.changed_since.filter(|_| self.attached).map(|t| t + MEMBERS_BATCH);
        self.fanout.deadline().into_iter().chain(batch).min()
    }

    pub fn poll_up(&mut self) -> Option<Request> {
        self.up.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SwitchCommand;

    fn subscribe(relay: &mut Relay, conn: ConnId, rank: u32, now: Instant) {
        relay.handle_connect(conn);
        let req = Request::Subscribe {
            version: CONTROL_VERSION,
            rank,
            transport: None,
            host: Some("h".into()),
            pid: Some(7),
        };
        relay.handle_request(conn, req, now);
        assert!(matches!(relay.out.poll_reply(), Some((c, Reply::Welcome { .. })) if c == conn));
    }

    fn command(command: SwitchCommand, epoch: u32) -> Reply {
        Reply::Command {
            command,
            epoch,
            transport: None,
            timeout_ms: Some(8000),
            margin_ms: Some(1000),
            repair: vec![],
        }
    }

    #[test]
    fn members_go_up_batched_and_a_step_is_answered_once() {
        let now = Instant::now();
        let mut relay = Relay::new(0, 4);
        for r in 0..4 {
            subscribe(&mut relay, r as u64 + 1, r, now);
        }
        assert_eq!(relay.poll_up(), None, "nothing goes up before the parent welcomed the relay");
        relay.handle_attached(now);
        match relay.poll_up() {
            Some(Request::Members { members }) => assert_eq!(members.len(), 4),
            other => panic!("{other:?}"),
        }
        relay.handle_parent(command(SwitchCommand::Quiesce, 1), now);
        let cmds: Vec<_> = std::iter::from_fn(|| relay.out.poll_reply()).collect();
        assert_eq!(cmds.len(), 4);
        assert!(
            matches!(&cmds[0].1, Reply::Command { timeout_ms: Some(t), .. } if *t < 8000),
            "children get less time"
        );
        for r in 0..4 {
            assert_eq!(relay.poll_up(), None, "one answer for the whole host");
            let rep = Request::Report {
                epoch: 1,
                phase: SwitchPhase::Detached,
                millis: 1.5,
                detail: None,
                transport: None,
                broken: vec![],
            };
            relay.handle_request(r as u64 + 1, rep, now);
        }
        match relay.poll_up() {
            Some(Request::GroupReport { epoch: 1, phase: SwitchPhase::Detached, done, .. }) => {
                assert_eq!(done.len(), 4)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_killed_rank_fails_the_step_at_once_naming_it_and_goes_up_as_lost() {
        let now = Instant::now();
        let mut relay = Relay::new(0, 3);
        for r in 0..3 {
            subscribe(&mut relay, r as u64 + 1, r, now);
        }
        relay.handle_attached(now);
        relay.poll_up();
        relay.handle_parent(command(SwitchCommand::Quiesce, 1), now);
        relay.handle_disconnect(3, now);
        match relay.poll_up() {
            Some(Request::GroupReport { phase: SwitchPhase::Failed, missing, detail, .. }) => {
                assert_eq!(missing, vec![2]);
                assert!(detail.unwrap().contains("rank 2 lost"));
            }
            other => panic!("{other:?}"),
        }
        relay.handle_timeout(now + MEMBERS_BATCH);
        match relay.poll_up() {
            Some(Request::Members { members }) => {
                assert!(members.len() == 1 && !members[0].connected)
            }
            other => panic!("{other:?}"),
        }
        assert!(!relay.all_finished(), "rank 2 is lost, not finished: the relay still waits for the others");
    }

    #[test]
    fn a_relay_below_is_one_child_and_its_deadline_names_the_silent_rank() {
        let now = Instant::now();
        let mut relay = Relay::new(0, 8);
        subscribe(&mut relay, 1, 0, now);
        relay.handle_connect(2);
        relay.handle_request(2, Request::Join { version: CONTROL_VERSION, size: 8, leader: 4, listen: None }, now);
        assert!(matches!(relay.out.poll_reply(), Some((2, Reply::Welcome { .. }))));
        let m = |rank| Member {
            rank,
            host: "b".into(),
            pid: 1,
            transport: "tcp".into(),
            connected: true,
            finalized: false,
        };
        relay.handle_request(2, Request::Members { members: (4..8).map(m).collect() }, now);
        assert_eq!(relay.ranks(), 5);
        relay.handle_attached(now);
        relay.handle_parent(command(SwitchCommand::Resume, 2), now);
        let sent: Vec<_> = std::iter::from_fn(|| relay.out.poll_reply()).collect();
        assert_eq!(sent.len(), 2, "one command per child, not per rank");
        let done = (4..7).map(|rank| RankDone { rank, millis: 1.0, transport: None, broken: vec![] }).collect();
        relay.handle_request(
            2,
            Request::GroupReport {
                epoch: 2,
                phase: SwitchPhase::Running,
                done,
                missing: vec![],
                detail: None,
                timed_out: false,
            },
            now,
        );
        let rep = Request::Report {
            epoch: 2,
            phase: SwitchPhase::Running,
            millis: 1.0,
            detail: None,
            transport: None,
            broken: vec![],
        };
        relay.handle_request(1, rep, now);
        while let Some(Request::Members { .. }) = relay.poll_up() {}
        let deadline = relay.poll_timeout().unwrap();
        assert!(deadline <= now + Duration::from_secs(8));
        relay.handle_timeout(deadline);
        match relay.poll_up() {
            Some(Request::GroupReport { phase: SwitchPhase::Failed, missing, .. }) => assert_eq!(missing, vec![7]),
            other => panic!("{other:?}"),
        }
    }
}
