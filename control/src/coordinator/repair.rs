//! Repairs: a data link that died under a running job is repaired by a switch the
//! coordinator runs itself (a quiesce that names the pair, then a resume), bounded per pair.

use super::*;

impl Coordinator {
    /// Rank `rank` lost its data link to `peer` outside a switch: a switch repairs it. While
    /// the job is running, the coordinator quiesces it (the pair's ends drain without each
    /// other) and resumes it at once, and the resume tells both ends to send each other again
    /// what the other may have lost and to connect by TCP. During a switch nothing more is
    /// needed: the ranks report the loss when they detach, and the resume repairs it.
    pub(super) fn repair(&mut self, rank: u32, peer: u32, reason: &str, epoch: u32, now: Instant) {
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
    pub(super) fn note_broken(&mut self, rank: u32, peers: &[u32], epoch: u32) {
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
    pub(super) fn start_pending_repair(&mut self, now: Instant) {
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
    pub(super) fn unreachable_ranks(&self) -> Vec<u32> {
        let size = self.size.unwrap_or(0);
        (0..size).filter(|&r| !self.fanout.reaches(r)).collect()
    }

    /// Whether the coordinator may repair `pair` once more now ([`CoordinatorConfig::pair_repair_limit`]);
    /// counts the repair if so.
    pub(super) fn may_repair(&mut self, pair: (u32, u32), now: Instant) -> bool {
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
}
