//! The progress engine: carries out what the protocol [`Core`] asks for over a real
//! [`Transport`], and blocks politely when the application waits.
//!
//! A rank blocked in `MPI_Wait` must not starve the other ranks when there are more ranks than
//! cores, so a wait spins only briefly, then yields, then sleeps in `poll(2)` on the
//! transport's descriptors; the kernel wakes it when data arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kawarimi_transports::shm::slots::{CollSlots, SlotWait};
use kawarimi_transports::{routed, Event, PeerId, Transport, TransportError};

use crate::comm::Group;

use crate::core::{Completion, Core, EagerSend, ProbeInfo, RecvBuf, ReqId, SendData, Status};
use crate::error::{err, ErrorClass, MpiError, MpiResult};
use crate::rma::{OpKind, Window};
use crate::sched::Schedule;
use crate::switch::{Clock, Phase, Reconnect, SwitchShared};

/// Longest sleep in `poll(2)` of a rank that can be switched: how late a blocked rank may
/// notice a quiesce command.
const SWITCH_POLL_MS: u64 = 5;
/// A drain takes milliseconds; one still going after this long says on stderr what it waits
/// for, so that the rank a switch's timeout names has told why (the coordinator only knows
/// that it did not report).
const DRAIN_SLOW_AFTER: Duration = Duration::from_secs(10);

/// What the engine needs to take part in switches.
pub struct EngineSwitch {
    pub shared: Arc<SwitchShared>,
    pub reconnect: Box<dyn Reconnect>,
    /// Bound on rediscovering and reconnecting after a resume.
    pub reconnect_timeout: Duration,
    /// The epoch of the switch in progress.
    epoch: u32,
    /// How long a rank whose data link died goes on without it before the switch that
    /// repairs it must have begun; past it the rank fails, naming the peer it lost.
    pub repair_wait: Duration,
    /// Data links that died outside a drain, and how, until the switch that repairs them.
    lost: Vec<(PeerId, String)>,
    repair_deadline: Option<Instant>,
    /// When this rank began draining for the switch in progress, and whether it has said
    /// what holds the drain up (see `DRAIN_SLOW_AFTER`).
    drain_began: Option<(Instant, bool)>,
}

impl EngineSwitch {
    pub fn new(shared: Arc<SwitchShared>, reconnect: Box<dyn Reconnect>, reconnect_timeout: Duration) -> EngineSwitch {
        EngineSwitch {
            shared,
            reconnect,
            reconnect_timeout,
            epoch: 0,
            repair_wait: Duration::from_secs(30),
            lost: Vec::new(),
            repair_deadline: None,
            drain_began: None,
        }
    }
}

/// How a blocked wait behaves: it busy-polls, then polls with a `sched_yield` between rounds,
/// then sleeps in the transport until data comes. Measured in time, not rounds: a round on
/// shared memory costs tens of nanoseconds, one on TCP a system call.
#[derive(Debug, Clone)]
pub struct WaitPolicy {
    /// How long a wait busy-polls before it starts yielding the core.
    pub spin: Duration,
    /// How long it then yields between rounds before it sleeps.
    pub yield_for: Duration,
    /// Longest single sleep in the transport; short so that a wait re-checks its condition.
    pub sleep_ms: u64,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy { spin: Duration::from_micros(50), yield_for: Duration::from_micros(50), sleep_ms: 50 }
    }
}

impl WaitPolicy {
    /// The policy for `local_ranks` ranks sharing `cores` cores.
    ///
    /// With a core each, a waiting rank busy-polls for a while: the answer usually comes
    /// within microseconds and nobody else needs the core. With more ranks than cores the
    /// rank it waits for may be waiting for this very core, so it yields from its first idle
    /// round (each `sched_yield` still makes one progress round): any spin there is time
    /// taken from the rank that would answer (a 4-rank barrier on 2 cores took 12 us
    /// yielding at once, 22 us spinning 2 us first, 416 us spinning 200 us). Either way it sleeps after a few
    /// milliseconds, so an idle rank (blocked in `MPI_Recv` for a long computation elsewhere)
    /// uses almost no CPU. Environment overrides: `KAWARIMI_SPIN_US`, `KAWARIMI_YIELD_US`.
    pub fn for_host(local_ranks: u32, cores: u32) -> WaitPolicy {
        let us = Duration::from_micros;
        let mut p = if local_ranks > cores.max(1) {
            WaitPolicy { spin: Duration::ZERO, yield_for: us(2000), sleep_ms: 50 }
        } else {
            WaitPolicy { spin: us(2000), yield_for: us(1000), sleep_ms: 50 }
        };
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<u64>().ok()).map(us);
        if let Some(v) = env("KAWARIMI_SPIN_US") {
            p.spin = v;
        }
        if let Some(v) = env("KAWARIMI_YIELD_US") {
            p.yield_for = v;
        }
        p
    }
}

/// What a chained collective does when one of its schedules ends ([`Engine::start_chain`]):
/// given the engine and the schedule's buffers (or its error), the next schedule or the end.
pub type Then = Box<dyn FnMut(&mut Engine, MpiResult<Vec<Vec<u8>>>) -> MpiResult<Next> + Send>;

