//! Fuzzing entry points shared by the `cargo fuzz` target (`fuzz/fuzz_targets/frame_decode.rs`)
//! and the stable-Rust bounded fuzz test (`tests/fuzz_stable.rs`). Not part of the API.
//!
//! [`check_input`] feeds arbitrary bytes to [`Header::decode`], to the TCP stream decoder
//! ([`FrameDecoder`]) and to the authentication handshake ([`Handshake`]), and asserts the
//! properties that must hold whatever the bytes (so a violation is a panic the fuzzer sees):
//! - nothing panics;
//! - an accepted header re-encodes to exactly the bytes it was decoded from;
//! - the frames the decoder emits, re-encoded, are exactly a prefix of the input, and
//!   splitting the input differently, or stopping at large payloads to place them, yields
//!   the same frames and the same error;
//! - a handshake fed the bytes consumes no more than it needs, and completes only if the
//!   bytes carry a valid response (proved by recomputing it).

use crate::auth::{compute_response, decode_hello, Handshake, JobSecret, Role, HELLO_LEN, RESPONSE_LEN};
use crate::wire::{DecodeError, FrameDecoder, Header, FLAG_PLACED, HEADER_LEN};

/// The authenticated sender rank the decoder entry point expects.
pub const FUZZ_SRC: u32 = 1;
/// The secret and nonce the handshake entry point uses (so seeds can carry a valid response).
pub const FUZZ_SECRET: [u8; 32] = [0x42; 32];
pub const FUZZ_RESPONDER_RANK: u32 = 9;
pub const FUZZ_RESPONDER_NONCE: [u8; 32] = [0x17; 32];

fn decode_all(data: &[u8], chunk: usize) -> (Vec<(Header, Vec<u8>)>, Option<DecodeError>) {
    decode_placing(data, chunk, None)
}

/// Decodes `data` fed in pieces of `chunk` bytes. With `Some(min)` the decoder stops at
/// payloads of at least `min` bytes and the answers alternate between a buffer of this
/// function's (whose bytes then stand in for the placed frame's, its flag cleared) and none,
/// so the result can be compared with decoding without placements.
fn decode_placing(
    data: &[u8],
    chunk: usize,
    place_min: Option<usize>,
) -> (Vec<(Header, Vec<u8>)>, Option<DecodeError>) {
    let mut d = FrameDecoder::new(FUZZ_SRC);
    if let Some(min) = place_min {
        d.ask_placement(min);
    }
    let mut frames = Vec::new();
    // The places handed out, in order; a placed frame takes the oldest not yet taken.
    let mut places: std::collections::VecDeque<Vec<u8>> = Default::default();
    let mut questions = 0usize;
    let mut emit = |h: Header, p: crate::Payload, places: &mut std::collections::VecDeque<Vec<u8>>| {
        if h.flags & FLAG_PLACED != 0 {
            let place = places.pop_front().expect("a placed frame was given a place");
            assert!(p.is_empty(), "a placed frame carries bytes");
            frames.push((Header { flags: h.flags & !FLAG_PLACED, ..h }, place));
        } else {
            frames.push((h, p.into_vec()));
        }
    };
    let mut pieces = data.chunks(chunk.max(1));
    loop {
        let fed = if d.holds_bytes() && d.asking().is_none() {
            d.resume(&mut |h, p| emit(h, p, &mut places))
        } else if let Some(c) = pieces.next() {
            d.feed(c, &mut |h, p| emit(h, p, &mut places))
        } else {
            break;
        };
        match fed {
            Ok(None) => {}
            Ok(Some(h)) => {
                questions += 1;
                let at = if questions % 2 == 1 {
                    places.push_back(vec![0; h.payload_len as usize]);
                    let place = places.back_mut().expect("just pushed");
                    Some(crate::Placement { ptr: place.as_mut_ptr(), len: place.len() })
                } else {
                    None
                };
                d.answer(at).expect("the decoder asked");
            }
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

/// Runs every entry point on `data`; panics if a property is violated.
pub fn check_input(data: &[u8]) {
    // 1. The header codec.
    if let Ok(h) = Header::decode(data) {
        assert_eq!(&h.encode()[..], &data[..HEADER_LEN], "accepted header does not re-encode identically");
    }

    // 2. The stream decoder, whole and split.
    let (frames, err) = decode_all(data, data.len());
    let mut reencoded = Vec::new();
    for (h, p) in &frames {
        assert_eq!(h.payload_len as usize, p.len(), "payload length mismatch");
        assert_eq!(h.src, FUZZ_SRC, "frame from the wrong source accepted");
        reencoded.extend_from_slice(&h.encode());
        reencoded.extend_from_slice(p);
    }
    assert!(
        reencoded.len() <= data.len() && data[..reencoded.len()] == reencoded[..],
        "frames do not re-encode to the input"
    );
    let chunk = 1 + data.first().copied().unwrap_or(0) as usize % 97;
    let (frames2, err2) = decode_all(data, chunk);
    assert_eq!(frames, frames2, "split changed the frames");
    assert_eq!(err, err2, "split changed the error");
    // Stopping at large payloads for a placement changes neither the frames nor the error.
    let place_min = 49 + data.get(1).copied().unwrap_or(0) as usize * 4;
    let (frames3, err3) = decode_placing(data, chunk, Some(place_min));
    assert_eq!(frames, frames3, "placements changed the frames");
    assert_eq!(err, err3, "placements changed the error");

    // 3. The handshake, as responder (learns the rank) and as initiator (expects rank 0).
    let secret = JobSecret::from_bytes(FUZZ_SECRET);
    for (role, my_rank, expected) in [(Role::Responder, FUZZ_RESPONDER_RANK, None), (Role::Initiator, 5, Some(0))] {
        let mut hs = Handshake::new(role, my_rank, expected, &secret, FUZZ_RESPONDER_NONCE);
        let mut consumed = 0;
        for c in data.chunks(chunk) {
            match hs.receive(c) {
                Ok(n) => {
                    assert!(n <= c.len());
                    consumed += n;
                    if n < c.len() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let out_len = hs.pending_output().len();
        hs.consume_output(out_len);
        if hs.is_done() {
            assert_eq!(consumed, HELLO_LEN + RESPONSE_LEN, "done after consuming {consumed} bytes");
            let mut hello = [0u8; HELLO_LEN];
            hello.copy_from_slice(&data[..HELLO_LEN]);
            let (peer, peer_nonce) = decode_hello(&hello).expect("a completed handshake had a valid hello");
            let want = compute_response(&secret, role_other(role), peer, my_rank, &FUZZ_RESPONDER_NONCE, &peer_nonce);
            assert_eq!(&data[HELLO_LEN..HELLO_LEN + RESPONSE_LEN], &want[..], "handshake accepted a wrong response");
        }
    }
}

fn role_other(r: Role) -> Role {
    match r {
        Role::Initiator => Role::Responder,
        Role::Responder => Role::Initiator,
    }
}

/// A valid handshake transcript from `peer_rank` (hello + correct response) to the responder
/// of [`check_input`], for seeding.
pub fn valid_handshake_input(peer_rank: u32, peer_nonce: [u8; 32]) -> Vec<u8> {
    let secret = JobSecret::from_bytes(FUZZ_SECRET);
    let mut v = crate::auth::encode_hello(peer_rank, &peer_nonce).to_vec();
    v.extend_from_slice(&compute_response(
        &secret,
        Role::Initiator,
        peer_rank,
        FUZZ_RESPONDER_RANK,
        &FUZZ_RESPONDER_NONCE,
        &peer_nonce,
    ));
    v
}
