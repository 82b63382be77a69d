//! The TCP transport: one authenticated, non-blocking stream per peer pair.
//!
//! Life cycle:
//! 1. [`bind`] opens a listener (ephemeral port) and tells the address to publish
//!    ([`TcpListenerEndpoint::local_addr`]) through the bootstrap (PMIx or the coordinator).
//! 2. [`TcpListenerEndpoint::connect_all`] builds the full mesh deterministically: the lower
//!    rank of each pair connects to the higher rank's listener, the higher rank accepts, and
//!    every connection runs the mutual challenge-response of [`crate::auth`] before it carries
//!    a frame. An accepted connection learns the connecting rank from its (authenticated)
//!    hello. All connects, accepts and handshakes are driven concurrently by one poll loop,
//!    so ranks that start at different times never deadlock each other; every retry is
//!    bounded in count and by the overall deadline. The listener is closed when the mesh is
//!    up: a reconnect after a switch binds anew.
//! 3. [`TcpTransport`] implements [`Transport`]: `send` queues (zero-copy for
//!    [`Payload::Static`]) and writes at once when the queue was empty; `progress` flushes
//!    with `sendmsg` over header+payload slices and reads in large chunks through the
//!    socket-free [`FrameDecoder`] of [`crate::wire`]; `wait` is `poll(2)`.
//!
//! Files: `addr.rs` chooses the addresses, `mesh.rs` builds the mesh, this file is the
//! connection and the transport.
//!
//! Teardown: dropping the [`TcpTransport`] closes every socket, in rank order; frames still
//! queued are discarded (their `Static` borrows end with them). Nothing else is held.
//!
//! Addresses: [`local_addresses`] never returns an IPoIB address. An IPoIB interface belongs
//! to the InfiniBand HCA: when the HCA is hot-unplugged before a migration, the interface and
//! its address vanish, and any connection or published endpoint that used it dies with it.
//! The TCP transport is the fallback that must survive the move, so it only uses the VM's
//! Ethernet (virtio) addresses.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, IoSlice, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::auth::{random_nonce, Handshake, JobSecret, Role};
use crate::wire::{FrameDecoder, Header, WireError, HEADER_LEN, MAX_PAYLOAD_LEN};
use crate::{Event, Payload, PeerId, Placement, Transport, TransportError, TransportKind, TransportResult};

/// Payload bytes still missing at or above which the reader reads straight into the frame's
/// Vec instead of through the chunk buffer.
pub const DIRECT_READ_MIN_BYTES: usize = 64 * 1024;
/// Payload size from which the runtime is asked where a payload goes, so that it is read
/// from the socket into the receive buffer (one copy out of the kernel) rather than into a
/// buffer of the transport's and copied again. Below it the extra round through the runtime
/// costs more than the copy it saves.
pub const PLACE_MIN_BYTES: usize = 64 * 1024;
/// Most iovecs handed to one `sendmsg`.
const MAX_IOV: usize = 64;
/// Linux's ARPHRD_INFINIBAND (`/sys/class/net/<if>/type`).
pub const ARPHRD_INFINIBAND: u16 = 32;

/// Tunables of the TCP transport. Every queue and wait has a bound.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Per-peer send queue bound (header + payload bytes not yet handed to the kernel).
    pub queue_limit_bytes: usize,
    /// SO_SNDBUF / SO_RCVBUF to ask for (best effort; the kernel may clamp it).
    pub socket_buffer_bytes: usize,
    /// Bound on one connection's challenge-response once it is accepted.
    pub auth_timeout_ms: u64,
    /// Pause between connect attempts to a peer whose listener refused.
    pub connect_retry_interval_ms: u64,
    /// Most connect attempts per peer (the overall deadline of `connect_all` also applies).
    pub connect_max_attempts: u32,
    /// Size of the chunk buffer reads go through.
    pub read_chunk_bytes: usize,
    /// Most bytes read from one peer per `progress` call (fairness between peers).
    pub max_read_bytes_per_progress: usize,
    /// Most bytes written to one peer per `progress` call.
    pub max_write_bytes_per_progress: usize,
    /// Most not-yet-authenticated accepted connections held at once during wire-up.
    pub max_pending_accepts: usize,
    /// Listen backlog.
    pub listen_backlog: i32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            queue_limit_bytes: 64 << 20,
            socket_buffer_bytes: 4 << 20,
            auth_timeout_ms: 10_000,
            connect_retry_interval_ms: 50,
            connect_max_attempts: 2_000,
            read_chunk_bytes: 256 << 10,
            max_read_bytes_per_progress: 8 << 20,
            max_write_bytes_per_progress: 8 << 20,
            max_pending_accepts: 256,
            listen_backlog: 1024,
        }
    }
}

