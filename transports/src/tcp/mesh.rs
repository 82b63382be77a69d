//! Building the mesh: the lower rank of each pair connects, the higher accepts, and every
//! connection authenticates (see [`crate::auth`]) before it carries a frame; one poll loop
//! drives every connect, accept and handshake, so that ranks that start at different times
//! never deadlock each other.

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

enum OutState {
    Waiting { next_try: Instant },
    Connecting { sock: Socket },
    Auth { sock: Socket, hs: Box<Handshake> },
    Done,
}

impl OutState {
    /// A connected socket to `peer`, proving the secret as the initiator.
    fn authenticating(sock: Socket, me: PeerId, peer: PeerId, secret: &JobSecret) -> TransportResult<OutState> {
        let hs = Handshake::new(Role::Initiator, me, Some(peer), secret, random_nonce()?);
        Ok(OutState::Auth { sock, hs: Box::new(hs) })
    }
}

struct OutPeer {
    peer: PeerId,
    addr: SocketAddr,
    attempts: u32,
    last_error: String,
    state: OutState,
}

struct InConn {
    sock: Socket,
    addr: SocketAddr,
    hs: Box<Handshake>,
    started: Instant,
}

#[derive(Clone, Copy)]
enum PollRef {
    Listener,
    Out(usize),
    In(usize),
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
        let retry = Duration::from_millis(cfg.connect_retry_interval_ms);
        let auth_timeout = Duration::from_millis(cfg.auth_timeout_ms);

        let mut outs: Vec<OutPeer> = Vec::new();
        let mut expect_in: Vec<PeerId> = Vec::new();
        let mut addr_of: HashMap<PeerId, SocketAddr> = HashMap::new();
        for &(p, addr) in peers {
            if p == me || addr_of.contains_key(&p) {
                continue;
            }
            addr_of.insert(p, addr);
            if p > me {
                outs.push(OutPeer {
                    peer: p,
                    addr,
                    attempts: 0,
                    last_error: String::new(),
                    state: OutState::Waiting { next_try: Instant::now() },
                });
            } else {
                expect_in.push(p);
            }
        }
        let total = outs.len() + expect_in.len();
        let mut established: HashMap<PeerId, (Socket, SocketAddr)> = HashMap::new();
        let mut incoming: Vec<InConn> = Vec::new();
        let mut rejected: Vec<String> = Vec::new();

