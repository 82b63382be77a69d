//! The wire format of kawarimi's data path: a fixed, versioned frame header followed by
//! `payload_len` bytes of payload.
//!
//! Every frame carries `(epoch, seq)`: `epoch` counts the switches the job has been through,
//! `seq` numbers the frames of one sender→receiver channel. The receiver uses them to keep
//! exactly-once, in-order delivery across reconnects.
//!
//! Layout (little endian), `HEADER_LEN` bytes. Fields are only ever added at the end, with a
//! version bump; never reordered.
//!
//! | offset | field | type |
//! |---|---|---|
//! | 0 | magic `0x4B57` ("KW") | u16 |
//! | 2 | version | u8 |
//! | 3 | kind | u8 |
//! | 4 | flags | u32 |
//! | 8 | epoch | u32 |
//! | 12 | src (sender's world rank) | u32 |
//! | 16 | seq | u64 |
//! | 24 | ctx (communicator context id) | u32 |
//! | 28 | tag | i32 |
//! | 32 | msg_id | u64 |
//! | 40 | arg (kind-specific: total length, offset, receiver's id) | u64 |
//! | 48 | payload_len | u32 |
//! | 52 | ack: the low 32 bits of how many frames of the reverse channel the sender has taken | u32 |
//!
//! Version 2 gave the last field to `ack` (version 1 kept it zero): the sender of a frame
//! keeps every frame it sent until the peer's `ack` covers it, so that after a link dies the
//! frames the peer never took can be sent again on another network.
//!
//! [`FrameDecoder`] turns a byte stream into validated frames, with no socket in sight: the
//! TCP transport, the verbs channel, the fuzzers and the tests all feed it.

use std::fmt;
use std::mem::MaybeUninit;

use crate::Payload;

use crate::PeerId;

pub const MAGIC: u16 = 0x4B57;
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 56;
/// The largest payload one frame may carry. Rendezvous data is cut into chunks below this.
pub const MAX_PAYLOAD_LEN: u32 = 8 << 20;
/// In a delivered frame's flags (never on the wire): the transport has already written the
/// payload where the runtime said ([`crate::Transport::place`]); the frame carries none.
pub const FLAG_PLACED: u32 = 1 << 30;
/// On the wire, set only by the transport that carries the frame (the runtime leaves it
/// zero): the payload is not in the frame but a description of where in the sender's memory
/// the receiving transport reads it (verbs: an RDMA read; shared memory: a single copy).
/// The receiving transport clears it and delivers the payload itself.
pub const FLAG_DESCRIBED: u32 = 1 << 31;
/// On the wire: the frame is sent again after its link died (a repair), and the receiver may
/// already hold it: it drops such a frame when its sequence number is behind, and takes it
/// like any other when it is the next.
pub const FLAG_REPLAY: u32 = 1 << 0;
/// On the wire: the sender waits for this frame to be confirmed (its send completes then, so
/// that the frame could be sent from the application's buffer without a copy): the receiver
/// answers with an `Ack` as soon as it has taken it.
pub const FLAG_CONFIRM: u32 = 1 << 1;

/// What a frame is for. The numbering is part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A whole message: envelope in the header, data in the payload.
    Eager = 1,
    /// Like `Eager`, but the sender waits for `SyncAck` once it is matched (MPI_Ssend).
    EagerSync = 2,
    /// Request to send: envelope plus total length in `arg`; data follows after `Cts`.
    Rts = 3,
    /// Clear to send: `msg_id` names the sender's message, `arg` the receiver's request.
    Cts = 4,
    /// Rendezvous data: `msg_id` is the receiver's request, `arg` the byte offset.
    Data = 5,
    /// The synchronous eager message `msg_id` was matched.
    SyncAck = 6,
    /// Drain marker: every frame of this channel before it has been delivered.
    Marker = 7,
    /// The sender has finalized and sends nothing more on this channel.
    Bye = 8,
    /// The sending rank is aborting the job; `arg` is the error code, payload a message.
    Abort = 9,
    /// Only carries `ack`: the receiver took many frames and has nothing to send back.
    Ack = 10,
}