/// The step after a schedule of a chain.
pub enum Next {
    /// Runs this schedule next, with the chain's instance tag.
    Run(Schedule<'static>),
    /// The chain is over: its request completes with these buffers.
    Done(Vec<Vec<u8>>),
}

/// The rank's protocol core plus the transport that carries its frames.
pub struct Engine {
    pub(crate) core: Core,
    transport: Option<Box<dyn Transport>>,
    events: Vec<Event>,
    pub wait_policy: WaitPolicy,
    /// Bytes the transport may hold queued before the engine stops handing it frames.
    pub send_window_bytes: usize,
    /// The first fatal error; every later call reports it again.
    failed: Option<MpiError>,
    /// Present once the rank can be switched (it has a control thread).
    pub switch: Option<EngineSwitch>,
    /// Nonblocking collectives in progress, each behind an external request of the core, and
    /// what a chained one does when its current schedule ends ([`Engine::start_chain`]).
    schedules: Vec<(ReqId, Schedule<'static>, Option<Then>)>,
    /// This process's context ids: the engine's, because a nonblocking agreement on one
    /// (`MPI_Comm_idup`) takes them in the middle of a progress round.
    pub ctx_ids: crate::ctxids::ContextIds,
    /// Buffers (or the error) of finished nonblocking collectives, until their owner takes them.
    finished: std::collections::HashMap<ReqId, MpiResult<Vec<Vec<u8>>>>,
    /// One-sided windows, by id; every progress round applies what arrived for them.
    windows: Vec<Option<Window>>,
    /// Set while [`Engine::progress_windows`] runs: the collectives wait for the program's
    /// own thread, which alone may run its reduction functions.
    schedules_paused: bool,
    /// The time, for the engine's deadlines (the repair of a lost link).
    clock: Clock,
    /// Sends started since the last full progress round (see [`Engine::isend`]).
    sends_unprogressed: u32,
    /// The collective this rank has published in the shared-memory slots and waits in.
    in_slots: Option<InSlots>,
    /// The slot areas communicators have taken in one switch epoch: the epoch, a bit per area.
    slot_areas: (u32, u64),
    /// Collectives through the slots: completed, and runs a switch interrupted (for
    /// `KAWARIMI_REPORT`).
    slot_counts: [u64; 2],
}

/// Window `id` of `windows` (a free function, so that the engine's core stays borrowable
/// beside it).
fn window_mut(windows: &mut [Option<Window>], id: usize) -> MpiResult<&mut Window> {
    match windows.get_mut(id).and_then(Option::as_mut) {
        Some(w) => Ok(w),
        None => no_window(id),
    }
}

fn no_window<T>(id: usize) -> MpiResult<T> {
    err(ErrorClass::Win, format!("window {id} does not exist"))
}

/// A small blocking collective this rank has published in the slots ([`crate::slotcoll`])
/// and waits in. A switch that comes meanwhile must not lose it. When this rank has drained,
/// every peer has sent its marker and so publishes nothing more until the resume; then either
/// every member has published this instance (the detach waits one round, in which the
/// collective reads the slots and completes: every member does the same) or some member has
/// not (no member can have completed it, and every one runs it again after the resume, on
/// whatever the new epoch offers).
struct InSlots {
    area: usize,
    seq: u64,
    members: Arc<Group>,
    /// Set at the detach: some member had not published.
    lost: bool,
}

/// A send hands its frame to the transport without a full progress round (reading what came
/// in would only delay the caller), but every this many sends, or when the transport cannot
/// take the frame, it makes one: a rank that only sends still reads the confirmations that
/// let the core forget its frames, and still pushes a full ring's queue on.
const SENDS_PER_PROGRESS: u32 = 16;

impl Engine {
    /// `transport` may be `None` only for a job of one rank.
    pub fn new(core: Core, mut transport: Option<Box<dyn Transport>>) -> Engine {
        // Payloads a transport reads from its peers land straight in receive buffers.
        if let Some(t) = transport.as_mut() {
            t.ask_placement();
        }
        assert!(transport.is_some() || core.size() == 1, "a job of several ranks needs a transport");
        let mut engine = Engine {
            core,
            transport,
            events: Vec::new(),
            wait_policy: WaitPolicy::default(),
            send_window_bytes: 16 << 20,
            failed: None,
            switch: None,
            schedules: Vec::new(),
            ctx_ids: Default::default(),
            finished: Default::default(),
            windows: Vec::new(),
            schedules_paused: false,
            clock: Box::new(Instant::now),
            sends_unprogressed: 0,
            in_slots: None,
            slot_areas: (0, 0),
            slot_counts: [0; 2],
        };
        engine.tell_core_lossless_links();
        engine
    }

    /// Tells the core which peers the transport in place reaches over links that lose no
    /// frame they accepted, to which it need not keep copies for a repair.
    fn tell_core_lossless_links(&mut self) {
        let t = self.transport.as_deref();
        self.core.set_lossless(|p| t.is_some_and(|t| t.loses_no_accepted_frame(p)));
    }

    /// Reads the time from `clock` from now on (a simulator's).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub fn failure(&self) -> Option<&MpiError> {
        self.failed.as_ref()
    }

    fn fail(&mut self, e: MpiError) -> MpiError {
        if self.failed.is_none() {
            self.failed = Some(e.clone());
        }
        e
    }

    /// Starts a nonblocking collective; returns the request that completes with it. Its
    /// buffers are then taken with [`Engine::take_schedule`].
    pub fn start_schedule(&mut self, s: Schedule<'static>) -> MpiResult<ReqId> {
        self.start_schedule_as(s, true)
    }

    /// [`Engine::start_schedule`] in the tag space of the blocking collectives when
    /// `!nonblocking`: a blocking collective that runs behind a request (a thread of an
    /// `MPI_THREAD_MULTIPLE` program waits for it without holding the state) must still pair
    /// with the other members' blocking calls, whatever nonblocking ones come between.
    pub fn start_schedule_as(&mut self, s: Schedule<'static>, nonblocking: bool) -> MpiResult<ReqId> {
        self.start_running(s, nonblocking, None)
    }

    /// Starts a nonblocking collective made of several schedules in a row, behind one
    /// request: each time the current schedule ends, `then` gets its buffers (or its error)
    /// and says what runs next, from within the progress round that ended it, so the chain
    /// moves on without its owner's help (an owner that waits for another request first must
    /// not hold up the members waiting for this one). Every schedule of the chain travels
    /// with the first one's instance tag: each member runs the same schedules in the same
    /// order, so their messages match in order between each pair.
    pub fn start_chain(&mut self, first: Schedule<'static>, then: Then) -> MpiResult<ReqId> {
        self.start_running(first, true, Some(then))
    }

    fn start_running(&mut self, mut s: Schedule<'static>, nonblocking: bool, then: Option<Then>) -> MpiResult<ReqId> {
        s.start(nonblocking);
        let id = self.core.new_external();
        self.schedules.push((id, s, then));
        // Its first sends leave now (progress advances the schedules, then moves frames).
        self.progress()?;
        Ok(id)
    }

    /// Progresses once if collective `id` (from [`Engine::start_schedule_as`]) has not
    /// finished; once it has, forgets its request and returns its buffers.
    pub fn try_finish_schedule(&mut self, id: ReqId) -> MpiResult<Option<Vec<Vec<u8>>>> {
        if !self.test(id)? {
            return Ok(None);
        }
        self.take_completion(id);
        match self.take_schedule(id) {
            Some(got) => got.map(Some),
            None => err(ErrorClass::Intern, "a finished collective lost its buffers"),
        }
    }

