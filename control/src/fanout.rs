//! Fan-out of one switch step over a node's children in the control tree, and collection of
//! their answers. Sans-IO; the coordinator (the root) and every host leader's relay hold one.
//!
//! A child is a connection that reaches one rank (a rank's control thread) or many (a relay
//! below). A step is sent once to every child; it is finished when every rank reachable
//! through the children has reported the goal phase, and failed as soon as one rank fails, a
//! child with unfinished ranks is lost, or the deadline passes, each time naming the ranks
//! that did not finish. Reports for ranks a child does not reach, for another epoch, or
//! repeated, are ignored, so delayed and duplicated control messages are harmless.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::proto::{Member, RankDone, Reply, Request, SwitchCommand, SwitchPhase};

/// Identifies one control connection.
pub type ConnId = u64;

/// The phase a rank reports when `command` is done.
pub fn goal_phase(command: SwitchCommand) -> SwitchPhase {
    match command {
        SwitchCommand::Quiesce => SwitchPhase::Detached,
        SwitchCommand::Resume => SwitchPhase::Running,
    }
}

/// How a step ended below this node.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every rank reached the goal phase.
    Done { command: SwitchCommand, epoch: u32, done: Vec<RankDone> },
    /// The step failed; `missing` names the ranks that did not finish. `timed_out`: it failed
    /// by a deadline, here or below, rather than by a rank's error or loss; `done` then holds
    /// the ranks that did finish, so that the node above can tell the two apart.
    Failed {
        command: SwitchCommand,
        epoch: u32,
        missing: Vec<u32>,
        reason: String,
        timed_out: bool,
        done: Vec<RankDone>,
    },
}

#[derive(Debug)]
struct Step {
    command: SwitchCommand,
    epoch: u32,
    deadline: Instant,
    timeout: Duration,
    /// Ranks that have not reported yet.
    waiting: BTreeSet<u32>,
    done: Vec<RankDone>,
    /// Ranks that a child's deadline gave up on, and the first such reason. The step waits
    /// for its other children before it fails, so that it names every rank that is late,
    /// not only the first subtree's.
    late: BTreeSet<u32>,
    late_reason: Option<String>,
}

#[derive(Debug, Default)]
pub struct Fanout {
    /// Ranks reached through each child (ordered: a replayed run sends in the same order).
    children: BTreeMap<ConnId, BTreeSet<u32>>,
    route: BTreeMap<u32, ConnId>,
    step: Option<Step>,
    commands: VecDeque<(ConnId, Reply)>,
}

impl Fanout {
    pub fn new() -> Fanout {
        Fanout::default()
    }

    /// Routes `rank` through `conn`. Fails if the rank is already reached another way.
    pub fn add(&mut self, conn: ConnId, rank: u32) -> Result<(), String> {
        match self.route.get(&rank) {
            Some(&c) if c == conn => Ok(()),
            Some(_) => Err(format!("rank {rank} is already attached to the control tree")),
            None => {
                self.route.insert(rank, conn);
                self.children.entry(conn).or_default().insert(rank);
                Ok(())
            }
        }
    }

    /// Forgets `ranks` (they finalized, or the relay below lost them). A step waiting on any
    /// of them fails, naming all of those.
    pub fn remove_ranks(&mut self, ranks: &[u32], why: &str) -> Option<Outcome> {
        for rank in ranks {
            if let Some(conn) = self.route.remove(rank) {
                if let Some(set) = self.children.get_mut(&conn) {
                    set.remove(rank);
                }
            }
        }
        self.fail_if_waiting(ranks, why)
    }

    /// Applies a relay's news about the ranks below it (`conn`): new ones are routed through
    /// it, finalized and lost ones forgotten. Returns what could not be applied, and the
    /// outcome if a step was waiting on a rank that is gone.
    pub fn apply_members(
        &mut self,
        conn: ConnId,
        members: &[Member],
        size: Option<u32>,
    ) -> (Vec<String>, Option<Outcome>) {
        let mut errors = Vec::new();
        let (mut finalized, mut lost) = (Vec::new(), Vec::new());
        for m in members.iter().filter(|m| size.is_none_or(|s| m.rank < s)) {
            if m.finalized {
                finalized.push(m.rank);
            } else if !m.connected {
                lost.push(m.rank);
            } else if let Err(e) = self.add(conn, m.rank) {
                errors.push(e);
            }
        }
        let outcome = self.remove_ranks(&lost, "lost its control connection");
        let after = self.remove_ranks(&finalized, "finalized");
        (errors, outcome.or(after))
    }

