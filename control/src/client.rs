//! Clients of the coordinator: a rank's control connection (which also serves as the wire-up
//! service where the launcher has no PMIx), and `kawarimi ctl`'s.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kawarimi_transports::auth::{authenticate_stream, JobSecret, Role};
use kawarimi_transports::bootstrap::Bootstrap;
use kawarimi_transports::{TransportError, TransportResult};

use crate::proto::{
    decode_hex, encode_hex, to_line, JobStatus, Reply, Request, CONTROL_VERSION, COORDINATOR_ID, CTL_CLIENT_ID,
    MAX_LINE_BYTES,
};

/// Environment variable naming the coordinator (`host:port`), set by `kawarimi run`.
pub const COORD_ENV: &str = "KAWARIMI_COORD";

fn err(what: impl Into<String>) -> TransportError {
    TransportError::Bootstrap(what.into())
}

/// An authenticated line connection to a control-plane server (the coordinator, or a host
/// leader's relay).
pub struct Line {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
    /// What the server is, for messages (`coordinator`, `relay`).
    peer: &'static str,
    /// A line read only in part so far.
    partial: Vec<u8>,
}

impl Line {
    pub fn connect(
        addr: SocketAddr,
        peer: &'static str,
        id: u32,
        secret: &JobSecret,
        timeout: Duration,
    ) -> TransportResult<Line> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| err(format!("cannot reach the {peer} at {addr}: {e}")))?;
        authenticate_stream(&mut stream, Role::Initiator, id, Some(COORDINATOR_ID), secret, timeout)?;
        let _ = stream.set_nodelay(true);
        let reader = BufReader::new(stream.try_clone().map_err(|e| err(format!("control socket: {e}")))?);
        Ok(Line { writer: stream, reader, addr, peer, partial: Vec::new() })
    }

    pub fn send(&mut self, r: &Request) -> TransportResult<()> {
        self.writer
            .write_all(to_line(r).as_bytes())
            .map_err(|e| err(format!("lost the {} at {}: {e}", self.peer, self.addr)))
    }

    /// A second handle on the sending side (for a writer kept elsewhere).
    pub fn writer(&self) -> std::io::Result<TcpStream> {
        self.writer.try_clone()
    }

    /// Reads one reply if one arrives within `timeout`; `None` if none did. An `Error` reply
    /// is returned as a reply.
    pub fn recv_within(&mut self, timeout: Duration) -> TransportResult<Option<Reply>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let _ = self.reader.get_ref().set_read_timeout(Some(left));
            match (&mut self.reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut self.partial) {
                Ok(0) => return Err(err(format!("the {} at {} closed the connection", self.peer, self.addr))),
                Ok(_) if self.partial.last() == Some(&b'\n') => break,
                Ok(_) if self.partial.len() > MAX_LINE_BYTES => {
                    return Err(err(format!("the {} sent an over-long line", self.peer)))
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(err(format!("lost the {} at {}: {e}", self.peer, self.addr))),
            }
        }
        let line = std::mem::take(&mut self.partial);
        serde_json::from_slice(&line).map(Some).map_err(|e| err(format!("malformed reply from the {}: {e}", self.peer)))
    }

    /// Reads one reply, waiting at most `timeout`; an `Error` reply is an error.
    fn recv(&mut self, timeout: Duration) -> TransportResult<Reply> {
        match self.recv_within(timeout)? {
            None => Err(err(format!("the {} at {} did not answer within {timeout:?}", self.peer, self.addr))),
            Some(Reply::Error { message }) => Err(err(format!("the {} refused: {message}", self.peer))),
            Some(reply) => Ok(reply),
        }
    }
}

/// A rank's connection to the coordinator.
pub struct RankClient {
    line: Line,
    rank: u32,
    size: u32,
    fence_seq: u64,
    /// Bound on one request's wait for its reply (a fence carries its own timeout).
    reply_timeout: Duration,
}

impl RankClient {
    pub fn connect(
        addr: SocketAddr,
        secret: &JobSecret,
        rank: u32,
        size: u32,
        host: &str,
    ) -> TransportResult<RankClient> {
        let reply_timeout = Duration::from_secs(30);
        let mut line = Line::connect(addr, "coordinator", rank, secret, reply_timeout)?;
        line.send(&Request::Hello {
            version: CONTROL_VERSION,
            rank,
            size,
            host: host.to_string(),
            pid: std::process::id(),
        })?;
        match line.recv(reply_timeout)? {
            Reply::Welcome { .. } => Ok(RankClient { line, rank, size, fence_seq: 0, reply_timeout }),
            other => Err(err(format!("expected welcome from the coordinator, got {other:?}"))),
        }
    }
}

