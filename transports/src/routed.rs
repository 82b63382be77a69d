//! Several transports behind one: each peer is reached by the one chosen for it at wire-up
//! (verbs where both ends have a port on the same fabric, TCP otherwise), and the runtime
//! sees a single [`Transport`]. Dropping it drops every transport it holds, which is the
//! detach of all of them.

use std::time::Duration;

use crate::{
    wire, Event, Payload, PeerId, Placement, Transport, TransportError, TransportKind, TransportResult, Waker,
};

pub struct Routed {
    /// The transports, best first.
    transports: Vec<Box<dyn Transport>>,
    /// Index into `transports` for each peer, by rank (looked up once per frame sent).
    route: Vec<Option<usize>>,
    /// Frame bytes (header and payload) handed to each transport, so that `ctl status` can
    /// show which network carried the data, not just which one was chosen.
    sent_bytes: Vec<u64>,
    /// The one transport that carries peers, when only one does (where `wait` sleeps).
    sole_carrier: Option<usize>,
}

impl Routed {
    /// `transports` with the peers each one carries; a peer listed twice goes by the first.
    pub fn new(parts: Vec<(Box<dyn Transport>, Vec<PeerId>)>) -> Routed {
        let mut route = Vec::new();
        let mut transports = Vec::with_capacity(parts.len());
        for (i, (t, peers)) in parts.into_iter().enumerate() {
            for p in peers {
                let p = p as usize;
                if route.len() <= p {
                    route.resize(p + 1, None);
                }
                route[p].get_or_insert(i);
            }
            transports.push(t);
        }
        let sent_bytes = vec![0; transports.len()];
        let mut carriers: Vec<usize> = route.iter().flatten().copied().collect();
        carriers.sort_unstable();
        carriers.dedup();
        let sole_carrier = match carriers.as_slice() {
            [i] => Some(*i),
            _ => None,
        };
        Routed { transports, route, sent_bytes, sole_carrier }
    }

    /// The kind of transport that carries `peer`.
    pub fn kind_for(&self, peer: PeerId) -> Option<TransportKind> {
        self.carrier(peer).map(|i| self.transports[i].kind())
    }

    /// Where `wait` sleeps, and for how long: in the only transport that carries peers; with
    /// several, in the first (the best) for a moment only, so that the others are looked at
    /// again soon.
    fn sleeper(&mut self, timeout: Duration) -> (&mut dyn Transport, Duration) {
        match self.sole_carrier {
            Some(i) => (self.transports[i].as_mut(), timeout),
            None => (self.transports[0].as_mut(), timeout.min(Duration::from_micros(50))),
        }
    }

    /// Hands a frame for `peer` with `payload_len` bytes of payload to the transport that
    /// carries the peer (`send`), and counts its bytes there.
    fn via_carrier(
        &mut self,
        peer: PeerId,
        payload_len: usize,
        send: impl FnOnce(&mut dyn Transport) -> TransportResult<()>,
    ) -> TransportResult<()> {
        let i = self.carrier(peer).ok_or(TransportError::NoRoute { peer })?;
        send(self.transports[i].as_mut())?;
        self.sent_bytes[i] += (wire::HEADER_LEN + payload_len) as u64;
        Ok(())
    }

    fn carrier(&self, peer: PeerId) -> Option<usize> {
        self.route.get(peer as usize).copied().flatten()
    }
}

impl Transport for Routed {
    /// The best kind in use (what `ctl status` shows first); [`Transport::summary`] has all.
    fn kind(&self) -> TransportKind {
        self.transports.iter().map(|t| t.kind()).min().unwrap_or(TransportKind::Tcp)
    }

