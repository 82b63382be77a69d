//! The simulated fabric: one per epoch, per-(src, dst) FIFO queues with random delays, the
//! endpoints the ranks' engines use as their transport, link kills, and the reconnect that
//! hands a rank its endpoint of the next epoch.

use super::*;

#[derive(Debug)]
pub(crate) enum NetKind {
    Frame(Header, Vec<u8>),
    Close(String),
}

#[derive(Debug)]
pub(crate) struct NetItem {
    pub(crate) due_us: u64,
    pub(crate) kind: NetKind,
}

/// One epoch's network: the endpoints' local send buffers and the per-pair wire queues.
pub(crate) struct Fab {
    pub(crate) epoch: u32,
    pub(crate) n: usize,
    pub(crate) clock: Arc<AtomicU64>,
    pub(crate) rng: Rng,
    pub(crate) delay_max_us: u64,
    /// Per endpoint: frames handed to `send`, not yet written (`queued_bytes`).
    pub(crate) local: Vec<VecDeque<(PeerId, Header, Vec<u8>)>>,
    pub(crate) local_bytes: Vec<usize>,
    /// `src * n + dst`: frames on the wire, delivered head first.
    pub(crate) net: Vec<VecDeque<NetItem>>,
    /// Queue ids that may be non-empty (lazily pruned).
    pub(crate) active: Vec<usize>,
    pub(crate) in_active: Vec<bool>,
    /// Per endpoint: events delivered, waiting for `progress`.
    pub(crate) inbox: Vec<VecDeque<Event>>,
    pub(crate) taken: Vec<bool>,
    pub(crate) dropped: Vec<bool>,
    pub(crate) link_dead: Vec<bool>,
    /// `src * n + dst`: a repair's quiesce named the pair broken, so its ends drain without
    /// each other and what is on this link may be lost (the repair sends it again).
    pub(crate) given_up: Vec<bool>,
    /// The coordinator said `SafeToUnplug` for this epoch: nothing may touch it any more.
    pub(crate) unplugged: bool,
    pub(crate) violations: Vec<String>,
    pub(crate) frames_written: u64,
}