impl Drop for RankClient {
    fn drop(&mut self) {
        // Best effort: tells the coordinator this close is the rank finishing.
        let _ = self.line.send(&Request::Goodbye {});
    }
}

impl Bootstrap for RankClient {
    fn rank(&self) -> u32 {
        self.rank
    }
    fn size(&self) -> u32 {
        self.size
    }
    fn put(&mut self, key: &str, value: &[u8]) -> TransportResult<()> {
        self.line.send(&Request::Put { key: key.to_string(), value: encode_hex(value) })
    }
    fn commit(&mut self) -> TransportResult<()> {
        Ok(())
    }
    fn fence(&mut self, timeout: Duration) -> TransportResult<()> {
        self.fence_seq += 1;
        let seq = self.fence_seq;
        self.line.send(&Request::Fence { seq })?;
        // The coordinator fails the fence itself (naming the missing ranks) when its own
        // timeout passes; this bound only covers a coordinator that stopped answering.
        match self.line.recv(timeout + Duration::from_secs(5))? {
            Reply::FenceDone { seq: s } if s == seq => Ok(()),
            Reply::FenceFailed { missing, reason, .. } => {
                Err(err(format!("fence failed ({reason}); ranks that did not arrive: {missing:?}")))
            }
            other => Err(err(format!("expected the end of fence {seq}, got {other:?}"))),
        }
    }
    fn get(&mut self, rank: u32, key: &str) -> TransportResult<Vec<u8>> {
        self.line.send(&Request::Get { rank, key: key.to_string() })?;
        match self.line.recv(self.reply_timeout)? {
            Reply::Value { value: Some(v), .. } => {
                decode_hex(&v).ok_or_else(|| err("coordinator sent a value that is not hex"))
            }
            Reply::Value { value: None, .. } => Err(err(format!("rank {rank} published no {key:?}"))),
            other => Err(err(format!("expected a value, got {other:?}"))),
        }
    }
}

/// A control client (`kawarimi ctl`).
pub struct CtlClient {
    line: Line,
    timeout: Duration,
}

impl CtlClient {
    pub fn connect(addr: SocketAddr, secret: &JobSecret, timeout: Duration) -> TransportResult<CtlClient> {
        let mut line = Line::connect(addr, "coordinator", CTL_CLIENT_ID, secret, timeout)?;
        line.send(&Request::CtlHello { version: CONTROL_VERSION })?;
        match line.recv(timeout)? {
            Reply::Welcome { .. } => Ok(CtlClient { line, timeout }),
            other => Err(err(format!("expected welcome from the coordinator, got {other:?}"))),
        }
    }

    /// Quiesces the job; returns once every rank has drained and released its devices (the
    /// `SafeToUnplug` reply), or fails naming the ranks that did not.
    pub fn quiesce(&mut self, timeout: Duration) -> TransportResult<Reply> {
        self.switch(Request::Quiesce { timeout_ms: timeout.as_millis() as u64 }, timeout)
    }

    /// Resumes a quiesced job; returns once every rank runs again.
    pub fn resume(&mut self, timeout: Duration, transport: Option<String>) -> TransportResult<Reply> {
        self.switch(Request::Resume { timeout_ms: timeout.as_millis() as u64, transport }, timeout)
    }

    fn switch(&mut self, req: Request, timeout: Duration) -> TransportResult<Reply> {
        self.line.send(&req)?;
        // The coordinator enforces `timeout` and names the ranks; the margin covers only a
        // coordinator that stopped answering.
        match self.line.recv(timeout + Duration::from_secs(5))? {
            r @ (Reply::SafeToUnplug { .. } | Reply::Resumed { .. }) => Ok(r),
            Reply::SwitchFailed { epoch, missing, reason } => Err(err(if missing.is_empty() {
                format!("switch {epoch} failed: {reason}")
            } else {
                format!("switch {epoch} failed: {reason}; ranks that did not finish: {missing:?}")
            })),
            other => Err(err(format!("unexpected answer {other:?}"))),
        }
    }

    pub fn status(&mut self) -> TransportResult<JobStatus> {
        self.line.send(&Request::Status {})?;
        match self.line.recv(self.timeout)? {
            Reply::Status { status } => Ok(status),
            other => Err(err(format!("expected a status, got {other:?}"))),
        }
    }
}
