//! Rendezvous data without copies. Receiving: data placed straight into the receive buffer by
//! the transport (`Core::placement`, frames delivered with `FLAG_PLACED`): the core names
//! exactly the range each chunk belongs in, only for a contiguous application buffer with room
//! for it, and completes the receive from placed chunks without touching the buffer itself.
//! Sending: chunks are slices of the application's buffer, and the send waits for the
//! receiver's confirmation.

use kawarimi_runtime::core::{Core, CoreConfig, RecvBuf, SendData};
use kawarimi_transports::wire::{FrameKind, FLAG_CONFIRM, FLAG_PLACED};
use kawarimi_transports::Payload;

const LEN: usize = 200;
const CHUNK: usize = 64;

fn pair() -> (Core, Core) {
    let config = CoreConfig { eager_limit_bytes: 16, chunk_bytes: CHUNK, ..CoreConfig::default() };
    (Core::new(0, 2, config.clone()), Core::new(1, 2, config))
}

/// Runs one rendezvous message from rank 0 to rank 1's receive into `buf` of `capacity`
/// bytes, placing every Data chunk the core agrees to place. Returns the placements
/// (offset into the buffer, length) and rank 1's status.
fn run(buf: RecvBuf, buf_addr: usize) -> (Vec<(usize, usize)>, kawarimi_runtime::core::Status) {
    let (mut a, mut b) = pair();
    let data: Vec<u8> = (0..LEN).map(|i| i as u8).collect();
    let s = a.isend(1, 0, 5, SendData::Owned(data), false).unwrap();
    let r = b.irecv(0, 0, 5, buf).unwrap();
    let mut placed = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            let mut header = t.header;
            let mut payload = t.payload.into_vec();
            if header.kind == FrameKind::Data {
                if let Some(at) = b.placement(0, &header) {
                    assert_eq!(at.len, payload.len(), "a placement covers exactly the chunk");
                    placed.push((at.ptr as usize - buf_addr, at.len));
                    header.flags |= FLAG_PLACED;
                    payload = Vec::new();
                }
            }
            b.handle_frame(0, header, payload).unwrap();
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            a.handle_frame(1, t.header, t.payload.into_vec()).unwrap();
        }
        if !moved {
            break;
        }
    }
    assert!(a.is_complete(s) && b.is_complete(r), "the message went through");
    (placed, b.peek_status(r).unwrap())
}

#[test]
fn every_chunk_is_placed_at_its_offset_into_a_buffer_with_room() {
    let buf: &'static mut [u8] = Box::leak(vec![0u8; LEN].into_boxed_slice());
    let addr = buf.as_ptr() as usize;
    let (placed, status) = run(RecvBuf::Static(buf), addr);
    let expected: Vec<(usize, usize)> = (0..LEN).step_by(CHUNK).map(|o| (o, CHUNK.min(LEN - o))).collect();
    assert_eq!(placed, expected);
    assert_eq!((status.len, status.error), (LEN, None), "placed chunks count as received");
}

/// A truncating receive gets no placement past its end; a staging buffer (a receive that
/// unpacks, or a collective's) is placed like the application's own, chunk by chunk.
#[test]
fn a_truncating_receive_gets_no_placement_past_its_end_and_a_staging_buffer_gets_placed() {
    let small: &'static mut [u8] = Box::leak(vec![0u8; LEN - 10].into_boxed_slice());
    let addr = small.as_ptr() as usize;
    let (placed, status) = run(RecvBuf::Static(small), addr);
    // The chunks that fit whole could be placed; the last one, past the end, must not be.
    assert!(placed.iter().all(|&(o, n)| o + n <= LEN - 10), "nothing placed past the buffer: {placed:?}");
    assert!(placed.len() < LEN.div_ceil(CHUNK), "the chunk that overflows is copied: {placed:?}");
    assert_eq!(status.error, Some(kawarimi_runtime::error::ErrorClass::Truncate));
    let staging = vec![0u8; LEN];
    let addr = staging.as_ptr() as usize;
    let (placed, status) = run(RecvBuf::Owned(staging), addr);
    let expected: Vec<(usize, usize)> = (0..LEN).step_by(CHUNK).map(|o| (o, CHUNK.min(LEN - o))).collect();
    assert_eq!(placed, expected, "the staging buffer's heap block does not move while it receives");
    assert_eq!((status.len, status.error), (LEN, None));
}

