//! Fuzzing entry points shared by the `cargo fuzz` target (`fuzz/fuzz_targets/frame_decode.rs`)
//! and the stable-Rust bounded fuzz test (`tests/fuzz_stable.rs`). Not part of the API.
//!
//! [`check_input`] feeds arbitrary bytes to [`Header::decode`], to the TCP stream decoder
//! ([`FrameDecoder`]) and to the authentication handshake ([`Handshake`]), and asserts the
//! properties that must hold whatever the bytes (so a violation is a panic the fuzzer sees):
//! - nothing panics;
//! - an accepted header re-encodes to exactly the bytes it was decoded from;
//! - the frames the decoder emits, re-encoded, are exactly a prefix of the input, and
//!   splitting the input differently yields the same frames and the same error;
//! - a handshake fed the bytes consumes no more than it needs, and completes only if the
//!   bytes carry a valid response (proved by recomputing it).

use crate::auth::{compute_response, decode_hello, Handshake, JobSecret, Role, HELLO_LEN, RESPONSE_LEN};
use crate::wire::{DecodeError, FrameDecoder, Header, HEADER_LEN};

/// The authenticated sender rank the decoder entry point expects.
pub const FUZZ_SRC: u32 = 1;
/// The secret and nonce the handshake entry point uses (so seeds can carry a valid response).
pub const FUZZ_SECRET: [u8; 32] = [0x42; 32];
pub const FUZZ_RESPONDER_RANK: u32 = 9;
pub const FUZZ_RESPONDER_NONCE: [u8; 32] = [0x17; 32];

fn decode_all(data: &[u8], chunk: usize) -> (Vec<(Header, Vec<u8>)>, Option<DecodeError>) {
    let mut d = FrameDecoder::new(FUZZ_SRC);
    let mut frames = Vec::new();
    let mut err = None;
    for c in data.chunks(chunk.max(1)) {
        if let Err(e) = d.feed(c, &mut |h, p: crate::Payload| frames.push((h, p.into_vec()))) {
            err = Some(e);
            break;
        }
    }
    (frames, err)
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
