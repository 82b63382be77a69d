//! The live switch on the rank side: quiesce → drain → detach → rediscover → reconnect.
//!
//! Two threads share the work:
//! - the rank's **control thread** ([`spawn_control_thread`]) holds a subscription to its
//!   host leader's relay (see [`kawarimi_control::relay`]), turns its commands into a
//!   [`Command`] in [`SwitchShared`], makes sure the engine runs (the application may be
//!   computing for minutes without calling MPI), and reports each phase reached. What it
//!   sends and when is decided by [`RankControl`], sans-IO, which the simulator runs too;
//! - **whoever holds the engine** runs [`crate::engine::Engine::switch_step`]: the
//!   application thread inside a blocking MPI call (every round of its wait loop), or the
//!   control thread itself, through the `poke` the shim gives it, when the application is
//!   not in MPI.
//!
//! Data path state never leaves the runtime: the protocol core parks everything that was not
//! in flight (unmatched rendezvous, half-received messages, frames queued after the drain
//! markers) and continues it on the new transport.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kawarimi_transports::auth::JobSecret;
use kawarimi_transports::Transport;
use parking_lot::{Condvar, Mutex};

use crate::error::MpiResult;
use kawarimi_control::client::Line;
use kawarimi_control::proto::{Reply, Request, SwitchCommand, SwitchPhase, CONTROL_VERSION};

/// Rediscovers the networks a rank has now and connects it to its peers again.
pub trait Reconnect: Send {
    /// Publishes this rank's new addresses for `epoch`, learns its peers', and connects.
    /// `transport` forces a kind (`"tcp"`, for tests); `None` lets the rank choose. The
    /// peers in `by_tcp` are reached by TCP whatever else both ends have (their link died
    /// in the epoch that ends; they get the same list). Returns `None` for a job of one rank.
    fn reconnect(
        &mut self,
        epoch: u32,
        transport: Option<&str>,
        by_tcp: &[u32],
        timeout: Duration,
    ) -> MpiResult<Option<Box<dyn Transport>>>;
}

/// A step the coordinator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quiesce {
        epoch: u32,
    },
    /// `repair`: the peers whose link to this rank died in the epoch that ends.
    Resume {
        epoch: u32,
        transport: Option<String>,
        repair: Vec<u32>,
    },
}

/// Where the rank stands in a switch. The control protocol reports it as its
/// [`SwitchPhase`]; the engine sees only this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Draining,
    /// Drained and every data-path resource released: safe to unplug.
    Detached,
    Reconnecting,
    /// The step failed; the error says why.
    Failed,
}

impl Phase {
    /// The phase as the control protocol carries it.
    pub fn to_wire(self) -> SwitchPhase {
        match self {
            Phase::Running => SwitchPhase::Running,
            Phase::Draining => SwitchPhase::Draining,
            Phase::Detached => SwitchPhase::Detached,
            Phase::Reconnecting => SwitchPhase::Reconnecting,
            Phase::Failed => SwitchPhase::Failed,
        }
    }
}

#[derive(Debug)]
struct Inner {
    command: Option<Command>,
    phase: Phase,
    /// The epoch of the step the phase belongs to.
    epoch: u32,
    /// When the current step started, for the report.
    step_started: Option<Instant>,
    /// Duration of the last completed step.
    last_step: Duration,
    error: Option<String>,
    /// What carries the data path now (reported to the coordinator).
    transport: String,
    /// Peers whose data link died under this rank in this epoch (reported on detach).
    broken: Vec<u32>,
    /// Peers whose link to this rank the other end reported dead, named by the coordinator
    /// in the quiesce that repairs them (taken by the engine when it begins the drain).
    reported_broken: Vec<u32>,
    /// A link that died outside a switch, for the control thread to ask a repair for:
    /// `(peer, reason)`.
    repair_request: Option<(u32, String, u32)>,
    /// The control thread runs (it lost its connection, or the rank finalizes, when not).
    control_alive: bool,
}

/// What the control thread and the engine share.
pub struct SwitchShared {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Set while a command waits for the engine: the one check on the data path.
    pending: AtomicBool,
    /// Whether the phase is `Running` (written with it, under the lock), so that the data
    /// path's check takes no lock.
    running: AtomicBool,
    /// Set at `MPI_Finalize`: the control thread leaves quietly.
    shutdown: AtomicBool,
    /// Ends the engine's sleep in the transport's `poll(2)` when a command arrives.
    waker: Mutex<Option<kawarimi_transports::Waker>>,
    /// Where the step durations in the reports are read: the real clock, or a simulator's.
    clock: Clock,
}

