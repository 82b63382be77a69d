//! `kawarimi verbs-check`: kawarimi's verbs transport between two processes on two hosts,
//! without MPI. One side listens, the other connects; they swap queue-pair addresses over a
//! TCP socket (the job's wire-up does this in a real run), then check that frames of every
//! size cross intact both ways, measure latency and bandwidth, drop the transport and check
//! that no uverbs descriptor is left open (what a hot-unplug needs). Used by the VM lab on
//! its Soft-RoCE devices.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use kawarimi_transports::verbs::device::{QpAddress, VerbsConfig, VerbsEndpoint, VerbsTransport};
use kawarimi_transports::verbs::{discover, open_uverbs_fds};
use kawarimi_transports::wire::{FrameKind, Header};
use kawarimi_transports::{Event, Payload, Transport};

/// How long any one step may take before the check fails naming it.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Queued bytes above which a send first waits for the queue to drain (below the
/// transport's per-peer limit).
const QUEUE_HIGH_BYTES: usize = 8 << 20;

/// Runs one side. `listen`: the port to accept the other side on; `connect`: `host:port` of
/// the listening side. Prints what it measures; `Err` names the step that failed.
pub fn verbs_check(
    device: Option<&str>,
    listen: Option<u16>,
    connect: Option<&str>,
    iterations: u32,
) -> Result<(), String> {
    let found = discover();
    let port = found
        .ports
        .iter()
        .find(|p| device.is_none_or(|d| p.device == d))
        .ok_or_else(|| format!("no usable verbs port ({})", found.skipped.join("; ")))?
        .clone();
    println!(
        "verbs port: {} port {} ({:?}), gid[{}] {}",
        port.device, port.port, port.fabric, port.gid.index, port.gid.gid
    );
    let (stream, me, other) = match (listen, connect) {
        (Some(p), None) => {
            let l = TcpListener::bind(("0.0.0.0", p)).map_err(|e| format!("listening on port {p}: {e}"))?;
            (l.accept().map_err(|e| format!("accepting the other side: {e}"))?.0, 0, 1)
        }
        (None, Some(addr)) => (TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?, 1, 0),
        _ => return Err("give exactly one of --listen PORT and --connect HOST:PORT".into()),
    };
    stream.set_read_timeout(Some(STEP_TIMEOUT)).map_err(|e| e.to_string())?;
    let endpoint = VerbsEndpoint::open(&port, me, &[other], VerbsConfig::from_env()?).map_err(|e| e.to_string())?;
    let mine = endpoint.address_for(other).expect("a queue pair for the other side");
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    writeln!(writer, "{}", mine.encode()).map_err(|e| format!("sending the address: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| format!("reading the other side's address: {e}"))?;
    let theirs = QpAddress::decode(line.trim())?;
    let mut t = endpoint.connect(&BTreeMap::from([(other, theirs)])).map_err(|e| e.to_string())?;
    println!("connected: qpn {:#x} -> {:#x}", mine.qpn, theirs.qpn);

    let mut link = Link { t: &mut t, me, other, seq: 0, events: Vec::new() };
    // Every size from empty to many buffers long crosses intact, both ways (the listener
    // echoes what the connector sends).
    for len in [0, 1, 8, 1000, 16 << 10, (16 << 10) + 1, 100_000, 1 << 20, 4 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect();
        if me == 1 {
            link.send(data.clone())?;
            let back = link.recv("the echo")?;
            if back != data {
                return Err(format!("a {len}-byte frame came back changed"));
            }
        } else {
            let got = link.recv("a frame to echo")?;
            link.send(got)?;
        }
    }
    println!("frames of 0 B to 4 MiB crossed intact both ways");
    // Latency: round trips of 8 bytes.
    let start = Instant::now();
    for _ in 0..iterations {
        if me == 1 {
            link.send(vec![7; 8])?;
            link.recv("a latency reply")?;
        } else {
            link.recv("a latency ping")?;
            link.send(vec![7; 8])?;
        }
    }
    let half_rtt_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations) / 2.0;
    // Bandwidth: a stream of 1 MiB frames, then one acknowledgement.
    let frames = 64u32;
    let start = Instant::now();
    if me == 1 {
        for _ in 0..frames {
            link.send(vec![1; 1 << 20])?;
        }
        link.recv("the bandwidth acknowledgement")?;
    } else {
        for _ in 0..frames {
            link.recv("a bandwidth frame")?;
        }
        link.send(Vec::new())?;
    }
    let mib_s = f64::from(frames) / start.elapsed().as_secs_f64();
    println!("latency 8 B: {half_rtt_us:.2} us (half round trip, {iterations} round trips)");
    println!("bandwidth 1 MiB frames: {mib_s:.1} MiB/s ({frames} frames)");
    // Everything sent must have reached the other side before the queue pair goes.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut events = Vec::new();
    while t.queued_bytes() > 0 || t.sends_in_flight() > 0 {
        if Instant::now() > deadline {
            return Err(format!("sends still in flight after {STEP_TIMEOUT:?}"));
        }
        t.progress(&mut events).map_err(|e| e.to_string())?;
    }
    // Detach: dropping the transport releases everything on the device.
    drop(t);
    let held = open_uverbs_fds();
    if !held.is_empty() {
        return Err(format!("after the transport was dropped these uverbs descriptors are still open: {held:?}"));
    }
    println!("detach: no uverbs descriptor open");
    Ok(())
}

/// The two sides' frames over the transport.
struct Link<'a> {
    t: &'a mut VerbsTransport,
    me: u32,
    other: u32,
    seq: u64,
    events: Vec<Event>,
}

impl Link<'_> {
    fn send(&mut self, payload: Vec<u8>) -> Result<(), String> {
        let mut h = Header::new(FrameKind::Eager);
        h.src = self.me;
        h.seq = self.seq;
        h.payload_len = payload.len() as u32;
        self.seq += 1;
        // Keep the queue well below its limit: progress while the peer takes what is queued.
        let deadline = Instant::now() + STEP_TIMEOUT;
        while self.t.queued_bytes() > QUEUE_HIGH_BYTES {
            if Instant::now() > deadline {
                return Err(format!("the send queue did not drain within {STEP_TIMEOUT:?}"));
            }
            self.t.progress(&mut self.events).map_err(|e| e.to_string())?;
        }
        self.t.send(self.other, &h, Payload::Owned(payload)).map_err(|e| e.to_string())
    }

    /// Progresses until a frame arrives (sends go out on the way).
    fn recv(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if !self.events.is_empty() {
                match self.events.remove(0) {
                    Event::Frame { payload, .. } => return Ok(payload.into_vec()),
                    Event::LinkDown { reason, .. } => {
                        return Err(format!("link down while waiting for {what}: {reason}"))
                    }
                    // Never asked for (no `ask_placement` here): payloads arrive in frames.
                    Event::Incoming { .. } => return Err(format!("a placement request while waiting for {what}")),
                }
            }
            self.t.progress(&mut self.events).map_err(|e| e.to_string())?;
            if self.events.is_empty() && Instant::now() > deadline {
                return Err(format!("{what} did not arrive within {STEP_TIMEOUT:?}"));
            }
        }
    }
}
