//! The application programs: random point-to-point messages and collectives per rank, and the
//! bytes each message carries (a pure function of the seed, so the checker can recompute them).

use super::*;

pub(crate) const CTX_EXACT: u32 = 0;
pub(crate) const CTX_ANY_SRC: u32 = 1;
pub(crate) const CTX_ANY_ALL: u32 = 2;
pub(crate) const CTX_ANY_TAG: u32 = 3;
pub(crate) const COLL_CTX: u32 = 1000;
/// Tags of `CTX_ANY_SRC` (every receive of such a tag at a rank is `ANY_SOURCE`).
pub(crate) const ANY_SRC_TAGS: u64 = 3;

#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) src: u32,
    pub(crate) dst: u32,
    pub(crate) ctx: u32,
    pub(crate) tag: i32,
    pub(crate) len: usize,
    pub(crate) sync: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum CollKind {
    Barrier,
    /// Ring allgather of `len`-byte blocks, summing their checksums (an allreduce).
    Ring {
        len: usize,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Send(usize),
    Recv(usize),
    Coll(usize),
}

/// The bytes of message `idx`: a pure function of (src, dst, idx); the first 8 bytes are the
/// index itself.
pub(crate) fn payload_of(m: &Msg, idx: usize) -> Vec<u8> {
    pattern(idx as u64, ((m.src as u64) << 32) | m.dst as u64, m.len)
}

pub(crate) fn block_of(seq: usize, idx: u32, len: usize) -> Vec<u8> {
    let m = Msg { src: idx, dst: u32::MAX, ctx: COLL_CTX, tag: 0, len, sync: false };
    payload_of(&m, seq)
}

#[derive(Debug)]
pub(crate) enum Pend {
    Send,
    Recv { ctx: u32, expect: Option<usize>, pos: u64 },
}

#[derive(Debug)]
pub(crate) struct CollRun {
    pub(crate) idx: usize,
    pub(crate) round: u32,
    pub(crate) send: Option<ReqId>,
    pub(crate) recv: Option<ReqId>,
    pub(crate) fwd: Vec<u8>,
    pub(crate) acc: u64,
}

pub(crate) fn ceil_log2(n: u32) -> u32 {
    32 - (n - 1).leading_zeros()
}
