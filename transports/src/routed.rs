//! Several transports behind one: each peer is reached by the one chosen for it at wire-up
//! (verbs where both ends have a port on the same fabric, TCP otherwise), and the runtime
//! sees a single [`Transport`]. Dropping it drops every transport it holds, which is the
//! detach of all of them.

use std::collections::HashMap;
use std::time::Duration;

use crate::{wire, Event, Payload, PeerId, Transport, TransportError, TransportKind, TransportResult, Waker};

pub struct Routed {
    /// The transports, best first.
    transports: Vec<Box<dyn Transport>>,
    /// Index into `transports` for each peer.
    route: HashMap<PeerId, usize>,
}

impl Routed {
    /// `transports` with the peers each one carries; a peer listed twice goes by the first.
    pub fn new(parts: Vec<(Box<dyn Transport>, Vec<PeerId>)>) -> Routed {
        let mut route = HashMap::new();
        let mut transports = Vec::with_capacity(parts.len());
        for (i, (t, peers)) in parts.into_iter().enumerate() {
            for p in peers {
                route.entry(p).or_insert(i);
            }
            transports.push(t);
        }
        Routed { transports, route }
    }

    /// The kind of transport that carries `peer`.
    pub fn kind_for(&self, peer: PeerId) -> Option<TransportKind> {
        self.route.get(&peer).map(|&i| self.transports[i].kind())
    }
}

impl Transport for Routed {
    /// The best kind in use (what `ctl status` shows first); [`Transport::summary`] has all.
    fn kind(&self) -> TransportKind {
        self.transports.iter().map(|t| t.kind()).min().unwrap_or(TransportKind::Tcp)
    }

    fn summary(&self) -> String {
        let mut counts: Vec<(TransportKind, usize)> = Vec::new();
        for &i in self.route.values() {
            let k = self.transports[i].kind();
            match counts.iter_mut().find(|(c, _)| *c == k) {
                Some((_, n)) => *n += 1,
                None => counts.push((k, 1)),
            }
        }
        counts.sort();
        let parts: Vec<String> =
            counts.iter().map(|(k, n)| format!("{}:{n}", format!("{k:?}").to_lowercase())).collect();
        parts.join("+")
    }

    fn send(&mut self, peer: PeerId, header: &wire::Header, payload: Payload) -> TransportResult<()> {
        let &i = self.route.get(&peer).ok_or(TransportError::NoRoute { peer })?;
        self.transports[i].send(peer, header, payload)
    }

    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        for t in &mut self.transports {
            t.progress(events)?;
        }
        Ok(())
    }

    /// Waits in the last transport (TCP, whose wait is `poll(2)`) only when it is the only
    /// one; with verbs present every wait is the short one verbs needs.
    fn wait(&mut self, timeout: Duration) -> TransportResult<()> {
        match self.transports.as_mut_slice() {
            [only] => only.wait(timeout),
            all => all[0].wait(timeout),
        }
    }

    fn queued_bytes(&self) -> usize {
        self.transports.iter().map(|t| t.queued_bytes()).sum()
    }

    fn waker(&self) -> Option<Waker> {
        self.transports.last().and_then(|t| t.waker())
    }
}
