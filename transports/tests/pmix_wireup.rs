//! Wire-up through a real launcher: this test re-runs its own binary under
//! `mpirun -np 3` with `KAWARIMI_PMIX_PROBE=1`; each copy then acts as a probe rank that
//! joins the launcher's PMIx server (without initialising MPI), gets the job secret from
//! rank 0 through PMIx, publishes its TCP listener address, fences, builds an authenticated
//! `TcpTransport` mesh and exchanges a frame with every peer.
//!
//! Skipped (with a message) when `mpirun` is not installed.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kawarimi_transports::auth::JobSecret;
use kawarimi_transports::bootstrap::{Bootstrap, Pmix};
use kawarimi_transports::wire::{FrameKind, Header};
use kawarimi_transports::{tcp, Event, Payload, Transport};

const PROBE_ENV: &str = "KAWARIMI_PMIX_PROBE";
const NP: u32 = 3;

fn probe() -> Result<String, String> {
    let e = |x: kawarimi_transports::TransportError| x.to_string();
    let mut pm = Pmix::init().map_err(e)?;
    let (me, size) = (pm.rank(), pm.size());
    let fence_timeout = Duration::from_secs(60);
    // The secret: rank 0 makes it and publishes it; the PMIx server serves only this job.
    if me == 0 {
        pm.put("kawarimi.secret", JobSecret::generate().map_err(e)?.to_hex().as_bytes()).map_err(e)?;
    }
    pm.commit().map_err(e)?;
    pm.fence(fence_timeout).map_err(e)?;
    let hex = pm.get(0, "kawarimi.secret").map_err(e)?;
    let secret = JobSecret::from_hex(std::str::from_utf8(&hex).map_err(|x| x.to_string())?).map_err(e)?;

    let ep = tcp::bind(me, None, secret).map_err(e)?;
    pm.put("kawarimi.tcp.addr", ep.local_addr().to_string().as_bytes()).map_err(e)?;
    pm.commit().map_err(e)?;
    pm.fence(fence_timeout).map_err(e)?;
    let mut peers = Vec::new();
    for r in 0..size {
        let v = pm.get(r, "kawarimi.tcp.addr").map_err(e)?;
        let addr: SocketAddr = String::from_utf8_lossy(&v).parse().map_err(|x| format!("rank {r} addr: {x}"))?;
        peers.push((r, addr));
    }
    let mut t = ep.connect_all(&peers, Duration::from_secs(60)).map_err(e)?;
    for p in (0..size).filter(|&p| p != me) {
        let msg = format!("hello {me}->{p}").into_bytes();
        let h = Header { tag: 77, payload_len: msg.len() as u32, ..Header::new(FrameKind::Eager) };
        t.send(p, &h, Payload::Owned(msg)).map_err(e)?;
    }
    let mut got = std::collections::BTreeSet::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < size as usize - 1 || t.queued_bytes() > 0 {
        if Instant::now() > deadline {
            return Err(format!("rank {me}: only heard from {got:?}"));
        }
        t.progress(&mut events).map_err(e)?;
        for ev in events.drain(..) {
            match ev {
                Event::Frame { peer, header, payload } => {
                    if header.tag != 77 || payload.as_slice() != format!("hello {peer}->{me}").as_bytes() {
                        return Err(format!("rank {me}: bad frame from {peer}: {header}"));
                    }
                    got.insert(peer);
                }
                Event::LinkDown { peer, reason } => return Err(format!("rank {me}: link to {peer} down: {reason}")),
                Event::Incoming { peer, .. } => return Err(format!("rank {me}: TCP asked where to read from {peer}")),
            }
        }
        t.wait(Duration::from_millis(20)).map_err(e)?;
    }
    // Nobody closes a link before everyone has read.
    pm.fence(fence_timeout).map_err(e)?;
    drop(t);
    Ok(format!("rank={me} size={size} peers={got:?} local_rank={:?}", pm.local_rank()))
}

#[test]
fn pmix_wireup_three_ranks() {
    if std::env::var_os(PROBE_ENV).is_some() {
        match probe() {
            Ok(s) => println!("KAWARIMI_PROBE_OK {s}"),
            Err(s) => {
                println!("KAWARIMI_PROBE_FAIL {s}");
                panic!("{s}");
            }
        }
        return;
    }
    let Some(mpirun) = which("mpirun") else {
        eprintln!("mpirun not found: skipping the PMIx wire-up test");
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(mpirun)
        .args(["--oversubscribe", "--allow-run-as-root", "-np", &NP.to_string(), "-x", &format!("{PROBE_ENV}=1")])
        .arg(&exe)
        .args(["--exact", "pmix_wireup_three_ranks", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mpirun");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            // mpirun forwards SIGTERM to its ranks; SIGKILL only if it does not exit.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = t_out.join().unwrap();
    let stderr = t_err.join().unwrap();
    let oks = stdout.lines().filter(|l| l.contains("KAWARIMI_PROBE_OK")).count();
    assert!(
        status.is_some_and(|s| s.success()) && oks == NP as usize,
        "mpirun status {status:?}, {oks} of {NP} probes ok\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprint!("{stdout}");
    for r in 0..NP {
        assert!(stdout.contains(&format!("KAWARIMI_PROBE_OK rank={r} size={NP}")), "rank {r} missing:\n{stdout}");
    }
}

fn which(prog: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(prog)).find(|p| p.is_file())
}
