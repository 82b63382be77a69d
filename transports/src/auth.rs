//! Connection authentication: a per-job secret and a mutual HMAC-SHA256 challenge-response.
//!
//! Every data-path connection (and every control connection) must prove that both ends hold
//! the job's [`JobSecret`] before a single frame crosses it, so another user's process on the
//! same network can neither inject frames nor trigger reads.
//!
//! Protocol (both sides run the same [`Handshake`], which is sans-IO):
//!
//! 1. Each side sends a hello, [`HELLO_LEN`] bytes: magic `"KWAU"`, version `u8`, its rank
//!    `u32` (little endian), a fresh 32-byte nonce.
//! 2. Once a side has the peer's hello it sends its response, [`RESPONSE_LEN`] bytes:
//!    `HMAC-SHA256(secret, "kawarimi-auth-v1" || role || own rank || peer rank || nonce_peer || nonce_own)`
//!    where `role` is `b'I'` for the side that connected (initiator) and `b'R'` for the side
//!    that accepted (responder). Role separation stops a reflection attack (sending a side's
//!    own challenge back to it); the peer's fresh nonce stops replay of a recorded response.
//! 3. Each side verifies the peer's response in constant time. A side is done once it has
//!    verified the peer and written its own response.
//!
//! The handshake consumes exactly the bytes it needs, so frames that follow on the same
//! stream are left unread for the data path.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{PeerId, TransportError, TransportResult};

/// Environment variable that carries the job secret (hex) from the launcher to each rank.
pub const SECRET_ENV: &str = "KAWARIMI_JOB_SECRET";
pub const AUTH_MAGIC: [u8; 4] = *b"KWAU";
pub const AUTH_VERSION: u8 = 1;
/// magic(4) + version(1) + rank(4) + nonce(32).
pub const HELLO_LEN: usize = 41;
/// One HMAC-SHA256 tag.
pub const RESPONSE_LEN: usize = 32;
/// Domain-separation label of the response MAC.
const LABEL: &[u8] = b"kawarimi-auth-v1";

type HmacSha256 = Hmac<Sha256>;

/// The per-job secret: 32 random bytes shared by every rank of one job (and the tools
/// allowed to talk to it). `Debug` never prints it; the bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct JobSecret([u8; 32]);

impl JobSecret {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; 32]) -> JobSecret {
        JobSecret(bytes)
    }

    /// 32 bytes from the kernel's CSPRNG (`/dev/urandom`).
    pub fn generate() -> TransportResult<JobSecret> {
        let mut b = [0u8; 32];
        fill_random(&mut b)?;
        Ok(JobSecret(b))
    }

    /// The secret as 64 lowercase hex digits, for an environment variable.
    pub fn to_hex(&self) -> String {
        const D: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for &b in &self.0 {
            s.push(D[(b >> 4) as usize] as char);
            s.push(D[(b & 15) as usize] as char);
        }
        s
    }

    /// Parses 64 hex digits (either case). The error never echoes the input.
    pub fn from_hex(s: &str) -> TransportResult<JobSecret> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(TransportError::Auth(format!("job secret must be 64 hex digits, got {} characters", s.len())));
        }
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            match (nib(pair[0]), nib(pair[1])) {
                (Some(h), Some(l)) => out[i] = (h << 4) | l,
                _ => return Err(TransportError::Auth("job secret contains a non-hex character".into())),
            }
        }
        Ok(JobSecret(out))
    }

    /// Reads the secret from [`SECRET_ENV`].
    pub fn from_env() -> TransportResult<JobSecret> {
        match std::env::var(SECRET_ENV) {
            Ok(v) => JobSecret::from_hex(&v),
            Err(_) => Err(TransportError::Auth(format!("{SECRET_ENV} is not set"))),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for JobSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobSecret(<redacted>)")
    }
}

impl Drop for JobSecret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into our own array; a
            // volatile write keeps the compiler from eliding the wipe of a dying value.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// Fills `buf` from `/dev/urandom`.
