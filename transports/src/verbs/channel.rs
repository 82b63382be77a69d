//! One peer's channel over a reliable-connected queue pair, without the device: how frames
//! become verbs SEND messages, and the credits that keep every message landing in a receive
//! buffer the peer has posted. The device layer posts what [`Channel::fill_message`] writes
//! and feeds what arrives to [`Channel::on_message`]; all the decisions are here, so they are
//! tested without hardware.
//!
//! A channel is a byte stream of frames (header then payload, as on TCP) cut into messages of
//! at most `slot_bytes`. Each message starts with an 8-byte prefix: how many receive buffers
//! the sender has posted again so far for this peer (a running count) and the number of
//! stream bytes that follow. The receiver rebuilds frames with the same validating decoder as
//! TCP, so a malformed frame is rejected the same way.
//!
//! Credits: the peer posts `slots` receive buffers for this channel, and a message in flight
//! holds one until the peer says it has posted it again. That news rides on every message
//! going the other way; when none goes, the running count is written straight into the
//! sender's memory by RDMA write ([`Channel::credit_update`]) once half the buffers are
//! waiting. A credit update needs no receive buffer, so it can always be sent, and two peers
//! that have filled each other's buffers never wait on each other.

use std::collections::VecDeque;

use crate::wire::{DecodeError, FrameDecoder, Header, HEADER_LEN};
use crate::{Payload, PeerId};

/// Bytes of the prefix of every message: credits returned, stream bytes carried.
pub const PREFIX_LEN: usize = 8;

/// A message the peer sent that does not follow the channel's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("message of {0} bytes is shorter than its prefix")]
    Short(usize),
    #[error("message says it carries {said} bytes but has {has}")]
    Length { said: usize, has: usize },
    #[error("peer returned {returned} credits with only {outstanding} messages outstanding")]
    Credits { returned: u32, outstanding: u32 },
    #[error("peer says it read {done} payloads with only {exposed} exposed to it")]
    Reads { done: u32, exposed: u32 },
    #[error("{0}")]
    Frame(DecodeError),
}

/// A frame waiting to go: its header, its payload, and how much of both has been sent.
#[derive(Debug)]
struct Pending {
    header: [u8; HEADER_LEN],
    payload: Payload,
    sent: usize,
}

impl Pending {
    fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

#[derive(Debug)]
pub struct Channel {
    /// Receive buffers the peer keeps posted for this channel.
    slots: u32,
    /// Largest message, prefix included.
    slot_bytes: usize,
    /// Messages sent to the peer, and how many of them the peer has posted again (running
    /// counts, wrapping).
    sent: u32,
    returned: u32,
    /// Receive buffers this side has posted again for the peer (running count, wrapping), and
    /// the count last told to the peer.
    reposted: u32,
    advertised: u32,
    queue: VecDeque<Pending>,
    queued_bytes: usize,
    queue_limit_bytes: usize,
    decoder: FrameDecoder,
    /// Payloads this side has let the peer read (running count), and how many of them the
    /// peer has said it finished reading.
    exposed: u32,
    exposed_read: u32,
    /// Reads of the peer's payloads this side has finished (running count), and the count
    /// last told to the peer.
    reads_done: u32,
    reads_done_advertised: u32,
}

/// What a credit update writes into the peer's memory: two running counts, the receive
/// buffers re-posted and the peer's payloads read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditWord {
    pub reposted: u32,
    pub reads_done: u32,
}

impl Channel {
    /// A channel to `peer`, which posts `slots` buffers of `slot_bytes` for it (at least 2
    /// buffers, and room for more than the prefix); at most `queue_limit_bytes` wait to go.
    pub fn new(peer: PeerId, slots: u32, slot_bytes: usize, queue_limit_bytes: usize) -> Channel {
        assert!(slots >= 2 && slot_bytes > PREFIX_LEN, "a channel needs 2 buffers and room for data");
        Channel {
            slots,
            slot_bytes,
            sent: 0,
            returned: 0,
            reposted: 0,
            advertised: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queue_limit_bytes,
            decoder: FrameDecoder::new(peer),
            exposed: 0,
            exposed_read: 0,
            reads_done: 0,
            reads_done_advertised: 0,
        }
    }

    /// This side let the peer read one more payload (its descriptor frame is queued).
    pub fn payload_exposed(&mut self) {
        self.exposed = self.exposed.wrapping_add(1);
    }

    /// Payloads the peer may still be reading: they must stay registered and unchanged.
    pub fn exposed_unread(&self) -> u32 {
        self.exposed.wrapping_sub(self.exposed_read)
    }

    /// This side finished reading one of the peer's payloads.
    pub fn read_done(&mut self) {
        self.reads_done = self.reads_done.wrapping_add(1);
    }