    /// A child connection closed: its ranks are unreachable. Returns them, and the outcome if
    /// a step was waiting on any.
    pub fn remove_child(&mut self, conn: ConnId, why: &str) -> (Vec<u32>, Option<Outcome>) {
        let ranks: Vec<u32> = self.children.remove(&conn).unwrap_or_default().into_iter().collect();
        for r in &ranks {
            self.route.remove(r);
        }
        let outcome = self.fail_if_waiting(&ranks, why);
        (ranks, outcome)
    }

    fn fail_if_waiting(&mut self, ranks: &[u32], why: &str) -> Option<Outcome> {
        let step = self.step.as_ref()?;
        let missing: Vec<u32> = ranks.iter().copied().filter(|r| step.waiting.contains(r)).collect();
        if missing.is_empty() {
            return None;
        }
        let reason = match missing.as_slice() {
            [r] => format!("rank {r} {why} during the switch"),
            _ if why.starts_with("lost") => {
                format!("ranks {missing:?} {} during the switch", why.replacen("its", "their", 1))
            }
            _ => format!("ranks {missing:?} {why} during the switch"),
        };
        self.fail(missing, reason)
    }

    /// Does `rank` have a route?
    pub fn reaches(&self, rank: u32) -> bool {
        self.route.contains_key(&rank)
    }

    /// Ranks reachable through this node.
    pub fn len(&self) -> usize {
        self.route.len()
    }

    pub fn is_empty(&self) -> bool {
        self.route.is_empty()
    }

    /// Is a step under way?
    pub fn busy(&self) -> bool {
        self.step.is_some()
    }

