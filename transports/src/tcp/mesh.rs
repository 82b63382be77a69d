//! Building the mesh: the lower rank of each pair connects, the higher accepts, and every
//! connection authenticates (see [`crate::auth`]) before it carries a frame. Each connection
//! is a small state machine ([`Dial`] for the ranks this one connects to, [`Accepted`] for
//! those that connect to it); one poll loop ([`Mesh::step`]) drives them all, so that ranks
//! that start at different times never deadlock each other, and every wait has a bound
//! (attempts, authentication time, the wire-up deadline).

use std::os::fd::BorrowedFd;

use super::*;

/// A bound, listening endpoint that has not yet joined the mesh.
pub struct TcpListenerEndpoint {
    me: PeerId,
    secret: JobSecret,
    config: TcpConfig,
    listener: Socket,
    publish: SocketAddr,
    publish_all: Vec<SocketAddr>,
}

impl fmt::Debug for TcpListenerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListenerEndpoint").field("me", &self.me).field("addr", &self.publish).finish_non_exhaustive()
    }
}

/// Binds a listener for rank `me` on `ip` (or, with `None`, on every address, publishing the
/// first of [`local_addresses`]), port 0, with the default [`TcpConfig`].
pub fn bind(me: PeerId, ip: Option<IpAddr>, secret: JobSecret) -> TransportResult<TcpListenerEndpoint> {
    bind_with_config(me, ip, secret, TcpConfig::default())
}

/// [`bind`] with an explicit configuration.
pub fn bind_with_config(
    me: PeerId,
    ip: Option<IpAddr>,
    secret: JobSecret,
    config: TcpConfig,
) -> TransportResult<TcpListenerEndpoint> {
    let (bind_ip, publish_ips) = match ip {
        Some(ip) => (ip, vec![ip]),
        None => {
            let ips = local_addresses();
            let first = ips.first().copied().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let any =
                if first.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
            let same_family: Vec<IpAddr> = ips.into_iter().filter(|i| i.is_ipv4() == first.is_ipv4()).collect();
            (any, if same_family.is_empty() { vec![first] } else { same_family })
        }
    };
    let io = |context: &str| {
        let context = format!("tcp bind {bind_ip} for rank {me}: {context}");
        move |source| TransportError::Io { context, source }
    };
    let listener = Socket::new(Domain::for_address(SocketAddr::new(bind_ip, 0)), Type::STREAM, Some(Protocol::TCP))
        .map_err(io("socket"))?;
    listener.set_cloexec(true).map_err(io("cloexec"))?;
    listener.bind(&SockAddr::from(SocketAddr::new(bind_ip, 0))).map_err(io("bind"))?;
    listener.listen(config.listen_backlog).map_err(io("listen"))?;
    listener.set_nonblocking(true).map_err(io("nonblocking"))?;
    let port = listener
        .local_addr()
        .map_err(io("getsockname"))?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| io("getsockname")(io::Error::other("not an inet address")))?;
    let publish_all: Vec<SocketAddr> = publish_ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    Ok(TcpListenerEndpoint { me, secret, config, listener, publish: publish_all[0], publish_all })
}

/// A rank this rank dials (every higher rank): connect, then prove the secret as the
/// initiator. A refused connect or a handshake cut short is tried again after
/// `connect_retry_interval_ms`, at most `connect_max_attempts` times; a peer that fails the
/// challenge is fatal.
struct Dial {
    peer: PeerId,
    addr: SocketAddr,
    attempts: u32,
    last_error: String,
    state: DialState,
}

enum DialState {
    Waiting { next_try: Instant },
    Connecting { sock: Socket },
    Auth { sock: Socket, hs: Box<Handshake> },
    Done,
}

impl Dial {
    fn new(peer: PeerId, addr: SocketAddr, now: Instant) -> Dial {
        Dial { peer, addr, attempts: 0, last_error: String::new(), state: DialState::Waiting { next_try: now } }
    }

