//! A blocking QMP client over QEMU's Unix socket (`-qmp unix:PATH,server=on,wait=off`): the
//! thin I/O layer under [`crate::qmp::Qmp`]. Every wait has a deadline; events that arrive
//! while a reply is awaited are kept (a bounded number) for a later [`QmpClient::wait_event`],
//! since QEMU sends an event only to the clients connected when it happens (an unplug and the
//! wait for its `DEVICE_DELETED` must share one connection).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::qmp::{CommandFailed, EventRecord, Greeting, Output, ProtocolError, Qmp, Reply};

/// How many events are kept for a later wait; the oldest go first beyond it.
pub const MAX_KEPT_EVENTS: usize = 1024;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("QMP socket {path}: {source}")]
    Connect { path: String, source: std::io::Error },
    #[error("QMP socket {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("QMP socket {path}: {source}")]
    Protocol { path: String, source: ProtocolError },
    #[error("QMP socket {path}: {source}")]
    Command { path: String, source: CommandFailed },
    #[error("QMP socket {path}: no {what} within {waited:?}")]
    TimedOut { path: String, what: String, waited: Duration },
}

/// A connection to one QEMU's QMP socket, negotiated and ready for commands.
pub struct QmpClient {
    path: String,
    stream: UnixStream,
    core: Qmp,
    events: VecDeque<EventRecord>,
}

impl QmpClient {
    /// Connects to the QMP socket at `path`, reads the greeting and negotiates, all within
    /// `timeout` (a socket that does not exist yet is retried until then: QEMU creates it as
    /// it starts).
    pub fn connect(path: &Path, timeout: Duration) -> Result<QmpClient, ClientError> {
        let shown = path.display().to_string();
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                    if start.elapsed() >= timeout {
                        return Err(ClientError::Connect { path: shown, source: e });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(ClientError::Connect { path: shown, source: e }),
            }
        };
        let core = Qmp::new(Instant::now(), timeout.saturating_sub(start.elapsed()));
        let mut c = QmpClient { path: shown, stream, core, events: VecDeque::new() };
        c.flush()?;
        c.run_until(start + timeout, "greeting and qmp_capabilities reply", |c, o| match o {
            Output::Ready(_) => true,
            other => {
                c.keep(other);
                false
            }
        })?;
        Ok(c)
    }

    /// What QEMU said it is.
    pub fn greeting(&self) -> &Greeting {
        self.core.greeting().expect("connected clients have read the greeting")
    }

    /// Runs command `cmd` and returns its typed result, waiting at most `timeout` for it.
    pub fn execute<C: qapi_spec::Command>(&mut self, cmd: &C, timeout: Duration) -> Result<C::Ok, ClientError> {
        let reply = self.execute_raw(cmd, timeout)?;
        reply.into_result::<C>().map_err(|source| ClientError::Command { path: self.path.clone(), source })
    }

    /// Runs command `cmd` and returns its reply as QEMU gave it.
    pub fn execute_raw<C: qapi_spec::Command>(&mut self, cmd: &C, timeout: Duration) -> Result<Reply, ClientError> {
        let now = Instant::now();
        let id = self.core.execute(cmd, now, timeout).map_err(|e| self.protocol(e))?;
        self.flush()?;
        let mut got = None;
        // The core times the command out itself; the extra second only bounds this loop.
        self.run_until(now + timeout + Duration::from_secs(1), C::NAME, |c, o| match o {
            Output::Reply(r) if r.id == id => {
                got = Some(r);
                true
            }
            other => {
                c.keep(other);
                false
            }
        })?;
        Ok(got.expect("the loop ends on the reply"))
    }

    /// Waits at most `timeout` for an event that `wanted` accepts (one that arrived since the
    /// last wait, while a reply was awaited, counts), and returns it; the others are kept.
    pub fn wait_event(
        &mut self,
        mut wanted: impl FnMut(&EventRecord) -> bool,
        what: &str,
        timeout: Duration,
    ) -> Result<EventRecord, ClientError> {
        if let Some(i) = self.events.iter().position(&mut wanted) {
            return Ok(self.events.remove(i).expect("found"));
        }
        let mut got = None;
        self.run_until(Instant::now() + timeout, what, |c, o| match o {
            Output::Event(e) if wanted(&e) => {
                got = Some(e);
                true
            }
            other => {
                c.keep(other);
                false
            }
        })?;
        Ok(got.expect("the loop ends on the event"))
    }

    /// The events kept so far, taken.
    pub fn take_events(&mut self) -> Vec<EventRecord> {
        self.events.drain(..).collect()
    }

    fn keep(&mut self, o: Output) {
        // Replies to commands that timed out are dropped by the core; nothing else but events
        // reaches here once connected.
        if let Output::Event(e) = o {
            if self.events.len() == MAX_KEPT_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(e);
        }
    }

    fn protocol(&self, source: ProtocolError) -> ClientError {
        ClientError::Protocol { path: self.path.clone(), source }
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io { path: self.path.clone(), source }
    }

    /// Writes what the core has to send.
    fn flush(&mut self) -> Result<(), ClientError> {
        while let Some(bytes) = self.core.poll_transmit() {
            self.stream.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| self.io(e))?;
            self.stream.write_all(&bytes).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// Reads and hands each output to `done` until it says so, or fails at `deadline`.
    fn run_until(
        &mut self,
        deadline: Instant,
        what: &str,
        mut done: impl FnMut(&mut QmpClient, Output) -> bool,
    ) -> Result<(), ClientError> {
        let mut buf = vec![0u8; 64 << 10];
        let start = Instant::now();
        loop {
            while let Some(o) = self.core.poll_output() {
                if done(self, o) {
                    return Ok(());
                }
            }
            let now = Instant::now();
            self.core.handle_timeout(now).map_err(|e| self.protocol(e))?;
            self.flush()?;
            if self.core.has_output() {
                continue;
            }
            let wake = self.core.next_deadline().map_or(deadline, |d| d.min(deadline));
            if now >= deadline {
                return Err(ClientError::TimedOut {
                    path: self.path.clone(),
                    what: what.to_string(),
                    waited: now.saturating_duration_since(start),
                });
            }
            let wait = wake.saturating_duration_since(now).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait)).map_err(|e| self.io(e))?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.core.close("QEMU closed the connection");
                    return Err(self.protocol(ProtocolError::Closed("QEMU closed the connection".into())));
                }
                Ok(n) => self.core.feed(&buf[..n]).map_err(|e| self.protocol(e))?,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }
}