    /// Sends `command` to every child, with the pairs in `repair` that concern a rank below
    /// it. The children get `timeout - margin` as their own budget, so that they report
    /// first, and pass `margin` on. With no rank to wait for, the step is done at once.
    #[must_use]
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        command: SwitchCommand,
        epoch: u32,
        transport: Option<String>,
        repair: &[(u32, u32)],
        now: Instant,
        timeout: Duration,
        margin: Duration,
    ) -> Option<Outcome> {
        let waiting: BTreeSet<u32> = self.route.keys().copied().collect();
        let child_timeout = timeout.saturating_sub(margin).max(Duration::from_millis(1));
        let timeout_ms = Some(child_timeout.as_millis().max(1) as u64);
        let margin_ms = Some(margin.as_millis() as u64);
        for (&conn, ranks) in &self.children {
            if !ranks.is_empty() {
                let repair = repair.iter().copied().filter(|(a, b)| ranks.contains(a) || ranks.contains(b)).collect();
                let c = Reply::Command { command, epoch, transport: transport.clone(), timeout_ms, margin_ms, repair };
                self.commands.push_back((conn, c));
            }
        }
        if waiting.is_empty() {
            return Some(Outcome::Done { command, epoch, done: Vec::new() });
        }
        let (done, late, late_reason) = (Vec::new(), BTreeSet::new(), None);
        self.step = Some(Step { command, epoch, deadline: now + timeout, timeout, waiting, done, late, late_reason });
        None
    }

    /// `conn` reports that ranks in `done` reached `phase` of `epoch`. Returns the outcome
    /// if this finished the step.
    pub fn on_done(&mut self, conn: ConnId, epoch: u32, phase: SwitchPhase, done: Vec<RankDone>) -> Option<Outcome> {
        let step = self.step.as_mut().filter(|s| s.epoch == epoch)?;
        if phase != goal_phase(step.command) {
            return None;
        }
        let reached = self.children.get(&conn)?;
        for d in done {
            if reached.contains(&d.rank) && step.waiting.remove(&d.rank) {
                step.done.push(d);
            }
        }
        self.finish_if_complete()
    }

    /// `conn`'s own deadline passed: of the ranks it reaches, `done` finished and `missing`
    /// did not. The step fails once every other child has answered too (or at this node's
    /// deadline), naming all the late ranks.
    pub fn on_timed_out(
        &mut self,
        conn: ConnId,
        epoch: u32,
        done: Vec<RankDone>,
        missing: Vec<u32>,
        reason: String,
    ) -> Option<Outcome> {
        let step = self.step.as_mut().filter(|s| s.epoch == epoch)?;
        let reached = self.children.get(&conn)?;
        for d in done {
            if reached.contains(&d.rank) && step.waiting.remove(&d.rank) {
                step.done.push(d);
            }
        }
        for r in missing {
            if reached.contains(&r) && step.waiting.remove(&r) {
                step.late.insert(r);
            }
        }
        step.late_reason.get_or_insert(reason);
        self.finish_if_complete()
    }

    fn finish_if_complete(&mut self) -> Option<Outcome> {
        if !self.step.as_ref()?.waiting.is_empty() {
            return None;
        }
        let step = self.step.take().expect("checked");
        let (command, epoch, done) = (step.command, step.epoch, step.done);
        if step.late.is_empty() {
            return Some(Outcome::Done { command, epoch, done });
        }
        let reason = step.late_reason.unwrap_or_default();
        Some(Outcome::Failed {
            command,
            epoch,
            missing: step.late.into_iter().collect(),
            reason,
            timed_out: true,
            done,
        })
    }

    /// A relay's answer (`Request::GroupReport`) from `conn`.
    pub fn on_group_report(&mut self, conn: ConnId, report: GroupReport) -> Option<Outcome> {
        let GroupReport { epoch, phase, done, missing, detail, timed_out } = report;
        let detail = detail.unwrap_or_default();
        match (phase, timed_out) {
            (SwitchPhase::Failed, true) => self.on_timed_out(conn, epoch, done, missing, detail),
            (SwitchPhase::Failed, false) => self.on_failed(conn, epoch, missing, detail),
            _ => self.on_done(conn, epoch, phase, done),
        }
    }

    /// `conn` reports that the step failed for `missing` (ranks it reaches).
    pub fn on_failed(&mut self, conn: ConnId, epoch: u32, missing: Vec<u32>, reason: String) -> Option<Outcome> {
        self.step.as_ref().filter(|s| s.epoch == epoch)?;
        let reached = self.children.get(&conn)?;
        let mut missing: Vec<u32> = missing.into_iter().filter(|r| reached.contains(r)).collect();
        if missing.is_empty() {
            // A child that fails without naming a rank of its own: all of its unfinished ones.
            let waiting = &self.step.as_ref().expect("checked").waiting;
            missing = reached.iter().copied().filter(|r| waiting.contains(r)).collect();
        }
        self.fail(missing, reason)
    }

    /// Fails the step at once (a rank's error or loss), naming `missing`.
    fn fail(&mut self, missing: Vec<u32>, reason: String) -> Option<Outcome> {
        let step = self.step.take()?;
        let (command, epoch, done) = (step.command, step.epoch, step.done);
        Some(Outcome::Failed { command, epoch, missing, reason, timed_out: false, done })
    }

    /// Fails the step if its deadline has passed, naming every rank that did not report
    /// (and those a child's deadline already gave up on).
    pub fn on_timeout(&mut self, now: Instant) -> Option<Outcome> {
        let step = self.step.take_if(|s| now >= s.deadline)?;
        let missing: Vec<u32> = step.waiting.union(&step.late).copied().collect();
        let reason = format!("timed out after {:?}", step.timeout);
        let (command, epoch, done) = (step.command, step.epoch, step.done);
        Some(Outcome::Failed { command, epoch, missing, reason, timed_out: true, done })
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.step.as_ref().map(|s| s.deadline)
    }

    /// The next command to send down.
    pub fn poll_command(&mut self) -> Option<(ConnId, Reply)> {
        self.commands.pop_front()
    }
}

/// What a control node (the coordinator, a relay) has to send after an input: replies to
/// its connections, connections to close, and lines worth logging, each oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    replies: VecDeque<(ConnId, Reply)>,
    closes: VecDeque<ConnId>,
    log: VecDeque<String>,
}

