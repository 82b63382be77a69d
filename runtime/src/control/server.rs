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

use super::coordinator::{ConnId, Coordinator, CoordinatorConfig};
use super::proto::{to_line, Request, COORDINATOR_ID, MAX_LINE_BYTES};

/// How long a new connection has to pass authentication.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not read its replies for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Granularity of the timer and of noticing shutdown.
const TICK: Duration = Duration::from_millis(50);

struct Shared {
    coord: Coordinator,
    writers: HashMap<ConnId, TcpStream>,
}

/// A running coordinator. Dropping it stops accepting and closes every connection.
pub struct CoordinatorHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
}

impl CoordinatorHandle {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The job's state as the coordinator sees it.
    pub fn status(&self) -> super::proto::JobStatus {
        self.shared.lock().coord.status()
    }
}

impl Drop for CoordinatorHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, w) in self.shared.lock().writers.drain() {
            let _ = w.shutdown(Shutdown::Both);
        }
    }
}

fn log(line: &str) {
    eprintln!("kawarimi coordinator: {line}");
}

/// Carries out everything the coordinator asked for after an input.
fn flush(shared: &mut Shared) {
    while let Some((conn, reply)) = shared.coord.poll_reply() {
        if let Some(w) = shared.writers.get_mut(&conn) {
            if w.write_all(to_line(&reply).as_bytes()).is_err() {
                let _ = w.shutdown(Shutdown::Both);
            }
        }
    }
    while let Some(conn) = shared.coord.poll_close() {
        if let Some(w) = shared.writers.remove(&conn) {
            let _ = w.shutdown(Shutdown::Both);
        }
    }
    while let Some(line) = shared.coord.poll_log() {
        log(&line);
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
    listener.set_nonblocking(true)?;
    let addr = SocketAddr::new(publish_ip, listener.local_addr()?.port());
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Mutex::new(Shared { coord: Coordinator::new(job, config), writers: HashMap::new() }));
    let next_conn = Arc::new(AtomicU64::new(1));
    let secret = Arc::new(secret);

    {
        let (stop, shared) = (stop.clone(), shared.clone());
        thread::Builder::new().name("kawarimi-coord-timer".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(TICK);
                let mut s = shared.lock();
                s.coord.handle_timeout(Instant::now());
                flush(&mut s);
            }
        })?;
    }
    {
        let (stop, shared) = (stop.clone(), shared.clone());
        thread::Builder::new().name("kawarimi-coord-accept".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
                        let (shared, secret) = (shared.clone(), secret.clone());
                        let spawned = thread::Builder::new()
                            .name(format!("kawarimi-coord-conn-{conn}"))
                            .spawn(move || serve(conn, stream, peer, &shared, &secret));
                        if let Err(e) = spawned {
                            log(&format!("cannot serve {peer}: {e}"));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(TICK),
                    Err(e) => {
                        log(&format!("accept failed: {e}"));
                        thread::sleep(TICK);
                    }
                }
            }
        })?;
    }
    Ok(CoordinatorHandle { addr, stop, shared })
}

/// Serves one connection until it closes.
fn serve(conn: ConnId, mut stream: TcpStream, peer: SocketAddr, shared: &Mutex<Shared>, secret: &JobSecret) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    if let Err(e) = authenticate_stream(&mut stream, Role::Responder, COORDINATOR_ID, None, secret, AUTH_TIMEOUT) {
        log(&format!("refused connection from {peer}: {e}"));
        return;
    }
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(writer) = stream.try_clone() else { return };
    {
        let mut s = shared.lock();
        s.writers.insert(conn, writer);
        s.coord.handle_connect(conn);
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
            s.coord.handle_malformed(conn, &format!("line longer than {MAX_LINE_BYTES} bytes"));
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => s.coord.handle_request(conn, req, Instant::now()),
                Err(e) => s.coord.handle_malformed(conn, &e.to_string()),
            }
        }
        flush(&mut s);
        if !s.writers.contains_key(&conn) {
            break;
        }
    }
    let mut s = shared.lock();
    s.writers.remove(&conn);
    s.coord.handle_disconnect(conn);
    flush(&mut s);
}