    /// Finished reads the peer has not been told of yet.
    pub fn reads_unreported(&self) -> bool {
        self.reads_done != self.reads_done_advertised
    }

    /// Queues a frame. `false` (and nothing queued) when the queue is past its limit; an
    /// empty queue always takes one frame, however large.
    pub fn queue_frame(&mut self, header: &Header, payload: Payload) -> bool {
        let len = HEADER_LEN + payload.len();
        if !self.queue.is_empty() && self.queued_bytes + len > self.queue_limit_bytes {
            return false;
        }
        self.queued_bytes += len;
        self.queue.push_back(Pending { header: header.encode(), payload, sent: 0 });
        true
    }

    /// Frame bytes not yet handed to the device.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Messages in flight: sent and not yet posted again by the peer.
    pub fn outstanding(&self) -> u32 {
        self.sent.wrapping_sub(self.returned)
    }

    /// Writes the next message to send into `out` (a send buffer of at least `slot_bytes`)
    /// and returns its length, or `None` when there is nothing to send or no credit for it.
    pub fn fill_message(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.queue.is_empty() || self.outstanding() >= self.slots {
            return None;
        }
        let room = self.slot_bytes.min(out.len()) - PREFIX_LEN;
        let mut used = 0;
        while used < room {
            let Some(p) = self.queue.front_mut() else { break };
            let take = (p.len() - p.sent).min(room - used);
            let dst = &mut out[PREFIX_LEN + used..PREFIX_LEN + used + take];
            copy_range(&p.header, p.payload.as_slice(), p.sent, dst);
            p.sent += take;
            used += take;
            if p.sent == p.len() {
                self.queued_bytes -= p.len();
                self.queue.pop_front();
            }
        }
        out[..4].copy_from_slice(&self.reposted.to_le_bytes());
        out[4..PREFIX_LEN].copy_from_slice(&(used as u32).to_le_bytes());
        self.advertised = self.reposted;
        self.sent = self.sent.wrapping_add(1);
        Some(PREFIX_LEN + used)
    }

    /// The counts to write into the peer's memory: when half the buffers are waiting to be
    /// told about and no message has carried the news, or at once when a read of the peer's
    /// payload has finished (the peer holds that memory until it hears).
    pub fn credit_update(&mut self) -> Option<CreditWord> {
        let reads_news = self.reads_done != self.reads_done_advertised;
        if !reads_news && self.reposted.wrapping_sub(self.advertised) < self.slots.div_ceil(2) {
            return None;
        }
        self.advertised = self.reposted;
        self.reads_done_advertised = self.reads_done;
        Some(CreditWord { reposted: self.reposted, reads_done: self.reads_done })
    }

    /// The counts last told to the peer, to write again as a keep-alive: a peer whose link is
    /// gone shows only when something is posted to it, and this is news to nobody.
    pub fn last_credit_word(&self) -> CreditWord {
        CreditWord { reposted: self.advertised, reads_done: self.reads_done_advertised }
    }

    /// Takes what the peer's credit update wrote: re-posted buffers (see
    /// [`Channel::on_credits`]) and payloads of this side it finished reading. Returns how
    /// many more of those are read (in the order they were exposed: the peer reads in order).
    pub fn on_credit_word(&mut self, word: CreditWord) -> Result<u32, ChannelError> {
        self.on_credits(word.reposted)?;
        let newly = word.reads_done.wrapping_sub(self.exposed_read);
        if newly > u32::MAX / 2 {
            return Ok(0);
        }
        if newly > self.exposed_unread() {
            return Err(ChannelError::Reads { done: newly, exposed: self.exposed_unread() });
        }
        self.exposed_read = word.reads_done;
        Ok(newly)
    }

    /// Takes a running count of re-posted buffers from the peer (a message's prefix, or what
    /// its credit update wrote). The two paths race, so a count older than one already seen
    /// is no news; a count ahead of what was sent is a broken peer.
    pub fn on_credits(&mut self, reposted_by_peer: u32) -> Result<(), ChannelError> {
        let newly = reposted_by_peer.wrapping_sub(self.returned);
        if newly > u32::MAX / 2 {
            return Ok(());
        }
        if newly > self.outstanding() {
            return Err(ChannelError::Credits { returned: newly, outstanding: self.outstanding() });
        }
        self.returned = reposted_by_peer;
        Ok(())
    }