fn poll_timeout(d: Duration) -> PollTimeout {
    // Round up so a sub-millisecond timeout does not turn into a busy loop.
    let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

mod addr;
mod mesh;

pub use addr::{addresses_of, interfaces, local_addresses, select_addresses, IfAddr};
pub use mesh::{bind, bind_with_config, TcpListenerEndpoint};

struct OutFrame {
    header: [u8; HEADER_LEN],
    payload: Payload,
    /// Bytes of header+payload already handed to the kernel.
    written: usize,
}

impl OutFrame {
    fn total(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

struct Conn {
    peer: PeerId,
    addr: SocketAddr,
    /// `None` once the link is down (the socket is closed at once).
    sock: Option<Socket>,
    sendq: VecDeque<OutFrame>,
    queued_bytes: usize,
    decoder: FrameDecoder,
    /// Names the last [`Event::Incoming`] about this peer's stream.
    next_token: u64,
    down: Option<String>,
}

impl Conn {
    /// Closes the socket, drops the queue and returns the event to report.
    fn take_down(&mut self, reason: String) -> Event {
        tracing::debug!(peer = self.peer, addr = %self.addr, "tcp link down: {reason}");
        self.sock = None;
        self.sendq.clear();
        self.queued_bytes = 0;
        self.down = Some(reason.clone());
        Event::LinkDown { peer: self.peer, reason }
    }

    /// Writes queued frames until the kernel pushes back or `budget` bytes went out.
    fn flush(&mut self, budget: usize) -> Result<(), String> {
        let Some(sock) = &self.sock else { return Ok(()) };
        let mut sent_total = 0usize;
        while !self.sendq.is_empty() && sent_total < budget {
            let res = {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let mut k = 0;
                for f in self.sendq.iter() {
                    if k + 2 > MAX_IOV {
                        break;
                    }
                    if f.written < HEADER_LEN {
                        iov[k] = IoSlice::new(&f.header[f.written..]);
                        k += 1;
                    }
                    let off = f.written.saturating_sub(HEADER_LEN);
                    let p = f.payload.as_slice();
                    if off < p.len() {
                        iov[k] = IoSlice::new(&p[off..]);
                        k += 1;
                    }
                }
                sock.send_vectored_with_flags(&iov[..k], libc::MSG_NOSIGNAL)
            };
            match res {
                Ok(0) => return Err(format!("write to rank {} returned 0 bytes", self.peer)),
                Ok(mut n) => {
                    sent_total += n;
                    self.queued_bytes -= n.min(self.queued_bytes);
                    while n > 0 {
                        let Some(f) = self.sendq.front_mut() else { break };
                        let left = f.total() - f.written;
                        if n >= left {
                            n -= left;
                            self.sendq.pop_front();
                        } else {
                            f.written += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("write to rank {} failed: {e}", self.peer)),
            }
        }
        Ok(())
    }

    /// Reads what has arrived, up to `budget` bytes, appending frames to `events`, and the
    /// question where a large payload goes when the decoder stops at one (reading from this
    /// peer then waits for the answer, [`Transport::place`]).
    fn read(&mut self, budget: usize, scratch: &mut [u8], events: &mut Vec<Event>) -> Result<(), String> {
        let asked = self.read_frames(budget, scratch, events)?;
        if let Some(header) = asked {
            self.next_token += 1;
            events.push(Event::Incoming { peer: self.peer, token: self.next_token, header });
        }
        Ok(())
    }

    fn read_frames(
        &mut self,
        budget: usize,
        scratch: &mut [u8],
        events: &mut Vec<Event>,
    ) -> Result<Option<Header>, String> {
        let peer = self.peer;
        let Some(sock) = &self.sock else { return Ok(None) };
        let decoder = &mut self.decoder;
        let mut emit = |header: Header, payload: Payload| events.push(Event::Frame { peer, header, payload });
        if decoder.asking().is_some() {
            return Ok(None);
        }
        // What came after a header that waited for its placement goes first.
        match decoder.resume(&mut emit) {
            Ok(None) => {}
            Ok(asked) => return Ok(asked),
            Err(e) => return Err(format!("malformed frame from rank {peer}: {e}")),
        }
        let mut got = 0usize;
        while got < budget {
            let res = if let Some(spare) = decoder.direct_buffer(DIRECT_READ_MIN_BYTES) {
                let cap = spare.len();
                match sock.recv(spare) {
                    Ok(n) if n > 0 => {
                        // SAFETY: recv(2) initialised the first `n` bytes of `spare`, and
                        // `n <= cap` is the buffer's length.
                        unsafe { decoder.commit_direct(n.min(cap), &mut emit) };
                        Ok((n, cap))
                    }
                    Ok(n) => Ok((n, cap)),
                    Err(e) => Err(e),
                }
            } else {
                let asked = scratch.len();
                match (&*sock).read(scratch) {
                    Ok(n) if n > 0 => match decoder.feed(&scratch[..n], &mut emit) {
                        Ok(None) => Ok((n, asked)),
                        Ok(question) => return Ok(question),
                        Err(e) => return Err(format!("malformed frame from rank {peer}: {e}")),
                    },
                    Ok(n) => Ok((n, asked)),
                    Err(e) => Err(e),
                }
            };
            match res {
                Ok((0, _)) => {
                    return Err(if decoder.mid_frame() {
                        format!("closed by peer (rank {peer}) in the middle of a frame")
                    } else {
                        format!("closed by peer (rank {peer})")
                    })
                }
                // The socket held less than we asked for: it is empty now, and another recv
                // would only return EAGAIN (one syscall per message saved).
                Ok((n, asked)) if n < asked => break,
                Ok((n, _)) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read from rank {peer} failed: {e}")),
            }
        }
        Ok(None)
    }
}

/// The TCP transport: one authenticated stream per peer. See the module docs.
pub struct TcpTransport {
    me: PeerId,
    config: TcpConfig,
    /// In rank order; dropping closes them in that order.
    conns: Vec<Conn>,
    index: HashMap<PeerId, usize>,
    scratch: Vec<u8>,
    /// Where the next `progress` starts (round robin, so no peer is always served last).
    next_start: usize,
    /// Link failures seen by `send`, reported by the next `progress`.
    pending_events: Vec<Event>,
    /// Written by [`Transport::waker`] to end a `wait` early; part of every poll set.
    wake: std::sync::Arc<nix::sys::eventfd::EventFd>,
    /// Payloads the runtime gave a place to read them into ([`Transport::place`]).
    placed_payloads: u64,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("me", &self.me)
            .field("peers", &self.conns.iter().map(|c| (c.peer, c.addr, c.down.is_none())).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    pub fn rank(&self) -> PeerId {
        self.me
    }

    /// The peers this transport has (or had) a link to, in rank order.
    pub fn peers(&self) -> Vec<PeerId> {
        self.conns.iter().map(|c| c.peer).collect()
    }

    /// True while the link to `peer` is up.
    pub fn is_up(&self, peer: PeerId) -> bool {
        self.index.get(&peer).is_some_and(|&i| self.conns[i].down.is_none())
    }

    /// The remote address of the link to `peer`.
    pub fn peer_addr(&self, peer: PeerId) -> Option<SocketAddr> {
        self.index.get(&peer).map(|&i| self.conns[i].addr)
    }

    /// Every open socket, for diagnostics (e.g. proving nothing is left open after a switch).
    pub fn fds(&self) -> Vec<RawFd> {
        self.conns.iter().filter_map(|c| c.sock.as_ref().map(|s| s.as_raw_fd())).collect()
    }

    pub fn config(&self) -> &TcpConfig {
        &self.config
    }
}

impl Transport for TcpTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }

    /// Queues a frame. The transport stamps `src` with its own rank and `payload_len` with
    /// the payload's length; a frame that would not pass [`Header::decode`] at the receiver
    /// is refused here with `Malformed`. A `Static` payload is never copied.
    fn send(&mut self, peer: PeerId, header: &Header, payload: Payload) -> TransportResult<()> {
        let &i = self.index.get(&peer).ok_or(TransportError::NoRoute { peer })?;
        let conn = &mut self.conns[i];
        if let Some(reason) = &conn.down {
            return Err(TransportError::LinkDown { peer, reason: reason.clone() });
        }
        let len = payload.len();
        if len > MAX_PAYLOAD_LEN as usize {
            return Err(TransportError::Malformed {
                peer,
                source: WireError::PayloadTooLarge { max: MAX_PAYLOAD_LEN, got: len.min(u32::MAX as usize) as u32 },
            });
        }
        let h = Header { src: self.me, payload_len: len as u32, ..*header };
        let bytes = h.encode();
        if let Err(source) = Header::decode(&bytes) {
            return Err(TransportError::Malformed { peer, source });
        }
        let frame_len = HEADER_LEN + len;
        let limit = self.config.queue_limit_bytes;
        if conn.queued_bytes > 0 && conn.queued_bytes + frame_len > limit {
            return Err(TransportError::QueueFull { peer, limit });
        }
        let was_empty = conn.sendq.is_empty();
        conn.sendq.push_back(OutFrame { header: bytes, payload, written: 0 });
        conn.queued_bytes += frame_len;
        if was_empty {
            // Low-latency path: most small sends leave in this call.
            if let Err(reason) = conn.flush(self.config.max_write_bytes_per_progress) {
                let ev = conn.take_down(reason);
                self.pending_events.push(ev);
            }
        }
        Ok(())
    }

    fn progress(&mut self, events: &mut Vec<Event>) -> TransportResult<()> {
        events.append(&mut self.pending_events);
        let n = self.conns.len();
        if n == 0 {
            return Ok(());
        }
        let start = self.next_start % n;
        self.next_start = (start + 1) % n;
        // With several peers, one poll(2) finds the sockets with something to read, instead
        // of one recv per peer per round (most of which would say EAGAIN).
        let readable: Option<Vec<bool>> = (n > 1).then(|| {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(n);
            let mut which = Vec::with_capacity(n);
            for (i, c) in self.conns.iter().enumerate() {
                if let Some(sock) = &c.sock {
                    fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
                    which.push(i);
                }
            }
            let mut ready = vec![false; n];
            match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
                Ok(_) => {
                    for (fd, &i) in fds.iter().zip(&which) {
                        ready[i] = fd.revents().is_some_and(|r| !r.is_empty());
                    }
                }
                // On any poll failure, read every socket as without the poll.
                Err(_) => ready.iter_mut().for_each(|r| *r = true),
            }
            ready
        });
        for k in 0..n {
            let i = (start + k) % n;
            let conn = &mut self.conns[i];
            if conn.sock.is_none() {
                continue;
            }
            if !conn.sendq.is_empty() {
                if let Err(reason) = conn.flush(self.config.max_write_bytes_per_progress) {
                    events.push(conn.take_down(reason));
                    continue;
                }
            }
            if readable.as_ref().is_some_and(|r| !r[i]) && !conn.decoder.holds_bytes() {
                continue;
            }
            if let Err(reason) = conn.read(self.config.max_read_bytes_per_progress, &mut self.scratch, events) {
                events.push(conn.take_down(reason));
            }
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> TransportResult<()> {
        // Bytes held by a decoder since a placement was answered are ready at once.
        let held = self.conns.iter().any(|c| c.decoder.asking().is_none() && c.decoder.holds_bytes());
        if !self.pending_events.is_empty() || held {
            return Ok(());
        }
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.conns.len() + 1);
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        for c in &self.conns {
            if let Some(s) = &c.sock {
                let mut fl = PollFlags::POLLIN;
                if !c.sendq.is_empty() {
                    fl |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(s.as_fd(), fl));
            }
        }
        let woken = nix::poll::poll(&mut fds, poll_timeout(timeout));
        drop(fds);
        // Consume a wake-up so the next wait sleeps again (EAGAIN when there was none).
        let _ = self.wake.read();
        match woken {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => {
                Err(TransportError::Io { context: format!("tcp wait of rank {}: poll", self.me), source: e.into() })
            }
        }
    }

    /// Payloads of at least [`PLACE_MIN_BYTES`] are read from the socket straight into the
    /// buffer the runtime names, instead of into one of the transport's and copied from there.
    fn ask_placement(&mut self) {
        for c in &mut self.conns {
            c.decoder.ask_placement(PLACE_MIN_BYTES);
        }
    }

    fn place(&mut self, peer: PeerId, token: u64, at: Option<Placement>) -> TransportResult<()> {
        let what = || format!("placing payload {token} from rank {peer}");
        let conn = self.index.get(&peer).map(|&i| &mut self.conns[i]);
        let Some(conn) = conn.filter(|c| c.next_token == token && c.decoder.asking().is_some()) else {
            return Err(TransportError::Io { context: what(), source: io::Error::other("no such read waits") });
        };
        conn.decoder.answer(at).map_err(|why| TransportError::Io { context: what(), source: io::Error::other(why) })?;
        self.placed_payloads += u64::from(at.is_some());
        Ok(())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("payloads read into place", self.placed_payloads)]
    }

    fn queued_bytes(&self) -> usize {
        self.conns.iter().map(|c| c.queued_bytes).sum()
    }

    fn waker(&self) -> Option<crate::Waker> {
        let wake = self.wake.clone();
        Some(std::sync::Arc::new(move || {
            // A full counter (never in practice) still leaves the fd readable: ignore errors.
            let _ = wake.write(1);
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameKind;
    use std::thread;

    fn secret() -> JobSecret {
        JobSecret::from_bytes([0x5a; 32])
    }

    /// Binds `n` endpoints on 127.0.0.1 and runs `connect_all` for each in a thread.
    fn mesh_with(
        n: u32,
        secrets: impl Fn(u32) -> JobSecret,
        cfg: TcpConfig,
        timeout: Duration,
    ) -> Vec<TransportResult<TcpTransport>> {
        let eps: Vec<TcpListenerEndpoint> = (0..n)
            .map(|r| bind_with_config(r, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), secrets(r), cfg.clone()).unwrap())
            .collect();
        let peers: Vec<(PeerId, SocketAddr)> = eps.iter().map(|e| (e.rank(), e.local_addr())).collect();
        let handles: Vec<_> = eps
            .into_iter()
            .map(|e| {
                let peers = peers.clone();
                thread::spawn(move || e.connect_all(&peers, timeout))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    fn mesh(n: u32) -> Vec<TcpTransport> {
        mesh_with(n, |_| secret(), TcpConfig::default(), Duration::from_secs(20))
            .into_iter()
            .map(|r| r.unwrap())
            .collect()
    }

    fn content(src: u32, dst: u32, seq: u64, len: usize) -> Vec<u8> {
        let mut x = (src as u64) << 40 ^ (dst as u64) << 20 ^ seq ^ 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn sizes() -> Vec<usize> {
        let mut v = vec![0, 1, 56, 64 << 10, MAX_PAYLOAD_LEN as usize];
        v.extend((0..300).map(|i| (i * 37) % 700));
        // Frames that stop the reader for a placement, with small ones behind them.
        v.extend([PLACE_MIN_BYTES, 3, PLACE_MIN_BYTES + 1, 1 << 20, 0, 200 << 10, 9]);
        v
    }

    fn eager(seq: u64, len: usize) -> Header {
        Header { seq, tag: seq as i32, payload_len: len as u32, ..Header::new(FrameKind::Eager) }
    }

    /// Sends every size to every peer (interleaved) and checks everything that arrives.
    /// Every frame of [`sizes`] to every peer and back, checked in order and byte for byte.
    /// With `placing`, the payloads the transport asks about land alternately in a buffer of
    /// the test's (delivered flagged `FLAG_PLACED`) and in one of the transport's.
    fn exchange(mut t: TcpTransport, n: u32, placing: bool) -> (u64, TcpTransport) {
        if placing {
            t.ask_placement();
        }
        let mut places: HashMap<(u32, u64), Vec<u8>> = HashMap::new();
        let mut questions = 0usize;
        let me = t.rank();
        let sizes = sizes();
        let peers: Vec<u32> = (0..n).filter(|&p| p != me).collect();
        let mut expect_seq: HashMap<u32, u64> = peers.iter().map(|&p| (p, 0)).collect();
        let mut sent = 0usize;
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut received = 0u64;
        loop {
            // Interleave: one frame to each peer per round, while the queues have room.
            while sent < sizes.len() && t.queued_bytes() < (32 << 20) {
                for &p in &peers {
                    let len = sizes[sent];
                    let seq = sent as u64;
                    t.send(p, &eager(seq, len), Payload::Owned(content(me, p, seq, len))).unwrap();
                }
                sent += 1;
            }
            t.progress(&mut events).unwrap();
            for ev in events.drain(..) {
                match ev {
                    Event::Frame { peer, header, payload } => {
                        let s = expect_seq.get_mut(&peer).unwrap();
                        assert_eq!(header.seq, *s, "rank {me}: out of order from {peer}");
                        assert_eq!(header.src, peer);
                        let len = sizes[*s as usize];
                        let got = match places.remove(&(peer, *s)) {
                            Some(place) => {
                                assert!(header.flags & crate::wire::FLAG_PLACED != 0 && payload.is_empty());
                                place
                            }
                            None => {
                                assert_eq!(header.flags & crate::wire::FLAG_PLACED, 0);
                                payload.into_vec()
                            }
                        };
                        assert_eq!(got.len(), len);
                        assert!(got == content(peer, me, *s, len), "rank {me}: corrupt payload from {peer} seq {s}");
                        *s += 1;
                        received += 1;
                    }
                    Event::LinkDown { peer, reason } => panic!("rank {me}: link to {peer} down: {reason}"),
                    Event::Incoming { peer, token, header } => {
                        assert!(placing, "rank {me}: TCP asked where to read from {peer} unasked");
                        assert!(header.payload_len as usize >= PLACE_MIN_BYTES, "{header}");
                        questions += 1;
                        let at = (questions % 2 == 1).then(|| {
                            let place =
                                places.entry((peer, header.seq)).or_insert(vec![0; header.payload_len as usize]);
                            Placement { ptr: place.as_mut_ptr(), len: place.len() }
                        });
                        t.place(peer, token, at).unwrap();
                        assert!(t.place(peer, token, None).is_err(), "answered twice");
                    }
                }
            }
            let all_in = expect_seq.values().all(|&s| s as usize == sizes.len());
            if all_in && sent == sizes.len() && t.queued_bytes() == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "rank {me}: exchange timed out: {expect_seq:?}");
            t.wait(Duration::from_millis(50)).unwrap();
        }
        let asked = sizes.iter().filter(|&&l| l >= PLACE_MIN_BYTES).count() * peers.len();
        assert_eq!(questions, if placing { asked } else { 0 });
        // Keep the sockets open until every rank is done reading: the caller drops `t` after
        // joining all threads.
        (received, t)
    }

    fn run_exchange(n: u32, placing: bool) {
        let ts = mesh(n);
        for t in &ts {
            assert_eq!(t.peers().len() as u32, n - 1);
            assert_eq!(t.fds().len() as u32, n - 1);
        }
        let hs: Vec<_> = ts.into_iter().map(|t| thread::spawn(move || exchange(t, n, placing))).collect();
        let mut keep = Vec::new();
        for h in hs {
            let (received, t) = h.join().unwrap();
            assert_eq!(received, (n as u64 - 1) * sizes().len() as u64);
            keep.push(t);
        }
    }

    #[test]
    fn two_endpoints_all_sizes_in_order() {
        run_exchange(2, false);
    }

    #[test]
    fn placed_payloads_land_where_asked_in_order() {
        run_exchange(2, true);
        run_exchange(3, true);
    }

    #[test]
    fn four_endpoints_all_pairs_interleaved() {
        run_exchange(4, false);
    }

    /// Drives transports in one thread until `done` holds for the collected events.
    fn drive(
        ts: &mut [&mut TcpTransport],
        events: &mut [Vec<Event>],
        timeout: Duration,
        mut done: impl FnMut(&[Vec<Event>]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(events) {
            assert!(Instant::now() < deadline, "timed out");
            for (t, ev) in ts.iter_mut().zip(events.iter_mut()) {
                t.progress(ev).unwrap();
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn static_payload_is_not_copied() {
        let cfg = TcpConfig { socket_buffer_bytes: 64 << 10, ..TcpConfig::default() };
        let mut ts: Vec<TcpTransport> =
            mesh_with(2, |_| secret(), cfg, Duration::from_secs(20)).into_iter().map(|r| r.unwrap()).collect();
        let mut t1 = ts.pop().unwrap();
        let mut t0 = ts.pop().unwrap();
        let buf: &'static [u8] = Box::leak(content(0, 1, 0, MAX_PAYLOAD_LEN as usize).into_boxed_slice());
        t0.send(1, &eager(0, buf.len()), Payload::Static(buf)).unwrap();
        // 8 MiB cannot all fit in the socket buffers while rank 1 does not read: the rest
        // waits in the queue, pointing into the caller's buffer.
        assert!(t0.queued_bytes() > 0);
        let q = &t0.conns[0].sendq;
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].payload.as_slice().as_ptr(), buf.as_ptr(), "Static payload was copied");
        let mut evs = vec![Vec::new(), Vec::new()];
        drive(&mut [&mut t0, &mut t1], &mut evs, Duration::from_secs(30), |e| !e[1].is_empty());
        assert_eq!(t0.queued_bytes(), 0);
        match &evs[1][0] {
            Event::Frame { peer: 0, payload, .. } => assert!(payload.as_slice() == buf),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_secret_is_refused() {
        let cfg = TcpConfig { auth_timeout_ms: 1_000, ..TcpConfig::default() };
        let r = mesh_with(2, |r| JobSecret::from_bytes([r as u8 + 1; 32]), cfg, Duration::from_secs(2));
        match &r[0] {
            Err(TransportError::Auth(m)) => assert!(m.contains("rank 1") && m.contains("127.0.0.1"), "{m}"),
            other => panic!("rank 0: {other:?}"),
        }
        match &r[1] {
            Err(TransportError::Auth(m)) => {
                assert!(m.contains("[0] never connected") && m.contains("failed the challenge"), "{m}")
            }
            other => panic!("rank 1: {other:?}"),
        }
    }

    #[test]
    fn missing_rank_is_named() {
        let eps: Vec<TcpListenerEndpoint> =
            (0..3).map(|r| bind(r, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), secret()).unwrap()).collect();
        let peers: Vec<(PeerId, SocketAddr)> = eps.iter().map(|e| (e.rank(), e.local_addr())).collect();
        let mut it = eps.into_iter();
        let (e0, e1, e2) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        drop(e2); // rank 2 never shows up: its connects are refused
        let p1 = peers.clone();
        let h = thread::spawn(move || e1.connect_all(&p1, Duration::from_millis(1500)));
        let r0 = e0.connect_all(&peers, Duration::from_millis(1500));
        let r1 = h.join().unwrap();
        for (r, who) in [(r0, 0), (r1, 1)] {
            match r {
                Err(TransportError::Io { context, source }) => {
                    assert!(context.contains("[2] never connected"), "rank {who}: {context}");
                    assert_eq!(source.kind(), io::ErrorKind::TimedOut);
                }
                other => panic!("rank {who}: {other:?}"),
            }
        }
    }

    #[test]
    fn corrupt_header_and_wrong_src_take_only_that_link_down() {
        let mut ts = mesh(3);
        let mut t2 = ts.pop().unwrap();
        let mut t1 = ts.pop().unwrap();
        let mut t0 = ts.pop().unwrap();
        // Rank 1 writes a header with a bad magic to rank 0.
        let mut bad = eager(0, 0).encode();
        bad[0] = 0xEE;
        let s1 = t1.conns[0].sock.as_ref().unwrap();
        assert_eq!(s1.send(&bad).unwrap(), HEADER_LEN);
        let mut evs = vec![Vec::new(), Vec::new(), Vec::new()];
        drive(&mut [&mut t0, &mut t1, &mut t2], &mut evs, Duration::from_secs(10), |e| !e[0].is_empty());
        match &evs[0][0] {
            Event::LinkDown { peer: 1, reason } => {
                assert!(reason.contains("bad magic") && reason.contains("rank 1"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(!t0.is_up(1));
        assert!(matches!(t0.send(1, &eager(0, 0), Payload::Empty), Err(TransportError::LinkDown { peer: 1, .. })));
        // Rank 1 sees rank 0 close that link.
        drive(&mut [&mut t0, &mut t1, &mut t2], &mut evs, Duration::from_secs(10), |e| !e[1].is_empty());
        assert!(matches!(&evs[1][0], Event::LinkDown { peer: 0, reason } if reason.contains("closed by peer")));
        // The link 2 -> 0 still works.
        t2.send(0, &eager(0, 3), Payload::Owned(vec![1, 2, 3])).unwrap();
        evs.iter_mut().for_each(Vec::clear);
        drive(&mut [&mut t0, &mut t1, &mut t2], &mut evs, Duration::from_secs(10), |e| !e[0].is_empty());
        assert!(matches!(&evs[0][0], Event::Frame { peer: 2, payload, .. } if payload.as_slice() == [1, 2, 3]));
        // Rank 2 forges a header claiming to be rank 1: rejected.
        let forged = Header { src: 1, ..eager(1, 0) }.encode();
        let s2 = t2.conns[0].sock.as_ref().unwrap();
        assert_eq!(s2.send(&forged).unwrap(), HEADER_LEN);
        evs.iter_mut().for_each(Vec::clear);
        drive(&mut [&mut t0, &mut t1, &mut t2], &mut evs, Duration::from_secs(10), |e| !e[0].is_empty());
        match &evs[0][0] {
            Event::LinkDown { peer: 2, reason } => {
                assert!(reason.contains("sender rank 1") && reason.contains("authenticated rank 2"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn closed_peer_reports_link_down() {
        let mut ts = mesh(2);
        let t1 = ts.pop().unwrap();
        let mut t0 = ts.pop().unwrap();
        drop(t1);
        let mut evs = vec![Vec::new()];
        drive(&mut [&mut t0], &mut evs, Duration::from_secs(10), |e| !e[0].is_empty());
        assert!(matches!(&evs[0][0], Event::LinkDown { peer: 1, reason } if reason.contains("closed by peer")));
        assert!(t0.fds().is_empty());
        assert!(matches!(t0.send(7, &eager(0, 0), Payload::Empty), Err(TransportError::NoRoute { peer: 7 })));
    }

    #[test]
    fn queue_bound_gives_queue_full() {
        let cfg = TcpConfig { queue_limit_bytes: 1 << 20, socket_buffer_bytes: 64 << 10, ..TcpConfig::default() };
        let mut ts: Vec<TcpTransport> =
            mesh_with(2, |_| secret(), cfg, Duration::from_secs(20)).into_iter().map(|r| r.unwrap()).collect();
        let _t1 = ts.pop().unwrap(); // never reads
        let mut t0 = ts.pop().unwrap();
        let chunk: &'static [u8] = Box::leak(vec![7u8; 256 << 10].into_boxed_slice());
        let mut err = None;
        for i in 0..2_000u64 {
            if let Err(e) = t0.send(1, &eager(i, chunk.len()), Payload::Static(chunk)) {
                err = Some(e);
                break;
            }
        }
        match err {
            Some(TransportError::QueueFull { peer: 1, limit }) => assert_eq!(limit, 1 << 20),
            other => panic!("{other:?}"),
        }
        assert!(t0.queued_bytes() <= 1 << 20);
    }

    #[test]
    fn send_rejects_what_the_receiver_would() {
        let mut ts = mesh(2);
        let mut t0 = ts.remove(0);
        let r = t0.send(1, &Header::new(FrameKind::Cts), Payload::Owned(vec![1]));
        assert!(
            matches!(r, Err(TransportError::Malformed { peer: 1, source: WireError::UnexpectedPayload { .. } })),
            "{r:?}"
        );
        let big: &'static [u8] = Box::leak(vec![0u8; MAX_PAYLOAD_LEN as usize + 1].into_boxed_slice());
        let r = t0.send(1, &eager(0, 0), Payload::Static(big));
        assert!(matches!(r, Err(TransportError::Malformed { source: WireError::PayloadTooLarge { .. }, .. })), "{r:?}");
    }

    #[test]
    fn wait_wakes_on_data_and_times_out_otherwise() {
        let mut ts = mesh(2);
        let mut t1 = ts.pop().unwrap();
        let mut t0 = ts.pop().unwrap();
        let t = Instant::now();
        t0.wait(Duration::from_millis(100)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(90));
        let h = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            t1.send(0, &eager(0, 0), Payload::Empty).unwrap();
            t1
        });
        let t = Instant::now();
        t0.wait(Duration::from_secs(10)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        let _t1 = h.join().unwrap();
    }

    #[test]
    fn busy_peer_does_not_starve_others() {
        let cfg = TcpConfig { max_read_bytes_per_progress: 256 << 10, ..TcpConfig::default() };
        let mut ts: Vec<TcpTransport> =
            mesh_with(3, |_| secret(), cfg, Duration::from_secs(20)).into_iter().map(|r| r.unwrap()).collect();
        let mut t2 = ts.pop().unwrap();
        let mut t1 = ts.pop().unwrap();
        let mut t0 = ts.pop().unwrap();
        let big: &'static [u8] = Box::leak(vec![1u8; MAX_PAYLOAD_LEN as usize].into_boxed_slice());
        for i in 0..3 {
            t1.send(0, &eager(i, big.len()), Payload::Static(big)).unwrap();
        }
        t2.send(0, &eager(0, 4), Payload::Owned(vec![2; 4])).unwrap();
        let mut evs = vec![Vec::new(), Vec::new(), Vec::new()];
        drive(&mut [&mut t0, &mut t1, &mut t2], &mut evs, Duration::from_secs(60), |e| e[0].len() == 4);
        let order: Vec<PeerId> = evs[0]
            .iter()
            .map(|e| match e {
                Event::Frame { peer, .. } => *peer,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_ne!(order[3], 2, "rank 2's small frame waited behind 24 MiB from rank 1: {order:?}");
    }
}
