//! Per-peer channels: the sequence numbers that give exactly-once, in-order delivery, and the
//! frames kept until the peer confirms them (`ack`), which a repair sends again.

use super::*;

/// Per-peer channel state: the sequence numbers that give exactly-once, in-order delivery,
/// and the frames kept until the peer confirms them, which a repair sends again.
#[derive(Debug, Default)]
pub(super) struct Channel {
    pub(super) next_send_seq: u64,
    pub(super) next_recv_seq: u64,
    /// The peer finalized: its link going down is expected, not a failure.
    pub(super) said_bye: bool,
    /// The peer's drain marker of the current switch arrived.
    pub(super) marker_seen: bool,
    /// Numbered frames sent (or queued) to the peer that its `ack` does not cover yet, in
    /// sequence order. A link that dies may take any of them with it.
    pub(super) unconfirmed: VecDeque<Transmit>,
    /// The peer has taken every frame numbered below this.
    pub(super) confirmed_seq: u64,
    /// The `next_recv_seq` last told to the peer, and the payload bytes taken since: past
    /// [`ACK_EVERY_FRAMES`] or [`ACK_EVERY_BYTES`] a frame of its own (`Ack`) tells it.
    pub(super) ack_told: u64,
    pub(super) bytes_since_ack: usize,
    /// The link to the peer died (see [`Core::mark_broken`]).
    pub(super) broken: bool,
    /// The link to the peer loses no frame it accepted (shared memory: see
    /// [`Core::set_lossless`]) since the frame numbered here: frames from it on are not kept
    /// for a repair. `None` while the link can drop frames.
    pub(super) lossless_from: Option<u64>,
    /// One past the last frame sent without a copy kept: while the peer has not confirmed
    /// it, the link cannot be repaired.
    pub(super) unkept_end: u64,
    /// The receive the peer's next eager frame was matched to while the transport held it
    /// (see [`Core::eager_placement`]), and that frame's number; that frame completes it.
    pub(super) placing: Option<(ReqId, u64)>,
    /// Sends that complete once the peer confirms the frame numbered here, in order.
    pub(super) confirm_waiters: VecDeque<(u64, ReqId)>,
    /// Frames from the peer went missing (see [`Core::take_gaps`]); later ones are dropped
    /// until the repair sends them all again.
    pub(super) gap: bool,
    /// Gaps found since the last repair that filled one: past [`MAX_GAP_REPAIRS`] a gap is a
    /// fatal error (the sender cannot fill it, so repairing again would not end).
    pub(super) gap_repairs: u32,
}

/// How many repairs a channel's gap may take before it is a protocol error.
pub(super) const MAX_GAP_REPAIRS: u32 = 3;

/// How many frames, or payload bytes, a rank takes from a peer at most before it tells the
/// peer so in an `Ack` of its own, when no frame of its own goes there to carry it. The
/// bound on what a sender keeps unconfirmed while its peer is in MPI.
pub const ACK_EVERY_FRAMES: u64 = 64;

pub const ACK_EVERY_BYTES: usize = 4 << 20;

/// Whether frames of this kind take a sequence number (and are kept until confirmed). A
/// marker names a position in the stream and an `Ack` only carries its field: neither is
/// worth sending again after a link died.
pub(super) fn numbered(kind: FrameKind) -> bool {
    !matches!(kind, FrameKind::Marker | FrameKind::Ack)
}

impl Core {
    /// `peer` has taken every frame of ours whose sequence number's low 32 bits are below
    /// `ack` (serial-number arithmetic: the unconfirmed window is far below 2^31 frames, so
    /// an older `ack`, carried by a frame that waited in a queue, reads as behind).
    pub(super) fn take_ack(&mut self, peer: PeerId, ack: u32) -> MpiResult<()> {
        let chan = &mut self.channels[peer as usize];
        let ahead = ack.wrapping_sub(chan.confirmed_seq as u32) as i32;
        if ahead <= 0 {
            return Ok(());
        }
        let confirmed = chan.confirmed_seq + ahead as u64;
        if confirmed > chan.next_send_seq {
            return err(
                ErrorClass::Intern,
                format!("rank {peer} confirms frame {confirmed} of a channel that sent {}", chan.next_send_seq),
            );
        }
        chan.confirmed_seq = confirmed;
        while chan.unconfirmed.front().is_some_and(|t| t.header.seq < confirmed) {
            chan.unconfirmed.pop_front();
            self.unconfirmed_frames -= 1;
        }
        while chan.confirm_waiters.front().is_some_and(|&(seq, _)| seq < confirmed) {
            let (_, id) = chan.confirm_waiters.pop_front().expect("front exists");
            if let Some(Req::Send(s)) = self.requests.get_mut(id) {
                s.phase = SendPhase::Done;
                s.data = SendData::Owned(Vec::new());
            }
        }
        Ok(())
    }
}