pub fn fill_random(buf: &mut [u8]) -> TransportResult<()> {
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| TransportError::Io { context: "open /dev/urandom".into(), source: e })?;
    f.read_exact(buf).map_err(|e| TransportError::Io { context: "read /dev/urandom".into(), source: e })
}

/// A fresh 32-byte nonce.
pub fn random_nonce() -> TransportResult<[u8; 32]> {
    let mut n = [0u8; 32];
    fill_random(&mut n)?;
    Ok(n)
}

/// Which end of the connection this side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that called `connect`.
    Initiator,
    /// The side that called `accept`.
    Responder,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Initiator => b'I',
            Role::Responder => b'R',
        }
    }
    fn other(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }
}

/// Why a handshake failed (sans-IO; the socket helpers wrap it in [`TransportError::Auth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    BadMagic([u8; 4]),
    BadVersion(u8),
    /// The peer claims a rank other than the one this side dialled.
    UnexpectedRank {
        expected: PeerId,
        got: PeerId,
    },
    /// The peer claims this side's own rank.
    SelfRank(PeerId),
    /// The peer's response does not match: it does not hold the job secret (or replays).
    BadResponse {
        peer_rank: PeerId,
    },
    /// The stream ended before the handshake did.
    Eof {
        state: &'static str,
    },
    /// Input arrived after the handshake failed or completed.
    Finished,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::BadMagic(m) => write!(f, "bad hello magic {m:02x?} (expected \"KWAU\")"),
            AuthError::BadVersion(v) => write!(f, "unsupported auth version {v} (expected {AUTH_VERSION})"),
            AuthError::UnexpectedRank { expected, got } => {
                write!(f, "peer claims rank {got}, expected rank {expected}")
            }
            AuthError::SelfRank(r) => write!(f, "peer claims this side's own rank {r}"),
            AuthError::BadResponse { peer_rank } => {
                write!(f, "rank {peer_rank} failed the challenge (wrong job secret or replayed response)")
            }
            AuthError::Eof { state } => write!(f, "connection closed during authentication ({state})"),
            AuthError::Finished => write!(f, "handshake already finished"),
        }
    }
}

impl std::error::Error for AuthError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHello,
    AwaitResponse,
    Verified,
    Failed,
}

/// The sans-IO handshake: feed it received bytes with [`Handshake::receive`], write out what
/// [`Handshake::pending_output`] holds and report it with [`Handshake::consume_output`]. Done
/// when [`Handshake::is_done`].
pub struct Handshake {
    role: Role,
    my_rank: PeerId,
    expected_peer: Option<PeerId>,
    secret: JobSecret,
    my_nonce: [u8; 32],
    out: Vec<u8>,
    out_pos: usize,
    inbuf: [u8; HELLO_LEN],
    in_have: usize,
    peer_rank: Option<PeerId>,
    peer_nonce: [u8; 32],
    state: State,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("my_rank", &self.my_rank)
            .field("peer_rank", &self.peer_rank)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts a handshake; the hello is queued at once. `expected_peer` is the rank an
    /// initiator dialled (a responder usually passes `None` and learns it from the hello,
    /// then checks it with [`Handshake::peer_rank`]). `my_nonce` must be fresh randomness
    /// ([`random_nonce`]); it is a parameter so tests and fuzzers are deterministic.
    pub fn new(
        role: Role,
        my_rank: PeerId,
        expected_peer: Option<PeerId>,
        secret: &JobSecret,
        my_nonce: [u8; 32],
    ) -> Handshake {
        let mut out = Vec::with_capacity(HELLO_LEN + RESPONSE_LEN);
        out.extend_from_slice(&encode_hello(my_rank, &my_nonce));
        Handshake {
            role,
            my_rank,
            expected_peer,
            secret: secret.clone(),
            my_nonce,
            out,
            out_pos: 0,
            inbuf: [0; HELLO_LEN],
            in_have: 0,
            peer_rank: None,
            peer_nonce: [0; 32],
            state: State::AwaitHello,
        }
    }

