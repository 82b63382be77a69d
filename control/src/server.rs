//! The coordinator's IO: a TCP listener, one reader thread per connection and a timer, all
//! feeding one [`Coordinator`] behind a lock.
//!
//! Every connection must first pass the per-job challenge-response; one that does not is
//! refused and the refusal logged. Logs go to stderr prefixed `kawarimi coordinator:`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kawarimi_transports::auth::{authenticate_stream, JobSecret, Role};
use parking_lot::Mutex;

use crate::client::Line;
use crate::coordinator::{ConnId, Coordinator, CoordinatorConfig};
use crate::fanout::Outbox;
use crate::proto::{to_line, Reply, Request, COORDINATOR_ID, MAX_LINE_BYTES};
use crate::relay::Relay;
use kawarimi_transports::{TransportError, TransportResult};

/// How long a new connection has to pass authentication.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not read its replies for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Granularity of the timer and of noticing shutdown.
const TICK: Duration = Duration::from_millis(50);

/// What the IO below drives: the coordinator, or a host leader's relay (sans-IO both).
pub trait Node: Send + 'static {
    fn handle_connect(&mut self, conn: ConnId);
    fn handle_request(&mut self, conn: ConnId, req: Request, now: Instant);
    fn handle_malformed(&mut self, conn: ConnId, error: &str);
    fn handle_disconnect(&mut self, conn: ConnId, now: Instant);
    fn handle_timeout(&mut self, now: Instant);
    fn outbox(&mut self) -> &mut Outbox;
    /// Requests for this node's parent (a relay's); the coordinator has none.
    fn poll_up(&mut self) -> Option<Request> {
        None
    }
    /// How its log lines start.
    const LOG_PREFIX: &'static str;
}

macro_rules! node_impl {
    ($t:ty, $prefix:literal) => {
        impl Node for $t {
            const LOG_PREFIX: &'static str = $prefix;
            fn handle_connect(&mut self, conn: ConnId) {
                <$t>::handle_connect(self, conn)
            }
            fn handle_request(&mut self, conn: ConnId, req: Request, now: Instant) {
                <$t>::handle_request(self, conn, req, now)
            }
            fn handle_malformed(&mut self, conn: ConnId, error: &str) {
                <$t>::handle_malformed(self, conn, error)
            }
            fn handle_disconnect(&mut self, conn: ConnId, now: Instant) {
                <$t>::handle_disconnect(self, conn, now)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
            fn outbox(&mut self) -> &mut Outbox {
                &mut self.out
            }
            fn poll_up(&mut self) -> Option<Request> {
                self.poll_up_request()
            }
        }
    };
}
node_impl!(Coordinator, "kawarimi coordinator");
node_impl!(Relay, "kawarimi relay");

impl Coordinator {
    fn poll_up_request(&mut self) -> Option<Request> {
        None
    }
}

impl Relay {
    fn poll_up_request(&mut self) -> Option<Request> {
        self.poll_up()
    }
}

struct Shared<N> {
    node: N,
    writers: HashMap<ConnId, TcpStream>,
    /// The connection to the parent (relays, once attached).
    up: Option<TcpStream>,
}

/// A running control-plane server. Dropping it stops accepting and closes every connection.
pub struct ServerHandle<N> {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared<N>>>,
}

/// A running coordinator.
pub type CoordinatorHandle = ServerHandle<Coordinator>;
/// A running relay.
pub type RelayHandle = ServerHandle<Relay>;

impl<N> ServerHandle<N> {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl CoordinatorHandle {
    /// The job's state as the coordinator sees it.
    pub fn status(&self) -> crate::proto::JobStatus {
        self.shared.lock().node.status()
    }
}

impl RelayHandle {
    /// Have the ranks that subscribed here all finalized (or gone)?
    pub fn all_finished(&self) -> bool {
        self.shared.lock().node.all_finished()
    }
}

impl<N> Drop for ServerHandle<N> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let mut s = self.shared.lock();
        for (_, w) in s.writers.drain() {
            let _ = w.shutdown(Shutdown::Both);
        }
        if let Some(up) = s.up.take() {
            let _ = up.shutdown(Shutdown::Both);
        }
    }
}

