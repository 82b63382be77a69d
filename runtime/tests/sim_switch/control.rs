//! The control plane in the simulation: the tree of relays, every control link (FIFO, random
//! delays), and each rank's control client, the runtime's own `RankControl`.

use super::*;

impl Sim {
    /// Relays between the coordinator and the ranks, placed by the coordinator as in a real
    /// job (joins in host order, later relays redirected below earlier ones), every rank
    /// subscribed to its group's relay, and every relay's members news delivered.
    pub(super) fn build_tree(&mut self, now: Instant) {
        let n = self.p.n;
        let hosts = n.div_ceil(self.p.group) as usize;
        for h in 0..hosts {
            let leader = h as u32 * self.p.group;
            self.relays.push(Relay::new(leader, n));
            let join = self.relays[h].join_request(Some(format!("relay-{h}")));
            self.coord.handle_connect(relay_conn(h));
            self.coord.handle_request(relay_conn(h), join.clone(), now);
            let parent = match self.coord.out.poll_reply() {
                Some((_, Reply::Welcome { .. })) => Parent::Coordinator,
                Some((_, Reply::Redirect { parent })) => {
                    assert_eq!(self.coord.out.poll_close(), Some(relay_conn(h)));
                    let p: usize = parent.strip_prefix("relay-").and_then(|x| x.parse().ok()).expect("a relay address");
                    self.relays[p].handle_connect(relay_conn(h));
                    self.relays[p].handle_request(relay_conn(h), join, now);
                    assert!(matches!(self.relays[p].out.poll_reply(), Some((_, Reply::Welcome { .. }))));
                    Parent::Relay(p)
                }
                other => panic!("relay {h} joins: {other:?}"),
            };
            self.relay_parent.push(parent);
        }
        for r in 0..n {
            let h = (r / self.p.group) as usize;
            self.relays[h].handle_connect(sub_conn(r));
            let sub = Request::Subscribe {
                version: CONTROL_VERSION,
                rank: r,
                transport: None,
                host: Some(format!("sim{h}")),
                pid: Some(r),
            };
            self.relays[h].handle_request(sub_conn(r), sub, now);
            assert!(matches!(self.relays[h].out.poll_reply(), Some((_, Reply::Welcome { .. }))));
        }
        // Deepest first: a relay's news reaches its parent before the parent attaches and
        // sends everything it knows up.
        for h in (0..hosts).rev() {
            self.relays[h].handle_attached(now);
            while let Some(req) = self.relays[h].poll_up() {
                match self.relay_parent[h] {
                    Parent::Coordinator => self.coord.handle_request(relay_conn(h), req, now),
                    Parent::Relay(p) => self.relays[p].handle_request(relay_conn(h), req, now),
                }
            }
        }
        let st = self.coord.status();
        assert!(st.ranks.iter().all(|r| r.subscribed), "the tree reaches every rank: {st:?}");
        self.conns.extend((0..hosts).map(|_| ConnQ::default()));
    }

    /// One step of rank `r`'s control client: the runtime's own [`RankControl`], with the
    /// simulator as its socket and its thread (it runs the engine's switch step itself).
    pub(super) fn ctl_step(&mut self, r: usize) -> bool {
        let now = self.now();
        if now < self.ranks[r].slow_until_us || self.ranks[r].ctl_dead {
            return false;
        }
        if !self.ranks[r].ctl.is_driving() {
            let mut did = false;
            let rank = &self.ranks[r];
            if let Some(repair) = rank.ctl.poll_repair(&rank.shared) {
                // The engine lost a link while running: ask for the switch that repairs it.
                let Request::Repair { peer, .. } = repair else { unreachable!("poll_repair gives repairs") };
                self.note(0x4E9A, (r as u64) << 32 | peer as u64);
                self.log(|| format!("rank {r} asks for a repair of its link to rank {peer}"));
                self.send_up(r, repair);
                did = true;
            }
            let Some(reply) = self.ranks[r].ctl_inbox.pop_front() else {
                return did;
            };
            let rank = &mut self.ranks[r];
            let Some(started) = rank.ctl.handle_reply(reply, &rank.shared) else {
                return true;
            };
            if let Some(peers) = &started.quiesce_repairs {
                self.give_up(r, peers);
            }
            self.note(0xC0DE, (r as u64) << 32 | started.epoch as u64);
            return true;
        }
        // `poke`: one switch step; a failure is recorded by the engine.
        if let Err(e) = self.ranks[r].engine.switch_step() {
            self.engine_failed(r, "a switch step its control thread drove", &e);
        }
        let rank = &mut self.ranks[r];
        let Some(report) = rank.ctl.poll_report(&rank.shared) else {
            return false;
        };
        let Request::Report { epoch, phase, .. } = report else { unreachable!("poll_report gives reports") };
        if phase == SwitchPhase::Detached {
            let held = self.fabrics.lock().expect("fabrics").held[r];
            if let Some(e) = held {
                self.fail(&format!("rank {r} reports Detached for epoch {epoch} but holds its epoch-{e} endpoint"));
            }
        }
        self.note(0xBE00 + phase as u64, (r as u64) << 32 | epoch as u64);
        self.log(|| format!("rank {r} reports {report:?}"));
        self.send_up(r, report.clone());
        if self.phase == Phase::Faults && self.rng.chance(self.p.fault_permille * 5, 1000) {
            // A client that reconnects and resends its last report.
            self.stats.faults += 1;
            self.send_up(r, report);
        }
        true
    }