impl Outbox {
    pub fn reply(&mut self, conn: ConnId, r: Reply) {
        self.replies.push_back((conn, r));
    }

    pub fn close(&mut self, conn: ConnId) {
        self.closes.push_back(conn);
    }

    pub fn log(&mut self, line: String) {
        self.log.push_back(line);
    }

    /// Refuses `conn`: says why, logs it (after `prefix`), closes it.
    pub fn refuse(&mut self, prefix: &str, conn: ConnId, why: String) {
        self.log(format!("{prefix}connection {conn} refused: {why}"));
        self.reply(conn, Reply::Error { message: why });
        self.close(conn);
    }

    pub fn poll_reply(&mut self) -> Option<(ConnId, Reply)> {
        self.replies.pop_front()
    }

    pub fn poll_close(&mut self) -> Option<ConnId> {
        self.closes.pop_front()
    }

    pub fn poll_log(&mut self) -> Option<String> {
        self.log.pop_front()
    }
}

/// The fields of a `Request::GroupReport`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupReport {
    pub epoch: u32,
    pub phase: SwitchPhase,
    pub done: Vec<RankDone>,
    pub missing: Vec<u32>,
    pub detail: Option<String>,
    pub timed_out: bool,
}

impl Outcome {
    /// The answer a relay sends its parent for this outcome.
    pub fn to_group_report(self) -> Request {
        match self {
            Outcome::Done { command, epoch, done } => {
                let phase = goal_phase(command);
                Request::GroupReport { epoch, phase, done, missing: Vec::new(), detail: None, timed_out: false }
            }
            Outcome::Failed { epoch, missing, reason, timed_out, done, .. } => {
                let phase = SwitchPhase::Failed;
                Request::GroupReport { epoch, phase, done, missing, detail: Some(reason), timed_out }
            }
        }
    }
}