impl FrameKind {
    pub fn from_u8(v: u8) -> Option<FrameKind> {
        Some(match v {
            1 => FrameKind::Eager,
            2 => FrameKind::EagerSync,
            3 => FrameKind::Rts,
            4 => FrameKind::Cts,
            5 => FrameKind::Data,
            6 => FrameKind::SyncAck,
            7 => FrameKind::Marker,
            8 => FrameKind::Bye,
            9 => FrameKind::Abort,
            10 => FrameKind::Ack,
            _ => return None,
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameKind,
    pub flags: u32,
    pub epoch: u32,
    pub src: u32,
    pub seq: u64,
    pub ctx: u32,
    pub tag: i32,
    pub msg_id: u64,
    pub arg: u64,
    pub payload_len: u32,
    /// Low 32 bits of the sequence number the sender of this frame expects next from its
    /// receiver: every frame below it has been taken. (A sender never has 2^32 frames
    /// unconfirmed, so the low bits name the number.)
    pub ack: u32,
}

/// Why a header was rejected: each variant names what was expected and what arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame too short: expected {expected} header bytes, got {got}")]
    Short { expected: usize, got: usize },
    #[error("bad magic: expected {expected:#06x}, got {got:#06x}")]
    BadMagic { expected: u16, got: u16 },
    #[error("unsupported wire version: expected {expected}, got {got}")]
    Version { expected: u8, got: u8 },
    #[error("unknown frame kind {got}")]
    UnknownKind { got: u8 },
    #[error("payload of {got} bytes exceeds the limit of {max}")]
    PayloadTooLarge { max: u32, got: u32 },
    #[error("frame kind {kind:?} must not carry a payload, got {got} bytes")]
    UnexpectedPayload { kind: FrameKind, got: u32 },
    #[error("flags {flags:#010x} on the wire include FLAG_PLACED, which only a receiving transport sets")]
    PlacedOnTheWire { flags: u32 },
}

impl Header {
    /// A header of `kind` with every other field zero.
    pub fn new(kind: FrameKind) -> Header {
        Header { kind, flags: 0, epoch: 0, src: 0, seq: 0, ctx: 0, tag: 0, msg_id: 0, arg: 0, payload_len: 0, ack: 0 }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        b[2] = VERSION;
        b[3] = self.kind as u8;
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        b[12..16].copy_from_slice(&self.src.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..28].copy_from_slice(&self.ctx.to_le_bytes());
        b[28..32].copy_from_slice(&self.tag.to_le_bytes());
        b[32..40].copy_from_slice(&self.msg_id.to_le_bytes());
        b[40..48].copy_from_slice(&self.arg.to_le_bytes());
        b[48..52].copy_from_slice(&self.payload_len.to_le_bytes());
        b[52..56].copy_from_slice(&self.ack.to_le_bytes());
        b
    }

    /// Decodes and validates a header. Never panics, whatever the bytes.
    pub fn decode(b: &[u8]) -> Result<Header, WireError> {
        let Some(b) = b.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Short { expected: HEADER_LEN, got: b.len() });
        };
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let magic = u16_at(0);
        if magic != MAGIC {
            return Err(WireError::BadMagic { expected: MAGIC, got: magic });
        }
        if b[2] != VERSION {
            return Err(WireError::Version { expected: VERSION, got: b[2] });
        }
        let kind = FrameKind::from_u8(b[3]).ok_or(WireError::UnknownKind { got: b[3] })?;
        let payload_len = u32_at(48);
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(WireError::PayloadTooLarge { max: MAX_PAYLOAD_LEN, got: payload_len });
        }
        let carries_payload =
            matches!(kind, FrameKind::Eager | FrameKind::EagerSync | FrameKind::Data | FrameKind::Abort);
        if !carries_payload && payload_len != 0 {
            return Err(WireError::UnexpectedPayload { kind, got: payload_len });
        }
        // A frame that claimed to be placed would complete a receive with bytes never sent.
        let flags = u32_at(4);
        if flags & FLAG_PLACED != 0 {
            return Err(WireError::PlacedOnTheWire { flags });
        }
        Ok(Header {
            kind,
            flags,
            epoch: u32_at(8),
            src: u32_at(12),
            seq: u64_at(16),
            ctx: u32_at(24),
            tag: u32_at(28) as i32,
            msg_id: u64_at(32),
            arg: u64_at(40),
            payload_len,
            ack: u32_at(52),
        })
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}(epoch={} src={} seq={} ctx={} tag={} msg={} arg={} len={} ack={})",
            self.kind,
            self.epoch,
            self.src,
            self.seq,
            self.ctx,
            self.tag,
            self.msg_id,
            self.arg,
            self.payload_len,
            self.ack
        )
    }
}