    pub(super) fn ctl_delay(&mut self, timeout_ms: Option<u64>) -> u64 {
        let mut d = self.rng.range(1, self.p.ctl_delay_max_us);
        if let (Phase::Faults, Some(t)) = (self.phase, timeout_ms) {
            if self.rng.chance(self.p.fault_permille * 3, 1000) {
                // Delayed past the coordinator's timeout.
                self.stats.faults += 1;
                d += self.rng.range(t * 1000, t * 2000);
            }
        }
        d
    }

    /// The budget of the step under way, if any: the operator's, or a repair's.
    pub(super) fn current_timeout_ms(&self) -> Option<u64> {
        match self.op {
            OpState::Quiescing { timeout_ms, .. } | OpState::Resuming { timeout_ms, .. } => Some(timeout_ms),
            _ if matches!(self.job_phase().as_str(), "quiescing" | "resuming") => Some(self.repair_timeout_ms),
            _ => None,
        }
    }

    /// The job's phase as `kawarimi ctl status` shows it.
    pub(super) fn job_phase(&self) -> String {
        self.coord.status().phase
    }

    pub(super) fn send_up(&mut self, r: usize, req: Request) {
        let d = self.ctl_delay(self.current_timeout_ms());
        let now = self.now();
        let q = &mut self.conns[r].up;
        let due = q.back().map_or(0, |x| x.0).max(now + d);
        q.push_back((due, req));
    }

    pub(super) fn send_down(&mut self, r: usize, reply: Reply) {
        let d = self.ctl_delay(self.current_timeout_ms());
        let now = self.now();
        let q = &mut self.conns[r].down;
        let due = q.back().map_or(0, |x| x.0).max(now + d);
        q.push_back((due, reply));
    }

    pub(super) fn deliver_ctl(&mut self) -> bool {
        let n = self.p.n as usize;
        let link = self.rng.below(self.conns.len() as u64) as usize;
        let now = self.now();
        let t = self.instant();
        if self.rng.chance(1, 2) {
            if self.conns[link].down.front().is_some_and(|x| x.0 <= now) {
                let (_, reply) = self.conns[link].down.pop_front().expect("head");
                self.note(0xD0, link as u64);
                self.log(|| format!("link {link} down: {reply:?}"));
                if link < n {
                    if !self.ranks[link].ctl_dead {
                        self.ranks[link].ctl_inbox.push_back(reply);
                    }
                } else {
                    self.relays[link - n].handle_parent(reply, t);
                    self.pump();
                }
                return true;
            }
        } else if self.conns[link].up.front().is_some_and(|x| x.0 <= now) {
            let (_, req) = self.conns[link].up.pop_front().expect("head");
            self.note(0x0D, link as u64);
            self.log(|| format!("link {link} up: {req:?}"));
            if link < n && self.p.group == 0 {
                self.coord.handle_request(sub_conn(link as u32), req, t);
            } else if link < n {
                let h = link / self.p.group as usize;
                self.relays[h].handle_request(sub_conn(link as u32), req, t);
            } else {
                match self.relay_parent[link - n] {
                    Parent::Coordinator => self.coord.handle_request(relay_conn(link - n), req, t),
                    Parent::Relay(p) => self.relays[p].handle_request(relay_conn(link - n), req, t),
                }
            }
            self.pump();
            return true;
        }
        false
    }

    /// The link a node's reply on `conn` travels: a rank's subscription or a relay's link up.
    pub(super) fn link_of(&self, conn: ConnId) -> usize {
        if conn >= RELAY_CONN_BASE {
            self.p.n as usize + (conn - RELAY_CONN_BASE) as usize
        } else {
            assert_eq!(conn % 2, 1, "reply to a hello connection (conn {conn})");
            (conn / 2) as usize
        }
    }

    pub(super) fn pump(&mut self) {
        while let Some((conn, reply)) = self.coord.out.poll_reply() {
            if conn == CTL_CONN {
                self.operator_reply(reply);
            } else {
                let link = self.link_of(conn);
                self.send_down(link, reply);
            }
        }
        if let Some(c) = self.coord.out.poll_close() {
            self.fail(&format!("the coordinator closed connection {c}"));
        }
        while let Some(line) = self.coord.out.poll_log() {
            self.log(|| format!("coordinator: {line}"));
            let failed_quiesce = line.strip_prefix("switch ").and_then(|l| l.split_once(" (Quiesce) failed"));
            if let Some(e) = failed_quiesce.and_then(|(e, _)| e.parse::<u32>().ok()) {
                self.fabrics.lock().expect("fabrics").failed_quiesces.insert(e);
            }
            if line.starts_with("repair ") {
                if line.contains("quiescing the job") {
                    self.stats.repairs += 1;
                } else if line.contains("SwitchFailed") && self.repair_failed != Some(self.stats.repairs) {
                    // (Once per repair: its quiesce, or the resume that follows, or both.)
                    self.repair_failed = Some(self.stats.repairs);
                    self.stats.repairs_failed += 1;
                }
            }
            self.trace = fnv(self.trace, line.as_bytes());
        }
        for h in 0..self.relays.len() {
            while let Some((conn, reply)) = self.relays[h].out.poll_reply() {
                let link = self.link_of(conn);
                self.send_down(link, reply);
            }
            while let Some(req) = self.relays[h].poll_up() {
                self.send_up(self.p.n as usize + h, req);
            }
            if let Some(c) = self.relays[h].out.poll_close() {
                self.fail(&format!("relay {h} closed connection {c}"));
            }
            while let Some(line) = self.relays[h].out.poll_log() {
                self.log(|| format!("relay {h}: {line}"));
                self.trace = fnv(self.trace, line.as_bytes());
            }
        }
    }
}