    /// The buffers of a finished nonblocking collective (once its request has completed).
    pub fn take_schedule(&mut self, id: ReqId) -> Option<MpiResult<Vec<Vec<u8>>>> {
        self.finished.remove(&id)
    }

    /// Runs every collective in progress as far as it goes; completes the finished ones' requests.
    fn advance_schedules(&mut self) -> MpiResult<bool> {
        if self.schedules_paused {
            return Ok(false);
        }
        let mut did_work = false;
        let mut i = 0;
        while i < self.schedules.len() {
            let (id, s, _) = &mut self.schedules[i];
            let id = *id;
            let failed = match s.advance(&mut self.core) {
                Ok(false) => {
                    i += 1;
                    continue;
                }
                Ok(true) => None,
                Err(e) => Some(e),
            };
            did_work = true;
            let (_, s, then) = self.schedules.swap_remove(i);
            let tag = s.tag();
            let mut ended = failed.map_or_else(|| Ok(s.into_slots()), Err);
            if let Some(mut then) = then {
                match then(self, ended) {
                    Ok(Next::Run(mut next)) => {
                        // Behind the schedules still to be advanced in this round.
                        next.continue_with_tag(tag);
                        self.schedules.push((id, next, Some(then)));
                        continue;
                    }
                    Ok(Next::Done(bufs)) => ended = Ok(bufs),
                    Err(e) => ended = Err(e),
                }
            }
            // The request completes either way; its owner finds the error with the buffers.
            self.finished.insert(id, ended);
            self.core.complete_external(id, crate::core::Status::default());
        }
        Ok(did_work)
    }

    /// Applies what has arrived for every window.
    fn advance_windows(&mut self) -> MpiResult<bool> {
        let mut did_work = false;
        for w in self.windows.iter_mut().flatten() {
            did_work |= w.advance(&mut self.core)?;
        }
        Ok(did_work)
    }

    // ---------------------------------------------------------------------------------------
    // One-sided windows (see `crate::rma`): the shim names a window by the id `add_window`
    // gives, and every operation and synchronisation goes through these.
    // ---------------------------------------------------------------------------------------

    /// One progress round for another thread than the program's (the one-sided progress
    /// thread): frames move and windows apply what arrived, but no collective advances, as
    /// one may run the program's reduction function, which must run on the program's thread.
    pub fn progress_windows(&mut self) -> MpiResult<bool> {
        self.schedules_paused = true;
        let r = self.progress();
        self.schedules_paused = false;
        r
    }

    /// Takes a window in; returns its id.
    pub fn add_window(&mut self, w: Window) -> usize {
        match self.windows.iter().position(Option::is_none) {
            Some(i) => {
                self.windows[i] = Some(w);
                i
            }
            None => {
                self.windows.push(Some(w));
                self.windows.len() - 1
            }
        }
    }

    pub fn window(&self, id: usize) -> MpiResult<&Window> {
        match self.windows.get(id).and_then(Option::as_ref) {
            Some(w) => Ok(w),
            None => no_window(id),
        }
    }

    /// Sends one operation message to `target`, after posting the receive of its reply into
    /// `reply` if it has one; returns that receive.
    pub fn window_op(
        &mut self,
        id: usize,
        target: i32,
        message: Vec<u8>,
        reply: Option<RecvBuf>,
    ) -> MpiResult<Option<ReqId>> {
        let w = window_mut(&mut self.windows, id)?;
        let posted = match reply {
            Some(buf) => Some(w.recv_reply(&mut self.core, target, buf)?),
            None => None,
        };
        w.send(&mut self.core, target, message)?;
        self.progress()?;
        Ok(posted)
    }

    /// `MPI_Win_fence`'s first half: this process enters the fence; every member waits until
    /// all have entered it and every operation that targets it from before is applied
    /// ([`Engine::window_fence_wait`], see `crate::rma`).
    pub fn window_fence_enter(&mut self, id: usize) -> MpiResult<()> {
        window_mut(&mut self.windows, id)?.enter_fence(&mut self.core)?;
        self.progress().map(|_| ())
    }

    /// The second half: waits (`block`) or checks once whether every member has entered the
    /// fence and what they sent before it is applied; says whether it is so.
    pub fn window_fence_wait(&mut self, id: usize, block: bool) -> MpiResult<bool> {
        let done = |e: &mut Engine| e.windows[id].as_ref().is_none_or(Window::fence_done);
        if block {
            self.block_on(done, None)?;
        } else {
            self.progress()?;
            if !done(self) {
                return Ok(false);
            }
        }
        match self.windows[id].as_mut() {
            Some(w) => w.take_failure().map(|_| true),
            None => Ok(true),
        }
    }

    /// Sends a post or complete marker (see `crate::rma::OpKind`) to each of `ranks`.
    pub fn window_markers(&mut self, id: usize, kind: OpKind, ranks: &[i32]) -> MpiResult<()> {
        window_mut(&mut self.windows, id)?.send_markers(&mut self.core, kind, ranks)?;
        self.progress()?;
        Ok(())
    }

    /// Takes a post or complete marker from each of `ranks`, waiting for them with `block`
    /// (`MPI_Win_start`, `MPI_Win_wait`) or not (`MPI_Win_test`); says whether it took them.
    pub fn window_take_markers(&mut self, id: usize, kind: OpKind, ranks: &[i32], block: bool) -> MpiResult<bool> {
        let mut taken = false;
        let mut try_take = |e: &mut Engine| {
            taken = taken || e.windows.get_mut(id).and_then(Option::as_mut).is_none_or(|w| w.take_markers(kind, ranks));
            taken
        };
        if block {
            self.block_on(&mut try_take, None)?;
        } else {
            self.progress()?;
            try_take(self);
        }
        window_mut(&mut self.windows, id)?.take_failure()?;
        Ok(taken)
    }

    /// The first error the window met or was told of (an operation of this process's that a
    /// target could not apply), after applying what has arrived; reported once.
    pub fn window_failure(&mut self, id: usize) -> MpiResult<()> {
        self.advance_windows()?;
        window_mut(&mut self.windows, id)?.take_failure()
    }