fn log<N: Node>(line: &str) {
    eprintln!("{}: {line}", N::LOG_PREFIX);
}

/// Carries out everything the node asked for after an input.
fn flush<N: Node>(shared: &mut Shared<N>) {
    while let Some(req) = shared.node.poll_up() {
        if let Some(up) = shared.up.as_mut() {
            if up.write_all(to_line(&req).as_bytes()).is_err() {
                let _ = up.shutdown(Shutdown::Both);
            }
        }
    }
    while let Some((conn, reply)) = shared.node.outbox().poll_reply() {
        if let Some(w) = shared.writers.get_mut(&conn) {
            if w.write_all(to_line(&reply).as_bytes()).is_err() {
                let _ = w.shutdown(Shutdown::Both);
            }
        }
    }
    while let Some(conn) = shared.node.outbox().poll_close() {
        if let Some(w) = shared.writers.remove(&conn) {
            let _ = w.shutdown(Shutdown::Both);
        }
    }
    while let Some(line) = shared.node.outbox().poll_log() {
        log::<N>(&line);
    }
}

/// Starts a coordinator listening on `ip` (all interfaces when `None`), publishing
/// `publish_ip` as its address.
pub fn spawn(
    ip: Option<IpAddr>,
    publish_ip: IpAddr,
    job: String,
    secret: JobSecret,
    config: CoordinatorConfig,
) -> std::io::Result<CoordinatorHandle> {
    let listener = TcpListener::bind(SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0))?;
    let addr = SocketAddr::new(publish_ip, listener.local_addr()?.port());
    serve_node(listener, addr, Coordinator::new(job, config), secret, "coord")
}

/// Serves `node` on `listener` (with its address as others reach it): an accept thread, a
/// reader thread per connection, and a timer.
fn serve_node<N: Node>(
    listener: TcpListener,
    addr: SocketAddr,
    node: N,
    secret: JobSecret,
    name: &'static str,
) -> std::io::Result<ServerHandle<N>> {
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Mutex::new(Shared { node, writers: HashMap::new(), up: None }));
    let next_conn = Arc::new(AtomicU64::new(1));
    let secret = Arc::new(secret);

    {
        let (stop, shared) = (stop.clone(), shared.clone());
        thread::Builder::new().name(format!("kawarimi-{name}-timer")).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(TICK);
                let mut s = shared.lock();
                s.node.handle_timeout(Instant::now());
                flush(&mut s);
            }
        })?;
    }
    {
        let (stop, shared) = (stop.clone(), shared.clone());
        thread::Builder::new().name(format!("kawarimi-{name}-accept")).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
                        let (shared, secret) = (shared.clone(), secret.clone());
                        let spawned = thread::Builder::new()
                            .name(format!("kawarimi-{name}-conn-{conn}"))
                            .spawn(move || serve(conn, stream, peer, &shared, &secret));
                        if let Err(e) = spawned {
                            log::<N>(&format!("cannot serve {peer}: {e}"));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(TICK),
                    Err(e) => {
                        log::<N>(&format!("accept failed: {e}"));
                        thread::sleep(TICK);
                    }
                }
            }
        })?;
    }
    Ok(ServerHandle { addr, stop, shared })
}

/// Serves one connection until it closes.
fn serve<N: Node>(
    conn: ConnId,
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Mutex<Shared<N>>,
    secret: &JobSecret,
) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    if let Err(e) = authenticate_stream(&mut stream, Role::Responder, COORDINATOR_ID, None, secret, AUTH_TIMEOUT) {
        log::<N>(&format!("refused connection from {peer}: {e}"));
        return;
    }
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    {
        let mut s = shared.lock();
        s.writers.insert(conn, writer);
        s.node.handle_connect(conn);
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded read: a line longer than MAX_LINE_BYTES is malformed.
        let n = match (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        let mut s = shared.lock();
        if line.last() != Some(&b'\n') {
            s.node.handle_malformed(conn, &format!("line longer than {MAX_LINE_BYTES} bytes"));
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => s.node.handle_request(conn, req, Instant::now()),
                Err(e) => s.node.handle_malformed(conn, &e.to_string()),
            }
        }
        flush(&mut s);
        if !s.writers.contains_key(&conn) {
            break;
        }
    }
    let mut s = shared.lock();
    s.writers.remove(&conn);
    s.node.handle_disconnect(conn, Instant::now());
    flush(&mut s);
}