    /// Takes a message that arrived in one of this channel's receive buffers, calling `emit`
    /// for each frame it completes. The caller posts the buffer again and then calls
    /// [`Channel::buffer_reposted`].
    pub fn on_message<F: FnMut(Header, Payload)>(&mut self, msg: &[u8], emit: &mut F) -> Result<(), ChannelError> {
        if msg.len() < PREFIX_LEN {
            return Err(ChannelError::Short(msg.len()));
        }
        let credits = u32::from_le_bytes(msg[..4].try_into().expect("4 bytes"));
        let said = u32::from_le_bytes(msg[4..PREFIX_LEN].try_into().expect("4 bytes")) as usize;
        if said != msg.len() - PREFIX_LEN {
            return Err(ChannelError::Length { said, has: msg.len() - PREFIX_LEN });
        }
        self.on_credits(credits)?;
        // (This decoder is never asked to stop for placements: it answers `None`.)
        self.decoder.feed(&msg[PREFIX_LEN..], emit).map(|_| ()).map_err(ChannelError::Frame)
    }

    /// A receive buffer of this channel is posted again: the peer may use it once told.
    pub fn buffer_reposted(&mut self) {
        self.reposted = self.reposted.wrapping_add(1);
    }

    /// True while a frame is partly received.
    pub fn mid_frame(&self) -> bool {
        self.decoder.mid_frame()
    }
}