    /// Starts the connect when its time has come; returns when it next wants to be woken.
    fn tick(&mut self, now: Instant, m: &MeshParams<'_>) -> TransportResult<Option<Instant>> {
        let DialState::Waiting { next_try } = self.state else { return Ok(None) };
        if now < next_try {
            return Ok(Some(next_try));
        }
        self.attempts += 1;
        if self.attempts > m.cfg.connect_max_attempts {
            return Err(TransportError::Io {
                context: format!(
                    "tcp wire-up of rank {}: rank {} at {} unreachable after {} attempts: {}",
                    m.me, self.peer, self.addr, m.cfg.connect_max_attempts, self.last_error
                ),
                source: io::Error::from(io::ErrorKind::TimedOut),
            });
        }
        self.state = match start_connect(self.addr) {
            Ok((sock, true)) => self.authenticating(sock, m)?,
            Ok((sock, false)) => DialState::Connecting { sock },
            Err(e) => return Ok(Some(self.retry(format!("connect: {e}"), now, m))),
        };
        Ok(None)
    }

    /// A connected socket: the handshake starts.
    fn authenticating(&self, sock: Socket, m: &MeshParams<'_>) -> TransportResult<DialState> {
        let hs = Handshake::new(Role::Initiator, m.me, Some(self.peer), m.secret, random_nonce()?);
        Ok(DialState::Auth { sock, hs: Box::new(hs) })
    }

    /// Back to waiting after a failure; returns the time of the next try.
    fn retry(&mut self, why: String, now: Instant, m: &MeshParams<'_>) -> Instant {
        self.last_error = why;
        let next_try = now + m.retry;
        self.state = DialState::Waiting { next_try };
        next_try
    }

    /// The socket and the readiness this dial waits for, if it waits on one.
    fn interest(&self) -> Option<(BorrowedFd<'_>, PollFlags)> {
        match &self.state {
            DialState::Connecting { sock } => Some((sock.as_fd(), PollFlags::POLLOUT)),
            DialState::Auth { sock, hs } => Some((sock.as_fd(), handshake_interest(hs))),
            _ => None,
        }
    }

    /// Its socket is ready: moves on; returns the authenticated socket once done.
    fn ready(&mut self, now: Instant, m: &MeshParams<'_>) -> TransportResult<Option<Socket>> {
        match std::mem::replace(&mut self.state, DialState::Done) {
            DialState::Connecting { sock } => match sock.take_error() {
                Ok(None) if sock.peer_addr().is_ok() => self.state = self.authenticating(sock, m)?,
                Ok(Some(e)) | Err(e) => _ = self.retry(format!("connect: {e}"), now, m),
                Ok(None) => _ = self.retry("connect: not connected".into(), now, m),
            },
            DialState::Auth { sock, mut hs } => match drive_handshake(&sock, &mut hs) {
                Drive::Pending => self.state = DialState::Auth { sock, hs },
                Drive::Done => return Ok(Some(sock)),
                Drive::Failed(why, true) => {
                    return Err(TransportError::Auth(format!(
                        "rank {} refused rank {} at {}: {why}",
                        m.me, self.peer, self.addr
                    )));
                }
                // Closed or reset mid-handshake: the peer may be restarting its listener.
                Drive::Failed(why, false) => _ = self.retry(format!("authentication: {why}"), now, m),
            },
            other => self.state = other,
        }
        Ok(None)
    }
}

/// A connection accepted from some lower rank, proving the secret as the responder; it must
/// finish within `auth_timeout_ms`.
struct Accepted {
    sock: Socket,
    addr: SocketAddr,
    hs: Box<Handshake>,
    started: Instant,
}

/// What became of an accepted connection whose socket was ready.
enum AcceptStep {
    Pending,
    /// Authenticated as this rank.
    Authenticated(PeerId),
    Refused(String),
}

impl Accepted {
    fn ready(&mut self) -> AcceptStep {
        match drive_handshake(&self.sock, &mut self.hs) {
            Drive::Pending => AcceptStep::Pending,
            Drive::Done => AcceptStep::Authenticated(self.hs.peer_rank().unwrap_or(u32::MAX)),
            Drive::Failed(why, _) => AcceptStep::Refused(format!("peer {}: {why}", self.addr)),
        }
    }
}

/// What the readiness of a handshake's socket is awaited for.
fn handshake_interest(hs: &Handshake) -> PollFlags {
    if hs.pending_output().is_empty() {
        PollFlags::POLLIN
    } else {
        PollFlags::POLLIN | PollFlags::POLLOUT
    }
}