    /// Forgets a window (after its last fence: nothing more arrives for it).
    pub fn remove_window(&mut self, id: usize) -> Option<Window> {
        self.windows.get_mut(id).and_then(Option::take)
    }

    /// Moves frames from the core to the transport and from the transport to the core, and
    /// runs the collectives in progress, without blocking. Returns whether anything happened.
    pub fn progress(&mut self) -> MpiResult<bool> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.sends_unprogressed = 0;
        self.check_repair_deadline()?;
        let scheduled = self.advance_schedules()? | self.advance_windows()?;
        if self.transport.is_none() {
            return Ok(scheduled);
        }
        let mut lost = Vec::new();
        let mut did_work = scheduled | self.send_queued(&mut lost)?;
        let Some(transport) = self.transport.as_mut() else { return Ok(did_work) };
        self.events.clear();
        if let Err(e) = transport.progress(&mut self.events) {
            return Err(self.fail(MpiError::new(ErrorClass::Other, e.to_string())));
        }
        // Most rounds of a wait bring nothing: they return here, without touching the event
        // vector, the lost links or the gaps.
        if self.events.is_empty() && lost.is_empty() && !self.core.has_gaps() && !self.core.has_transmit() {
            return Ok(did_work);
        }
        // Taken out to be drained, and put back with its capacity for the next round: a vector
        // dropped here would be allocated again by every round that brings a frame.
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            did_work = true;
            match ev {
                Event::Frame { peer, header, payload } => {
                    if let Err(e) = self.core.handle_frame(peer, header, payload) {
                        return Err(self.fail(e));
                    }
                }
                Event::Incoming { peer, token, header } => {
                    let at = self.core.placement(peer, &header);
                    if let Err(e) = transport.place(peer, token, at) {
                        return Err(self.fail(MpiError::new(ErrorClass::Other, e.to_string())));
                    }
                }
                Event::LinkDown { peer, reason } => lost.push((peer, reason)),
            }
        }
        self.events = events;
        for (peer, reason) in lost {
            self.link_lost(peer, reason, Loss::LinkDown)?;
        }
        for (peer, reason) in self.core.take_gaps() {
            self.link_lost(peer, reason, Loss::Gap)?;
        }
        // What the frames just taken made the core answer (a confirmation a sender waits for,
        // a clear-to-send) goes out now: the application may leave MPI after this call (an
        // `MPI_Test` that succeeded) and compute for a long time.
        self.send_outbox()?;
        Ok(did_work)
    }

    /// [`Engine::send_queued`], then a link found down is lost.
    fn send_outbox(&mut self) -> MpiResult<()> {
        let mut lost = Vec::new();
        self.send_queued(&mut lost)?;
        for (peer, reason) in lost {
            self.link_lost(peer, reason, Loss::LinkDown)?;
        }
        Ok(())
    }

    /// Hands the core's queued frames to the transport. Frames wait in the core's (bounded)
    /// outbox while the transport holds more than `send_window_bytes`, so the transport's own
    /// queue bound is never hit. A link found down goes into `lost` (the core keeps the frame
    /// until the peer confirms it: the repair sends it). Returns whether anything was sent.
    fn send_queued(&mut self, lost: &mut Vec<(PeerId, String)>) -> MpiResult<bool> {
        let Some(transport) = self.transport.as_mut() else { return Ok(false) };
        let mut sent = false;
        // The outbox first: it is empty on most rounds of a wait, and cheaper to look at.
        while self.core.has_transmit() && transport.queued_bytes() < self.send_window_bytes {
            let Some(t) = self.core.poll_transmit() else { break };
            match transport.send(t.peer, &t.header, t.payload) {
                Ok(()) => sent = true,
                Err(TransportError::LinkDown { peer, reason }) => {
                    self.core.mark_broken(peer);
                    lost.push((peer, reason));
                }
                Err(e) => return Err(self.fail(MpiError::new(ErrorClass::Other, e.to_string()))),
            }
        }
        Ok(sent)
    }

    /// The data link to `peer` went down. Expected once the peer has finalized, or once it
    /// has drained (its marker arrived, so nothing more can come on this link, and it
    /// detaches only once it holds all of ours). Otherwise frames may be lost on it: a rank
    /// that can be switched keeps going with its other peers and asks for a switch that
    /// repairs the pair (the core sends the peer again whatever it has not confirmed); one
    /// that cannot fails, naming the peer.
    ///
    /// A gap in what `peer` sent is repaired the same way: the repair sends the missing frames
    /// again. The link itself works, so frames for the peer (a drain marker among them) still
    /// go: the peer may not know of the gap and wait for them.
    fn link_lost(&mut self, peer: PeerId, reason: String, loss: Loss) -> MpiResult<()> {
        if loss == Loss::LinkDown && (self.core.peer_said_bye(peer) || self.core.peer_marker_seen(peer)) {
            return Ok(());
        }
        let unkept = if loss == Loss::LinkDown { self.core.unrepairable(peer) } else { 0 };
        if unkept > 0 {
            // Shared memory went down with frames in it: no copy of them exists to send again.
            let msg = format!(
                "lost rank {peer}: {reason}; {unkept} frames sent to it over shared memory were not \
                 confirmed and are gone with the link, so it cannot be repaired"
            );
            return Err(self.fail(MpiError::new(ErrorClass::Other, msg)));
        }
        let Some(sw) = self.switch.as_mut().filter(|s| s.shared.control_alive()) else {
            return Err(self.fail(MpiError::new(ErrorClass::Other, format!("lost rank {peer}: {reason}"))));
        };
        if sw.lost.iter().any(|(p, _)| *p == peer) {
            return Ok(());
        }
        let me = self.core.rank();
        // Formatted first and written as one piece, so that the lines of ranks that lose a
        // link together do not interleave (and test harnesses capture it).
        let line = format!(
            "kawarimi: rank {me}: lost its data link to rank {peer} ({reason}); the job goes on once it is repaired\n"
        );
        eprint!("{line}");
        if loss == Loss::LinkDown {
            self.core.mark_broken(peer);
        }
        if sw.shared.phase() == Phase::Running {
            // During a switch the report on detach carries the loss instead.
            sw.shared.ask_repair(peer, reason.clone(), self.core.epoch());
            sw.repair_deadline.get_or_insert((self.clock)() + sw.repair_wait);
        }
        sw.lost.push((peer, reason));
        Ok(())
    }

    /// Fails the rank when a link died and no switch came to repair it in time.
    fn check_repair_deadline(&mut self) -> MpiResult<()> {
        let Some(sw) = self.switch.as_ref() else { return Ok(()) };
        let Some(deadline) = sw.repair_deadline else { return Ok(()) };
        if sw.shared.phase() != Phase::Running || (self.clock)() < deadline {
            return Ok(());
        }
        let (peer, reason) = sw.lost.first().cloned().unwrap_or_default();
        let wait = sw.repair_wait;
        let msg = format!("lost rank {peer}: {reason}; no switch came to repair the link within {wait:?}");
        Err(self.fail(MpiError::new(ErrorClass::Other, msg)))
    }

    /// Runs the switch step the control thread asked for, if any: begins the drain, detaches
    /// once drained, or rediscovers and reconnects on resume. Cheap when nothing is asked.
    pub fn switch_step(&mut self) -> MpiResult<()> {
        let Some(sw) = self.switch.as_ref() else { return Ok(()) };
        // The data path's check, once per progress round: two loads, no lock.
        if sw.shared.is_running() && !sw.shared.is_pending() {
            return Ok(());
        }
        let shared = sw.shared.clone();
        match shared.phase() {
            Phase::Running => {
                if !shared.is_pending() {
                    return Ok(());
                }
                if let Some(epoch) = shared.take_quiesce() {
                    // (Not `link_lost`: this switch is the repair, none is to be asked for.)
                    for peer in shared.take_reported_broken() {
                        if !self.core.peer_said_bye(peer) {
                            self.core.mark_broken(peer);
                        }
                    }
                    if let Err(e) = self.core.begin_drain() {
                        shared.failed(e.to_string());
                        return Err(self.fail(e));
                    }
                    let now = (self.clock)();
                    let sw = self.switch.as_mut().expect("checked");
                    (sw.epoch, sw.drain_began) = (epoch, Some((now, false)));
                    shared.reached(Phase::Draining, epoch);
                } else if shared.take_resume().is_some() {
                    // Not quiesced (a quiesce that failed elsewhere): already running.
                    shared.reached(Phase::Running, self.core.epoch());
                }
            }
            Phase::Draining => {
                // A duplicated quiesce (a client that retried) changes nothing.
                let _ = shared.take_quiesce();
                if let Err(e) = self.progress() {
                    // The control thread must learn of it and report it, naming the cause
                    // (a peer lost before its marker), rather than wait for a timeout.
                    shared.failed(e.to_string());
                    return Err(e);
                }
                let queued = self.transport.as_ref().map_or(0, |t| t.queued_bytes());
                if self.core.is_drained() && queued == 0 && !self.slots_hold_detach() {
                    // What the epoch's networks carried, for `ctl status` while detached
                    // (so a test can tell which network moved the data).
                    let routes = self.transport_summary();
                    let carried = self.transport.as_deref().map(routed::carried).unwrap_or_default();
                    // Detach: dropping the transport closes every socket and releases every
                    // device resource it held. Nothing of it is touched again.
                    self.transport = None;
                    self.refresh_waker();
                    shared.set_broken(self.core.broken_peers());
                    let epoch = self.switch.as_ref().expect("checked").epoch;
                    shared.set_transport(format!("detached; before switch {epoch}: ran {routes}, sent {carried}"));
                    shared.reached(Phase::Detached, epoch);
                } else {
                    self.say_if_drain_slow(queued);
                }
            }
            Phase::Detached => {
                let _ = shared.take_quiesce();
                if let Some((epoch, transport, repair)) = shared.take_resume() {
                    shared.reached(Phase::Reconnecting, epoch);
                    let sw = self.switch.as_mut().expect("checked");
                    let timeout = sw.reconnect_timeout;
                    match sw.reconnect.reconnect(epoch, transport.as_deref(), &repair, timeout) {
                        Ok(mut t) => {
                            (sw.lost, sw.repair_deadline) = (Vec::new(), None);
                            // Also to the peers this rank saw break that the coordinator did
                            // not name (a report of a failed step that came too late): a
                            // replayed frame the peer has is dropped, one it lacks fills the
                            // gap the dead link left.
                            let mut replay = repair;
                            replay.extend(self.core.broken_peers());
                            self.core.resume(epoch, &replay);
                            if let Some(t) = t.as_mut() {
                                t.ask_placement();
                            }
                            self.transport = t;
                            self.tell_core_lossless_links();
                            self.refresh_waker();
                            shared.set_transport(self.transport_summary());
                            shared.reached(Phase::Running, epoch);
                        }
                        Err(e) => {
                            shared.failed(e.to_string());
                            return Err(self.fail(e));
                        }
                    }
                } else if !shared.control_alive() {
                    // Only the control thread brings the resume: without it this rank would
                    // wait detached for ever.
                    let epoch = self.switch.as_ref().expect("checked").epoch;
                    let msg = format!("lost the control plane while detached for switch {epoch}: no resume can come");
                    shared.failed(msg.clone());
                    return Err(self.fail(MpiError::new(ErrorClass::Other, msg)));
                }
            }
            Phase::Reconnecting | Phase::Failed => {}
        }
        Ok(())
    }

    /// Once per switch, when the drain has gone on past `DRAIN_SLOW_AFTER`: what it waits for.
    fn say_if_drain_slow(&mut self, queued_bytes: usize) {
        let now = (self.clock)();
        let Some((began, said)) = self.switch.as_mut().and_then(|sw| sw.drain_began.as_mut()) else { return };
        if *said || now.duration_since(*began) < DRAIN_SLOW_AFTER {
            return;
        }
        *said = true;
        let waited = now.duration_since(*began).as_secs_f64();
        let (me, epoch) = (self.core.rank(), self.switch.as_ref().map_or(0, |sw| sw.epoch));
        let line = format!(
            "kawarimi: rank {me}: the drain of switch {epoch} has gone on for {waited:.1} s: {}\n",
            self.drain_holdup(queued_bytes)
        );
        eprint!("{line}");
    }

    /// What a drain that has not finished waits for.
    pub fn drain_holdup(&self, queued_bytes: usize) -> String {
        format!(
            "markers missing from ranks {:?}, {} frames not yet handed to the transport, {queued_bytes} bytes the transport ({}) has not written out, broken links to ranks {:?}",
            self.core.markers_missing(),
            self.core.outbox_frames(),
            self.transport.as_deref().map_or("none".into(), |t| t.summary()),
            self.core.broken_peers(),
        )
    }

    /// Lets the control thread wake this engine's transport sleep (call after the transport
    /// or the switch changes).
    pub fn refresh_waker(&self) {
        if let Some(sw) = &self.switch {
            sw.shared.set_waker(self.transport.as_ref().and_then(|t| t.waker()));
        }
    }

    /// The process of world rank `peer` when this rank may copy straight to and from its
    /// memory (itself, or a co-located peer the kernel lets it reach: see
    /// [`Transport::peer_process`]); `None` otherwise, and while detached.
    pub fn peer_process(&self, peer: PeerId) -> Option<u32> {
        if peer == self.core.rank() {
            return Some(std::process::id());
        }
        self.transport.as_ref()?.peer_process(peer)
    }

    /// What carries the data path: the transport's kind (`tcp`), `detached`, or `none` for a
    /// job of one.
    pub fn transport_summary(&self) -> String {
        match &self.transport {
            Some(t) => t.summary(),
            None if self.core.size() == 1 => "none".into(),
            None => "detached".into(),
        }
    }

    /// What the data path ran on and carried since the last resume, and what its transports
    /// counted: `ran verbs:1, sent verbs 12.0 MiB, tcp 0 B; registrations made 3, reused 97, ...`.
    pub fn transport_report(&self) -> String {
        let Some(t) = self.transport.as_deref() else { return format!("ran {}", self.transport_summary()) };
        let counted = routed::counted(t);
        let counted = if counted.is_empty() { String::new() } else { format!("; {counted}") };
        let [done, again] = self.slot_counts;
        let slots = if done + again == 0 {
            String::new()
        } else {
            format!("; collectives through the slots {done} (run again after a switch {again})")
        };
        format!("ran {}, sent {}{counted}{slots}", t.summary(), routed::carried(t))
    }

    /// Whether a switch holds the data path (draining, detached or reconnecting).
    pub fn switching(&self) -> bool {
        self.switch.as_ref().is_some_and(|s| !s.shared.is_running())
    }

    /// Drives progress until `done` holds, spinning, then yielding, then sleeping.
    pub(crate) fn block_until(&mut self, mut done: impl FnMut(&mut Core) -> bool) -> MpiResult<()> {
        self.block_on(|e| done(&mut e.core), None)
    }

    /// [`Engine::block_until`] with the whole engine to look at, sleeping so that publishers
    /// of the slots `slots` waits for wake it.
    fn block_on(&mut self, mut done: impl FnMut(&mut Engine) -> bool, slots: Option<&SlotWait<'_>>) -> MpiResult<()> {
        // Rounds without work since the last that had some, and when the clock was first read
        // in that stretch (the real clock, not the engine's: this is about the core's time,
        // and no simulator blocks here). The clock is read every `CLOCK_EVERY` idle rounds
        // only, as a read costs as much as a round and most waits end within a few; at the
        // first idle round too when there is no spin to time, since the yields that follow
        // cost far more than a read (a spin of S so lasts S plus `CLOCK_EVERY` rounds).
        const CLOCK_EVERY: u32 = 32;
        let mut idle_rounds: u32 = 0;
        let mut idle_since: Option<Instant> = None;
        let mut idle = Duration::ZERO;
        loop {
            self.switch_step()?;
            let did_work = self.progress()?;
            let finished = done(self);
            // What the condition itself queued (a schedule's next sends, or the last send of
            // one that finishes) goes to the transport now: left in the outbox it would wait
            // for the next MPI call, or for this rank's sleep, while peers wait for it. Only
            // what the transport took counts as work: with its window full the frames wait,
            // and this rank must still yield and sleep rather than spin on them.
            let flushed = self.core.has_transmit() && self.progress()?;
            if finished {
                return Ok(());
            }
            if did_work || flushed {
                (idle_rounds, idle_since, idle) = (0, None, Duration::ZERO);
                continue;
            }
            let p = &self.wait_policy;
            if idle_rounds.is_multiple_of(CLOCK_EVERY) && (idle_rounds > 0 || p.spin.is_zero()) {
                idle = idle_since.get_or_insert_with(Instant::now).elapsed();
            }
            idle_rounds = idle_rounds.wrapping_add(1);
            if idle < p.spin {
                std::hint::spin_loop();
            } else if idle < p.spin + p.yield_for {
                std::thread::yield_now();
            } else if let Some(t) = self.transport.as_mut() {
                // A command from the control thread wakes poll(2) through the transport's
                // waker; a transport without one gets a short sleep to keep a quiesce prompt.
                let wakeable = self.switch.as_ref().is_none_or(|s| s.shared.has_waker());
                let sleep = Duration::from_millis(if wakeable { p.sleep_ms } else { p.sleep_ms.min(SWITCH_POLL_MS) });
                let slept = match slots {
                    Some(w) => t.wait_slots(sleep, w),
                    None => t.wait(sleep),
                };
                if let Err(e) = slept {
                    return Err(self.fail(MpiError::new(ErrorClass::Other, e.to_string())));
                }
            } else if self.switching() {
                // Detached: wait for the next command (a resume) rather than for data.
                let shared = self.switch.as_ref().expect("switching").shared.clone();
                shared.wait_change(Duration::from_millis(p.sleep_ms));
            } else {
                // One rank, nothing to wait for: the condition can only change by our own
                // actions, so a false one would never become true.
                return Err(MpiError::new(
                    ErrorClass::Intern,
                    "a single-rank job waits for a message that can never arrive",
                ));
            }
        }
    }

    /// The collective slots shared with the co-located peers, while the transport has them.
    pub fn coll_slots(&self) -> Option<&CollSlots> {
        self.transport.as_deref().and_then(|t| t.coll_slots())
    }

    /// Waits while a switch is under way (a blocking call made meanwhile waits for its end).
    pub fn settle(&mut self) -> MpiResult<()> {
        if self.switching() {
            self.block_on(|e| !e.switching(), None)?;
        }
        Ok(())
    }

    /// The slot areas free in `epoch`, a bit each.
    pub fn free_slot_areas(&self, epoch: u32) -> u64 {
        let all = u64::MAX >> (64 - kawarimi_transports::shm::slots::AREAS);
        if self.slot_areas.0 == epoch {
            all & !self.slot_areas.1
        } else {
            all
        }
    }

    /// Takes slot area `area` in `epoch` for good: a communicator's last collective may still
    /// be read by a slow member after it is freed, so an area is not given to another
    /// communicator before the next switch brings new segments.
    pub fn claim_slot_area(&mut self, epoch: u32, area: usize) {
        if epoch < self.slot_areas.0 {
            // An epoch already over: its segments, and the area with them, are gone.
            return;
        }
        if self.slot_areas.0 != epoch {
            self.slot_areas = (epoch, 0);
        }
        self.slot_areas.1 |= 1 << area;
    }

    /// Publishes `mine` as this rank's part of instance `seq` in slot area `area`, then waits
    /// until every member of `members` has published it: `true`, and the parts are to be read
    /// with [`Engine::coll_slots`] at once. `false` when a switch under way kept this rank from
    /// publishing, or one took the slots away before every member had published: the
    /// collective is to be run again.
    pub fn gather_in_slots(&mut self, area: usize, seq: u64, members: &Arc<Group>, mine: &[u8]) -> MpiResult<bool> {
        if self.switching() {
            return Ok(false);
        }
        let Some(slots) = self.coll_slots() else { return Ok(false) };
        slots.publish(area, seq, mine, members.members());
        let want = SlotWait { area, seq, members: members.members() };
        if !slots.ready(&want) {
            self.in_slots = Some(InSlots { area, seq, members: members.clone(), lost: false });
            let waited = self.block_on(
                |e| match &e.in_slots {
                    Some(InSlots { lost: true, .. }) => !e.switching(),
                    _ => e.coll_slots().is_some_and(|s| s.ready(&want)),
                },
                Some(&want),
            );
            let lost = self.in_slots.take().is_some_and(|s| s.lost);
            waited?;
            if lost {
                self.slot_counts[1] += 1;
                return Ok(false);
            }
        }
        self.slot_counts[0] += 1;
        Ok(true)
    }

    /// Before the detach: whether it must wait a round, for the collective waiting in the
    /// slots to read them (every member has published it); otherwise marks that collective
    /// to run again (see [`InSlots`]).
    fn slots_hold_detach(&mut self) -> bool {
        let Some(state) = self.in_slots.as_ref() else { return false };
        let want = SlotWait { area: state.area, seq: state.seq, members: state.members.members() };
        let readable = self.coll_slots().is_some_and(|s| s.ready(&want));
        if !readable {
            self.in_slots.as_mut().expect("just seen").lost = true;
        }
        readable
    }

    /// Blocks until request `id` completes.
    pub fn wait(&mut self, id: ReqId) -> MpiResult<()> {
        // A request already complete (an eager send, a receive whose message was there) needs
        // no progress round: that round would only delay the caller's next message.
        if self.core.is_complete(id) {
            return Ok(());
        }
        self.block_until(|c| c.is_complete(id))
    }

    /// A request that completes when [`Engine::complete_external`] says so (a generalized
    /// request, §12.2).
    pub fn new_external(&mut self) -> ReqId {
        self.core.new_external()
    }

    pub fn complete_external(&mut self, id: ReqId) {
        self.core.complete_external(id, Status::default());
    }

    /// Blocks until request `id` is no longer pending: complete, or already taken by its
    /// owner (a one-sided operation's request that a flush must see finished, whether or not
    /// the program has waited for it).
    pub fn wait_settled(&mut self, id: ReqId) -> MpiResult<()> {
        if !self.core.is_pending(id) {
            return Ok(());
        }
        self.block_until(|c| !c.is_pending(id))
    }

    // ---------------------------------------------------------------------------------------
    // Requests: the shim's one door into the point-to-point protocol. Each operation posts to
    // the core and makes the progress that belongs with it, so no caller repeats the rule.
    // ---------------------------------------------------------------------------------------

    /// The protocol core, to read (rank, epoch, counts). Everything that changes it goes
    /// through the engine.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Starts a send (see [`Core::isend`]) and hands its frame to the transport at once, so
    /// that an eager message leaves now rather than at the next MPI call (see
    /// `SENDS_PER_PROGRESS` for when it also progresses).
    pub fn isend(&mut self, dest: i32, ctx: u32, tag: i32, data: SendData, sync: bool) -> MpiResult<ReqId> {
        let id = self.core.isend(dest, ctx, tag, data, sync)?;
        self.sent()?;
        Ok(id)
    }

    /// A standard-mode send of `bytes` that completes at once if it goes eagerly (see
    /// [`Core::send_eager`]); `false` when it is too large for that (the caller then uses
    /// [`Engine::isend`]). Its frame leaves now, as for `isend`: straight from `bytes` into
    /// the transport when nothing queued must go first.
    pub fn send_eager(&mut self, dest: i32, ctx: u32, tag: i32, bytes: &[u8]) -> MpiResult<bool> {
        // A transport that holds more than its window takes no frame past the outbox.
        let window = self.send_window_bytes;
        let may_go_direct = self.transport.as_ref().is_some_and(|t| t.queued_bytes() < window);
        let (peer, header) = match self.core.send_eager(dest, ctx, tag, bytes, may_go_direct)? {
            None => return Ok(false),
            Some(EagerSend::Queued) => {
                self.sent()?;
                return Ok(true);
            }
            Some(EagerSend::Direct { peer, header }) => (peer, header),
        };
        let t = self.transport.as_mut().expect("may_go_direct");
        match t.send_copy(peer, &header, bytes) {
            Ok(()) => {}
            Err(TransportError::LinkDown { peer, reason }) => {
                // The core keeps the frame until the peer confirms it: the repair sends it.
                self.core.mark_broken(peer);
                self.link_lost(peer, reason, Loss::LinkDown)?;
            }
            Err(e) => return Err(self.fail(MpiError::new(ErrorClass::Other, e.to_string()))),
        }
        self.sends_unprogressed += 1;
        if self.sends_unprogressed >= SENDS_PER_PROGRESS {
            self.progress()?;
        }
        Ok(true)
    }

    /// After a send was queued: its frame goes to the transport, with a progress round when
    /// due (`SENDS_PER_PROGRESS`).
    fn sent(&mut self) -> MpiResult<()> {
        self.sends_unprogressed += 1;
        self.send_outbox()?;
        if self.core.has_transmit() || self.sends_unprogressed >= SENDS_PER_PROGRESS {
            self.progress()?;
        }
        Ok(())
    }

    /// Posts a receive (see [`Core::irecv`]). It is matched against what arrived already;
    /// progress comes with the next test or wait.
    pub fn irecv(&mut self, source: i32, ctx: u32, tag: i32, buf: RecvBuf) -> MpiResult<ReqId> {
        self.core.irecv(source, ctx, tag, buf)
    }

    /// Posts the receive of a message taken by [`Engine::probe_matched`] (`MPI_Mrecv`).
    pub fn mrecv(&mut self, message: u64, buf: RecvBuf) -> MpiResult<ReqId> {
        self.core.mrecv(message, buf)
    }

    /// Whether request `id` is complete; progresses once first if it is not yet.
    pub fn test(&mut self, id: ReqId) -> MpiResult<bool> {
        if !self.core.is_complete(id) {
            self.progress()?;
        }
        Ok(self.core.is_complete(id))
    }

    /// Progresses once, then says which requests are complete (`None`, a request the caller
    /// completed itself, counts as complete): the one progress round of `MPI_Testall`,
    /// `MPI_Testany` and `MPI_Waitany`'s polls.
    pub fn test_each(&mut self, ids: &[Option<ReqId>]) -> MpiResult<Vec<bool>> {
        self.progress()?;
        Ok(ids.iter().map(|id| id.is_none_or(|id| self.core.is_complete(id))).collect())
    }

    /// Blocks until at least one of `ids` completes.
    pub fn wait_any(&mut self, ids: &[ReqId]) -> MpiResult<()> {
        self.block_until(|c| ids.iter().any(|&id| c.is_complete(id)))
    }

    /// The completion of a complete request, which the core then forgets.
    pub fn take_completion(&mut self, id: ReqId) -> Option<Completion> {
        self.core.take_completion(id)
    }

    /// Progresses once, then the status of request `id` (if one is given) if it is complete,
    /// without taking it (`MPI_Request_get_status`, which progresses whatever it is asked).
    pub fn status_now(&mut self, id: Option<ReqId>) -> MpiResult<Option<Status>> {
        self.progress()?;
        Ok(id.and_then(|id| self.core.peek_status(id)))
    }

    /// Progresses once, then takes and drops the completions of those of `ids` that are
    /// complete; returns which were. For sends whose completion only frees resources
    /// (buffered sends).
    pub fn reap(&mut self, ids: &[ReqId]) -> MpiResult<Vec<bool>> {
        self.progress()?;
        Ok(ids.iter().map(|&id| self.core.take_completion(id).is_some()).collect())
    }

    /// Lets request `id` finish in the background and be forgotten (`MPI_Request_free`).
    pub fn free_request(&mut self, id: ReqId) -> MpiResult<()> {
        self.core.free_request(id)
    }

    /// Cancels receive `id` if it has not matched (`MPI_Cancel`); whether it was.
    pub fn cancel_recv(&mut self, id: ReqId) -> bool {
        self.core.cancel_recv(id)
    }

    /// Progresses once, then looks for a message matching `(source, ctx, tag)`; with `block`,
    /// waits until one arrives (`MPI_Probe`/`MPI_Iprobe`).
    pub fn probe(&mut self, source: i32, ctx: u32, tag: i32, block: bool) -> MpiResult<Option<ProbeInfo>> {
        self.progress()?;
        let found = self.core.iprobe(source, ctx, tag);
        if found.is_some() || !block {
            return Ok(found);
        }
        self.block_until(|c| c.iprobe(source, ctx, tag).is_some())?;
        Ok(self.core.iprobe(source, ctx, tag))
    }

    /// As [`Engine::probe`], and takes the message out of matching for a later
    /// [`Engine::mrecv`] (`MPI_Mprobe`/`MPI_Improbe`).
    pub fn probe_matched(
        &mut self,
        source: i32,
        ctx: u32,
        tag: i32,
        block: bool,
    ) -> MpiResult<Option<(u64, ProbeInfo)>> {
        self.progress()?;
        if block {
            self.block_until(|c| c.iprobe(source, ctx, tag).is_some())?;
        }
        Ok(self.core.improbe(source, ctx, tag))
    }

    /// Flushes every queued frame to the transport and the kernel (used before finalize).
    pub fn flush(&mut self) -> MpiResult<()> {
        loop {
            self.progress()?;
            let queued = self.transport.as_ref().map_or(0, |t| t.queued_bytes());
            if !self.core.has_transmit() && queued == 0 {
                return Ok(());
            }
            if let Some(t) = self.transport.as_mut() {
                if let Err(e) = t.wait(Duration::from_millis(self.wait_policy.sleep_ms)) {
                    return Err(self.fail(MpiError::new(ErrorClass::Other, e.to_string())));
                }
            }
        }
    }

    /// Sends `Bye` to every peer and waits until every peer has said `Bye` too, so that no
    /// rank closes a link another still reads from.
    pub fn finalize(&mut self) -> MpiResult<()> {
        self.core.say_bye()?;
        self.flush()?;
        let me = self.core.rank();
        let size = self.core.size();
        self.block_until(|c| (0..size).filter(|&p| p != me).all(|p| c.peer_said_bye(p)))?;
        // Drop order is teardown order: the transport closes its sockets here.
        self.transport = None;
        Ok(())
    }

    /// The code of the first `MPI_Abort` a peer announced, if one did.
    pub fn peer_abort_code(&self) -> Option<i32> {
        self.core.peer_abort_code()
    }

    /// Best-effort: tells every peer the job is aborting, without blocking for long.
    pub fn abort(&mut self, code: i32, message: &str) {
        self.core.say_abort(code, message);
        let _ = self.progress();
        if let Some(t) = self.transport.as_mut() {
            let _ = t.wait(Duration::from_millis(10));
            let mut ev = Vec::new();
            let _ = t.progress(&mut ev);
        }
    }
}

/// How frames from a peer were lost ([`Engine::link_lost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// The transport reports the link down: nothing more goes or comes on it.
    LinkDown,
    /// Frames went missing from what the peer sent ([`Core::take_gaps`]); the link works.
    Gap,
}
