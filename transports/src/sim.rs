//! A deterministic in-memory fabric: every rank's endpoint lives in one process and frames
//! move through shared queues. Used by tests of the runtime, and by the seeded simulator,
//! which decides when each queued frame is delivered.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::wire::Header;
use crate::{Event, Payload, PeerId, Transport, TransportError, TransportKind, TransportResult};

/// One rank's inbox: frames from any peer, in the order they were sent.
#[derive(Default)]
struct Inbox {
    frames: Mutex<VecDeque<(PeerId, Header, Vec<u8>)>>,
    ready: Condvar,
}

/// The endpoint of rank `me` on a [`sim_fabric`].
pub struct SimTransport {
    me: PeerId,
    inboxes: Arc<Vec<Inbox>>,
    /// Bound on frames waiting in one inbox; past it `send` fails with `QueueFull`.
    inbox_limit_frames: usize,
}

/// Builds a fully connected fabric of `n` ranks.
pub fn sim_fabric(n: u32) -> Vec<SimTransport> {
    let inboxes: Arc<Vec<Inbox>> = Arc::new((0..n).map(|_| Inbox::default()).collect());
    (0..n).map(|me| SimTransport { me, inboxes: inboxes.clone(), inbox_limit_frames: 1 << 20 }).collect()
}

impl Transport for SimTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Sim
    }

    fn send(&mut self, peer: PeerId, header: &Header, payload: Payload) -> TransportResult<()> {
        let inbox = self.inboxes.get(peer as usize).ok_or(TransportError::NoRoute { peer })?;
        let mut q = inbox.frames.lock().expect("sim inbox lock");
        if q.len() >= self.inbox_limit_frames {
            return Err(TransportError::QueueFull { peer, limit: self.inbox_limit_frames });
        }
        let bytes = payload.into_vec();
        q.push_back((self.me, *header, bytes));
        inbox.ready.notify_all();
        Ok(())
    }

    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        let mut q = self.inboxes[self.me as usize].frames.lock().expect("sim inbox lock");
        events.extend(q.drain(..).map(|(peer, header, payload)| Event::Frame {
            peer,
            header,
            payload: Payload::Owned(payload),
        }));
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> TransportResult<()> {
        let inbox = &self.inboxes[self.me as usize];
        let q = inbox.frames.lock().expect("sim inbox lock");
        if q.is_empty() {
            let _unused = inbox.ready.wait_timeout(q, timeout).expect("sim inbox lock");
        }
        Ok(())
    }

    fn queued_bytes(&self) -> usize {
        0
    }
}