    /// Bytes that must be written to the peer next.
    pub fn pending_output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Marks `n` bytes of [`Handshake::pending_output`] as written.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
    }

    /// How many more input bytes the handshake needs before its next step (0 when it needs
    /// none). Reading at most this many keeps the frames that follow in the socket.
    pub fn input_needed(&self) -> usize {
        match self.state {
            State::AwaitHello => HELLO_LEN - self.in_have,
            State::AwaitResponse => RESPONSE_LEN - self.in_have,
            State::Verified | State::Failed => 0,
        }
    }

    /// Feeds received bytes; returns how many were consumed (never more than the handshake
    /// needs). After an error the handshake is failed for good.
    pub fn receive(&mut self, mut bytes: &[u8]) -> Result<usize, AuthError> {
        let mut consumed = 0;
        while !bytes.is_empty() {
            let need = self.input_needed();
            if need == 0 {
                if consumed == 0 {
                    return Err(AuthError::Finished);
                }
                break;
            }
            let take = need.min(bytes.len());
            self.inbuf[self.in_have..self.in_have + take].copy_from_slice(&bytes[..take]);
            self.in_have += take;
            consumed += take;
            bytes = &bytes[take..];
            if self.input_needed() == 0 {
                if let Err(e) = self.step() {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
        Ok(consumed)
    }

    /// Reports the end of the input stream.
    pub fn receive_eof(&mut self) -> AuthError {
        let state = match self.state {
            State::AwaitHello => "awaiting hello",
            State::AwaitResponse => "awaiting response",
            State::Verified => "after verification",
            State::Failed => "after failure",
        };
        self.state = State::Failed;
        AuthError::Eof { state }
    }

    fn step(&mut self) -> Result<(), AuthError> {
        match self.state {
            State::AwaitHello => {
                let (rank, nonce) = decode_hello(&self.inbuf)?;
                if rank == self.my_rank {
                    return Err(AuthError::SelfRank(rank));
                }
                if let Some(expected) = self.expected_peer {
                    if rank != expected {
                        return Err(AuthError::UnexpectedRank { expected, got: rank });
                    }
                }
                self.peer_rank = Some(rank);
                self.peer_nonce = nonce;
                let resp = compute_response(&self.secret, self.role, self.my_rank, rank, &nonce, &self.my_nonce);
                self.out.extend_from_slice(&resp);
                self.in_have = 0;
                self.state = State::AwaitResponse;
                Ok(())
            }
            State::AwaitResponse => {
                let peer_rank = self.peer_rank.unwrap_or(u32::MAX);
                let mac = response_mac(
                    &self.secret,
                    self.role.other(),
                    peer_rank,
                    self.my_rank,
                    &self.my_nonce,
                    &self.peer_nonce,
                );
                // Constant-time comparison (hmac's verify uses `subtle`).
                mac.verify_slice(&self.inbuf[..RESPONSE_LEN]).map_err(|_| AuthError::BadResponse { peer_rank })?;
                self.in_have = 0;
                self.state = State::Verified;
                Ok(())
            }
            State::Verified | State::Failed => Err(AuthError::Finished),
        }
    }

    /// The peer has proved it holds the secret and all our output has been written.
    pub fn is_done(&self) -> bool {
        self.state == State::Verified && self.pending_output().is_empty()
    }

    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The rank the peer claimed in its hello (authenticated once [`Handshake::is_done`]).
    pub fn peer_rank(&self) -> Option<PeerId> {
        self.peer_rank
    }

    pub fn role(&self) -> Role {
        self.role
    }
}

/// Encodes a hello message.
pub fn encode_hello(rank: PeerId, nonce: &[u8; 32]) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[0..4].copy_from_slice(&AUTH_MAGIC);
    b[4] = AUTH_VERSION;
    b[5..9].copy_from_slice(&rank.to_le_bytes());
    b[9..41].copy_from_slice(nonce);
    b
}

/// Decodes and validates a hello message: `(rank, nonce)`.
pub fn decode_hello(b: &[u8; HELLO_LEN]) -> Result<(PeerId, [u8; 32]), AuthError> {
    let magic = [b[0], b[1], b[2], b[3]];
    if magic != AUTH_MAGIC {
        return Err(AuthError::BadMagic(magic));
    }
    if b[4] != AUTH_VERSION {
        return Err(AuthError::BadVersion(b[4]));
    }
    let rank = u32::from_le_bytes([b[5], b[6], b[7], b[8]]);
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&b[9..41]);
    Ok((rank, nonce))
}

