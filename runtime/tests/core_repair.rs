//! A data link that dies under two ranks (the repair, `Core::mark_broken` and
//! `Core::resume(.., repaired)`): whatever the link took with it, every message arrives
//! exactly once, in order, with its bytes, once both ends send each other again what the
//! other has not confirmed. Seeded; a failure prints the seed.
//!
//! The link is two FIFO queues. At a random moment it dies: a random tail of each queue is
//! lost (what was still on the wire) and, at random, what the sender's transport had not
//! written yet too. Each end notices at its own time (the other may send more meanwhile),
//! both drain without each other, and both resume with the pair repaired. Messages go every
//! way a rank sends them: requests (`isend`, standard and synchronous) and the blocking
//! eager send (`send_eager`), whose frame may go onto the link past the outbox.

use kawarimi_runtime::core::{Core, CoreConfig, EagerSend, RecvBuf, ReqId, SendData, ACK_EVERY_FRAMES};
use kawarimi_transports::wire::{FrameKind, Header, FLAG_REPLAY};
use kawarimi_transports::Payload;

mod kit;
use kit::{pattern, Rng, Wires};

/// The bytes of message `index` from rank `from`.
fn content(from: u32, index: usize, len: usize) -> Vec<u8> {
    pattern(index as u64, from as u64, len)
}

struct Side {
    core: Core,
    sends: Vec<ReqId>,
    /// Length of each message sent, by index.
    lens: Vec<usize>,
    /// Receives, with the index of the message each takes.
    recvs: Vec<(ReqId, usize)>,
}

/// How a message is sent.
#[derive(Clone, Copy, PartialEq)]
enum How {
    Isend {
        sync: bool,
    },
    /// `Core::send_eager`, as a blocking `MPI_Send` does: a frame that may go past the outbox
    /// goes onto the link at once, as the engine hands it to the transport.
    Eager {
        may_go_direct: bool,
    },
}

impl Side {
    /// Sends message `i` of `len` bytes to the peer and posts the receive of its message `i`.
    fn exchange(&mut self, i: usize, len: usize, how: How, wires: &mut Wires) {
        let (me, peer) = (self.core.rank(), 1 - self.core.rank() as i32);
        let bytes = content(me, i, len);
        let sent = match how {
            How::Eager { may_go_direct } => self.core.send_eager(peer, 0, 7, &bytes, may_go_direct).unwrap(),
            How::Isend { .. } => None,
        };
        match sent {
            Some(EagerSend::Direct { peer, header }) => wires.link(me, peer).push_back((header, bytes)),
            Some(EagerSend::Queued) => {}
            None => {
                let sync = how == How::Isend { sync: true };
                let id = self.core.isend(peer, 0, 7, SendData::Owned(bytes), sync).unwrap();
                self.sends.push(id);
            }
        }
        self.lens.push(len);
        let id = self.core.irecv(peer, 0, 7, RecvBuf::Owned(vec![0; 200])).unwrap();
        self.recvs.push((id, i));
    }
}

