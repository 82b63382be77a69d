//! The progress engine: carries out what the protocol [`Core`] asks for over a real
//! [`Transport`], and blocks politely when the application waits.
//!
//! A rank blocked in `MPI_Wait` must not starve the other ranks when there are more ranks than
//! cores, so a wait spins only briefly, then yields, then sleeps in `poll(2)` on the
//! transport's descriptors; the kernel wakes it when data arrives.

use std::time::Duration;

use kawarimi_transports::{Event, Transport};

use crate::core::{Core, ReqId};
use crate::error::{ErrorClass, MpiError, MpiResult};

/// How a blocked wait behaves.
#[derive(Debug, Clone)]
pub struct WaitPolicy {
    /// Progress rounds that busy-poll before yielding the core.
    pub spin_rounds: u32,
    /// Further rounds that call `sched_yield` before sleeping.
    pub yield_rounds: u32,
    /// Longest single sleep in `poll(2)`; short so that a wait re-checks its condition.
    pub sleep_ms: u64,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy { spin_rounds: 200, yield_rounds: 50, sleep_ms: 50 }
    }
}

/// The rank's protocol core plus the transport that carries its frames.
pub struct Engine {
    pub core: Core,
    transport: Option<Box<dyn Transport>>,
    events: Vec<Event>,
    pub wait_policy: WaitPolicy,
    /// Bytes the transport may hold queued before the engine stops handing it frames.
    pub send_window_bytes: usize,
    /// The first fatal error; every later call reports it again.
    failed: Option<MpiError>,
}

impl Engine {
    /// `transport` may be `None` only for a job of one rank.
    pub fn new(core: Core, transport: Option<Box<dyn Transport>>) -> Engine {
        assert!(transport.is_some() || core.size() == 1, "a job of several ranks needs a transport");
        Engine { core, transport, events: Vec::new(), wait_policy: WaitPolicy::default(), send_window_bytes: 16 << 20, failed: None }
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

    /// Moves frames from the core to the transport and from the transport to the core, without
    /// blocking. Returns whether anything happened.
    pub fn progress(&mut self) -> MpiResult<bool> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(transport) = self.transport.as_mut() else {
            return Ok(false);
        };
        let mut did_work = false;
        // Frames wait in the core's (bounded) outbox while the transport holds more than
        // `send_window_bytes`, so the transport's own queue bound is never hit.
        while transport.queued_bytes() < self.send_window_bytes {
            let Some(t) = self.core.poll_transmit() else { break };
            if let Err(e) = transport.send(t.peer, &t.header, t.payload) {
                return Err(self.fail(MpiError::new(ErrorClass::Other, e.to_string())));
            }
            did_work = true;
        }
        self.events.clear();
        if let Err(e) = transport.progress(&mut self.events) {
            return Err(self.fail(MpiError::new(ErrorClass::Other, e.to_string())));
        }
        let events = std::mem::take(&mut self.events);
        for ev in events {
            did_work = true;
            match ev {
                Event::Frame { peer, header, payload } => {
                    if let Err(e) = self.core.handle_frame(peer, header, payload) {
                        return Err(self.fail(e));
                    }
                }
                Event::LinkDown { peer, reason } => {
                    if !self.core.peer_said_bye(peer) {
                        return Err(self.fail(MpiError::new(
                            ErrorClass::Other,
                            format!("lost rank {peer}: {reason}"),
                        )));
                    }
                }
            }
        }
        Ok(did_work)
    }

    /// Drives progress until `done` holds, spinning, then yielding, then sleeping.
    pub fn block_until(&mut self, mut done: impl FnMut(&mut Core) -> bool) -> MpiResult<()> {
        let mut idle_rounds: u32 = 0;
        loop {
            let did_work = self.progress()?;
            if done(&mut self.core) {
                return Ok(());
            }
            if did_work {
                idle_rounds = 0;
                continue;
            }
            idle_rounds = idle_rounds.saturating_add(1);
            let p = &self.wait_policy;
            if idle_rounds <= p.spin_rounds {
                std::hint::spin_loop();
            } else if idle_rounds <= p.spin_rounds + p.yield_rounds {
                std::thread::yield_now();
            } else if let Some(t) = self.transport.as_mut() {
                if let Err(e) = t.wait(Duration::from_millis(p.sleep_ms)) {
                    return Err(self.fail(MpiError::new(ErrorClass::Other, e.to_string())));
                }
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

    /// Blocks until request `id` completes.
    pub fn wait(&mut self, id: ReqId) -> MpiResult<()> {
        self.block_until(|c| c.is_complete(id))
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
