//! The operator (`kawarimi ctl`): quiesce, wait, resume, retry after a failure; and what it
//! must be told (safe to unplug only when every rank detached, an answer within its timeout).

use super::*;

impl Sim {
    pub(super) fn timeout_ms(&mut self) -> u64 {
        match self.phase {
            Phase::Liveness { .. } => 3_600_000,
            _ => {
                let scale = 1 + self.p.n as u64 / 4;
                if self.rng.chance(1, 4) {
                    self.rng.range(1, 20) * scale
                } else {
                    self.rng.range(50, 400) * scale
                }
            }
        }
    }

    pub(super) fn wants_migration(&self) -> bool {
        match self.phase {
            Phase::Faults | Phase::Failing { .. } => true,
            Phase::Lost { .. } => false,
            // One more switch, and more while links are broken that only a switch of the
            // operator's repairs (see `RunCfg::resume_self_repair`).
            Phase::Liveness { migrations_at_start } => {
                self.stats.migrations == migrations_at_start || self.kills.iter().any(|k| !k.self_repair)
            }
        }
    }

    /// Forgets the killed links that a resume has repaired since (the job's epoch is past
    /// theirs); the time it took, for those the coordinator had to repair by itself.
    pub(super) fn settle_kills(&mut self) {
        let (epoch, now) = (self.coord.status().epoch, self.now());
        let mut slowest = self.stats.slowest_repair_us;
        self.kills.retain(|k| {
            if epoch > k.epoch && k.self_repair {
                slowest = slowest.max(now - k.at_us);
            }
            epoch <= k.epoch
        });
        self.stats.slowest_repair_us = slowest;
    }

    /// A link killed while the job runs (`Kill::self_repair`) is the coordinator's to repair,
    /// by itself: the operator leaves the job alone until then. Whether it waits for that now.
    pub(super) fn awaits_repair(&mut self) -> bool {
        self.settle_kills();
        let Some(k) = self.kills.iter().find(|k| k.self_repair).copied() else {
            return false;
        };
        // A repair under way, or one that failed and left the job quiesced, is the
        // operator's to wait for or to resume.
        if self.job_phase() != "running" {
            return false;
        }
        let now = self.now();
        // A control message held back by the "delayed past the timeout" fault (up to twice a
        // step's budget, which can be an hour) may be the repair request itself: the limit
        // counts from when the control plane has nothing in flight.
        let held_back = self.conns.iter().any(|c| c.up.iter().any(|x| x.0 > now) || c.down.iter().any(|x| x.0 > now));
        // A repair request still on a control link (due, but behind others on a FIFO link, or
        // not yet picked) has not reached the coordinator: the repair cannot have begun.
        let repair_on_its_way = self.conns.iter().any(|c| c.up.iter().any(|x| matches!(x.1, Request::Repair { .. })));
        if now > k.at_us + REPAIR_LIMIT_US && !held_back && !repair_on_its_way {
            self.fail(&format!(
                "the link between ranks {} and {} died in epoch {} {}us ago; the job still runs without it: \
                 no repair came (killed links not repaired yet: {:?})",
                k.a,
                k.b,
                k.epoch,
                now - k.at_us,
                self.kills
            ));
        }
        true
    }

    pub(super) fn operator_step(&mut self) -> bool {
        let now = self.now();
        let t = self.instant();
        match self.op {
            // (Once it has its migration, the operator still resumes a job a failed repair left
            // quiesced.)
            OpState::Idle { at_us } if now >= at_us && (self.wants_migration() || self.job_phase() == "quiesced") => {
                if self.awaits_repair() {
                    self.op = OpState::Idle { at_us: now + self.rng.range(500, 3000) };
                    return false;
                }
                let timeout_ms = self.timeout_ms();
                self.op = OpState::Quiescing { since_us: now, timeout_ms };
                let epochs: Vec<u32> = self.ranks.iter().map(|r| r.engine.core().epoch()).collect();
                self.draining_epoch = epochs.iter().copied().max();
                self.note(0x0001, timeout_ms);
                self.log(|| format!("operator: quiesce, {timeout_ms} ms"));
                self.coord.handle_request(CTL_CONN, Request::Quiesce { timeout_ms }, t);
                self.pump();
                true
            }
            OpState::Quiesced { at_us } if now >= at_us => {
                let timeout_ms = self.timeout_ms();
                self.op = OpState::Resuming { since_us: now, timeout_ms };
                self.note(0x0002, timeout_ms);
                self.log(|| format!("operator: resume, {timeout_ms} ms"));
                self.coord.handle_request(CTL_CONN, Request::Resume { timeout_ms, transport: None }, t);
                self.pump();
                true
            }
            OpState::Quiescing { since_us, timeout_ms } | OpState::Resuming { since_us, timeout_ms } => {
                // The coordinator's timer guarantees an answer: silence past it is a hang.
                if now > since_us + timeout_ms * 1000 + 1_000_000 {
                    self.fail(&format!(
                        "no answer from the coordinator {}us after a request with a {timeout_ms} ms timeout",
                        now - since_us
                    ));
                }
                false
            }
            _ => false,
        }
    }