/// The sending side's half: a rendezvous send from the application's buffer goes out of that
/// very buffer (every chunk a `Static` slice of it, no copy), and completes only once the
/// receiver has confirmed the last chunk, which it does at once (`FLAG_CONFIRM`, `Ack`).
#[test]
fn a_send_from_the_application_buffer_is_not_copied_and_completes_on_confirmation() {
    let (mut a, mut b) = pair();
    let data: &'static [u8] = Box::leak((0..LEN).map(|i| i as u8).collect::<Vec<_>>().into_boxed_slice());
    let s = a.isend(1, 0, 5, SendData::Static(data), false).unwrap();
    let r = b.irecv(0, 0, 5, RecvBuf::Owned(vec![0; LEN])).unwrap();
    let rts = a.poll_transmit().unwrap();
    b.handle_frame(0, rts.header, rts.payload.into_vec()).unwrap();
    let cts = b.poll_transmit().unwrap();
    a.handle_frame(1, cts.header, cts.payload.into_vec()).unwrap();
    let chunks: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert_eq!(chunks.len(), LEN.div_ceil(CHUNK));
    let range = data.as_ptr_range();
    for (i, t) in chunks.iter().enumerate() {
        let Payload::Static(p) = &t.payload else { panic!("chunk {i} is a copy: {:?}", t.payload) };
        assert!(range.contains(&p.as_ptr()), "chunk {i} points outside the application's buffer");
        let last = i + 1 == chunks.len();
        assert_eq!(t.header.flags & FLAG_CONFIRM != 0, last, "only the last chunk asks for confirmation");
    }
    assert!(!a.is_complete(s), "complete before the receiver had any of it");
    for t in chunks {
        b.handle_frame(0, t.header, t.payload.into_vec()).unwrap();
    }
    assert!(b.is_complete(r));
    assert!(!a.is_complete(s), "complete before the confirmation arrived");
    let ack = b.poll_transmit().expect("the receiver confirms at once");
    assert_eq!(ack.header.kind, FrameKind::Ack);
    a.handle_frame(1, ack.header, Vec::new()).unwrap();
    assert!(a.is_complete(s), "the confirmation completes the send");
    let got = b.take_completion(r).unwrap();
    let Some(RecvBuf::Owned(buf)) = got.recv_buf else { panic!("the receive buffer comes back") };
    assert_eq!(&buf[..], data);
}

/// Sends `len` bytes eagerly from rank 0 (synchronous mode when `sync`) and hands the frame
/// to rank 1 as a transport that holds it does: placement first, then the frame, flagged and
/// empty if placed (the transport would have copied the bytes to the placement). Returns the
/// placement's address and length, if any.
fn eager_through(a: &mut Core, b: &mut Core, len: usize, sync: bool) -> Option<(usize, usize)> {
    a.isend(1, 0, 5, SendData::Owned(vec![3; len]), sync).unwrap();
    let t = a.poll_transmit().unwrap();
    let mut header = t.header;
    let at = b.placement(0, &header);
    let mut payload = t.payload.into_vec();
    if at.is_some() {
        header.flags |= FLAG_PLACED;
        payload = Vec::new();
    }
    b.handle_frame(0, header, payload).unwrap();
    at.map(|at| (at.ptr as usize, at.len))
}

/// An eager frame the transport still holds is matched at once to a posted receive with room
/// for it, its payload goes straight into that receive's buffer, and the placed frame
/// completes it (a synchronous send's `SyncAck` included). Frames no posted receive takes, or
/// that a receive would truncate, are not placed; a placed receive cannot be cancelled any
/// more, and a frame that does not come flagged after a placement is refused.
#[test]
fn an_eager_frame_is_matched_when_placed_and_completes_its_receive_when_it_comes() {
    let (mut a, mut b) = pair();
    const N: usize = 12;
    let buf: &'static mut [u8] = Box::leak(vec![0u8; N + 4].into_boxed_slice());
    let addr = buf.as_ptr() as usize;
    let r = b.irecv(0, 0, 5, RecvBuf::Static(buf)).unwrap();
    assert_eq!(eager_through(&mut a, &mut b, N, true), Some((addr, N)), "placed at the buffer's start");
    assert!(b.is_complete(r));
    let st = b.peek_status(r).unwrap();
    assert_eq!((st.source, st.tag, st.len, st.error), (0, 5, N, None));
    let ack = b.poll_transmit().expect("a synchronous send is answered");
    assert_eq!(ack.header.kind, FrameKind::SyncAck);

    // Nothing posted: the frame comes with its bytes and waits as unexpected.
    assert_eq!(eager_through(&mut a, &mut b, N, false), None);
    assert!(b.iprobe(0, 0, 5).is_some(), "the unexpected message waits");
    let r = b.irecv(0, 0, 5, RecvBuf::Owned(vec![0; N])).unwrap();
    assert!(b.is_complete(r));
    // A receive that would truncate the message is not placed.
    let r = b.irecv(0, 0, 5, RecvBuf::Owned(vec![0; N - 1])).unwrap();
    assert_eq!(eager_through(&mut a, &mut b, N, false), None);
    assert_eq!(b.peek_status(r).unwrap().error, Some(kawarimi_runtime::error::ErrorClass::Truncate));

    // Placed, not yet come: the receive is matched, so it cannot be cancelled.
    let r = b.irecv(0, 0, 5, RecvBuf::Owned(vec![0; N])).unwrap();
    a.isend(1, 0, 5, SendData::Owned(vec![7; N]), false).unwrap();
    let t = a.poll_transmit().unwrap();
    assert!(b.placement(0, &t.header).is_some());
    assert!(!b.cancel_recv(r), "a placed receive is matched");
    assert!(!b.is_complete(r));
    // The frame that comes must be the placed one.
    let err = b.handle_frame(0, t.header, t.payload.into_vec()).unwrap_err();
    assert!(err.to_string().contains("before the one being placed"), "{err}");
}