/// Most redirects a relay follows while attaching (the tree's depth bounds it).
const MAX_REDIRECTS: usize = 16;
/// How long a relay waits for its parent's answer while attaching.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the relay of host leader `leader` in a job of `size` ranks: it listens on
/// `listen_ip` (the address this host reaches the coordinator from, which survives a move),
/// and attaches to the coordinator at `coordinator`, or below another relay if the
/// coordinator redirects it. If it cannot attach, or loses its parent later, it says so once
/// and closes its children's connections: each of those ranks then says that it can no
/// longer be switched, and runs on.
pub fn spawn_relay(
    listen_ip: IpAddr,
    coordinator: SocketAddr,
    leader: u32,
    size: u32,
    secret: JobSecret,
) -> std::io::Result<RelayHandle> {
    let listener = TcpListener::bind(SocketAddr::new(listen_ip, 0))?;
    let addr = listener.local_addr()?;
    let handle = serve_node(listener, addr, Relay::new(leader, size), secret.clone(), "relay")?;
    let (stop, shared) = (handle.stop.clone(), handle.shared.clone());
    thread::Builder::new().name("kawarimi-relay-up".into()).spawn(move || {
        let why = match attach(coordinator, addr, leader, &secret, &shared) {
            Ok(line) => carry_parent(line, &shared, &stop),
            Err(e) => e.to_string(),
        };
        if !stop.load(Ordering::Relaxed) {
            log::<Relay>(&format!(
                "rank {leader}'s relay lost its parent ({why}); the ranks on this host can no longer be switched"
            ));
            let mut s = shared.lock();
            for (_, w) in s.writers.drain() {
                let _ = w.shutdown(Shutdown::Both);
            }
        }
    })?;
    Ok(handle)
}

/// Joins the control tree, following redirects; returns the line to the parent.
fn attach(
    coordinator: SocketAddr,
    listen: SocketAddr,
    leader: u32,
    secret: &JobSecret,
    shared: &Mutex<Shared<Relay>>,
) -> TransportResult<Line> {
    let join = shared.lock().node.join_request(Some(listen.to_string()));
    let mut target = coordinator;
    for _ in 0..MAX_REDIRECTS {
        let peer = if target == coordinator { "coordinator" } else { "relay" };
        let mut line = Line::connect(target, peer, leader, secret, ATTACH_TIMEOUT)?;
        line.send(&join)?;
        match line.recv_within(ATTACH_TIMEOUT)? {
            Some(Reply::Welcome { .. }) => {
                let mut s = shared.lock();
                s.up = Some(line.writer().map_err(|e| TransportError::Bootstrap(format!("control socket: {e}")))?);
                s.node.handle_attached(Instant::now());
                flush(&mut s);
                return Ok(line);
            }
            Some(Reply::Redirect { parent }) => {
                target = parent.parse().map_err(|_| {
                    TransportError::Bootstrap(format!("redirected to {parent:?}, which is not host:port"))
                })?;
            }
            other => {
                return Err(TransportError::Bootstrap(format!(
                    "the {peer} at {target} did not take the relay: {other:?}"
                )))
            }
        }
    }
    Err(TransportError::Bootstrap(format!("more than {MAX_REDIRECTS} redirects")))
}

/// Feeds the parent's commands to the relay until the parent goes away; returns why.
fn carry_parent(mut line: Line, shared: &Mutex<Shared<Relay>>, stop: &AtomicBool) -> String {
    loop {
        if stop.load(Ordering::Relaxed) {
            return "stopped".into();
        }
        match line.recv_within(TICK) {
            Ok(Some(reply)) => {
                let mut s = shared.lock();
                s.node.handle_parent(reply, Instant::now());
                flush(&mut s);
            }
            Ok(None) => {}
            Err(e) => return e.to_string(),
        }
    }
}