/// One seeded run: `count` messages each way, eager and rendezvous, the link dying once.
fn run(seed: u64) {
    let mut rng = Rng(seed);
    let config = CoreConfig { eager_limit_bytes: 64, chunk_bytes: 48, ..CoreConfig::default() };
    let mut sides =
        [0u32, 1].map(|r| Side { core: Core::new(r, 2, config.clone()), sends: vec![], lens: vec![], recvs: vec![] });
    let mut wires = Wires::new(2);
    let count = 40 + rng.below(40) as usize;
    let die_at = rng.below(count as u64 * 2) as usize;
    let mut noticed = [false, false];
    let mut step = 0usize;
    let mut posted = [0usize, 0];
    // Phase 1: traffic until the link dies, then until both ends noticed.
    loop {
        for r in 0..2 {
            if posted[r] < count && rng.below(3) == 0 {
                let len = rng.below(200) as usize;
                let how = match rng.below(5) {
                    0 => How::Isend { sync: true },
                    1 | 2 => How::Isend { sync: false },
                    _ => How::Eager { may_go_direct: rng.below(4) != 0 },
                };
                // A link that died takes what goes onto it later too, until the sender notices.
                sides[r].exchange(posted[r], len, how, &mut wires);
                posted[r] += 1;
            }
        }
        let (a, b) = sides.split_at_mut(1);
        let (a, b) = (&mut a[0].core, &mut b[0].core);
        if !noticed[0] {
            wires.transmit(a, rng.below(4) as usize);
        }
        if !noticed[1] {
            wires.transmit(b, rng.below(4) as usize);
        }
        if step < die_at {
            wires.deliver(0, b, rng.below(4) as usize);
            wires.deliver(1, a, rng.below(4) as usize);
        } else if step == die_at {
            for (src, dst) in [(0, 1), (1, 0)] {
                let w = wires.link(src, dst);
                let keep = rng.below(w.len() as u64 + 1) as usize;
                w.truncate(keep);
            }
        } else {
            // The link is dead: frames still on it reach nobody, each end notices at random.
            wires.link(0, 1).clear();
            wires.link(1, 0).clear();
            for (r, core) in [(0usize, &mut *a), (1, &mut *b)] {
                if !noticed[r] && rng.below(3) == 0 {
                    noticed[r] = true;
                    core.mark_broken(1 - r as u32);
                }
            }
        }
        step += 1;
        if noticed == [true, true] {
            break;
        }
    }
    // Phase 2: the repair switch. Both drain without each other, resume with the pair repaired.
    for s in &mut sides {
        assert_eq!(s.core.broken_peers(), vec![1 - s.core.rank()]);
        s.core.begin_drain().unwrap();
        while s.core.poll_transmit().is_some() {}
        assert!(s.core.is_drained(), "seed {seed}: a broken peer's marker is not awaited");
        s.core.resume(1, &[1 - s.core.rank()]);
        assert!(s.core.broken_peers().is_empty());
    }
    // Phase 3: the rest of the traffic on a good link; every message must arrive once.
    for _ in 0..100_000 {
        for r in 0..2 {
            if posted[r] < count {
                let how =
                    if rng.below(2) == 0 { How::Isend { sync: false } } else { How::Eager { may_go_direct: true } };
                sides[r].exchange(posted[r], 100, how, &mut wires);
                posted[r] += 1;
            }
        }
        let (a, b) = sides.split_at_mut(1);
        let (a, b) = (&mut a[0].core, &mut b[0].core);
        wires.transmit(a, 8);
        wires.transmit(b, 8);
        wires.deliver(0, b, 8);
        wires.deliver(1, a, 8);
        // On a good link nothing goes missing: a frame that went straight onto the link past
        // one still in the outbox would look like a gap.
        assert!(!a.has_gaps() && !b.has_gaps(), "seed {seed}: a frame overtook another on a good link");
        if posted == [count, count] && !a.has_transmit() && !b.has_transmit() && wires.is_empty() {
            break;
        }
    }
    let lens = [sides[0].lens.clone(), sides[1].lens.clone()];
    for s in &mut sides {
        let me = s.core.rank();
        for &id in &s.sends {
            assert!(s.core.is_complete(id), "seed {seed}: a send of rank {me} never completed");
        }
        for &(id, i) in &s.recvs {
            let Some(c) = s.core.take_completion(id) else {
                panic!("seed {seed}: rank {me}'s receive of message {i} never completed")
            };
            let Some(RecvBuf::Owned(buf)) = c.recv_buf else { panic!("the receive buffer comes back") };
            let want = content(1 - me, i, lens[1 - me as usize][i]);
            assert_eq!(c.status.len, want.len(), "seed {seed}: rank {me} message {i} has the wrong length");
            assert_eq!(&buf[..want.len()], &want[..], "seed {seed}: rank {me} message {i} has the wrong bytes");
        }
    }
}