/// Where the rank side reads the time: the real clock in a rank, a simulated one in the
/// simulator, so that a seed replays every deadline and every reported duration
/// ([`SwitchShared::with_clock`], [`crate::engine::Engine::set_clock`]).
pub type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

impl std::fmt::Debug for SwitchShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchShared")
            .field("inner", &self.inner)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Default for SwitchShared {
    fn default() -> Self {
        SwitchShared {
            inner: Mutex::new(Inner {
                command: None,
                phase: Phase::Running,
                epoch: 0,
                step_started: None,
                last_step: Duration::ZERO,
                error: None,
                transport: "?".into(),
                broken: Vec::new(),
                reported_broken: Vec::new(),
                repair_request: None,
                control_alive: false,
            }),
            changed: Condvar::new(),
            pending: AtomicBool::new(false),
            running: AtomicBool::new(true),
            shutdown: AtomicBool::new(false),
            waker: Mutex::new(None),
            clock: Box::new(Instant::now),
        }
    }
}

impl SwitchShared {
    pub fn new() -> Arc<SwitchShared> {
        Arc::new(SwitchShared::default())
    }

    /// Shared state whose step durations are read from `clock` (a simulator's), so that the
    /// reports, and all that depends on them, replay from a seed.
    pub fn with_clock(clock: Clock) -> Arc<SwitchShared> {
        Arc::new(SwitchShared { clock, ..SwitchShared::default() })
    }

    /// Hands a command to the engine, waking it if it sleeps in the transport.
    pub fn command(&self, c: Command) {
        let mut g = self.inner.lock();
        if matches!(c, Command::Quiesce { .. }) {
            // This switch repairs every link lost so far: a request not yet sent is moot.
            g.repair_request = None;
        }
        g.command = Some(c);
        g.step_started = Some((self.clock)());
        self.pending.store(true, Ordering::Release);
        self.changed.notify_all();
        drop(g);
        if let Some(w) = self.waker.lock().as_ref() {
            w();
        }
    }

    /// Sets (or clears) what wakes the engine's transport sleep.
    pub fn set_waker(&self, w: Option<kawarimi_transports::Waker>) {
        *self.waker.lock() = w;
    }

    pub fn has_waker(&self) -> bool {
        self.waker.lock().is_some()
    }

    /// Tells the control thread to leave (the rank is finalizing).
    pub fn shut_down(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.changed.notify_all();
    }

    fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Whether the phase is `Running`, without the lock.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub fn phase(&self) -> Phase {
        self.inner.lock().phase
    }

    /// Takes the command waiting, if it is a quiesce: the epoch of its switch.
    pub(crate) fn take_quiesce(&self) -> Option<u32> {
        match self.take_command(|c| matches!(c, Command::Quiesce { .. }))? {
            Command::Quiesce { epoch } => Some(epoch),
            Command::Resume { .. } => unreachable!("only a quiesce is taken"),
        }
    }

    /// Takes the command waiting, if it is a resume: its epoch, forced transport and the
    /// peers whose links it repairs.
    pub(crate) fn take_resume(&self) -> Option<(u32, Option<String>, Vec<u32>)> {
        match self.take_command(|c| matches!(c, Command::Resume { .. }))? {
            Command::Resume { epoch, transport, repair } => Some((epoch, transport, repair)),
            Command::Quiesce { .. } => unreachable!("only a resume is taken"),
        }
    }

    fn take_command(&self, wanted: impl Fn(&Command) -> bool) -> Option<Command> {
        let mut g = self.inner.lock();
        if !g.command.as_ref().is_some_and(wanted) {
            return None;
        }
        self.pending.store(false, Ordering::Release);
        g.command.take()
    }

    /// Records that the engine reached `phase` of switch `epoch`.
    pub(crate) fn reached(&self, phase: Phase, epoch: u32) {
        let mut g = self.inner.lock();
        g.phase = phase;
        self.running.store(phase == Phase::Running, Ordering::Release);
        g.epoch = epoch;
        if matches!(phase, Phase::Detached | Phase::Running) {
            let now = (self.clock)();
            g.last_step = g.step_started.take().map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        }
        self.changed.notify_all();
    }

    /// Records what carries the data path (set at start and after every reconnect).
    pub fn set_transport(&self, summary: String) {
        self.inner.lock().transport = summary;
    }

    pub fn transport(&self) -> String {
        self.inner.lock().transport.clone()
    }