        while established.len() < total {
            let now = Instant::now();
            if now >= deadline {
                let mut missing: Vec<PeerId> =
                    addr_of.keys().copied().filter(|p| !established.contains_key(p)).collect();
                missing.sort_unstable();
                let details: Vec<String> = outs
                    .iter()
                    .filter(|o| !matches!(o.state, OutState::Done) && !o.last_error.is_empty())
                    .map(|o| format!("rank {} at {}: {}", o.peer, o.addr, o.last_error))
                    .collect();
                let mut msg = format!(
                    "tcp wire-up of rank {me}: rank(s) {missing:?} never connected within {} ms",
                    timeout.as_millis()
                );
                if !details.is_empty() {
                    msg.push_str(&format!(" (last errors: {})", details.join("; ")));
                }
                if !rejected.is_empty() {
                    msg.push_str(&format!(" (refused connections: {})", rejected.join("; ")));
                    return Err(TransportError::Auth(msg));
                }
                return Err(TransportError::Io { context: msg, source: io::Error::from(io::ErrorKind::TimedOut) });
            }

            // Start (or restart) connects whose retry time has come.
            let mut next_wake = deadline;
            for o in outs.iter_mut() {
                if let OutState::Waiting { next_try } = o.state {
                    if now < next_try {
                        next_wake = next_wake.min(next_try);
                        continue;
                    }
                    o.attempts += 1;
                    if o.attempts > cfg.connect_max_attempts {
                        return Err(TransportError::Io {
                            context: format!(
                                "tcp wire-up of rank {me}: rank {} at {} unreachable after {} attempts: {}",
                                o.peer, o.addr, cfg.connect_max_attempts, o.last_error
                            ),
                            source: io::Error::from(io::ErrorKind::TimedOut),
                        });
                    }
                    o.state = match start_connect(o.addr) {
                        Ok((sock, true)) => OutState::authenticating(sock, me, o.peer, &self.secret)?,
                        Ok((sock, false)) => OutState::Connecting { sock },
                        Err(e) => {
                            o.last_error = format!("connect: {e}");
                            next_wake = next_wake.min(now + retry);
                            OutState::Waiting { next_try: now + retry }
                        }
                    };
                }
            }
            // Drop accepted connections that did not authenticate in time.
            incoming.retain(|c| {
                let keep = now.duration_since(c.started) < auth_timeout;
                if !keep {
                    tracing::warn!(rank = me, peer = %c.addr, "dropping connection that did not authenticate in time");
                }
                keep
            });
            for c in &incoming {
                next_wake = next_wake.min(c.started + auth_timeout);
            }

            // Poll everything that can make progress.
            let mut refs: Vec<PollRef> = Vec::new();
            let revents: Vec<PollFlags> = {
                let mut fds: Vec<PollFd<'_>> = Vec::new();
                if incoming.len() < cfg.max_pending_accepts {
                    fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                    refs.push(PollRef::Listener);
                }
                for (i, o) in outs.iter().enumerate() {
                    match &o.state {
                        OutState::Connecting { sock } => {
                            fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLOUT));
                            refs.push(PollRef::Out(i));
                        }
                        OutState::Auth { sock, hs } => {
                            let mut fl = PollFlags::POLLIN;
                            if !hs.pending_output().is_empty() {
                                fl |= PollFlags::POLLOUT;
                            }
                            fds.push(PollFd::new(sock.as_fd(), fl));
                            refs.push(PollRef::Out(i));
                        }
                        _ => {}
                    }
                }
                for (i, c) in incoming.iter().enumerate() {
                    let mut fl = PollFlags::POLLIN;
                    if !c.hs.pending_output().is_empty() {
                        fl |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(c.sock.as_fd(), fl));
                    refs.push(PollRef::In(i));
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

            let mut retired_in: Vec<usize> = Vec::new();
            for (r, ev) in refs.iter().zip(revents) {
                if ev.is_empty() {
                    continue;
                }
                match *r {
                    PollRef::Listener => {
                        while incoming.len() < cfg.max_pending_accepts {
                            match self.listener.accept() {
                                Ok((sock, addr)) => {
                                    let addr = addr.as_socket().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                                    if let Err(e) = sock.set_nonblocking(true).and_then(|_| sock.set_cloexec(true)) {
                                        tracing::warn!(rank = me, peer = %addr, "accepted socket setup failed: {e}");
                                        continue;
                                    }
                                    let hs = Box::new(Handshake::new(
                                        Role::Responder,
                                        me,
                                        None,
                                        &self.secret,
                                        random_nonce()?,
                                    ));
                                    incoming.push(InConn { sock, addr, hs, started: Instant::now() });
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => break,
                            }
                        }
                    }
                    PollRef::Out(i) => {
                        let o = &mut outs[i];
                        let state = std::mem::replace(&mut o.state, OutState::Done);
                        o.state = match state {
                            OutState::Connecting { sock } => match sock.take_error() {
                                Ok(None) if sock.peer_addr().is_ok() => {
                                    OutState::authenticating(sock, me, o.peer, &self.secret)?
                                }
                                Ok(Some(e)) | Err(e) => {
                                    o.last_error = format!("connect: {e}");
                                    OutState::Waiting { next_try: Instant::now() + retry }
                                }
                                Ok(None) => {
                                    o.last_error = "connect: not connected".into();
                                    OutState::Waiting { next_try: Instant::now() + retry }
                                }
                            },
                            OutState::Auth { sock, mut hs } => match drive_handshake(&sock, &mut hs) {
                                Drive::Pending => OutState::Auth { sock, hs },
                                Drive::Done => {
                                    established.insert(o.peer, (sock, o.addr));
                                    OutState::Done
                                }
                                Drive::Failed(why, true) => {
                                    return Err(TransportError::Auth(format!(
                                        "rank {me} refused rank {} at {}: {why}",
                                        o.peer, o.addr
                                    )));
                                }
                                Drive::Failed(why, false) => {
                                    // Closed or reset mid-handshake: the peer may be restarting
                                    // its listener; retry within the bounds.
                                    o.last_error = format!("authentication: {why}");
                                    OutState::Waiting { next_try: Instant::now() + retry }
                                }
                            },
                            other => other,
                        };
                    }
                    PollRef::In(i) => {
                        let c = &mut incoming[i];
                        match drive_handshake(&c.sock, &mut c.hs) {
                            Drive::Pending => {}
                            Drive::Done => {
                                retired_in.push(i);
                                let claimed = c.hs.peer_rank().unwrap_or(u32::MAX);
                                if !expect_in.contains(&claimed) {
                                    let why = format!(
                                        "peer {} authenticated as rank {claimed}, which must not connect to rank {me}",
                                        c.addr
                                    );
                                    tracing::warn!(rank = me, "{why}");
                                    rejected.push(why);
                                } else if established.contains_key(&claimed) {
                                    let why = format!("peer {} is a second connection from rank {claimed}", c.addr);
                                    tracing::warn!(rank = me, "{why}");
                                    rejected.push(why);
                                }
                                // An expected, first connection is moved into `established`
                                // when retired below.
                            }
                            Drive::Failed(why, _) => {
                                let why = format!("peer {}: {why}", c.addr);
                                tracing::warn!(rank = me, "refused connection: {why}");
                                rejected.push(why);
                                retired_in.push(i);
                            }
                        }
                    }
                }
            }
            // Retire finished incoming connections (highest index first keeps indices valid).
            retired_in.sort_unstable();
            for i in retired_in.into_iter().rev() {
                let c = incoming.swap_remove(i);
                if c.hs.is_done() {
                    let claimed = c.hs.peer_rank().unwrap_or(u32::MAX);
                    if expect_in.contains(&claimed) && !established.contains_key(&claimed) {
                        established.insert(claimed, (c.sock, c.addr));
                    }
                }
            }
            if rejected.len() > 64 {
                rejected.drain(..rejected.len() - 64);
            }
        }

        let mut ranks: Vec<PeerId> = established.keys().copied().collect();
        ranks.sort_unstable();
        let mut conns = Vec::with_capacity(ranks.len());
        for p in ranks {
            let Some((sock, addr)) = established.remove(&p) else { continue };
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