#[test]
fn a_link_that_dies_loses_nothing_once_both_ends_are_repaired() {
    for seed in 0..300 {
        run(seed);
    }
}

/// While both ranks make progress, what a sender keeps unconfirmed stays bounded by the
/// acknowledgement rate, even when the traffic goes one way only.
#[test]
fn acknowledgements_bound_what_a_sender_keeps() {
    let config = CoreConfig::default();
    let (mut a, mut b) = (Core::new(0, 2, config.clone()), Core::new(1, 2, config));
    let mut wires = Wires::new(2);
    let mut most = 0;
    for i in 0..10_000 {
        a.isend(1, 0, 1, SendData::Owned(vec![i as u8; 8]), false).unwrap();
        b.irecv(0, 0, 1, RecvBuf::Owned(vec![0; 8])).unwrap();
        wires.transmit(&mut a, 4);
        wires.deliver(0, &mut b, 4);
        wires.transmit(&mut b, 4);
        wires.deliver(1, &mut a, 4);
        most = most.max(a.unconfirmed(1));
    }
    assert!(most <= ACK_EVERY_FRAMES as usize + 1, "rank 0 kept {most} frames unconfirmed");
    assert!(most > 0, "nothing was ever kept: the test does not measure anything");
}

/// A frame sent twice without the replay flag is still a protocol error: only a repair may
/// send again what the receiver has.
#[test]
fn a_duplicate_is_dropped_only_when_flagged_as_a_replay() {
    let config = CoreConfig::default();
    let (mut a, mut b) = (Core::new(0, 2, config.clone()), Core::new(1, 2, config));
    a.isend(1, 0, 1, SendData::Owned(vec![1, 2, 3]), false).unwrap();
    let t = a.poll_transmit().unwrap();
    assert_eq!(t.header.kind, FrameKind::Eager);
    let payload = t.payload.into_vec();
    b.handle_frame(0, t.header, Payload::Owned(payload.clone())).unwrap();
    let replayed = Header { flags: t.header.flags | FLAG_REPLAY, ..t.header };
    b.handle_frame(0, replayed, Payload::Owned(payload.clone())).expect("a replayed duplicate is dropped quietly");
    let err = b.handle_frame(0, t.header, Payload::Owned(payload)).expect_err("a plain duplicate is refused");
    assert!(err.to_string().contains("expected seq 1, got 0"), "{err}");
}

/// A send from the application's buffer whose confirmation died with the link: after the
/// repair the receiver has every chunk (it drops the replays as duplicates) and must still
/// confirm, or the send would wait for ever. The replays are copies: the send may complete,
/// and the application reuse its buffer, while they still wait to be written.
#[test]
fn a_zero_copy_send_whose_confirmation_was_lost_completes_after_the_repair() {
    let config = CoreConfig { eager_limit_bytes: 64, chunk_bytes: 48, ..CoreConfig::default() };
    let (mut a, mut b) = (Core::new(0, 2, config.clone()), Core::new(1, 2, config));
    let data: &'static [u8] = Box::leak(content(0, 0, 200).into_boxed_slice());
    let s = a.isend(1, 0, 7, SendData::Static(data), false).unwrap();
    let r = b.irecv(0, 0, 7, RecvBuf::Owned(vec![0; 200])).unwrap();
    let mut wires = Wires::new(2);
    for _ in 0..10 {
        wires.transmit(&mut a, 100);
        wires.deliver(0, &mut b, 100);
        // Everything b sends back but its clear-to-send dies with the link.
        if let Some(t) = b.poll_transmit() {
            if t.header.kind == FrameKind::Cts {
                wires.link(1, 0).push_back((t.header, t.payload.into_vec()));
            }
        }
        wires.deliver(1, &mut a, 100);
    }
    assert!(b.is_complete(r), "the receiver has the message");
    assert!(!a.is_complete(s), "the confirmation was lost");
    let replays = repair(&mut a, &mut b);
    assert!(replays.iter().any(|t| t.header.kind == FrameKind::Data), "a sends its chunks again");
    for t in replays {
        assert!(!matches!(t.payload, Payload::Static(_)), "a replay points into the application's buffer");
        wires.link(0, 1).push_back((t.header, t.payload.into_vec()));
    }
    for _ in 0..10 {
        wires.deliver(0, &mut b, 100);
        wires.transmit(&mut b, 100);
        wires.deliver(1, &mut a, 100);
        wires.transmit(&mut a, 100);
    }
    assert!(a.is_complete(s), "the send completes once the receiver confirms again");
}