    /// Records the peers whose link died in this epoch, for the report on detach.
    pub(crate) fn set_broken(&self, peers: Vec<u32>) {
        self.inner.lock().broken = peers;
    }

    /// The peers whose link died in the epoch this rank detached from (what the detach
    /// report carries).
    pub fn broken(&self) -> Vec<u32> {
        self.inner.lock().broken.clone()
    }

    /// Asks the control thread to request a switch that repairs the link to `peer`.
    pub(crate) fn ask_repair(&self, peer: u32, reason: String, epoch: u32) {
        let mut g = self.inner.lock();
        g.repair_request.get_or_insert((peer, reason, epoch));
        self.changed.notify_all();
    }

    /// Names the peers whose link to this rank their other end reported dead (the quiesce
    /// of a repair carries them): the drain does not wait for their markers.
    pub fn set_reported_broken(&self, peers: Vec<u32>) {
        self.inner.lock().reported_broken = peers;
    }

    pub(crate) fn take_reported_broken(&self) -> Vec<u32> {
        std::mem::take(&mut self.inner.lock().reported_broken)
    }

    /// The repair request the engine left for the control thread, if any (taken once).
    /// `(peer, reason, epoch)`: the epoch the link died in.
    pub fn take_repair_request(&self) -> Option<(u32, String, u32)> {
        self.inner.lock().repair_request.take()
    }

    /// Whether a control thread runs that can ask for a repair.
    pub fn control_alive(&self) -> bool {
        self.inner.lock().control_alive
    }

    /// Set by the control thread while it runs (a simulator that mirrors it sets it too).
    pub fn set_control_alive(&self, alive: bool) {
        self.inner.lock().control_alive = alive;
    }

    pub(crate) fn failed(&self, why: String) {
        let mut g = self.inner.lock();
        g.phase = Phase::Failed;
        self.running.store(false, Ordering::Release);
        g.error = Some(why);
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for a change (a command, or a phase reached).
    pub fn wait_change(&self, timeout: Duration) {
        let mut g = self.inner.lock();
        let _ = self.changed.wait_for(&mut g, timeout);
    }
}

fn log(rank: u32, msg: &str) {
    eprintln!("kawarimi: rank {rank}: {msg}");
}

/// Starts the control thread of `rank`: subscribes to its host leader's relay at `addr` and
/// carries out the commands that come down the control tree. `poke` runs one switch step on
/// the engine if it can take the engine without waiting long (the application is not inside
/// MPI); when it cannot, the application's own wait loop runs the step.
///
/// If its relay goes away, the rank says so once and keeps running: only switching is lost.
/// At `MPI_Finalize` ([`SwitchShared::shut_down`]) it says goodbye and leaves.
pub fn spawn_control_thread(
    addr: SocketAddr,
    secret: &JobSecret,
    rank: u32,
    host: String,
    shared: Arc<SwitchShared>,
    poke: Box<dyn Fn() + Send>,
) -> std::io::Result<()> {
    let timeout = Duration::from_secs(10);
    let mut line = Line::connect(addr, "relay", rank, secret, timeout).map_err(std::io::Error::other)?;
    let transport = Some(shared.transport());
    let pid = Some(std::process::id());
    line.send(&Request::Subscribe { version: CONTROL_VERSION, rank, transport, host: Some(host), pid })
        .map_err(std::io::Error::other)?;
    match line.recv_within(timeout).map_err(std::io::Error::other)? {
        Some(Reply::Welcome { .. }) => {}
        other => return Err(std::io::Error::other(format!("the relay at {addr} refused the subscription: {other:?}"))),
    }
    shared.set_control_alive(true);
    std::thread::Builder::new().name(format!("kawarimi-control-{rank}")).spawn(move || {
        control_loop(rank, &mut line, &shared, &*poke);
        shared.set_control_alive(false);
    })?;
    Ok(())
}

/// The rank's side of the control protocol, decided without IO: the control thread runs it
/// over its socket (with the engine run by whichever thread holds it), and the simulator over
/// its simulated network (stepping the engine itself), so the two cannot drift apart.
///
/// Use: [`RankControl::poll_repair`] for a repair the engine asks for, at any time;
/// [`RankControl::handle_reply`] for each line from the relay (a command hands the engine
/// its step); then, while [`RankControl::is_driving`], run the engine and call
/// [`RankControl::poll_report`] until it gives the report to send up.
#[derive(Debug)]
pub struct RankControl {
    rank: u32,
    /// The step under way: its epoch and the phase that completes it.
    driving: Option<(u32, Phase)>,
}

/// A step a command started (see [`RankControl::handle_reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub epoch: u32,
    /// For a quiesce that repairs links: the peers of this rank whose link to it is repaired.
    pub quiesce_repairs: Option<Vec<u32>>,
}