    pub(super) fn operator_reply(&mut self, reply: Reply) {
        let now = self.now();
        let pause = self.rng.range(0, 3000);
        self.note(0x0BE7, now);
        self.log(|| format!("operator in {:?} got {reply:?}", self.op));
        match (self.op, reply) {
            (OpState::Quiescing { .. }, Reply::SafeToUnplug { epoch, ranks, .. }) => {
                self.check_safe_to_unplug(epoch, ranks);
                self.op = OpState::Quiesced { at_us: now + pause };
            }
            (
                op @ (OpState::Quiescing { .. } | OpState::Resuming { .. }),
                Reply::SwitchFailed { epoch, missing, reason },
            ) => {
                // Refused at once: the job was busy with a repair (or a failed one left it
                // quiesced). That is fine: the operator tries again.
                let refused = reason.starts_with("cannot ");
                if refused {
                    self.stats.refused += 1;
                } else if matches!(op, OpState::Quiescing { .. }) {
                    self.stats.quiesce_failed += 1;
                } else {
                    self.stats.resume_failed += 1;
                }
                self.switch_failed(epoch, &missing, &reason, refused);
                // A failed step leaves the job quiesced, for a resume; a refused quiesce, a
                // repair that will end with the job running (or quiesced, if it fails): the
                // operator looks again a little later.
                let pause = if refused { self.rng.range(1000, 10_000) } else { pause };
                self.op = if self.job_phase() == "quiesced" {
                    OpState::Quiesced { at_us: now + pause }
                } else {
                    OpState::Idle { at_us: now + pause }
                };
            }
            (OpState::Resuming { .. }, Reply::Resumed { epoch, ranks, .. }) => {
                if ranks != self.p.n {
                    self.fail(&format!("Resumed epoch {epoch} with {ranks} of {} ranks", self.p.n));
                }
                if let Phase::Failing { rank, .. } = self.phase {
                    self.fail(&format!("switch {epoch} completed although rank {rank}'s control thread is gone"));
                }
                self.stats.migrations += 1;
                self.settle_kills();
                self.op = OpState::Idle { at_us: now + pause };
            }
            (op, reply) => self.fail(&format!("operator in {op:?} got {reply:?}")),
        }
    }

    pub(super) fn check_safe_to_unplug(&mut self, epoch: u32, ranks: u32) {
        if ranks != self.p.n {
            self.fail(&format!("SafeToUnplug epoch {epoch} with {ranks} of {} ranks", self.p.n));
        }
        let held = self.fabrics.lock().expect("fabrics").held.clone();
        for (r, rank) in self.ranks.iter().enumerate() {
            let phase = rank.shared.phase();
            if phase != RankPhase::Detached || held[r].is_some() {
                self.fail(&format!("SafeToUnplug epoch {epoch}, but rank {r} is {phase:?} holding {:?}", held[r]));
            }
        }
        let old = self.draining_epoch.expect("a quiesce in progress");
        let Some(fab) = self.fabrics.lock().expect("fabrics").by_epoch.get(&old).cloned() else {
            return;
        };
        let mut f = fab.lock().expect("fab");
        if f.dropped.iter().any(|d| !d) {
            let v = format!("SafeToUnplug, but endpoints of epoch {old} are still open: {:?}", f.dropped);
            drop(f);
            self.fail(&v);
        }
        // The VMM unplugs the device now: nothing may touch it again.
        f.unplugged = true;
    }

    pub(super) fn switch_failed(&mut self, epoch: u32, missing: &[u32], reason: &str, refused: bool) {
        self.trace = fnv(self.trace, reason.as_bytes());
        if !refused && missing.is_empty() && !reason.contains("rank ") {
            self.fail(&format!("SwitchFailed epoch {epoch} names no rank: {reason}"));
        }
        if let Phase::Failing { rank, peer } = self.phase {
            // Any switch fails while a rank has no control thread; the job is lost once one
            // names it (others may fail first, by the timeouts of earlier faults).
            if missing.contains(&rank) {
                self.stats.jobs_lost += 1;
                self.phase = Phase::Lost { rank, peer };
            }
        }
    }
}