// The stream decoder (sans-IO): what every stream transport (TCP, the verbs channel) turns
// its bytes into frames with.

/// Why the decoder rejected a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Wire(WireError),
    /// The header's `src` is not the rank that authenticated this connection.
    WrongSource {
        expected: PeerId,
        got: u32,
    },
    /// Bytes that should hold exactly one frame hold more or less than its header says.
    NotWhole {
        payload_len: u32,
        got: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Wire(e) => write!(f, "{e}"),
            DecodeError::NotWhole { payload_len, got } => {
                write!(f, "not one whole frame: the header gives a payload of {payload_len} bytes, {got} follow it")
            }
            DecodeError::WrongSource { expected, got } => {
                write!(f, "header names sender rank {got}, but the connection authenticated rank {expected}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Splits a byte stream into validated frames. Knows nothing of sockets, so it can be fed
/// from a test or a fuzzer. A payload of at most [`crate::INLINE_BYTES`] that comes whole
/// with its header is emitted inline; every other payload Vec is allocated once, at its
/// exact size.
///
/// With [`FrameDecoder::ask_placement`] the decoder stops at the header of a payload of at
/// least the given size and returns it from `feed`: the caller asks the runtime where the
/// payload goes ([`crate::Event::Incoming`]) and hands the answer to
/// [`FrameDecoder::answer`]. The stream bytes fed after that header wait in the decoder
/// until then; [`FrameDecoder::resume`] goes on with them. A payload placed that way is
/// written straight into the runtime's buffer (the TCP transport reads the socket into it),
/// and its frame is emitted flagged [`FLAG_PLACED`], without bytes.
#[derive(Debug)]
pub struct FrameDecoder {
    expected_src: PeerId,
    hdr: [u8; HEADER_LEN],
    hdr_have: usize,
    body: Body,
    failed: Option<DecodeError>,
    /// Payloads of at least this many bytes wait for a placement (`usize::MAX`: none does).
    place_min: usize,
    /// Stream bytes fed after a header that waits for its placement, from `held_at` on.
    held: Vec<u8>,
    held_at: usize,
}

/// The frame the decoder is in the middle of.
#[derive(Debug)]
enum Body {
    /// Between frames (a header may be partly in `hdr`).
    Between,
    /// A payload read into a buffer of its own.
    Buffer(Header, Vec<u8>),
    /// A payload whose place the caller was asked for.
    Asking(Header),
    /// A payload landing where the runtime said; `have` bytes of it are there.
    Placed { header: Header, at: crate::Placement, have: usize },
}

impl FrameDecoder {
    /// A decoder for a connection authenticated as rank `expected_src`.
    pub fn new(expected_src: PeerId) -> FrameDecoder {
        FrameDecoder {
            expected_src,
            hdr: [0; HEADER_LEN],
            hdr_have: 0,
            body: Body::Between,
            failed: None,
            place_min: usize::MAX,
            held: Vec::new(),
            held_at: 0,
        }
    }

    /// From now on, stops at every frame whose payload has at least `min_bytes` (and more
    /// than [`crate::INLINE_BYTES`]) and asks where it goes (see the type's docs).
    pub fn ask_placement(&mut self, min_bytes: usize) {
        self.place_min = min_bytes.max(crate::INLINE_BYTES + 1);
    }

    /// Feeds stream bytes, calling `emit` for each complete frame in order. `Some(header)`:
    /// the decoder stopped at that header to ask where its payload goes, and keeps the rest
    /// of `bytes` until [`FrameDecoder::answer`]. After an error the decoder stays failed
    /// (the stream cannot be resynchronised).
    pub fn feed<F: FnMut(Header, Payload)>(
        &mut self,
        bytes: &[u8],
        emit: &mut F,
    ) -> Result<Option<Header>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.holds_bytes() || matches!(self.body, Body::Asking(_)) {
            // Behind the bytes already waiting: the stream's order is kept.
            self.held.extend_from_slice(bytes);
            return self.resume(emit);
        }
        let (used, asked) = self.step(bytes, emit)?;
        if asked.is_some() {
            self.held.clear();
            self.held.extend_from_slice(&bytes[used..]);
            self.held_at = 0;
        }
        Ok(asked)
    }

    /// Goes on with the bytes held since the decoder stopped to ask, once answered (nothing
    /// happens while the question is open). Returns as [`FrameDecoder::feed`].
    pub fn resume<F: FnMut(Header, Payload)>(&mut self, emit: &mut F) -> Result<Option<Header>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if matches!(self.body, Body::Asking(_)) || !self.holds_bytes() {
            return Ok(None);
        }
        let held = std::mem::take(&mut self.held);
        let at = self.held_at;
        let stepped = self.step(&held[at..], emit);
        self.held = held;
        let (used, asked) = stepped?;
        self.held_at = at + used;
        if self.held_at == self.held.len() {
            self.held.clear();
            self.held_at = 0;
        }
        Ok(asked)
    }

    /// Whether stream bytes wait in the decoder (see [`FrameDecoder::resume`]).
    pub fn holds_bytes(&self) -> bool {
        self.held_at < self.held.len()
    }

    /// The header the decoder stopped at, while its placement is not answered.
    pub fn asking(&self) -> Option<&Header> {
        match &self.body {
            Body::Asking(h) => Some(h),
            _ => None,
        }
    }

    /// Answers the question the decoder stopped at: the payload lands at `at`, which must
    /// have exactly its length and stay valid and untouched by anyone else until its frame
    /// is emitted; or (`None`) in a buffer of the decoder's, as usual.
    pub fn answer(&mut self, at: Option<crate::Placement>) -> Result<(), String> {
        let Body::Asking(header) = self.body else { return Err("no placement was asked".into()) };
        let len = header.payload_len as usize;
        self.body = match at {
            None => Body::Buffer(header, Vec::with_capacity(len)),
            Some(at) if at.len == len => Body::Placed { header, at, have: 0 },
            Some(at) => return Err(format!("{} bytes offered for a payload of {len}", at.len)),
        };
        Ok(())
    }

    /// Decodes from `bytes` until they are used up or a header waits for its placement;
    /// returns how many bytes it took, and that header.
    fn step<F: FnMut(Header, Payload)>(
        &mut self,
        bytes: &[u8],
        emit: &mut F,
    ) -> Result<(usize, Option<Header>), DecodeError> {
        let mut used = 0;
        while used < bytes.len() {
            let rest = &bytes[used..];
            match &mut self.body {
                Body::Asking(_) => break,
                Body::Buffer(h, body) => {
                    let take = (h.payload_len as usize - body.len()).min(rest.len());
                    body.extend_from_slice(&rest[..take]);
                    used += take;
                    self.finish_body_if_complete(emit);
                }
                Body::Placed { at, have, .. } => {
                    let take = (at.len - *have).min(rest.len());
                    at.bytes()[*have..*have + take].copy_from_slice(&rest[..take]);
                    *have += take;
                    used += take;
                    self.finish_body_if_complete(emit);
                }
                Body::Between => {
                    let take = (HEADER_LEN - self.hdr_have).min(rest.len());
                    self.hdr[self.hdr_have..self.hdr_have + take].copy_from_slice(&rest[..take]);
                    self.hdr_have += take;
                    used += take;
                    if self.hdr_have < HEADER_LEN {
                        continue;
                    }
                    self.hdr_have = 0;
                    let h = self.start_frame()?;
                    let len = h.payload_len as usize;
                    let rest = &bytes[used..];
                    if len == 0 {
                        emit(h, Payload::Empty);
                    } else if len >= self.place_min {
                        self.body = Body::Asking(h);
                        return Ok((used, Some(h)));
                    } else if len <= crate::INLINE_BYTES && rest.len() >= len {
                        emit(h, Payload::copied(&rest[..len]));
                        used += len;
                    } else {
                        self.body = Body::Buffer(h, Vec::with_capacity(len));
                    }
                }
            }
        }
        Ok((used, None))
    }

    /// The header just completed, validated.
    fn start_frame(&mut self) -> Result<Header, DecodeError> {
        let hdr = self.hdr;
        self.check_header(&hdr).map_err(|e| self.fail(e))
    }

    /// Decodes `bytes`, which must be exactly one whole frame (a record of the shared-memory
    /// rings), validated as [`FrameDecoder::feed`] validates it: the same result as feeding
    /// them, without the stream's buffering. Only between frames of a stream.
    pub fn whole(&mut self, bytes: &[u8]) -> Result<(Header, Payload), DecodeError> {
        debug_assert!(!self.mid_frame(), "a whole frame in the middle of another");
        let h = self.peek_header(bytes).map_err(|e| self.fail(e))?;
        let body = &bytes[HEADER_LEN..];
        if body.len() != h.payload_len as usize {
            let e = DecodeError::NotWhole { payload_len: h.payload_len, got: body.len() };
            return Err(self.fail(e));
        }
        Ok((h, if body.is_empty() { Payload::Empty } else { Payload::copied(body) }))
    }

    /// The header at the start of `bytes`, validated as [`FrameDecoder::feed`] validates it,
    /// without taking it: for a transport that holds a whole frame in place and would copy its
    /// payload elsewhere than a new buffer (it then feeds the frame, or skips it, as it goes).
    pub fn peek_header(&self, bytes: &[u8]) -> Result<Header, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.check_header(bytes)
    }

    fn check_header(&self, bytes: &[u8]) -> Result<Header, DecodeError> {
        let h = Header::decode(bytes).map_err(DecodeError::Wire)?;
        if h.src != self.expected_src {
            return Err(DecodeError::WrongSource { expected: self.expected_src, got: h.src });
        }
        Ok(h)
    }

    fn finish_body_if_complete<F: FnMut(Header, Payload)>(&mut self, emit: &mut F) {
        let complete = match &self.body {
            Body::Buffer(h, b) => b.len() == h.payload_len as usize,
            Body::Placed { at, have, .. } => *have == at.len,
            Body::Between | Body::Asking(_) => false,
        };
        if !complete {
            return;
        }
        match std::mem::replace(&mut self.body, Body::Between) {
            Body::Buffer(h, b) => emit(h, Payload::Owned(b)),
            Body::Placed { header, .. } => emit(Header { flags: header.flags | FLAG_PLACED, ..header }, Payload::Empty),
            Body::Between | Body::Asking(_) => {}
        }
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e.clone());
        e
    }

    /// True while a frame is partly received (an EOF now loses it).
    pub fn mid_frame(&self) -> bool {
        self.hdr_have > 0 || !matches!(self.body, Body::Between) || self.holds_bytes()
    }

    /// When at least `min` payload bytes of the current frame are still missing (and no
    /// stream bytes wait in the decoder, which come first): the uninitialised rest of where
    /// the payload goes, to read into directly.
    pub(crate) fn direct_buffer(&mut self, min: usize) -> Option<&mut [MaybeUninit<u8>]> {
        if self.failed.is_some() || self.holds_bytes() {
            return None;
        }
        match &mut self.body {
            Body::Buffer(h, body) if h.payload_len as usize - body.len() >= min => {
                let missing = h.payload_len as usize - body.len();
                Some(&mut body.spare_capacity_mut()[..missing])
            }
            Body::Placed { at, have, .. } if at.len - *have >= min => {
                // SAFETY: `at` is the runtime's buffer of `at.len` bytes, valid and left to
                // this decoder until the frame is emitted (`answer`'s contract); the range
                // from `have` is inside it, and initialised bytes may be seen as uninit.
                Some(unsafe {
                    std::slice::from_raw_parts_mut(at.ptr.add(*have).cast::<MaybeUninit<u8>>(), at.len - *have)
                })
            }
            _ => None,
        }
    }

    /// Records that `n` bytes were written into the buffer [`Self::direct_buffer`] returned.
    ///
    /// # Safety
    /// The first `n` elements of that buffer must have been initialised, and `n` must not
    /// exceed its length.
    pub(crate) unsafe fn commit_direct<F: FnMut(Header, Payload)>(&mut self, n: usize, emit: &mut F) {
        match &mut self.body {
            Body::Buffer(h, body) => {
                let new_len = (body.len() + n).min(h.payload_len as usize);
                // SAFETY: the caller initialised `n` bytes of the spare capacity right after
                // the current length, and `new_len` never exceeds the capacity (payload_len).
                unsafe { body.set_len(new_len) };
            }
            Body::Placed { at, have, .. } => *have = (*have + n).min(at.len),
            Body::Between | Body::Asking(_) => {}
        }
        self.finish_body_if_complete(emit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole frame decodes as feeding it does; bytes that are more or less than one frame,
    /// or a frame from the wrong rank, are refused by name, and the decoder stays failed.
    #[test]
    fn a_whole_frame_decodes_as_fed_and_anything_else_is_refused() {
        for len in [0usize, 1, crate::INLINE_BYTES, crate::INLINE_BYTES + 1, 5000] {
            let h = Header { src: 2, seq: 9, payload_len: len as u32, ..Header::new(FrameKind::Eager) };
            let mut bytes = h.encode().to_vec();
            bytes.extend((0..len).map(|i| i as u8));
            let mut fed = Vec::new();
            FrameDecoder::new(2).feed(&bytes, &mut |h, p: Payload| fed.push((h, p.into_vec()))).unwrap();
            let (wh, wp) = FrameDecoder::new(2).whole(&bytes).unwrap();
            assert_eq!(fed, vec![(wh, wp.into_vec())], "payload of {len} bytes");
        }
        let h = Header { src: 2, payload_len: 10, ..Header::new(FrameKind::Eager) };
        let mut bytes = h.encode().to_vec();
        bytes.extend([0u8; 11]);
        let mut d = FrameDecoder::new(2);
        let e = d.whole(&bytes).unwrap_err();
        assert!(matches!(e, DecodeError::NotWhole { payload_len: 10, got: 11 }), "{e}");
        assert!(d.whole(&bytes[..HEADER_LEN + 10]).is_err(), "a failed decoder stays failed");
        let e = FrameDecoder::new(2).whole(&bytes[..HEADER_LEN + 9]).unwrap_err();
        assert!(matches!(e, DecodeError::NotWhole { payload_len: 10, got: 9 }), "{e}");
        let e = FrameDecoder::new(2).whole(&bytes[..HEADER_LEN - 1]).unwrap_err();
        assert!(matches!(e, DecodeError::Wire(WireError::Short { .. })), "{e}");
        let e = FrameDecoder::new(3).whole(&bytes[..HEADER_LEN + 10]).unwrap_err();
        assert!(matches!(e, DecodeError::WrongSource { expected: 3, got: 2 }), "{e}");
    }

    /// Frames of payloads that stop the decoder (at least 200 bytes here) land where the
    /// answer says, or in a buffer of the decoder's, and every other frame comes as without
    /// placement, in stream order, however the stream is cut: into pieces of any size, with
    /// the bytes behind a question held and resumed, and with direct reads into the place.
    #[test]
    fn placement_keeps_order_and_bytes_at_any_split() {
        let lens = [0usize, 300, 10, 200, 5000, 1, 250, 199];
        let frames: Vec<(Header, Vec<u8>)> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let h = Header { src: 3, seq: i as u64, payload_len: len as u32, ..Header::new(FrameKind::Eager) };
                (h, (0..len).map(|b| (b * 7 + i) as u8).collect())
            })
            .collect();
        let mut stream = Vec::new();
        for (h, p) in &frames {
            stream.extend_from_slice(&h.encode());
            stream.extend_from_slice(p);
        }
        for chunk in [1, 13, 56, 57, 300, 1000, stream.len()] {
            for direct in [false, true] {
                let mut d = FrameDecoder::new(3);
                d.ask_placement(200);
                // Room for every placed payload, at its own place; placements alternate
                // between a place and "keep it" (None).
                let mut places: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0; l]).collect();
                let mut got: Vec<(Header, Vec<u8>)> = Vec::new();
                let mut questions = 0;
                let mut pos = 0;
                let answer = |d: &mut FrameDecoder, h: Header, places: &mut Vec<Vec<u8>>, questions: &mut usize| {
                    assert!(h.payload_len >= 200, "asked about {h}");
                    assert_eq!(d.asking(), Some(&h));
                    *questions += 1;
                    let at = (*questions % 2 == 1).then(|| {
                        let p = &mut places[h.seq as usize];
                        crate::Placement { ptr: p.as_mut_ptr(), len: p.len() }
                    });
                    d.answer(at).unwrap();
                };
                while pos < stream.len() || d.holds_bytes() {
                    let mut emit = |h, p: Payload| got.push((h, p.into_vec()));
                    if d.holds_bytes() {
                        if let Some(h) = d.resume(&mut emit).unwrap() {
                            answer(&mut d, h, &mut places, &mut questions);
                        }
                        continue;
                    }
                    let end = (pos + chunk).min(stream.len());
                    if direct {
                        if let Some(spare) = d.direct_buffer(1) {
                            let n = spare.len().min(end - pos);
                            for (dst, src) in spare.iter_mut().zip(&stream[pos..pos + n]) {
                                dst.write(*src);
                            }
                            // SAFETY: the first `n` bytes were just written.
                            unsafe { d.commit_direct(n, &mut emit) };
                            pos += n;
                            continue;
                        }
                    }
                    let asked = d.feed(&stream[pos..end], &mut emit).unwrap();
                    pos = end;
                    if let Some(h) = asked {
                        answer(&mut d, h, &mut places, &mut questions);
                    }
                }
                assert!(!d.mid_frame(), "chunk {chunk}");
                assert_eq!(questions, 4, "chunk {chunk}: 300, 200, 5000 and 250 bytes stop the decoder");
                assert_eq!(got.len(), frames.len(), "chunk {chunk}");
                for ((h, p), (want_h, want_p)) in got.iter().zip(&frames) {
                    assert_eq!(h.seq, want_h.seq, "chunk {chunk}: order");
                    if h.flags & FLAG_PLACED != 0 {
                        assert!(p.is_empty());
                        assert_eq!(&places[h.seq as usize], want_p, "chunk {chunk}: placed bytes of {h}");
                        assert_eq!(Header { flags: h.flags & !FLAG_PLACED, ..*h }, *want_h);
                    } else {
                        assert_eq!((h, p), (want_h, want_p), "chunk {chunk}");
                    }
                }
                let placed: Vec<u64> =
                    got.iter().filter(|(h, _)| h.flags & FLAG_PLACED != 0).map(|(h, _)| h.seq).collect();
                assert_eq!(placed, vec![1, 4], "chunk {chunk}: the first and third questions were given a place");
            }
        }
    }

    /// An answer of the wrong length, or one nobody asked for, is refused.
    #[test]
    fn a_wrong_answer_is_refused() {
        let mut d = FrameDecoder::new(3);
        assert!(d.answer(None).is_err(), "nothing was asked");
        d.ask_placement(100);
        let h = Header { src: 3, payload_len: 100, ..Header::new(FrameKind::Data) };
        let asked = d.feed(&h.encode(), &mut |_, _| panic!("nothing is complete")).unwrap();
        assert_eq!(asked.map(|h| h.payload_len), Some(100));
        let mut small = [0u8; 99];
        let err = d.answer(Some(crate::Placement { ptr: small.as_mut_ptr(), len: small.len() })).unwrap_err();
        assert!(err.contains("99 bytes offered for a payload of 100"), "{err}");
        assert!(d.asking().is_some(), "still asking");
    }

    #[test]
    fn decoder_handles_any_split() {
        let frames: Vec<(Header, Vec<u8>)> = (0..5u64)
            .map(|i| {
                (
                    Header {
                        src: 3,
                        ..Header { seq: i, tag: i as i32, payload_len: i as u32 * 100, ..Header::new(FrameKind::Eager) }
                    },
                    vec![i as u8; i as usize * 100],
                )
            })
            .collect();
        let mut stream = Vec::new();
        for (h, p) in &frames {
            stream.extend_from_slice(&h.encode());
            stream.extend_from_slice(p);
        }
        for chunk in [1, 7, 56, 57, 1000, stream.len()] {
            let mut d = FrameDecoder::new(3);
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                d.feed(c, &mut |h, p: Payload| got.push((h, p.into_vec()))).unwrap();
            }
            assert_eq!(got, frames, "chunk {chunk}");
            assert!(!d.mid_frame());
        }
        let mut d = FrameDecoder::new(4);
        let e = d.feed(&stream, &mut |_, _| {}).unwrap_err();
        assert_eq!(e, DecodeError::WrongSource { expected: 4, got: 3 });
        assert_eq!(d.feed(&[0], &mut |_, _| {}).unwrap_err(), e, "stays failed");
    }

    #[test]
    fn round_trip() {
        let h = Header {
            kind: FrameKind::Rts,
            flags: 3,
            epoch: 7,
            src: 2,
            seq: u64::MAX - 1,
            ctx: 9,
            tag: -5,
            msg_id: 42,
            arg: 1 << 40,
            payload_len: 0,
            ack: 0xdead_beef,
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn rejects_each_malformation_by_name() {
        let good = Header { payload_len: 4, ..Header::new(FrameKind::Eager) }.encode();
        assert_eq!(Header::decode(&good[..10]), Err(WireError::Short { expected: HEADER_LEN, got: 10 }));
        let mut b = good;
        b[0] = 0;
        assert!(matches!(Header::decode(&b), Err(WireError::BadMagic { .. })));
        let mut b = good;
        b[2] = 99;
        assert_eq!(Header::decode(&b), Err(WireError::Version { expected: VERSION, got: 99 }));
        let mut b = good;
        b[3] = 200;
        assert_eq!(Header::decode(&b), Err(WireError::UnknownKind { got: 200 }));
        let mut b = good;
        b[48..52].copy_from_slice(&(MAX_PAYLOAD_LEN + 1).to_le_bytes());
        assert!(matches!(Header::decode(&b), Err(WireError::PayloadTooLarge { .. })));
        let b = Header { payload_len: 4, ..Header::new(FrameKind::Cts) }.encode();
        assert_eq!(Header::decode(&b), Err(WireError::UnexpectedPayload { kind: FrameKind::Cts, got: 4 }));
        let b = Header { flags: FLAG_PLACED | FLAG_CONFIRM, ..Header::new(FrameKind::Eager) }.encode();
        assert_eq!(Header::decode(&b), Err(WireError::PlacedOnTheWire { flags: FLAG_PLACED | FLAG_CONFIRM }));
    }
}