impl RankControl {
    pub fn new(rank: u32) -> RankControl {
        RankControl { rank, driving: None }
    }

    /// Whether a step runs, whose report is still to come.
    pub fn is_driving(&self) -> bool {
        self.driving.is_some()
    }

    /// The repair the engine asks for (a link that died outside a switch), to send up.
    pub fn poll_repair(&self, shared: &SwitchShared) -> Option<Request> {
        let (peer, reason, epoch) = shared.take_repair_request()?;
        Some(Request::Repair { rank: self.rank, peer, reason, epoch })
    }

    /// Takes one reply from the relay. A command hands the engine its step and says which
    /// step started; anything else changes nothing.
    pub fn handle_reply(&mut self, reply: Reply, shared: &SwitchShared) -> Option<Started> {
        let Reply::Command { command, epoch, transport, repair, .. } = reply else { return None };
        let peers = repair_peers(self.rank, &repair);
        let (cmd, goal, quiesce_repairs) = match command {
            SwitchCommand::Quiesce => {
                shared.set_reported_broken(peers.clone());
                (Command::Quiesce { epoch }, Phase::Detached, Some(peers))
            }
            SwitchCommand::Resume => (Command::Resume { epoch, transport, repair: peers }, Phase::Running, None),
        };
        shared.command(cmd);
        self.driving = Some((epoch, goal));
        Some(Started { epoch, quiesce_repairs })
    }

    /// While a step runs: the report to send up once the engine reached the step's goal, or
    /// failed; the client is idle again after it. `None` while the step goes on.
    pub fn poll_report(&mut self, shared: &SwitchShared) -> Option<Request> {
        let (epoch, goal) = self.driving?;
        let g = shared.inner.lock();
        let report = if g.phase == goal && !shared.is_pending() {
            let millis = g.last_step.as_secs_f64() * 1e3;
            let transport = Some(g.transport.clone());
            let broken = if goal == Phase::Detached { g.broken.clone() } else { Vec::new() };
            Request::Report { epoch, phase: goal.to_wire(), millis, detail: None, transport, broken }
        } else if g.phase == Phase::Failed {
            let detail = g.error.clone();
            Request::Report {
                epoch,
                phase: SwitchPhase::Failed,
                millis: 0.0,
                detail,
                transport: None,
                broken: Vec::new(),
            }
        } else {
            return None;
        };
        drop(g);
        self.driving = None;
        Some(report)
    }
}

/// The control thread's work until the rank finalizes or loses the control plane: it carries
/// [`RankControl`]'s requests over the socket, and pokes the engine while a step runs.
fn control_loop(rank: u32, line: &mut Line, shared: &SwitchShared, poke: &dyn Fn()) {
    let mut client = RankControl::new(rank);
    loop {
        if shared.is_shut_down() {
            let _ = line.send(&Request::Goodbye {});
            return;
        }
        if let Some(repair) = client.poll_repair(shared) {
            if line.send(&repair).is_err() {
                log(rank, "lost the control plane while asking for a repair");
                return;
            }
        }
        let reply = match line.recv_within(Duration::from_millis(100)) {
            Ok(r) => r,
            Err(_) if shared.is_shut_down() => return,
            Err(e) => {
                log(rank, &format!("lost the control plane ({e}); the job runs on, but can no longer be switched"));
                return;
            }
        };
        let Some(reply) = reply else { continue };
        if client.handle_reply(reply, shared).is_none() {
            continue;
        }
        // Drive the step until the engine reaches the goal or fails. Each round gives the
        // engine to whichever thread can run it.
        let report = loop {
            poke();
            if let Some(report) = client.poll_report(shared) {
                break report;
            }
            shared.wait_change(Duration::from_millis(2));
        };
        if line.send(&report).is_err() {
            log(rank, "lost the control plane while reporting; the job runs on, but can no longer be switched");
            return;
        }
    }
}

/// The peers of `rank` in the `pairs` a resume repairs.
pub fn repair_peers(rank: u32, pairs: &[(u32, u32)]) -> Vec<u32> {
    let mut peers: Vec<u32> = pairs
        .iter()
        .filter_map(|&(a, b)| match (a == rank, b == rank) {
            (true, false) => Some(b),
            (false, true) => Some(a),
            _ => None,
        })
        .collect();
    peers.sort_unstable();
    peers.dedup();
    peers
}