/// Frames lost on an earlier link show as a gap while the ranks drain. The rank that finds it
/// must still send its marker (the link works, and the sender, which knows of no loss, waits
/// for it), must not wait for the sender's marker (dropped with everything past the gap), and
/// must name the pair for the repair, which fills the gap.
#[test]
fn a_gap_found_while_draining_holds_up_neither_end_and_the_repair_fills_it() {
    let config = CoreConfig::default();
    let (mut a, mut b) = (Core::new(0, 2, config.clone()), Core::new(1, 2, config));
    let recvs: Vec<ReqId> = (0..3).map(|_| b.irecv(0, 0, 7, RecvBuf::Owned(vec![0; 16])).unwrap()).collect();
    for i in 0..3 {
        a.isend(1, 0, 7, SendData::Owned(content(0, i, 16)), false).unwrap();
    }
    let mut wires = Wires::new(2);
    wires.transmit(&mut a, 100);
    wires.link(0, 1).remove(1).expect("the second message is lost");
    a.begin_drain().unwrap();
    b.begin_drain().unwrap();
    wires.transmit(&mut a, 100);
    wires.deliver(0, &mut b, 100);
    assert_eq!(b.take_gaps().len(), 1, "b finds the gap");
    assert_eq!(b.broken_peers(), vec![0], "and names the pair for the repair");
    assert!(b.markers_missing().is_empty(), "a's marker came after the gap: b does not wait for it");
    wires.transmit(&mut b, 100);
    assert!(wires.link(1, 0).iter().any(|(h, _)| h.kind == FrameKind::Marker), "b's marker goes to a");
    wires.deliver(1, &mut a, 100);
    assert!(a.is_drained() && b.is_drained(), "both ends drain");
    a.resume(1, &[1]);
    b.resume(1, &[0]);
    for _ in 0..4 {
        wires.transmit(&mut a, 100);
        wires.deliver(0, &mut b, 100);
        wires.transmit(&mut b, 100);
        wires.deliver(1, &mut a, 100);
    }
    for (i, &r) in recvs.iter().enumerate() {
        let c = b.take_completion(r).unwrap_or_else(|| panic!("message {i} never arrived"));
        let Some(RecvBuf::Owned(buf)) = c.recv_buf else { panic!("the receive buffer comes back") };
        assert_eq!(buf, content(0, i, 16), "message {i}, in order");
    }
}