/// Copies bytes `from..from + dst.len()` of the concatenation `header ++ payload` into `dst`.
fn copy_range(header: &[u8], payload: &[u8], from: usize, dst: &mut [u8]) {
    let mut at = from;
    let mut done = 0;
    if at < header.len() {
        let n = (header.len() - at).min(dst.len());
        dst[..n].copy_from_slice(&header[at..at + n]);
        done = n;
        at += n;
    }
    let rest = dst.len() - done;
    if rest > 0 {
        let p = at - header.len();
        dst[done..].copy_from_slice(&payload[p..p + rest]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameKind;

    /// Two channels joined by message queues that hold what each side has posted; every
    /// message must find a free receive buffer on arrival.
    struct Pair {
        ends: [Channel; 2],
        /// Messages in flight towards end i.
        wire: [VecDeque<Vec<u8>>; 2],
        /// The credit count written into end i's memory (an RDMA write lands whole, at once).
        written: [Option<CreditWord>; 2],
        slots: u32,
        got: [Vec<(Header, Vec<u8>)>; 2],
        max_outstanding: u32,
    }

    impl Pair {
        fn new(slots: u32, slot_bytes: usize) -> Pair {
            Pair {
                ends: [Channel::new(1, slots, slot_bytes, 1 << 20), Channel::new(0, slots, slot_bytes, 1 << 20)],
                wire: [VecDeque::new(), VecDeque::new()],
                written: [None, None],
                slots,
                got: [Vec::new(), Vec::new()],
                max_outstanding: 0,
            }
        }

        /// End `i` sends one message if it can.
        fn send(&mut self, i: usize) -> bool {
            let mut buf = vec![0u8; 4096];
            let Some(n) = self.ends[i].fill_message(&mut buf) else { return false };
            buf.truncate(n);
            self.wire[1 - i].push_back(buf);
            self.max_outstanding = self.max_outstanding.max(self.ends[i].outstanding());
            // The receiver never has more messages waiting than buffers posted.
            assert!(self.wire[1 - i].len() as u32 <= self.slots, "a message arrived with no buffer posted");
            true
        }

        /// End `i` writes a credit update if it has one due.
        fn update(&mut self, i: usize) -> bool {
            let Some(w) = self.ends[i].credit_update() else { return false };
            self.written[1 - i] = Some(w);
            true
        }

        /// End `i` reads the credit count written into its memory.
        fn read_credits(&mut self, i: usize) -> bool {
            let Some(w) = self.written[i].take() else { return false };
            assert_eq!(self.ends[i].on_credit_word(w), Ok(0), "no payload was exposed");
            true
        }

        /// End `i` takes one arrived message if there is one.
        fn deliver(&mut self, i: usize) -> bool {
            let Some(m) = self.wire[i].pop_front() else { return false };
            let got = &mut self.got[i];
            self.ends[i].on_message(&m, &mut |h, p: Payload| got.push((h, p.into_vec()))).unwrap();
            self.ends[i].buffer_reposted();
            true
        }
    }

    fn frame(src: u32, seq: u64, len: usize) -> (Header, Vec<u8>) {
        let mut h = Header::new(FrameKind::Eager);
        h.src = src;
        h.seq = seq;
        h.payload_len = len as u32;
        (h, (0..len).map(|i| (i as u64 * 31 + seq) as u8).collect())
    }

    /// A small deterministic generator, so a failure replays.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn frames_of_every_size_cross_in_order_within_credits() {
        for seed in 1..=40u64 {
            let mut rng = seed;
            let slots = 2 + (next(&mut rng) % 7) as u32;
            let slot_bytes = PREFIX_LEN + 1 + (next(&mut rng) % 300) as usize;
            let mut pair = Pair::new(slots, slot_bytes);
            let mut sent: [Vec<(Header, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
            for step in 0..3000u64 {
                let i = (next(&mut rng) % 2) as usize;
                match next(&mut rng) % 6 {
                    0 if step < 2000 => {
                        let len = (next(&mut rng) % 700) as usize;
                        let (h, p) = frame(i as u32, sent[i].len() as u64, len);
                        assert!(pair.ends[i].queue_frame(&h, Payload::Owned(p.clone())));
                        sent[i].push((h, p));
                    }
                    1 => {
                        pair.send(i);
                    }
                    2 => {
                        pair.update(i);
                    }
                    3 => {
                        pair.read_credits(i);
                    }
                    _ => {
                        pair.deliver(i);
                    }
                }
            }
            // Drain: both sides keep sending and taking until nothing moves.
            let mut rounds = 0;
            while (0..2).any(|i| pair.send(i) | pair.deliver(i) | pair.update(i) | pair.read_credits(i)) {
                rounds += 1;
                assert!(rounds < 1_000_000, "seed {seed}: traffic never ended");
            }
            for (i, frames) in sent.iter().enumerate() {
                assert_eq!(pair.ends[i].queued_bytes(), 0, "seed {seed}: end {i} kept frames (deadlock)");
                assert_eq!(&pair.got[1 - i], frames, "seed {seed}: frames from end {i} lost or reordered");
            }
            assert!(pair.max_outstanding <= slots, "seed {seed}");
        }
    }

    #[test]
    fn a_one_way_stream_gets_its_credits_back() {
        let mut pair = Pair::new(4, 64);
        for seq in 0..500 {
            let (h, p) = frame(0, seq, 100);
            assert!(pair.ends[0].queue_frame(&h, Payload::Owned(p)));
            while pair.send(0) | pair.deliver(1) | pair.update(1) | pair.read_credits(0) {}
        }
        assert_eq!(pair.got[1].len(), 500);
        assert_eq!(pair.ends[0].queued_bytes(), 0);
        assert!(pair.got[0].is_empty() && pair.wire[0].is_empty(), "credits went back by RDMA write only");
    }

    #[test]
    fn bad_messages_are_rejected() {
        let mut c = Channel::new(3, 4, 64, 1 << 20);
        let mut sink = |_: Header, _: Payload| {};
        assert_eq!(c.on_message(&[0; 5], &mut sink), Err(ChannelError::Short(5)));
        let mut m = vec![0u8; 12];
        m[4] = 9;
        assert_eq!(c.on_message(&m, &mut sink), Err(ChannelError::Length { said: 9, has: 4 }));
        m[4] = 0;
        m.truncate(8);
        m[0] = 1;
        assert_eq!(c.on_message(&m, &mut sink), Err(ChannelError::Credits { returned: 1, outstanding: 0 }));
        // A frame that names another sender than the queue pair's peer.
        let (h, _) = frame(7, 0, 0);
        let mut m = vec![0u8; PREFIX_LEN];
        m[4..8].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        m.extend_from_slice(&h.encode());
        assert!(matches!(c.on_message(&m, &mut sink), Err(ChannelError::Frame(DecodeError::WrongSource { .. }))));
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut c = Channel::new(1, 4, 64, 1000);
        let (h, p) = frame(0, 0, 900);
        assert!(c.queue_frame(&h, Payload::Owned(p.clone())));
        assert!(!c.queue_frame(&h, Payload::Owned(p)), "past the limit");
        assert_eq!(c.queued_bytes(), HEADER_LEN + 900);
    }

    /// Reads of exposed payloads are reported back at once, counted in order, and a peer
    /// that claims more reads than there were payloads is refused.
    #[test]
    fn finished_reads_go_back_at_once_and_release_in_order() {
        let (mut a, mut b) = (Channel::new(1, 8, 256, 1 << 20), Channel::new(0, 8, 256, 1 << 20));
        for _ in 0..3 {
            a.payload_exposed();
        }
        assert_eq!(a.exposed_unread(), 3);
        assert_eq!(b.credit_update(), None, "nothing to report yet");
        b.read_done();
        let w = b.credit_update().expect("a finished read is news at once");
        assert_eq!(w, CreditWord { reposted: 0, reads_done: 1 });
        assert_eq!(a.on_credit_word(w), Ok(1));
        assert_eq!(a.on_credit_word(w), Ok(0), "an old word again is no news");
        b.read_done();
        b.read_done();
        let w = b.credit_update().unwrap();
        assert_eq!(a.on_credit_word(w), Ok(2));
        assert_eq!(a.exposed_unread(), 0);
        b.read_done();
        let w = b.credit_update().unwrap();
        assert!(matches!(a.on_credit_word(w), Err(ChannelError::Reads { done: 1, exposed: 0 })));
    }
}