fn response_mac(
    secret: &JobSecret,
    role: Role,
    own_rank: PeerId,
    peer_rank: PeerId,
    nonce_peer: &[u8; 32],
    nonce_own: &[u8; 32],
) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(LABEL);
    mac.update(&[role.byte()]);
    mac.update(&own_rank.to_le_bytes());
    mac.update(&peer_rank.to_le_bytes());
    mac.update(nonce_peer);
    mac.update(nonce_own);
    mac
}

/// The response the side with `role` and `own_rank` sends to `peer_rank`.
pub fn compute_response(
    secret: &JobSecret,
    role: Role,
    own_rank: PeerId,
    peer_rank: PeerId,
    nonce_peer: &[u8; 32],
    nonce_own: &[u8; 32],
) -> [u8; RESPONSE_LEN] {
    let tag = response_mac(secret, role, own_rank, peer_rank, nonce_peer, nonce_own).finalize().into_bytes();
    let mut out = [0u8; RESPONSE_LEN];
    out.copy_from_slice(&tag);
    out
}

/// Runs a handshake to completion on a blocking socket, bounded by `auth_timeout`.
/// Returns the peer's authenticated rank. The socket's read/write timeouts are changed
/// (and cleared on return). Errors are [`TransportError::Auth`] naming the peer's address.
pub fn authenticate_stream(
    stream: &mut TcpStream,
    role: Role,
    my_rank: PeerId,
    expected_peer: Option<PeerId>,
    secret: &JobSecret,
    auth_timeout: Duration,
) -> TransportResult<PeerId> {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "<unknown address>".into());
    let fail = |what: String| TransportError::Auth(format!("peer {peer}: {what}"));
    let deadline = Instant::now() + auth_timeout;
    let mut hs = Handshake::new(role, my_rank, expected_peer, secret, random_nonce()?);
    let result = (|| {
        let mut buf = [0u8; HELLO_LEN];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(fail(format!("timed out after {} ms", auth_timeout.as_millis())));
            }
            stream.set_write_timeout(Some(remaining)).map_err(|e| fail(format!("set timeout: {e}")))?;
            stream.set_read_timeout(Some(remaining)).map_err(|e| fail(format!("set timeout: {e}")))?;
            if !hs.pending_output().is_empty() {
                match stream.write(hs.pending_output()) {
                    Ok(0) => return Err(fail("connection closed while writing".into())),
                    Ok(n) => hs.consume_output(n),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return Err(fail(format!("write: {e}"))),
                }
                continue;
            }
            if hs.is_done() {
                return hs.peer_rank().ok_or_else(|| fail("no peer rank".into()));
            }
            let need = hs.input_needed();
            match stream.read(&mut buf[..need]) {
                Ok(0) => return Err(fail(hs.receive_eof().to_string())),
                Ok(n) => {
                    hs.receive(&buf[..n]).map_err(|e| fail(e.to_string()))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(fail(format!("read: {e}"))),
            }
        }
    })();
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    result
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn secret(b: u8) -> JobSecret {
        JobSecret::from_bytes([b; 32])
    }

    /// Runs two handshakes against each other in memory; returns their results.
    fn pump(a: &mut Handshake, b: &mut Handshake) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let mut ra = Ok(());
        let mut rb = Ok(());
        for _ in 0..8 {
            let out_a = a.pending_output().to_vec();
            a.consume_output(out_a.len());
            let out_b = b.pending_output().to_vec();
            b.consume_output(out_b.len());
            if !out_a.is_empty() && rb.is_ok() {
                rb = b.receive(&out_a).map(|_| ());
            }
            if !out_b.is_empty() && ra.is_ok() {
                ra = a.receive(&out_b).map(|_| ());
            }
        }
        (ra, rb)
    }

    #[test]
    fn hex_round_trip_and_debug_redacts() {
        let s = JobSecret::generate().unwrap();
        let h = s.to_hex();
        assert_eq!(h.len(), 64);
        assert_eq!(JobSecret::from_hex(&h).unwrap(), s);
        assert_eq!(JobSecret::from_hex(&h.to_uppercase()).unwrap(), s);
        assert!(!format!("{s:?}").contains(&h[..8]));
        assert_eq!(format!("{s:?}"), "JobSecret(<redacted>)");
        assert!(JobSecret::from_hex("abc").is_err());
        let bad = "z".repeat(64);
        let err = JobSecret::from_hex(&bad).unwrap_err().to_string();
        assert!(!err.contains("zz"), "error must not echo the input: {err}");
        assert_ne!(JobSecret::generate().unwrap(), s);
    }

    #[test]
    fn right_secret_passes_both_directions() {
        let mut a = Handshake::new(Role::Initiator, 1, Some(5), &secret(7), [1; 32]);
        let mut b = Handshake::new(Role::Responder, 5, None, &secret(7), [2; 32]);
        let (ra, rb) = pump(&mut a, &mut b);
        assert_eq!(ra, Ok(()));
        assert_eq!(rb, Ok(()));
        assert!(a.is_done() && b.is_done());
        assert_eq!(a.peer_rank(), Some(5));
        assert_eq!(b.peer_rank(), Some(1));
    }

    #[test]
    fn wrong_secret_fails_on_both_ends() {
        let mut a = Handshake::new(Role::Initiator, 0, Some(1), &secret(7), [1; 32]);
        let mut b = Handshake::new(Role::Responder, 1, None, &secret(8), [2; 32]);
        let (ra, rb) = pump(&mut a, &mut b);
        assert_eq!(ra, Err(AuthError::BadResponse { peer_rank: 1 }));
        assert_eq!(rb, Err(AuthError::BadResponse { peer_rank: 0 }));
        assert!(!a.is_done() && !b.is_done());
    }

    #[test]
    fn initiator_rejects_unexpected_rank_and_self_rank() {
        let mut a = Handshake::new(Role::Initiator, 0, Some(1), &secret(7), [1; 32]);
        let mut b = Handshake::new(Role::Responder, 2, None, &secret(7), [2; 32]);
        let (ra, _) = pump(&mut a, &mut b);
        assert_eq!(ra, Err(AuthError::UnexpectedRank { expected: 1, got: 2 }));
        let mut c = Handshake::new(Role::Responder, 3, None, &secret(7), [2; 32]);
        assert_eq!(c.receive(&encode_hello(3, &[9; 32])), Err(AuthError::SelfRank(3)));
    }

    #[test]
    fn truncated_and_garbage_hello_rejected() {
        let mut b = Handshake::new(Role::Responder, 1, None, &secret(7), [2; 32]);
        let hello = encode_hello(0, &[1; 32]);
        assert_eq!(b.receive(&hello[..20]), Ok(20));
        assert!(!b.is_done());
        assert!(matches!(b.receive_eof(), AuthError::Eof { .. }));

        let mut b = Handshake::new(Role::Responder, 1, None, &secret(7), [2; 32]);
        assert!(matches!(b.receive(&[0xAB; HELLO_LEN]), Err(AuthError::BadMagic(_))));
        assert!(b.is_failed());
        assert_eq!(b.receive(&[0]), Err(AuthError::Finished));

        let mut b = Handshake::new(Role::Responder, 1, None, &secret(7), [2; 32]);
        let mut v = hello;
        v[4] = 9;
        assert_eq!(b.receive(&v), Err(AuthError::BadVersion(9)));
    }

    #[test]
    fn byte_at_a_time_and_no_overread() {
        let mut a = Handshake::new(Role::Initiator, 0, Some(1), &secret(7), [1; 32]);
        let mut b = Handshake::new(Role::Responder, 1, None, &secret(7), [2; 32]);
        let hello_b = b.pending_output().to_vec();
        b.consume_output(hello_b.len());
        let mut stream_a_to_b = a.pending_output().to_vec();
        a.consume_output(stream_a_to_b.len());
        for byte in &hello_b {
            assert_eq!(a.receive(std::slice::from_ref(byte)), Ok(1));
        }
        stream_a_to_b.extend_from_slice(a.pending_output());
        a.consume_output(RESPONSE_LEN);
        stream_a_to_b.extend_from_slice(b"FRAME-BYTES-AFTER");
        // b consumes exactly hello + response and leaves the rest.
        let used = b.receive(&stream_a_to_b).unwrap();
        assert_eq!(used, HELLO_LEN + RESPONSE_LEN);
        // b's response still pending → not done until written.
        assert!(!b.is_done());
        let resp_b = b.pending_output().to_vec();
        b.consume_output(resp_b.len());
        assert!(b.is_done());
        assert_eq!(a.receive(&resp_b), Ok(RESPONSE_LEN));
        assert!(a.is_done());
    }

    #[test]
    fn replayed_response_with_fresh_nonce_fails() {
        // Record a legitimate session between rank 0 (initiator) and rank 1.
        let mut a = Handshake::new(Role::Initiator, 0, Some(1), &secret(7), [1; 32]);
        let mut b = Handshake::new(Role::Responder, 1, None, &secret(7), [2; 32]);
        let hello_a = a.pending_output().to_vec();
        a.consume_output(HELLO_LEN);
        let hello_b = b.pending_output().to_vec();
        b.consume_output(HELLO_LEN);
        b.receive(&hello_a).unwrap();
        a.receive(&hello_b).unwrap();
        let recorded_resp_a = a.pending_output().to_vec();
        // An attacker without the secret replays rank 0's hello and response to rank 1,
        // which picks a fresh nonce.
        let mut fresh = Handshake::new(Role::Responder, 1, None, &secret(7), [3; 32]);
        fresh.receive(&hello_a).unwrap();
        assert_eq!(fresh.receive(&recorded_resp_a), Err(AuthError::BadResponse { peer_rank: 0 }));
        // Reflection: echoing the responder's own response back fails too (role separation).
        let mut fresh2 = Handshake::new(Role::Responder, 1, None, &secret(7), [4; 32]);
        fresh2.receive(&hello_a).unwrap();
        let own = fresh2.pending_output()[HELLO_LEN..].to_vec();
        assert!(fresh2.receive(&own).is_err());
    }

    fn socket_pair_auth(sa: JobSecret, sb: JobSecret) -> (TransportResult<PeerId>, TransportResult<PeerId>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            authenticate_stream(&mut s, Role::Responder, 1, None, &sb, Duration::from_secs(5))
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let ra = authenticate_stream(&mut c, Role::Initiator, 0, Some(1), &sa, Duration::from_secs(5));
        (ra, t.join().unwrap())
    }

    #[test]
    fn blocking_helper_right_and_wrong_secret() {
        let (a, b) = socket_pair_auth(secret(1), secret(1));
        assert_eq!(a.unwrap(), 1);
        assert_eq!(b.unwrap(), 0);
        let (a, b) = socket_pair_auth(secret(1), secret(2));
        for r in [a, b] {
            match r {
                Err(TransportError::Auth(msg)) => {
                    assert!(msg.contains("127.0.0.1:"), "must name the peer address: {msg}");
                }
                other => panic!("expected Auth error, got {other:?}"),
            }
        }
    }

    #[test]
    fn blocking_helper_times_out_on_silent_peer() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _held = l.accept().unwrap();
        let t0 = Instant::now();
        let r = authenticate_stream(&mut c, Role::Initiator, 0, Some(1), &secret(1), Duration::from_millis(200));
        assert!(matches!(r, Err(TransportError::Auth(ref m)) if m.contains("timed out")), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
}