/// Over a link that loses no frame it accepted (shared memory), a sender keeps no copy of
/// what it sends: not for the blocking eager send's direct way, nor for a frame through the
/// outbox. Until the peer confirms such frames the link cannot be repaired, which the core
/// says; frames a drain holds for the next link, which may drop them, are kept as always, and
/// so is everything once the core is told the link can lose frames.
#[test]
fn over_a_lossless_link_only_what_a_drain_holds_is_kept() {
    let config = CoreConfig { eager_limit_bytes: 64, ..CoreConfig::default() };
    let (mut a, mut b) = (Core::new(0, 2, config.clone()), Core::new(1, 2, config));
    let mut wires = Wires::new(2);
    a.set_lossless(|p| p == 1);
    let Some(EagerSend::Direct { peer, header }) = a.send_eager(1, 0, 7, &[1; 40], true).unwrap() else {
        panic!("an eager send with an empty outbox goes the direct way");
    };
    wires.link(0, peer).push_back((header, vec![1; 40]));
    a.isend(1, 0, 7, SendData::Owned(vec![2; 60]), false).unwrap();
    wires.transmit(&mut a, usize::MAX);
    assert_eq!(a.unconfirmed(1), 0, "a copy was kept of a frame over a lossless link");
    assert_eq!(a.unrepairable(1), 2, "two frames went without a copy and are not confirmed");

    // The peer takes both; its next frame confirms them.
    wires.deliver(0, &mut b, usize::MAX);
    b.isend(0, 0, 7, SendData::Owned(vec![3; 8]), false).unwrap();
    wires.transmit(&mut b, usize::MAX);
    wires.deliver(1, &mut a, usize::MAX);
    assert_eq!(a.unrepairable(1), 0, "confirmed frames still counted as lost with the link");

    // A drain holds frames for the next link: those are kept.
    a.begin_drain().unwrap();
    a.isend(1, 0, 7, SendData::Owned(vec![4; 60]), false).unwrap();
    assert_eq!(a.unconfirmed(1), 1, "a frame held by a drain must be kept");
    assert_eq!(a.unrepairable(1), 0);

    // Told the link may drop frames (what a resume does first), a core keeps every frame.
    let mut c = Core::new(0, 2, CoreConfig { eager_limit_bytes: 64, ..CoreConfig::default() });
    c.set_lossless(|p| p == 1);
    c.set_lossless(|_| false);
    c.isend(1, 0, 7, SendData::Owned(vec![5; 60]), false).unwrap();
    assert_eq!(c.unconfirmed(1), 1, "a frame over a link that can drop it must be kept");
    assert_eq!(c.unrepairable(1), 0);
}

/// Both ends of the link between ranks 0 (`a`) and 1 (`b`) see it die and go through a switch
/// that repairs it (epoch 1); returns what `a` sends first on the new link.
fn repair(a: &mut Core, b: &mut Core) -> Vec<kawarimi_runtime::core::Transmit> {
    for (core, peer) in [(&mut *a, 1), (&mut *b, 0)] {
        core.mark_broken(peer);
        core.begin_drain().unwrap();
        while core.poll_transmit().is_some() {}
        core.resume(1, &[peer]);
    }
    std::iter::from_fn(|| a.poll_transmit()).collect()
}

/// The link dies while the transport places an eager frame (the TCP transport reads it from
/// the socket into the receive's buffer): the frame never comes flagged. The repair sends it
/// again with its bytes, and it completes the receive it was matched to, which no other
/// message may take in the meantime.
#[test]
fn an_eager_frame_placed_when_the_link_died_completes_its_receive_when_sent_again() {
    let config = CoreConfig { eager_limit_bytes: 64, ..CoreConfig::default() };
    let (mut a, mut b) = (Core::new(0, 2, config.clone()), Core::new(1, 2, config));
    const N: usize = 12;
    let r = b.irecv(0, 0, 5, RecvBuf::Owned(vec![0; N])).unwrap();
    a.isend(1, 0, 5, SendData::Owned((1..=N as u8).collect()), false).unwrap();
    let t = a.poll_transmit().unwrap();
    assert!(b.placement(0, &t.header).is_some(), "matched and placed");
    // The link dies with the frame half-read.
    let replays = repair(&mut a, &mut b);
    let replay = replays.into_iter().find(|t| t.header.kind == FrameKind::Eager).expect("the frame is sent again");
    assert!(replay.header.flags & FLAG_REPLAY != 0);
    assert!(!b.is_complete(r));
    b.handle_frame(0, replay.header, replay.payload).unwrap();
    assert!(b.is_complete(r), "the replay completes the receive it was placed in");
    let st = b.peek_status(r).unwrap();
    assert_eq!((st.source, st.tag, st.len, st.error), (0, 5, N, None));
    let done = b.take_completion(r).unwrap();
    let Some(RecvBuf::Owned(v)) = done.recv_buf else { panic!("the receive keeps its buffer") };
    assert_eq!(v, (1..=N as u8).collect::<Vec<u8>>());
}
