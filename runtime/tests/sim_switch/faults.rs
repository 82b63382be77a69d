//! Faults: benign ones the job must survive, links that die (and are repaired), and fatal
//! ones whose switch must fail naming a responsible rank.

use super::*;

impl Sim {
    /// A repair's quiesce names the pairs of rank `r` with `peers` broken: their ends drain
    /// without each other, so what is on those links of the fabric `r` holds may be lost.
    pub(super) fn give_up(&mut self, r: usize, peers: &[u32]) {
        if peers.is_empty() {
            return;
        }
        let fab = {
            let mut fs = self.fabrics.lock().expect("fabrics");
            let Some(e) = fs.held[r] else { return };
            fs.fab(e)
        };
        let mut f = fab.lock().expect("fab");
        let n = f.n;
        for &p in peers {
            let (a, b) = (r, p as usize);
            f.given_up[a * n + b] = true;
            f.given_up[b * n + a] = true;
        }
    }

    pub(super) fn inject_fault(&mut self) {
        let n = self.p.n as u64;
        let r = self.rng.below(n) as usize;
        let now = self.now();
        match self.rng.below(20) {
            0..=7 => {
                self.ranks[r].slow_until_us = now + self.rng.range(100, 30_000);
                self.stats.faults += 1;
            }
            8..=15 => {
                self.ranks[r].computing_until_us = now + self.rng.range(100, 30_000);
                self.stats.faults += 1;
            }
            16..=18 if self.cfg.link_faults && self.rng.chance(1, 4) => self.link_fault(r),
            19 if self.cfg.fatal && self.rng.chance(1, 8) => self.fatal_fault(r),
            _ => {}
        }
    }

    /// Kills data links of rank `r`: while the job runs, one (a link reset) or all of them
    /// (its device removed); during a quiesce, one (it dies under the drain); during a
    /// resume, one of the new epoch.
    pub(super) fn link_fault(&mut self, r: usize) {
        if self.kills.len() >= MAX_BROKEN_LINKS {
            // Links die one at a time, not by the hundred while a resume is retried.
            return;
        }
        let n = self.p.n;
        let status = self.coord.status();
        let phase = status.phase.as_str();
        // The epoch of the fabric it dies in, and whether the coordinator must repair it by
        // itself: with no switch under way, yes; under a drain, the switch's resume repairs
        // it; in the new epoch, while the resume is under way, it should (but see
        // `RunCfg::resume_self_repair`: else the operator's next switch repairs it).
        let (epoch, self_repair, device) = match phase {
            "running" => (status.epoch, true, self.rng.chance(1, 3)),
            "quiescing" => (status.epoch, false, false),
            "resuming" => (status.epoch + 1, self.cfg.resume_self_repair, false),
            _ => return,
        };
        let peers: Vec<u32> = if device {
            (0..n).filter(|&p| p != r as u32).collect()
        } else {
            vec![(r as u32 + self.rng.range(1, n as u64 - 1) as u32) % n]
        };
        let held = self.fabrics.lock().expect("fabrics").held.clone();
        let Some(fab) = self.fabrics.lock().expect("fabrics").by_epoch.get(&epoch).cloned() else {
            return;
        };
        let mut f = fab.lock().expect("fab");
        // Each end on this fabric (mid-drain, one of them may have left it already; during a
        // resume, one of them may not have reconnected yet).
        let live = |x: usize| held[x] == Some(epoch);
        let on = |x: usize| live(x) || (phase == "quiescing" && f.dropped[x]) || (phase == "resuming" && !f.taken[x]);
        let fresh = |p: usize| !f.link_dead[r * f.n + p];
        let peers: Vec<u32> = peers
            .into_iter()
            .filter(|&p| on(p as usize) && (live(r) || live(p as usize)) && fresh(p as usize))
            .collect();
        if f.unplugged || !on(r) || peers.is_empty() {
            return;
        }
        let reason = if device { "simulated device removal" } else { "simulated link failure" };
        let now = self.now();
        for &b in &peers {
            f.kill_link(r, b as usize, reason);
            self.kills.push(Kill { a: r as u32, b, epoch, at_us: now, self_repair });
        }
        drop(f);
        self.log(|| format!("links of rank {r} to {peers:?} killed in epoch {epoch} (job {phase})"));
        self.stats.link_faults += 1;
        self.stats.links_killed += peers.len() as u64;
        self.note(0x11CC, (r as u64) << 32 | peers.len() as u64);
    }

    /// The fatal fault: rank `r`'s control thread is gone (it lost the control plane; its
    /// relay, or the coordinator, sees the subscription close), then its data link to a peer
    /// dies. Without a control thread nobody can ask for a repair on its behalf, and it
    /// cannot take part in one: it must fail, naming the peer, and every switch must fail
    /// naming it.
    pub(super) fn fatal_fault(&mut self, r: usize) {
        if self.job_phase() != "running" || !self.kills.is_empty() {
            return;
        }
        let n = self.p.n;
        let peer = (r as u32 + self.rng.range(1, n as u64 - 1) as u32) % n;
        let epoch = self.coord.status().epoch;
        let held = self.fabrics.lock().expect("fabrics").held.clone();
        let fab = self.fabrics.lock().expect("fabrics").by_epoch.get(&epoch).cloned();
        let (Some(fab), Some(e), Some(ep)) = (fab, held[r], held[peer as usize]) else {
            return;
        };
        if e != epoch || ep != epoch || self.ranks[r].ctl.is_driving() {
            return;
        }
        let rank = &mut self.ranks[r];
        rank.ctl_dead = true;
        rank.shared.set_control_alive(false);
        rank.ctl_inbox.clear();
        self.conns[r] = ConnQ::default();
        let t = self.instant();
        if self.p.group == 0 {
            self.coord.handle_disconnect(sub_conn(r as u32), t);
        } else {
            self.relays[r / self.p.group as usize].handle_disconnect(sub_conn(r as u32), t);
        }
        self.pump();
        fab.lock().expect("fab").kill_link(r, peer as usize, "simulated link failure");
        self.stats.fatal_faults += 1;
        self.note(0xDEAD, (r as u64) << 32 | peer as u64);
        self.phase = Phase::Failing { rank: r as u32, peer };
    }
}
