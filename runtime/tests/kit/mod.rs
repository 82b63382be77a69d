//! The test kit the runtime's simulations share: one seeded generator and one hash, so that a
//! seed means the same in every simulation and none carries its own copy, and the wires
//! between cores of the simulations that run the protocol core without an engine.
//!
//! Each test binary includes this module (`mod kit;`) and uses the part it needs, hence the
//! `dead_code` allowance.
#![allow(dead_code)]

use std::collections::VecDeque;

use kawarimi_runtime::core::Core;
use kawarimi_transports::wire::Header;

/// A frame on a wire: its header and payload.
pub type Frame = (Header, Vec<u8>);

/// The links between the cores of a core-level simulation: one FIFO of frames per ordered pair
/// of ranks, as a transport keeps each link's order and nothing across links. A test reaches
/// into a link ([`Wires::link`]) to lose, cut or replay frames.
pub struct Wires {
    n: u32,
    links: Vec<VecDeque<Frame>>,
}

impl Wires {
    /// The links among `n` ranks, all empty.
    pub fn new(n: u32) -> Wires {
        Wires { n, links: (0..n * n).map(|_| VecDeque::new()).collect() }
    }

    /// The link from `src` to `dst`.
    pub fn link(&mut self, src: u32, dst: u32) -> &mut VecDeque<Frame> {
        assert!(src < self.n && dst < self.n && src != dst, "no link {src} -> {dst} among {} ranks", self.n);
        &mut self.links[(src * self.n + dst) as usize]
    }

    /// The links that hold frames, as `(src, dst)`, in rank order.
    pub fn busy(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let n = self.n;
        (0..n * n).filter(|&i| !self.links[i as usize].is_empty()).map(move |i| (i / n, i % n))
    }

    /// No frame on any link.
    pub fn is_empty(&self) -> bool {
        self.links.iter().all(VecDeque::is_empty)
    }

    /// Moves up to `limit` frames from `core`'s outbox onto its links (what its transport
    /// wrote); returns how many.
    pub fn transmit(&mut self, core: &mut Core, limit: usize) -> usize {
        let src = core.rank();
        for moved in 0..limit {
            let Some(t) = core.poll_transmit() else { return moved };
            self.link(src, t.peer).push_back((t.header, t.payload.into_vec()));
        }
        limit
    }

    /// Delivers up to `limit` frames of the link from `src` to `to`; returns how many. A frame
    /// the core rejects fails the test, naming it.
    pub fn deliver(&mut self, src: u32, to: &mut Core, limit: usize) -> usize {
        let link = self.link(src, to.rank());
        for moved in 0..limit {
            let Some((h, p)) = link.pop_front() else { return moved };
            to.handle_frame(src, h, kawarimi_transports::Payload::Owned(p))
                .unwrap_or_else(|e| panic!("rank {} rejected {h} from rank {src}: {e}", to.rank()));
        }
        limit
    }
}

/// One step of splitmix64: a well-mixed 64-bit value from any `x`.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folds `b` into the running hash `a` (a trace of events).
pub fn mix(a: u64, b: u64) -> u64 {
    splitmix(a ^ splitmix(b).rotate_left(17))
}

/// 64-bit FNV-1a of `bytes`, continuing from `h`.
pub fn fnv(h: u64, bytes: &[u8]) -> u64 {
    let mut h = h;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
    }
    h
}

/// The bytes of a test message of `len` bytes: `key`'s little-endian bytes first (so messages
/// with keys below 256 differ in their first byte), then a splitmix stream from `key` and
/// `salt`. A pure function, so a receiver can check every byte it got.
pub fn pattern(key: u64, salt: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&key.to_le_bytes());
    let mut x = mix(key, salt);
    while v.len() < len {
        x = splitmix(x);
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The seeded generator of every simulation: splitmix64 over a counter, so a seed replays.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    /// True `num` times in `den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}