impl Fab {
    pub(crate) fn new(epoch: u32, n: usize, clock: Arc<AtomicU64>, seed: u64, delay_max_us: u64) -> Fab {
        Fab {
            epoch,
            n,
            clock,
            rng: Rng(mix(seed, 0xFAB0_0000 + epoch as u64)),
            delay_max_us,
            local: (0..n).map(|_| VecDeque::new()).collect(),
            local_bytes: vec![0; n],
            net: (0..n * n).map(|_| VecDeque::new()).collect(),
            active: Vec::new(),
            in_active: vec![false; n * n],
            inbox: (0..n).map(|_| VecDeque::new()).collect(),
            taken: vec![false; n],
            dropped: vec![false; n],
            link_dead: vec![false; n * n],
            given_up: vec![false; n * n],
            unplugged: false,
            violations: Vec::new(),
            frames_written: 0,
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    pub(crate) fn push_net(&mut self, q: usize, kind: NetKind) {
        let due_us = self.now() + self.rng.range(0, self.delay_max_us);
        self.net[q].push_back(NetItem { due_us, kind });
        if !self.in_active[q] {
            self.in_active[q] = true;
            self.active.push(q);
        }
    }

    pub(crate) fn check_use(&mut self, me: PeerId, what: &str) {
        if self.unplugged {
            self.violations
                .push(format!("rank {me} called {what} on its epoch-{} device after SafeToUnplug", self.epoch));
        }
        if self.dropped[me as usize] {
            self.violations.push(format!("rank {me} called {what} on a released epoch-{} endpoint", self.epoch));
        }
    }

    /// Writes a random part of `me`'s local buffer onto the wire (all of it a quarter of the
    /// time), in order.
    pub(crate) fn flush(&mut self, me: usize) {
        let len = self.local[me].len();
        if len == 0 {
            return;
        }
        let k = if self.rng.chance(1, 4) { len } else { self.rng.range(1, len as u64) as usize };
        for _ in 0..k {
            let (peer, h, p) = self.local[me].pop_front().expect("counted");
            self.local_bytes[me] -= p.len() + HEADER_LEN;
            let q = me * self.n + peer as usize;
            if self.link_dead[q] {
                continue;
            }
            self.frames_written += 1;
            self.push_net(q, NetKind::Frame(h, p));
        }
    }

    /// Delivers the head of a random due queue. Returns a trace word, or `None` if none of
    /// the queues tried was due.
    pub(crate) fn deliver_one(&mut self, rng: &mut Rng) -> Option<u64> {
        let now = self.now();
        for _ in 0..4 {
            if self.active.is_empty() {
                return None;
            }
            let i = rng.below(self.active.len() as u64) as usize;
            let q = self.active[i];
            let Some(head) = self.net[q].front() else {
                self.active.swap_remove(i);
                self.in_active[q] = false;
                continue;
            };
            if head.due_us > now {
                continue;
            }
            let item = self.net[q].pop_front().expect("head");
            let (src, dst) = (q / self.n, q % self.n);
            let word = mix(q as u64, self.epoch as u64);
            if self.dropped[dst] {
                // (A killed link's frames never get here: its queues were emptied.)
                if let (NetKind::Frame(h, _), false) = (&item.kind, self.given_up[q]) {
                    self.violations.push(format!(
                        "epoch {}: frame {h} from rank {src} reached rank {dst} after it released its endpoint (lost)",
                        self.epoch
                    ));
                }
                return Some(word);
            }
            match item.kind {
                NetKind::Frame(header, payload) => {
                    let w = mix(word, header.seq ^ (header.kind as u64) << 56);
                    self.inbox[dst].push_back(Event::Frame {
                        peer: src as PeerId,
                        header,
                        payload: kawarimi_transports::Payload::Owned(payload),
                    });
                    return Some(w);
                }
                NetKind::Close(reason) => {
                    self.inbox[dst].push_back(Event::LinkDown { peer: src as PeerId, reason });
                    return Some(!word);
                }
            }
        }
        None
    }

    pub(crate) fn next_due(&self) -> Option<u64> {
        self.active.iter().filter_map(|&q| self.net[q].front().map(|h| h.due_us)).min()
    }

    /// The link between `a` and `b` dies: what was on the wire or in either end's send
    /// buffer for the other is lost, both ends see `LinkDown` (each in its own time), later
    /// frames vanish or fail to send. Only this pair loses frames: the repair sends them again.
    pub(crate) fn kill_link(&mut self, a: usize, b: usize, reason: &str) {
        for (x, y) in [(a, b), (b, a)] {
            let q = x * self.n + y;
            self.net[q].clear();
            let lost: usize = self.local[x].iter().filter(|f| f.0 as usize == y).map(|f| f.2.len() + HEADER_LEN).sum();
            self.local[x].retain(|f| f.0 as usize != y);
            self.local_bytes[x] -= lost;
            self.push_net(q, NetKind::Close(reason.to_string()));
            self.link_dead[q] = true;
        }
    }
}

pub(crate) type FabRef = Arc<Mutex<Fab>>;

/// One rank's endpoint on one epoch's fabric.
pub(crate) struct Ep {
    pub(crate) me: PeerId,
    pub(crate) fab: FabRef,
    pub(crate) fabrics: Arc<Mutex<Fabrics>>,
}

impl Transport for Ep {
    fn kind(&self) -> TransportKind {
        TransportKind::Sim
    }

    fn send(
        &mut self,
        peer: PeerId,
        header: &kawarimi_transports::wire::Header,
        payload: Payload,
    ) -> TransportResult<()> {
        let mut f = self.fab.lock().expect("fab");
        f.check_use(self.me, "send");
        assert!((peer as usize) < f.n && peer != self.me, "send to {peer}");
        let me = self.me as usize;
        if f.link_dead[me * f.n + peer as usize] && f.rng.chance(1, 2) {
            // A write on a reset connection fails (otherwise the frame vanishes at `flush`).
            return Err(TransportError::LinkDown { peer, reason: "simulated write on a dead link".into() });
        }
        let bytes = payload.into_vec();
        f.local_bytes[me] += bytes.len() + HEADER_LEN;
        f.local[me].push_back((peer, *header, bytes));
        Ok(())
    }

    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        let mut f = self.fab.lock().expect("fab");
        f.check_use(self.me, "progress");
        f.flush(self.me as usize);
        let me = self.me as usize;
        events.extend(f.inbox[me].drain(..));
        Ok(())
    }

    fn wait(&mut self, _timeout: Duration) -> TransportResult<()> {
        let mut f = self.fab.lock().expect("fab");
        f.check_use(self.me, "wait");
        Ok(())
    }

    fn queued_bytes(&self) -> usize {
        let f = self.fab.lock().expect("fab");
        f.local_bytes[self.me as usize]
    }
}

impl Drop for Ep {
    /// Releasing the endpoint: what was written stays on the wire and is followed by a close
    /// (FIN after data); what was never written is gone, which a detach must never allow
    /// (but for frames to a peer whose link died: those are lost anyway).
    fn drop(&mut self) {
        let me = self.me as usize;
        {
            let mut f = self.fab.lock().expect("fab");
            f.dropped[me] = true;
            let unwritten: usize = f.local[me]
                .iter()
                .filter(|x| !f.link_dead[me * f.n + x.0 as usize] && !f.given_up[me * f.n + x.0 as usize])
                .map(|x| x.2.len() + HEADER_LEN)
                .sum();
            if unwritten > 0 {
                let v = format!("rank {me} released its epoch-{} endpoint with {unwritten} bytes unwritten", f.epoch);
                f.violations.push(v);
            }
            f.local[me].clear();
            f.local_bytes[me] = 0;
            f.inbox[me].clear();
            for p in (0..f.n).filter(|&p| p != me) {
                let q = me * f.n + p;
                if !f.link_dead[q] {
                    f.push_net(q, NetKind::Close(format!("rank {me} closed its endpoint")));
                }
            }
        }
        let mut fs = self.fabrics.lock().expect("fabrics");
        fs.held[me] = None;
    }
}

/// Every fabric of the run, by epoch, and which endpoint each rank holds.
pub(crate) struct Fabrics {
    pub(crate) n: usize,
    pub(crate) seed: u64,
    pub(crate) clock: Arc<AtomicU64>,
    pub(crate) delay_max_us: u64,
    pub(crate) by_epoch: BTreeMap<u32, FabRef>,
    pub(crate) held: Vec<Option<u32>>,
    /// `(epoch, rank)`: the peers the rank was told to repair when it reconnected into `epoch`.
    pub(crate) told: BTreeMap<(u32, u32), Vec<u32>>,
    /// Epochs whose quiesce failed (from the coordinator's log).
    pub(crate) failed_quiesces: std::collections::BTreeSet<u32>,
    /// Ranks that resumed without naming a link they reported broken (their report came too
    /// late for a failed quiesce's resume): what the link lost comes back by a gap repair.
    pub(crate) late_repairs: u64,
    pub(crate) violations: Vec<String>,
}

impl Fabrics {
    pub(crate) fn new(n: usize, seed: u64, clock: Arc<AtomicU64>, delay_max_us: u64) -> Fabrics {
        Fabrics {
            n,
            seed,
            clock,
            delay_max_us,
            by_epoch: BTreeMap::new(),
            held: vec![None; n],
            told: BTreeMap::new(),
            failed_quiesces: Default::default(),
            late_repairs: 0,
            violations: Vec::new(),
        }
    }