/// How much less time each level of the tree gives the level below it, out of the step's
/// `timeout`, for a tree `depth` relays deep: enough that a relay fails before its parent
/// and names its own late ranks, and small enough that the deepest relay still has half the
/// time (at most 2 s per level).
pub fn level_margin(timeout: Duration, depth: u32) -> Duration {
    (timeout / (2 * (depth + 1))).min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(r: u32) -> RankDone {
        RankDone { rank: r, millis: 1.0, transport: Some("tcp".into()), broken: vec![] }
    }

    /// Two children: a rank (conn 1 → rank 0) and a relay (conn 2 → ranks 1..4).
    fn two_children() -> Fanout {
        let mut f = Fanout::new();
        f.add(1, 0).unwrap();
        for r in 1..4 {
            f.add(2, r).unwrap();
        }
        f
    }

    #[test]
    fn a_step_goes_to_each_child_once_and_ends_when_every_rank_reported() {
        let now = Instant::now();
        let mut f = two_children();
        assert!(f.add(1, 2).is_err(), "a rank has one route");
        assert!(f
            .start(SwitchCommand::Quiesce, 1, None, &[], now, Duration::from_secs(8), Duration::from_secs(1))
            .is_none());
        let mut sent: Vec<ConnId> = std::iter::from_fn(|| f.poll_command()).map(|(c, _)| c).collect();
        sent.sort();
        assert_eq!(sent, vec![1, 2]);
        assert_eq!(f.on_done(2, 1, SwitchPhase::Detached, vec![done(1), done(2)]), None);
        // Wrong epoch, wrong phase, a rank the child does not reach, a repeat: all ignored.
        assert_eq!(f.on_done(2, 9, SwitchPhase::Detached, vec![done(3)]), None);
        assert_eq!(f.on_done(2, 1, SwitchPhase::Draining, vec![done(3)]), None);
        assert_eq!(f.on_done(1, 1, SwitchPhase::Detached, vec![done(3)]), None);
        assert_eq!(f.on_done(2, 1, SwitchPhase::Detached, vec![done(1)]), None);
        assert_eq!(f.on_done(1, 1, SwitchPhase::Detached, vec![done(0)]), None);
        match f.on_done(2, 1, SwitchPhase::Detached, vec![done(3)]) {
            Some(Outcome::Done { epoch: 1, done, .. }) => assert_eq!(done.len(), 4),
            other => panic!("{other:?}"),
        }
        assert!(!f.busy());
    }

    #[test]
    fn a_lost_child_or_a_timeout_names_the_unfinished_ranks() {
        let now = Instant::now();
        let mut f = two_children();
        assert!(f
            .start(SwitchCommand::Resume, 2, None, &[], now, Duration::from_secs(8), Duration::from_secs(1))
            .is_none());
        f.on_done(2, 2, SwitchPhase::Running, vec![done(1)]);
        match f.remove_child(2, "lost its control connection") {
            (ranks, Some(Outcome::Failed { missing, reason, .. })) => {
                assert_eq!(ranks, vec![1, 2, 3]);
                assert_eq!(missing, vec![2, 3]);
                assert!(reason.contains("ranks [2, 3] lost"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(f
            .start(SwitchCommand::Quiesce, 3, None, &[], now, Duration::from_secs(8), Duration::from_secs(1))
            .is_none());
        assert_eq!(f.deadline(), Some(now + Duration::from_secs(8)));
        assert_eq!(f.on_timeout(now + Duration::from_secs(7)), None);
        match f.on_timeout(now + Duration::from_secs(8)) {
            Some(Outcome::Failed { missing, .. }) => assert_eq!(missing, vec![0]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_child_that_times_out_does_not_end_the_step_before_its_siblings_answer() {
        let now = Instant::now();
        let mut f = Fanout::new();
        for (conn, ranks) in [(1, 0..3), (2, 3..6)] {
            for r in ranks {
                f.add(conn, r).unwrap();
            }
        }
        assert!(f
            .start(SwitchCommand::Quiesce, 1, None, &[], now, Duration::from_secs(8), Duration::from_secs(1))
            .is_none());
        let t = "timed out after 7s".to_string();
        assert_eq!(f.on_timed_out(1, 1, vec![done(0), done(1)], vec![2], t.clone()), None, "child 2 has not answered");
        match f.on_timed_out(2, 1, vec![done(3)], vec![4, 5], t) {
            Some(Outcome::Failed { missing, timed_out: true, done, .. }) => {
                assert_eq!(missing, vec![2, 4, 5], "every late rank of both children");
                assert_eq!(done.len(), 3);
            }
            other => panic!("{other:?}"),
        }
        // A child that times out while another finishes: the step fails naming only the late.
        assert!(f
            .start(SwitchCommand::Resume, 2, None, &[], now, Duration::from_secs(8), Duration::from_secs(1))
            .is_none());
        assert_eq!(f.on_timed_out(1, 2, vec![], vec![0, 1, 2], "late".into()), None);
        let all = (3..6).map(done).collect();
        assert!(
            matches!(f.on_done(2, 2, SwitchPhase::Running, all), Some(Outcome::Failed { ref missing, .. }) if missing == &vec![0, 1, 2])
        );
    }

    #[test]
    fn a_failure_names_the_ranks_of_the_child_that_failed() {
        let now = Instant::now();
        let mut f = two_children();
        assert!(f
            .start(SwitchCommand::Quiesce, 1, None, &[], now, Duration::from_secs(8), Duration::from_secs(1))
            .is_none());
        // A child may only blame ranks it reaches; with none named, its unfinished ones.
        match f.on_failed(2, 1, vec![0], "x".into()) {
            Some(Outcome::Failed { missing, .. }) => assert_eq!(missing, vec![1, 2, 3]),
            other => panic!("{other:?}"),
        }
        assert!(f
            .start(SwitchCommand::Quiesce, 2, None, &[], now, Duration::from_secs(8), Duration::from_secs(1))
            .is_none());
        match f.on_failed(2, 2, vec![3], "rank 3 failed: drain error".into()) {
            Some(Outcome::Failed { missing, reason, .. }) => {
                assert_eq!(missing, vec![3]);
                assert!(reason.contains("drain error"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(level_margin(Duration::from_secs(8), 0), Duration::from_secs(2));
        assert_eq!(level_margin(Duration::from_millis(900), 2), Duration::from_millis(150));
    }
}