/// What every connection of one wire-up shares.
struct MeshParams<'a> {
    me: PeerId,
    cfg: &'a TcpConfig,
    secret: &'a JobSecret,
    retry: Duration,
}

/// A mesh being built: the ranks this rank dials, the ranks that dial it, and the
/// connections that are up.
struct Mesh<'a> {
    params: MeshParams<'a>,
    dials: Vec<Dial>,
    /// The lower ranks, which connect to this one.
    expect_in: Vec<PeerId>,
    incoming: Vec<Accepted>,
    established: HashMap<PeerId, (Socket, SocketAddr)>,
    /// Why connections were refused (the latest 64), for the error if the mesh never completes.
    rejected: Vec<String>,
    /// Every peer, with the address it published.
    addr_of: HashMap<PeerId, SocketAddr>,
}

/// Which connection a poll entry belongs to.
#[derive(Clone, Copy)]
enum PollRef {
    Listener,
    Dial(usize),
    Accepted(usize),
}

/// The most refusals a mesh remembers for its error message.
const REFUSALS_KEPT: usize = 64;

impl<'a> Mesh<'a> {
    fn new(params: MeshParams<'a>, peers: &[(PeerId, SocketAddr)], now: Instant) -> Mesh<'a> {
        let me = params.me;
        let mut mesh = Mesh {
            params,
            dials: Vec::new(),
            expect_in: Vec::new(),
            incoming: Vec::new(),
            established: HashMap::new(),
            rejected: Vec::new(),
            addr_of: HashMap::new(),
        };
        for &(p, addr) in peers {
            if p == me || mesh.addr_of.insert(p, addr).is_some() {
                continue;
            }
            if p > me {
                mesh.dials.push(Dial::new(p, addr, now));
            } else {
                mesh.expect_in.push(p);
            }
        }
        mesh
    }

    fn is_complete(&self) -> bool {
        self.established.len() == self.addr_of.len()
    }

    /// The error of a mesh that did not complete within `timeout`: the ranks missing, the
    /// last error of each dial, and the connections refused (then an authentication error).
    fn incomplete(&self, timeout: Duration) -> TransportError {
        let mut missing: Vec<PeerId> =
            self.addr_of.keys().copied().filter(|p| !self.established.contains_key(p)).collect();
        missing.sort_unstable();
        let details: Vec<String> = self
            .dials
            .iter()
            .filter(|d| !matches!(d.state, DialState::Done) && !d.last_error.is_empty())
            .map(|d| format!("rank {} at {}: {}", d.peer, d.addr, d.last_error))
            .collect();
        let mut msg = format!(
            "tcp wire-up of rank {}: rank(s) {missing:?} never connected within {} ms",
            self.params.me,
            timeout.as_millis()
        );
        if !details.is_empty() {
            msg.push_str(&format!(" (last errors: {})", details.join("; ")));
        }
        if !self.rejected.is_empty() {
            msg.push_str(&format!(" (refused connections: {})", self.rejected.join("; ")));
            return TransportError::Auth(msg);
        }
        TransportError::Io { context: msg, source: io::Error::from(io::ErrorKind::TimedOut) }
    }

    fn refuse(&mut self, why: String) {
        tracing::warn!(rank = self.params.me, "refused connection: {why}");
        self.rejected.push(why);
        if self.rejected.len() > REFUSALS_KEPT {
            self.rejected.drain(..self.rejected.len() - REFUSALS_KEPT);
        }
    }

    /// One round: starts the connects that are due, drops accepted connections that took
    /// too long, waits (until `deadline` at most) for any socket to be ready, and moves each
    /// ready one on.
    fn step(&mut self, listener: &Socket, now: Instant, deadline: Instant) -> TransportResult<()> {
        let me = self.params.me;
        let auth_timeout = Duration::from_millis(self.params.cfg.auth_timeout_ms);
        let mut next_wake = deadline;
        for d in self.dials.iter_mut() {
            if let Some(t) = d.tick(now, &self.params)? {
                next_wake = next_wake.min(t);
            }
        }
        self.incoming.retain(|c| {
            let keep = now.duration_since(c.started) < auth_timeout;
            if !keep {
                tracing::warn!(rank = me, peer = %c.addr, "dropping connection that did not authenticate in time");
            }
            keep
        });
        for c in &self.incoming {
            next_wake = next_wake.min(c.started + auth_timeout);
        }

        let mut refs: Vec<PollRef> = Vec::new();
        let revents: Vec<PollFlags> = {
            let mut fds: Vec<PollFd<'_>> = Vec::new();
            if self.incoming.len() < self.params.cfg.max_pending_accepts {
                fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
                refs.push(PollRef::Listener);
            }
            for (i, d) in self.dials.iter().enumerate() {
                if let Some((fd, flags)) = d.interest() {
                    fds.push(PollFd::new(fd, flags));
                    refs.push(PollRef::Dial(i));
                }
            }
            for (i, c) in self.incoming.iter().enumerate() {
                fds.push(PollFd::new(c.sock.as_fd(), handshake_interest(&c.hs)));
                refs.push(PollRef::Accepted(i));
            }
            let wait = next_wake.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
            match nix::poll::poll(&mut fds, poll_timeout(wait)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(TransportError::Io {
                        context: format!("tcp wire-up of rank {me}: poll"),
                        source: io::Error::from(e),
                    })
                }
            }
            fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect()
        };

        // Accepted connections whose handshake ended: the rank they proved, or why not.
        let mut finished: Vec<(usize, Result<PeerId, String>)> = Vec::new();
        for (r, ev) in refs.iter().zip(revents) {
            if ev.is_empty() {
                continue;
            }
            match *r {
                PollRef::Listener => self.accept(listener)?,
                PollRef::Dial(i) => {
                    let d = &mut self.dials[i];
                    if let Some(sock) = d.ready(Instant::now(), &self.params)? {
                        self.established.insert(d.peer, (sock, d.addr));
                    }
                }
                PollRef::Accepted(i) => match self.incoming[i].ready() {
                    AcceptStep::Pending => {}
                    AcceptStep::Authenticated(rank) => finished.push((i, Ok(rank))),
                    AcceptStep::Refused(why) => finished.push((i, Err(why))),
                },
            }
        }
        // Highest index first keeps the others valid.
        finished.sort_unstable_by_key(|(i, _)| *i);
        for (i, outcome) in finished.into_iter().rev() {
            let c = self.incoming.swap_remove(i);
            match outcome {
                Ok(claimed) if !self.expect_in.contains(&claimed) => self.refuse(format!(
                    "peer {} authenticated as rank {claimed}, which must not connect to rank {me}",
                    c.addr
                )),
                Ok(claimed) if self.established.contains_key(&claimed) => {
                    self.refuse(format!("peer {} is a second connection from rank {claimed}", c.addr))
                }
                Ok(claimed) => _ = self.established.insert(claimed, (c.sock, c.addr)),
                Err(why) => self.refuse(why),
            }
        }
        Ok(())
    }

