//! The drain and the repair: what a switch asks of the core (see the module doc of
//! [`super`] and docs/switch-protocol.md).

use super::*;

impl Core {
    /// Starts draining for a switch: a `Marker` goes to every peer behind everything already
    /// queued, and every frame emitted from now on is held for the next transport. Once the
    /// outbox is empty (the engine handed it all to the transport, and the transport wrote
    /// it) and every peer's marker has arrived, nothing is in flight in either direction:
    /// see [`Core::is_drained`]. Protocol state (unmatched rendezvous, partly received
    /// messages) stays here and continues after [`Core::resume`].
    pub fn begin_drain(&mut self) -> MpiResult<()> {
        assert!(!self.holding, "begin_drain while already draining");
        let me = self.me;
        let reachable: Vec<PeerId> = (0..self.size).filter(|&p| p != me && !self.channels[p as usize].broken).collect();
        for peer in reachable {
            self.emit(peer, Header::new(FrameKind::Marker), Payload::Empty)?;
        }
        self.holding = true;
        Ok(())
    }

    pub fn is_draining(&self) -> bool {
        self.holding
    }

    /// Peers whose drain marker has not arrived yet (a broken link's never will, nor will one
    /// past a gap: it is dropped with everything after the gap).
    pub fn markers_missing(&self) -> Vec<PeerId> {
        let missing = |c: &Channel| !c.marker_seen && !c.broken && !c.gap;
        (0..self.size).filter(|&p| p != self.me && missing(&self.channels[p as usize])).collect()
    }

    /// The link to `peer` died without a drain: whatever was in flight on it may be lost.
    /// Frames for it stay here (the outbox drops them, [`Core::poll_transmit`]), its marker
    /// is not awaited, and [`Core::resume`] sends it again every frame it has not confirmed
    /// once the two ranks agree the pair was broken.
    pub fn mark_broken(&mut self, peer: PeerId) {
        if let Some(c) = self.channels.get_mut(peer as usize).filter(|_| peer != self.me) {
            c.broken = true;
            self.outbox.retain(|t| t.peer != peer);
        }
    }

    /// Peers whose link this rank saw die, or whose frames went missing, since the last
    /// switch: the pairs a resume must repair.
    pub fn broken_peers(&self) -> Vec<PeerId> {
        (0..self.size).filter(|&p| self.channels[p as usize].broken || self.channels[p as usize].gap).collect()
    }

    /// Whether [`Core::take_gaps`] has anything to take.
    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// Peers whose frames went missing since the last call, with what arrived instead: the
    /// frames that follow are dropped until a repair (as for a broken link) sends them all
    /// again. A gap the repairs do not fill becomes a protocol error.
    pub fn take_gaps(&mut self) -> Vec<(PeerId, String)> {
        std::mem::take(&mut self.gaps)
    }

    /// Frames sent to `peer` that it has not confirmed yet.
    pub fn unconfirmed(&self, peer: PeerId) -> usize {
        self.channels.get(peer as usize).map_or(0, |c| c.unconfirmed.len())
    }

    /// Frames queued for the transport and not yet handed to it.
    pub fn outbox_frames(&self) -> usize {
        self.outbox.len()
    }

    /// Whether the core has nothing left to send on the old transport and has received
    /// every peer's marker. (The engine also waits for the transport's own queue to empty.)
    pub fn is_drained(&self) -> bool {
        self.holding && self.outbox.is_empty() && self.markers_missing().is_empty()
    }

    /// Ends a switch: frames held since the markers go out on the new transport, stamped with
    /// `new_epoch`, in the order they were emitted (their sequence numbers continue).
    ///
    /// `repaired` are the peers whose link died in the epoch that ends (by either end's
    /// account: the coordinator tells both). To each of them every frame it has not
    /// confirmed goes out again first, flagged [`FLAG_REPLAY`], in order: it drops those it
    /// already has and takes the rest, so nothing is lost or taken twice.
    pub fn resume(&mut self, new_epoch: u32, repaired: &[PeerId]) {
        assert!(self.is_drained(), "resume before the drain completed");
        assert!(new_epoch > self.epoch, "epoch must advance: {} -> {new_epoch}", self.epoch);
        self.epoch = new_epoch;
        self.holding = false;
        // Until the engine says what the new transport's links are, they may drop frames.
        self.set_lossless(|_| false);
        for c in &mut self.channels {
            c.marker_seen = false;
            c.broken = false;
            c.gap = false;
        }
        let me = self.me;
        let mut repaired: Vec<PeerId> = repaired.iter().copied().filter(|&p| p != me && p < self.size).collect();
        repaired.sort_unstable();
        repaired.dedup();
        self.held.retain(|t| !repaired.contains(&t.peer));
        for &p in &repaired {
            let chan = &mut self.channels[p as usize];
            for t in &mut chan.unconfirmed {
                let mut header = t.header;
                header.epoch = new_epoch;
                header.flags |= FLAG_REPLAY;
                header.ack = chan.next_recv_seq as u32;
                // A copy of an application buffer's slice: the peer may confirm the send (and
                // the application reuse the buffer) while this replay still waits to be written.
                let payload = match &t.payload {
                    Payload::Static(s) => Payload::copied(s),
                    _ => t.payload.share(),
                };
                self.outbox.push_back(Transmit { peer: p, header, payload });
            }
            // Our confirmation may have died with the link (the peer's zero-copy send waits
            // for it, and drops our replays as duplicates without an answer): say it again.
            let mut ack = Header::new(FrameKind::Ack);
            ack.epoch = new_epoch;
            ack.src = me;
            ack.seq = chan.next_send_seq;
            ack.ack = chan.next_recv_seq as u32;
            chan.ack_told = chan.next_recv_seq;
            self.outbox.push_back(Transmit { peer: p, header: ack, payload: Payload::Empty });
        }
        for mut t in self.held.drain(..) {
            t.header.epoch = new_epoch;
            self.outbox.push_back(t);
        }
    }
}