    fn summary(&self) -> String {
        let mut counts: Vec<(TransportKind, usize)> = Vec::new();
        for &i in self.route.iter().flatten() {
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

    fn sent_by_kind(&self) -> Vec<(TransportKind, u64)> {
        let mut out: Vec<(TransportKind, u64)> = Vec::new();
        for (t, &b) in self.transports.iter().zip(&self.sent_bytes) {
            match out.iter_mut().find(|(k, _)| *k == t.kind()) {
                Some((_, sum)) => *sum += b,
                None => out.push((t.kind(), b)),
            }
        }
        out.sort();
        out
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = Vec::new();
        for (name, n) in self.transports.iter().flat_map(|t| t.counters()) {
            match out.iter_mut().find(|(k, _)| *k == name) {
                Some((_, sum)) => *sum += n,
                None => out.push((name, n)),
            }
        }
        out
    }

    fn send(&mut self, peer: PeerId, header: &wire::Header, payload: Payload) -> TransportResult<()> {
        let len = payload.len();
        self.via_carrier(peer, len, |t| t.send(peer, header, payload))
    }

    fn send_copy(&mut self, peer: PeerId, header: &wire::Header, bytes: &[u8]) -> TransportResult<()> {
        self.via_carrier(peer, bytes.len(), |t| t.send_copy(peer, header, bytes))
    }

    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        for t in &mut self.transports {
            t.progress(events)?;
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> TransportResult<()> {
        let (t, timeout) = self.sleeper(timeout);
        t.wait(timeout)
    }

    fn queued_bytes(&self) -> usize {
        self.transports.iter().map(|t| t.queued_bytes()).sum()
    }

    fn coll_slots(&self) -> Option<&crate::shm::slots::CollSlots> {
        self.transports.iter().find_map(|t| t.coll_slots())
    }

    /// As `wait`: the transport it sleeps in is the one with the slots when shared memory
    /// carries any peer (it is the best kind, first), and a moment's sleep elsewhere is
    /// short enough.
    fn wait_slots(&mut self, timeout: Duration, want: &crate::shm::slots::SlotWait<'_>) -> TransportResult<()> {
        let (t, timeout) = self.sleeper(timeout);
        t.wait_slots(timeout, want)
    }

    fn peer_process(&self, peer: PeerId) -> Option<u32> {
        self.carrier(peer).and_then(|i| self.transports[i].peer_process(peer))
    }

    fn loses_no_accepted_frame(&self, peer: PeerId) -> bool {
        self.carrier(peer).is_some_and(|i| self.transports[i].loses_no_accepted_frame(peer))
    }

    fn ask_placement(&mut self) {
        for t in &mut self.transports {
            t.ask_placement();
        }
    }

    fn place(&mut self, peer: PeerId, token: u64, at: Option<Placement>) -> TransportResult<()> {
        let i = self.carrier(peer).ok_or(TransportError::NoRoute { peer })?;
        self.transports[i].place(peer, token, at)
    }

    /// The waker of the transport `wait` sleeps in when only one carries peers; otherwise
    /// `wait` sleeps for moments only and any transport's waker will do.
    fn waker(&self) -> Option<Waker> {
        let sole = self.sole_carrier.and_then(|i| self.transports[i].waker());
        sole.or_else(|| self.transports.iter().rev().find_map(|t| t.waker()))
    }
}

/// What `t` has carried so far, for people: `verbs 12.0 MiB, tcp 0 B` (empty when it does
/// not count).
pub fn carried(t: &dyn Transport) -> String {
    let parts: Vec<String> = t
        .sent_by_kind()
        .iter()
        .map(|(k, b)| format!("{} {}", format!("{k:?}").to_lowercase(), human_bytes(*b)))
        .collect();
    parts.join(", ")
}

/// `t`'s counters for people: `registrations made 3, registrations reused 97` (empty when it
/// counts nothing).
pub fn counted(t: &dyn Transport) -> String {
    let parts: Vec<String> = t.counters().iter().map(|(name, n)| format!("{name} {n}")).collect();
    parts.join(", ")
}

/// `bytes` for a person: `812 B`, `3.4 KiB`, `12.0 MiB`, `1.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::sim_fabric;
    use crate::wire::{FrameKind, Header, HEADER_LEN};

    /// Two sim endpoints stand for two kinds of network: rank 0 reaches peer 1 through the
    /// first and peer 2 through the second. Every frame must come out at its own peer, and the
    /// summary must count each route's bytes where they went.
    #[test]
    fn frames_follow_their_route_and_are_counted_there() {
        let mut fabric = sim_fabric(3).into_iter();
        let (a, mut b) = (fabric.next().unwrap(), fabric.next().unwrap());
        let mut c = fabric.next().unwrap();
        let mut second = sim_fabric(3).into_iter();
        let a2 = second.next().unwrap();
        let _ = second.next();
        let mut c2 = second.next().unwrap();
        let mut r = Routed::new(vec![(Box::new(a) as Box<dyn Transport>, vec![1]), (Box::new(a2), vec![2])]);
        let h = Header::new(FrameKind::Data);
        r.send(1, &h, Payload::Owned(vec![7; 100])).unwrap();
        r.send(2, &h, Payload::Owned(vec![8; 10])).unwrap();
        r.send(2, &h, Payload::Empty).unwrap();
        assert!(matches!(r.send(5, &h, Payload::Empty), Err(TransportError::NoRoute { peer: 5 })));
        let mut ev = Vec::new();
        b.progress(&mut ev).unwrap();
        assert_eq!(ev.len(), 1, "peer 1 gets its one frame");
        ev.clear();
        c.progress(&mut ev).unwrap();
        assert!(ev.is_empty(), "nothing for peer 2 on the first network");
        c2.progress(&mut ev).unwrap();
        assert_eq!(ev.len(), 2, "peer 2 gets both its frames on the second network");
        assert_eq!(r.summary(), "sim:2");
        let (one, two) = (HEADER_LEN + 100, 2 * HEADER_LEN + 10);
        assert_eq!(r.sent_by_kind(), vec![(TransportKind::Sim, (one + two) as u64)]);
        assert_eq!(carried(&r), format!("sim {}", human_bytes((one + two) as u64)));
    }

    /// Counts and nothing else.
    struct Counting(u64);
    impl Transport for Counting {
        fn kind(&self) -> TransportKind {
            TransportKind::Sim
        }
        fn send(&mut self, _: PeerId, _: &wire::Header, _: Payload) -> TransportResult<()> {
            Ok(())
        }
        fn progress(&mut self, _: &mut Vec<Event>) -> TransportResult<()> {
            Ok(())
        }
        fn wait(&mut self, _: Duration) -> TransportResult<()> {
            Ok(())
        }
        fn queued_bytes(&self) -> usize {
            0
        }
        fn counters(&self) -> Vec<(&'static str, u64)> {
            vec![("made", self.0), ("reused", 10 * self.0)]
        }
    }

    #[test]
    fn counters_are_summed_by_name_over_the_transports() {
        let r =
            Routed::new(vec![(Box::new(Counting(1)) as Box<dyn Transport>, vec![1]), (Box::new(Counting(2)), vec![2])]);
        assert_eq!(r.counters(), vec![("made", 3), ("reused", 30)]);
        assert_eq!(counted(&r), "made 3, reused 30");
        let none = Routed::new(vec![(Box::new(sim_fabric(2).remove(0)) as Box<dyn Transport>, vec![1])]);
        assert_eq!(counted(&none), "", "a transport that counts nothing adds nothing");
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 << 20), "12.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