    /// Accepts what the listener holds, up to `max_pending_accepts` handshakes at once.
    fn accept(&mut self, listener: &Socket) -> TransportResult<()> {
        let me = self.params.me;
        while self.incoming.len() < self.params.cfg.max_pending_accepts {
            match listener.accept() {
                Ok((sock, addr)) => {
                    let addr = addr.as_socket().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                    if let Err(e) = sock.set_nonblocking(true).and_then(|_| sock.set_cloexec(true)) {
                        tracing::warn!(rank = me, peer = %addr, "accepted socket setup failed: {e}");
                        continue;
                    }
                    let hs = Handshake::new(Role::Responder, me, None, self.params.secret, random_nonce()?);
                    self.incoming.push(Accepted { sock, addr, hs: Box::new(hs), started: Instant::now() });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        Ok(())
    }
}

/// Result of driving a handshake on a non-blocking socket.
enum Drive {
    Pending,
    Done,
    Failed(String, bool /* fatal for an outgoing connection */),
}

fn drive_handshake(sock: &Socket, hs: &mut Handshake) -> Drive {
    let mut buf = [0u8; crate::auth::HELLO_LEN];
    loop {
        let mut moved = false;
        while !hs.pending_output().is_empty() {
            match sock.send_with_flags(hs.pending_output(), libc::MSG_NOSIGNAL) {
                Ok(n) => {
                    hs.consume_output(n);
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Drive::Failed(format!("write: {e}"), false),
            }
        }
        if hs.is_done() {
            return Drive::Done;
        }
        let need = hs.input_needed();
        if need > 0 {
            match (&*sock).read(&mut buf[..need]) {
                Ok(0) => return Drive::Failed(hs.receive_eof().to_string(), false),
                Ok(n) => {
                    if let Err(e) = hs.receive(&buf[..n]) {
                        return Drive::Failed(e.to_string(), true);
                    }
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Drive::Failed(format!("read: {e}"), false),
            }
        }
        if !moved {
            return Drive::Pending;
        }
    }
}

impl TcpListenerEndpoint {
    /// The address to publish for peers to connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.publish
    }

    /// Every address this endpoint can be reached on (when bound to all interfaces).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.publish_all
    }

    pub fn rank(&self) -> PeerId {
        self.me
    }

    pub fn config(&self) -> &TcpConfig {
        &self.config
    }

    /// Builds the full mesh with `peers` (entries for this rank itself are ignored) and
    /// returns when every connection is up and authenticated, or fails naming the ranks that
    /// never connected once `timeout` passes. A peer that fails the challenge when this rank
    /// dials it is a fatal [`TransportError::Auth`]; an accepted connection that fails it is
    /// dropped (it may be an intruder) and wire-up goes on.
    pub fn connect_all(self, peers: &[(PeerId, SocketAddr)], timeout: Duration) -> TransportResult<TcpTransport> {
        let me = self.me;
        let cfg = self.config.clone();
        let deadline = Instant::now() + timeout;
        let params = MeshParams {
            me,
            cfg: &cfg,
            secret: &self.secret,
            retry: Duration::from_millis(cfg.connect_retry_interval_ms),
        };
        let mut mesh = Mesh::new(params, peers, Instant::now());
        while !mesh.is_complete() {
            let now = Instant::now();
            if now >= deadline {
                return Err(mesh.incomplete(timeout));
            }
            mesh.step(&self.listener, now, deadline)?;
        }
        let mut established: Vec<_> = mesh.established.into_iter().collect();
        established.sort_unstable_by_key(|(p, _)| *p);
        let mut conns = Vec::with_capacity(established.len());
        for (p, (sock, addr)) in established {
            let ctx = |what: &str| format!("tcp link {me}->{p} ({addr}): {what}");
            sock.set_nonblocking(true).map_err(|e| TransportError::Io { context: ctx("nonblocking"), source: e })?;
            sock.set_tcp_nodelay(true).map_err(|e| TransportError::Io { context: ctx("TCP_NODELAY"), source: e })?;
            // Best effort: the kernel clamps these to net.core.{w,r}mem_max.
            let _ = sock.set_send_buffer_size(cfg.socket_buffer_bytes);
            let _ = sock.set_recv_buffer_size(cfg.socket_buffer_bytes);
            conns.push(Conn {
                peer: p,
                addr,
                sock: Some(sock),
                sendq: VecDeque::new(),
                queued_bytes: 0,
                decoder: FrameDecoder::new(p),
                next_token: 0,
                down: None,
            });
        }
        let index = conns.iter().enumerate().map(|(i, c)| (c.peer, i)).collect();
        let wake = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_NONBLOCK | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
        )
        .map_err(|e| TransportError::Io { context: "eventfd".into(), source: e.into() })?;
        // `self.listener` is dropped here: the mesh is complete.
        Ok(TcpTransport {
            me,
            scratch: vec![0u8; cfg.read_chunk_bytes.max(HEADER_LEN)],
            config: cfg,
            conns,
            index,
            next_start: 0,
            pending_events: Vec::new(),
            wake: std::sync::Arc::new(wake),
            placed_payloads: 0,
        })
    }
}

/// Starts a non-blocking connect: `(socket, connected_already)`.
fn start_connect(addr: SocketAddr) -> io::Result<(Socket, bool)> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_cloexec(true)?;
    sock.set_nonblocking(true)?;
    match sock.connect(&SockAddr::from(addr)) {
        Ok(()) => Ok((sock, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {
            Ok((sock, false))
        }
        Err(e) => Err(e),
    }
}