    pub(crate) fn fab(&mut self, epoch: u32) -> FabRef {
        let (n, clock, seed, delay) = (self.n, self.clock.clone(), self.seed, self.delay_max_us);
        self.by_epoch
            .entry(epoch)
            .or_insert_with(|| Arc::new(Mutex::new(Fab::new(epoch, n, clock, seed, delay))))
            .clone()
    }
}

pub(crate) fn take_endpoint(fabrics: &Arc<Mutex<Fabrics>>, rank: u32, epoch: u32) -> Box<dyn Transport> {
    let fab = {
        let mut fs = fabrics.lock().expect("fabrics");
        if let Some(e) = fs.held[rank as usize] {
            fs.violations.push(format!("rank {rank} takes an epoch-{epoch} endpoint while holding one of epoch {e}"));
        }
        fs.held[rank as usize] = Some(epoch);
        fs.fab(epoch)
    };
    {
        let mut f = fab.lock().expect("fab");
        if std::mem::replace(&mut f.taken[rank as usize], true) {
            f.violations.push(format!("rank {rank} took its epoch-{epoch} endpoint twice"));
        }
    }
    Box::new(Ep { me: rank, fab, fabrics: fabrics.clone() })
}

/// The new epoch's endpoint, as `Rewire` would connect it. The sim has one kind of fabric,
/// so `by_tcp` changes nothing here; it is checked instead: a pair is repaired by both of
/// its ends or by neither, and a rank is told to repair every link it saw die.
pub(crate) struct SimReconnect {
    pub(crate) rank: u32,
    pub(crate) fabrics: Arc<Mutex<Fabrics>>,
    pub(crate) shared: Arc<SwitchShared>,
}

impl Reconnect for SimReconnect {
    fn reconnect(
        &mut self,
        epoch: u32,
        _transport: Option<&str>,
        by_tcp: &[u32],
        _timeout: Duration,
    ) -> MpiResult<Option<Box<dyn Transport>>> {
        let me = self.rank;
        {
            let mut fs = self.fabrics.lock().expect("fabrics");
            // What this rank's detach report said died under it (the engine kept it).
            let broken = self.shared.broken();
            let unrepaired: Vec<u32> = broken.iter().copied().filter(|p| !by_tcp.contains(p)).collect();
            if !unrepaired.is_empty() {
                let v = format!(
                    "rank {me} resumes into epoch {epoch} repairing {by_tcp:?}, but its links to {unrepaired:?} died \
                     in the epoch it left (its detach report said {broken:?}): what they lost is never sent again"
                );
                if fs.failed_quiesces.contains(&epoch) {
                    // Its detach report came after that quiesce failed: the coordinator repairs
                    // the pair after this resume, and a frame the link lost arrives as a gap
                    // meanwhile, which the receiver has repaired (the checker sees every
                    // message delivered once, in order, either way).
                    fs.late_repairs += 1;
                } else {
                    fs.violations.push(v);
                }
            }
            for p in 0..fs.n as u32 {
                let Some(theirs) = fs.told.get(&(epoch, p)) else { continue };
                if theirs.contains(&me) != by_tcp.contains(&p) {
                    let v = format!(
                        "epoch {epoch}: rank {me} is told to repair {by_tcp:?}, rank {p} {theirs:?}: the two ends \
                         of a pair disagree"
                    );
                    fs.violations.push(v);
                }
            }
            fs.told.insert((epoch, me), by_tcp.to_vec());
        }
        Ok(Some(take_endpoint(&self.fabrics, me, epoch)))
    }
}
