//! Live switches of real jobs: `kawarimi run` with the checksumming stress program while
//! `kawarimi ctl` quiesces and resumes it again and again, what a quiesced rank still holds
//! open, and the failures (a rank killed mid-quiesce, the coordinator killed).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use kawarimi_control::client::CtlClient;
use kawarimi_control::proto::Reply;
use kawarimi_tests::compiled;
use kawarimi_tests::job::{switch_once, KawarimiJob};

fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// Starts `program` (a test program from tests/c) on `ranks` ranks under `kawarimi run`; the
/// job's name is made unique to this test run.
fn start(name: &str, ranks: u32, program: &str, args: &[&str]) -> KawarimiJob {
    start_with(name, ranks, program, args, &[])
}

/// [`start`] with extra environment for `kawarimi run` and the ranks.
fn start_with(name: &str, ranks: u32, program: &str, args: &[&str], env: &[(&str, &str)]) -> KawarimiJob {
    let exe = compiled(program, build_dir());
    let mut words: Vec<String> =
        ["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np"].iter().map(|s| s.to_string()).collect();
    words.push(ranks.to_string());
    words.push(exe.display().to_string());
    words.extend(args.iter().map(|a| a.to_string()));
    KawarimiJob::start(&format!("{name}-{}", std::process::id()), &words, |cmd| {
        cmd.envs(env.iter().copied());
    })
}

const UP_BOUND: Duration = Duration::from_secs(30);

/// What a process holds open: fd count, sockets by kind, and resident memory.
#[derive(Debug, Clone)]
struct Holdings {
    fds: usize,
    /// TCP sockets: (local port, remote port).
    tcp: Vec<(u16, u16)>,
    unix_sockets: usize,
    rss_kib: u64,
    maps_with_devices: Vec<String>,
}

fn tcp_table(pid: u32) -> BTreeMap<u64, (u16, u16)> {
    let mut m = BTreeMap::new();
    for f in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{f}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let port = |s: &str| u16::from_str_radix(s.rsplit(':').next().unwrap_or("0"), 16).unwrap_or(0);
            if let Ok(inode) = cols[9].parse::<u64>() {
                m.insert(inode, (port(cols[1]), port(cols[2])));
            }
        }
    }
    m
}

fn holdings(pid: u32) -> Holdings {
    let tcp_inodes = tcp_table(pid);
    let unix: std::collections::BTreeSet<u64> = fs::read_to_string(format!("/proc/{pid}/net/unix"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6)?.parse().ok())
        .collect();
    let mut h = Holdings { fds: 0, tcp: Vec::new(), unix_sockets: 0, rss_kib: 0, maps_with_devices: Vec::new() };
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let Ok(target) = fs::read_link(e.unwrap().path()) else {
            continue;
        };
        h.fds += 1;
        let t = target.to_string_lossy();
        if let Some(inode) =
            t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse::<u64>().ok())
        {
            if let Some(&ports) = tcp_inodes.get(&inode) {
                h.tcp.push(ports);
            } else if unix.contains(&inode) {
                h.unix_sockets += 1;
            }
        }
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    h.rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    h.maps_with_devices = fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("/dev/infiniband") || l.contains("kawarimi-shm") || l.contains("/dev/shm/"))
        .map(str::to_string)
        .collect();
    h
}

/// The ports of the launcher's PMIx server, from the rank's `PMIX_SERVER_URI*` variables
/// (`...;tcp4://127.0.0.1:PORT`): that connection is the launcher's, not kawarimi's.
fn pmix_ports(pid: u32) -> Vec<u16> {
    let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    env.split(|&b| b == 0)
        .map(String::from_utf8_lossy)
        .filter(|v| v.starts_with("PMIX_SERVER_URI"))
        .filter_map(|v| v.rsplit(':').next()?.parse().ok())
        .collect()
}

/// The ports of the control plane: the coordinator's and every host leader's relay's.
fn control_ports(c: &mut CtlClient, coord: SocketAddr) -> Vec<u16> {
    let st = c.status().expect("status");
    let relays = st.relays.iter().filter_map(|r| r.listen.as_ref()?.parse::<SocketAddr>().ok()).map(|a| a.port());
    std::iter::once(coord.port()).chain(relays).collect()
}

/// While quiesced, a rank may hold only its control-plane sockets (to the coordinator or its
/// host leader's relay, a relay's listener and the connections it accepted, and the
/// launcher's PMIx server); every data-path socket and device mapping must be gone.
fn assert_detached(pid: u32, control: &[u16]) -> Holdings {
    let h = holdings(pid);
    let allowed = pmix_ports(pid);
    let data: Vec<_> = h
        .tcp
        .iter()
        .filter(|(l, r)| !control.contains(r) && !control.contains(l) && *r != 0 && !allowed.contains(r))
        .collect();
    assert!(
        data.is_empty(),
        "rank pid {pid} holds data-path TCP sockets while quiesced: {data:?} (control ports {control:?}); {h:?}"
    );
    let listening: Vec<_> = h.tcp.iter().filter(|(l, r)| *r == 0 && !control.contains(l)).collect();
    assert!(listening.is_empty(), "rank pid {pid} still listens while quiesced: {listening:?}");
    assert!(
        h.maps_with_devices.is_empty(),
        "rank pid {pid} maps device memory while quiesced: {:?}",
        h.maps_with_devices
    );
    h
}

#[test]
fn stress_survives_100_migrations_without_leaking() {
    stress_survives_100_migrations("switch-stress", &[("KAWARIMI_SHM", "0")], "tcp");
}

/// The same with the ranks on shared memory: each switch unmaps every segment (checked with
/// the rest of the detach) and each resume maps new ones. Every payload crosses by single
/// copy, so each drain also waits for peers to finish reading payloads from the sender's
/// memory.
#[test]
fn stress_survives_100_migrations_on_shared_memory() {
    let env = [
        ("KAWARIMI_SHM", "1"),
        ("KAWARIMI_SHM_COPY", "single"),
        ("KAWARIMI_SHM_SINGLE_COPY_MIN_BYTES", "1"),
        ("KAWARIMI_REPORT", "1"),
    ];
    stress_survives_100_migrations("switch-stress-shm", &env, "shm");
}

/// 100 quiesce/resume cycles under the stress program, which checks every byte; `carrier` is
/// the transport every rank must report for its 3 peers before the first switch.
fn stress_survives_100_migrations(name: &str, env: &[(&str, &str)], carrier: &str) {
    const RANKS: u32 = 4;
    let mut job = start_with(name, RANKS, "stress", &["15"], env);
    let (mut c, pids, coord) = job.ready(RANKS, UP_BOUND);
    let control = control_ports(&mut c, coord);
    let mut first: Option<Vec<Holdings>> = None;
    let mut last = Vec::new();
    let (mut quiesce_ms, mut resume_ms) = (Vec::new(), Vec::new());
    for i in 0..100 {
        match c.quiesce(Duration::from_secs(30)) {
            Ok(Reply::SafeToUnplug { total_ms, .. }) => quiesce_ms.push(total_ms),
            other => panic!("quiesce {i}: {other:?}"),
        }
        last = pids.iter().map(|&p| assert_detached(p, &control)).collect();
        if i == 0 {
            // Every rank says what carried its data before the switch: `carrier`, to its 3
            // peers, and a count of bytes that is not zero.
            for r in &c.status().expect("status").ranks {
                let t = &r.transport;
                let want = format!("detached; before switch 1: ran {carrier}:3, sent {carrier} ");
                assert!(t.starts_with(&want) && !t.contains(&format!("sent {carrier} 0 B")), "rank {}: {t}", r.rank);
            }
        }
        // The baseline is taken once the program has been running a while (its own
        // allocations done), not in the first moments after MPI_Init.
        if i == 10 {
            first = Some(last.clone());
        }
        match c.resume(Duration::from_secs(30), None) {
            Ok(Reply::Resumed { total_ms, epoch, .. }) => {
                assert_eq!(epoch, i + 1);
                resume_ms.push(total_ms);
            }
            other => panic!("resume {i}: {other:?}"),
        }
    }
    let first = first.unwrap();
    for (k, (a, b)) in first.iter().zip(&last).enumerate() {
        assert_eq!(a.fds, b.fds, "rank {k}: fd count changed between migrations 10 and 100: {a:?} -> {b:?}");
        // Memory may move with the program's own work; a leak per migration would show as
        // steady growth well beyond this.
        assert!(
            b.rss_kib <= a.rss_kib + a.rss_kib / 4 + 8192,
            "rank {k}: RSS grew from {} to {} KiB",
            a.rss_kib,
            b.rss_kib
        );
    }
    quiesce_ms.sort_by(f64::total_cmp);
    resume_ms.sort_by(f64::total_cmp);
    eprintln!(
        "100 migrations: quiesce median {:.2} ms (max {:.2}), resume median {:.2} ms (max {:.2})",
        quiesce_ms[50], quiesce_ms[99], resume_ms[50], resume_ms[99]
    );
    drop(c);
    let (ok, out, err) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("OK stress"), "stress failed after migrations:\nstdout:\n{out}\nstderr:\n{err}");
    // How the switches met the collectives through the slots (shared memory only).
    for line in err.lines().filter(|l| l.contains("through the slots")) {
        eprintln!("{line}");
    }
}

/// One-sided windows stay open and busy across switches: with 4 ranks putting, accumulating,
/// locking and reading back all the time, each quiesce finds fence epochs and exclusive locks
/// under way; the program checks every byte and counter after the 30 switches. Run on shared
/// memory between the switches, so every resume maps the segments again under open windows.
#[test]
fn one_sided_windows_survive_30_migrations() {
    const RANKS: u32 = 4;
    let mut job = start_with("switch-rma", RANKS, "rma_stress", &["8"], &[("KAWARIMI_SHM", "1")]);
    let (mut c, _pids, _coord) = job.ready(RANKS, UP_BOUND);
    for i in 0..30 {
        assert_eq!(switch_once(&mut c, &format!("switch {i}")), i + 1);
    }
    drop(c);
    let (ok, out, err) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("OK rma_stress"), "rma_stress failed across switches:\nstdout:\n{out}\nstderr:\n{err}");
}

/// A passive-target lock held across switches (tests/c/rma_lock_switch.c): rank 0 holds rank
/// 1's window lock, computing outside MPI, while the job is quiesced and resumed three times
/// with ranks 2 and 3 queued for the same lock inside `MPI_Win_lock`; after the switches it
/// lets go, and the queued ranks must get the lock only then (they read its last value).
#[test]
fn a_lock_held_across_switches_stays_held_and_queued_ranks_get_it_after() {
    const RANKS: u32 = 4;
    let dir = build_dir().join(format!("lock-switch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let (ready, release) = (dir.join("ready"), dir.join("release"));
    let args = [ready.to_str().unwrap(), release.to_str().unwrap()];
    let mut job = start_with("switch-lock", RANKS, "rma_lock_switch", &args, &[("KAWARIMI_SHM", "1")]);
    let (mut c, _pids, _coord) = job.ready(RANKS, UP_BOUND);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "rank 0 never said it holds the lock");
        thread::sleep(Duration::from_millis(10));
    }
    for i in 0..3 {
        assert_eq!(switch_once(&mut c, &format!("switch {i} with the lock held")), i + 1);
    }
    fs::write(&release, b"").unwrap();
    drop(c);
    let (ok, out, err) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("OK rma_lock_switch"), "rma_lock_switch failed:\nstdout:\n{out}\nstderr:\n{err}");
    let _ = fs::remove_dir_all(&dir);
}

/// One switch that moves the ranks to the hosts `hosts` names (one label per rank, written to
/// the `KAWARIMI_HOST_ID_FILE` `labels` while the ranks are detached).
fn switch_to_hosts(c: &mut CtlClient, labels: &Path, hosts: &str) {
    match c.quiesce(Duration::from_secs(30)) {
        Ok(Reply::SafeToUnplug { .. }) => {}
        other => panic!("quiesce before moving to {hosts:?}: {other:?}"),
    }
    fs::write(labels, hosts).unwrap();
    match c.resume(Duration::from_secs(30), None) {
        Ok(Reply::Resumed { .. }) => {}
        other => panic!("resume on {hosts:?}: {other:?}"),
    }
}

/// The sum over the ranks' `KAWARIMI_REPORT` lines in `stderr` of the count after `label`
/// (up to `end`).
fn report_sum(stderr: &str, label: &str, end: char) -> u64 {
    stderr.split(label).skip(1).filter_map(|rest| rest.split(end).next()?.parse::<u64>().ok()).sum()
}

/// A resume rediscovers co-location: the ranks' host identities change across a switch (one
/// machine cannot change its kernel, so `KAWARIMI_HOST_ID_FILE` adds a label per rank), and
/// the pairs move from shared memory to TCP and back while the stress program checks every
/// byte.
#[test]
fn a_resume_moves_pairs_between_shared_memory_and_tcp_as_the_hosts_change() {
    const RANKS: u32 = 4;
    let dir = build_dir().join(format!("host-ids-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let labels = dir.join("labels");
    fs::write(&labels, "a a a a").unwrap();
    let env = [("KAWARIMI_SHM", "1"), ("KAWARIMI_HOST_ID_FILE", labels.to_str().unwrap())];
    let mut job = start_with("switch-hosts", RANKS, "stress", &["8"], &env);
    let (mut c, _, _) = job.ready(RANKS, UP_BOUND);
    let carriers = |c: &mut CtlClient| -> Vec<String> {
        c.status().expect("status").ranks.iter().map(|r| r.transport.clone()).collect::<Vec<_>>()
    };
    let all_running = |got: &[String], want: &str| got.iter().all(|t| t.ends_with(want));
    assert!(all_running(&carriers(&mut c), "shm:3"), "one host: {:?}", carriers(&mut c));
    // Ranks 0 and 1 on one host, 2 and 3 on another; then all on one host again.
    for (hosts, want) in [("a a b b", "shm:1+tcp:2"), ("a a a a", "shm:3"), ("a b a b", "shm:1+tcp:2")] {
        switch_to_hosts(&mut c, &labels, hosts);
        let got = carriers(&mut c);
        assert!(all_running(&got, want), "hosts {hosts:?}: every rank should run on {want}: {got:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(c);
    let (ok, out, err) = job.finish(Duration::from_secs(120));
    let _ = fs::remove_dir_all(&dir);
    assert!(ok && out.contains("OK stress"), "stress failed across the moves:\nstdout:\n{out}\nstderr:\n{err}");
}

#[test]
fn a_rank_killed_mid_quiesce_fails_the_quiesce_naming_it_and_the_job_ends() {
    const RANKS: u32 = 4;
    let mut job = start("switch-kill", RANKS, "stress", &["60"]);
    let (mut c, pids, _) = job.ready(RANKS, UP_BOUND);
    let victim = pids[2];
    let t = Instant::now();
    // The rank dies as the quiesce starts.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let e = c.quiesce(Duration::from_secs(10)).expect_err("a quiesce with a dead rank cannot succeed").to_string();
    // Either the coordinator sees rank 2's control connection drop (it is then the rank that
    // did not finish) or a peer reports first that it lost rank 2 before its drain marker.
    assert!(e.contains("[2]") || e.contains("lost rank 2"), "the failure names rank 2: {e}");
    assert!(t.elapsed() < Duration::from_secs(12), "took {:?}", t.elapsed());
    let (ok, out, err) = job.finish(Duration::from_secs(60));
    assert!(!ok, "the job must not succeed with a dead rank:\n{out}\n{err}");
}

/// The control tree with more than one level of relays, on real processes: every rank leads
/// its own group (`KAWARIMI_CTL_GROUP_RANKS=1`) and the coordinator takes at most two relays
/// (`KAWARIMI_CTL_FANOUT=2`), so of five relays two attach to the coordinator and three are
/// redirected below them. Switches go down and reports come up through both levels; a rank
/// killed below a relay is named by the failed quiesce.
#[test]
fn switches_travel_through_a_tree_of_relays() {
    const RANKS: u32 = 5;
    let env = [("KAWARIMI_CTL_GROUP_RANKS", "1"), ("KAWARIMI_CTL_FANOUT", "2")];
    let mut job = start_with("switch-tree", RANKS, "stress", &["60"], &env);
    let (mut c, pids, coord) = job.ready(RANKS, UP_BOUND);
    let st = c.status().unwrap();
    assert_eq!(st.relays.len(), 5, "one relay per group: {:?}", st.relays);
    assert_eq!(st.relays.iter().filter(|r| r.parent.is_none()).count(), 2, "{:?}", st.relays);
    let control = control_ports(&mut c, coord);
    for i in 0..10 {
        match c.quiesce(Duration::from_secs(30)) {
            Ok(Reply::SafeToUnplug { ranks, .. }) => assert_eq!(ranks, RANKS),
            other => panic!("quiesce {i}: {other:?}"),
        }
        for &p in &pids {
            assert_detached(p, &control);
        }
        match c.resume(Duration::from_secs(30), None) {
            Ok(Reply::Resumed { ranks, .. }) => assert_eq!(ranks, RANKS),
            other => panic!("resume {i}: {other:?}"),
        }
    }
    // The last relay to join sits below another one; kill its rank as a quiesce starts.
    let deep = st.relays.iter().rev().find(|r| r.parent.is_some()).expect("a relay below a relay").leader;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[deep as usize] as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let e = c.quiesce(Duration::from_secs(10)).expect_err("a quiesce with a dead rank cannot succeed").to_string();
    assert!(
        e.contains(&format!("[{deep}]")) || e.contains(&format!("lost rank {deep}")),
        "the failure names rank {deep}: {e}"
    );
    let (ok, out, err) = job.finish(Duration::from_secs(60));
    assert!(!ok, "the job must not succeed with a dead rank:\n{out}\n{err}");
}

#[test]
fn the_job_runs_on_when_the_coordinator_dies() {
    const RANKS: u32 = 3;
    let mut job = start("switch-coord", RANKS, "stress", &["4"]);
    let _c = job.ready(RANKS, UP_BOUND);
    // `kawarimi run` hosts the coordinator: kill it; mpirun and the ranks carry on.
    let kawarimi_pid = job.pid() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(kawarimi_pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let (_, out, err) = job.finish(Duration::from_secs(90));
    assert!(out.contains("OK stress"), "the job must finish without its coordinator:\nstdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("can no longer be switched"), "each rank says once that switching is lost:\n{err}");
}

#[test]
fn sigterm_to_kawarimi_run_ends_the_whole_job() {
    const RANKS: u32 = 3;
    let mut job = start("switch-sigterm", RANKS, "stress", &["60"]);
    let (_c, pids, _) = job.ready(RANKS, UP_BOUND);
    let t = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(job.pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let (ok, _, _) = job.finish(Duration::from_secs(15));
    assert!(!ok, "a job stopped by SIGTERM does not report success");
    assert!(t.elapsed() < Duration::from_secs(15));
    // Every rank is gone too (or a zombie waiting to be reaped): the signal reached mpirun,
    // which stopped them.
    let alive = |p: u32| {
        fs::read_to_string(format!("/proc/{p}/status"))
            .map(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    for p in pids {
        assert!(!alive(p), "rank pid {p} outlived the job");
    }
}

#[test]
fn quiesce_reaches_a_rank_that_computes_without_calling_mpi() {
    const RANKS: u32 = 3;
    let mut job = start("switch-gap", RANKS, "compute_gap", &["6"]);
    let (mut c, pids, coord) = job.ready(RANKS, UP_BOUND);
    // Rank 1 is inside its MPI-free computation, with a rendezvous and an eager message
    // addressed to it; rank 0 waits for them to complete and rank 2 waits in a barrier.
    thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    match c.quiesce(Duration::from_secs(10)) {
        Ok(Reply::SafeToUnplug { .. }) => {}
        other => panic!("quiesce during the computation: {other:?}"),
    }
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "the computing rank's control thread drains it at once, took {took:?}");
    let control = control_ports(&mut c, coord);
    for &p in &pids {
        assert_detached(p, &control);
    }
    match c.resume(Duration::from_secs(10), None) {
        Ok(Reply::Resumed { .. }) => {}
        other => panic!("resume: {other:?}"),
    }
    drop(c);
    let (ok, out, err) = job.finish(Duration::from_secs(60));
    assert!(ok && out.contains("OK compute_gap"), "stdout:\n{out}\nstderr:\n{err}");
}

/// A small allreduce that ranks wait in through the shared-memory slots while rank 0 still
/// computes, interrupted by a switch that moves the ranks apart: the waiting ranks run it again
/// over TCP after the resume and get the right sum. Then rounds of collectives on the world and
/// on a split communicator move back onto the slots and off again, each result checked.
#[test]
fn a_collective_waiting_in_the_slots_runs_again_after_a_switch_moves_the_ranks_apart() {
    const RANKS: u32 = 4;
    let dir = build_dir().join(format!("slot-hosts-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let labels = dir.join("labels");
    fs::write(&labels, "a a a a").unwrap();
    let env = [("KAWARIMI_SHM", "1"), ("KAWARIMI_HOST_ID_FILE", labels.to_str().unwrap()), ("KAWARIMI_REPORT", "1")];
    let mut job = start_with("switch-slots", RANKS, "slot_switch", &["5", "6"], &env);
    let (mut c, _, _) = job.ready(RANKS, UP_BOUND);
    // Ranks 1 to 3 wait in the allreduce, rank 0 computes.
    thread::sleep(Duration::from_millis(2000));
    for (hosts, pause_ms) in [("a a b b", 5000), ("a a a a", 1500), ("a b a b", 1500)] {
        switch_to_hosts(&mut c, &labels, hosts);
        thread::sleep(Duration::from_millis(pause_ms));
    }
    drop(c);
    let (ok, out, err) = job.finish(Duration::from_secs(120));
    let _ = fs::remove_dir_all(&dir);
    assert!(ok && out.contains("OK slot_switch"), "stdout:\n{out}\nstderr:\n{err}");
    // Each rank's report counts the runs a switch interrupted: ranks 1 to 3 waited in one.
    let again = report_sum(&err, "run again after a switch ", ')');
    assert!(again >= 3, "ranks 1 to 3 ran the interrupted allreduce again ({again} counted):\n{err}");
}

/// A quiesce while rank 0 sits inside a long MPI call (a slow user-defined op) and the others
/// wait for it in an allreduce through the slots: the quiesce waits for rank 0 to leave the
/// call, and the allreduce must come out right. When the long call returns, either rank 0's
/// control thread takes the quiesce first (rank 0 has not published: every waiting rank runs
/// the allreduce again after the resume) or its application thread publishes first (every
/// waiting rank completes it, its detach waiting for it to read the slots). Which one
/// varies from run to run; that the waiting ranks all take the same one does not.
#[test]
fn a_quiesce_that_waits_for_a_rank_inside_a_long_call_leaves_the_slot_collective_whole() {
    const RANKS: u32 = 4;
    let env = [("KAWARIMI_SHM", "1"), ("KAWARIMI_REPORT", "1")];
    let inside = build_dir().join(format!("slot-inside-{}", std::process::id()));
    let _ = fs::remove_file(&inside);
    let args = ["3", "2", "inside", inside.to_str().unwrap()];
    let mut job = start_with("switch-slots-inside", RANKS, "slot_switch", &args, &env);
    let (mut c, _, _) = job.ready(RANKS, UP_BOUND);
    // Rank 0 says when it is inside its 3-second call (the warm-up before it can take long on
    // a loaded machine).
    let deadline = Instant::now() + UP_BOUND;
    while !inside.exists() {
        assert!(Instant::now() < deadline, "rank 0 did not enter its long call within {UP_BOUND:?}");
        thread::sleep(Duration::from_millis(10));
    }
    let _ = fs::remove_file(&inside);
    let t = Instant::now();
    match c.quiesce(Duration::from_secs(30)) {
        Ok(Reply::SafeToUnplug { .. }) => {}
        other => panic!("quiesce while rank 0 is inside MPI: {other:?}"),
    }
    let took = t.elapsed();
    assert!(took > Duration::from_millis(1000), "the quiesce must wait for rank 0's long call; took {took:?}");
    match c.resume(Duration::from_secs(30), None) {
        Ok(Reply::Resumed { .. }) => {}
        other => panic!("resume: {other:?}"),
    }
    drop(c);
    let (ok, out, err) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("OK slot_switch"), "stdout:\n{out}\nstderr:\n{err}");
    let again = report_sum(&err, "run again after a switch ", ')');
    assert!(
        again == 0 || again == 3,
        "ranks 1 to 3 must all run the allreduce again or none ({again} run again):\n{err}"
    );
}

/// `kawarimi vmm migrate` with a real job: the stress program (4 ranks, checking every byte)
/// runs under `kawarimi run` while two VMs move between QEMUs on this host and back. The VMs
/// are QEMUs without a guest (the job runs on the host; the VM lab moves VMs with the job
/// inside), each with a USB device standing in for its HCA, unplugged before the move and
/// plugged on the destination. The first move takes the default order (the job resumes right
/// after the unplug and runs during the migrations, then switches again), the way back
/// `--pause`; then the VMs are saved to files (`vmm checkpoint`, the job quiesced meanwhile) and
/// started again in fresh QEMUs (`vmm restore`). Each writes its record and timeline plot; the
/// job verifies at the end.
#[test]
fn vmm_migrate_moves_the_vms_and_the_job_verifies() {
    use kawarimi_vmm::testing::Qemu;
    const RANKS: u32 = 4;
    let mut job = start_with("vmm-migrate", RANKS, "stress", &["20"], &[("KAWARIMI_SHM", "0")]);
    let (c, _, _) = job.ready(RANKS, UP_BOUND);
    drop(c);
    let machine = ["-machine", "q35", "-m", "64", "-device", "qemu-xhci,id=xhci"];
    let vm = |name: String, hca: bool, incoming: bool| {
        let mut args: Vec<&str> = machine.to_vec();
        if hca {
            args.extend(["-device", "usb-kbd,id=hca0"]);
        }
        if incoming {
            args.extend(["-incoming", "defer"]);
        }
        Qemu::start_with(&name, &args)
    };
    let dir = build_dir().join(format!("vmm-migrate-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let plan = |moves: &[(&str, &Qemu, &Qemu)]| -> std::path::PathBuf {
        let mut text = String::new();
        for (name, src, dst) in moves {
            text += &format!(
                "[[vm]]\nname = {name:?}\nqmp = {:?}\nunplug = [\"hca0\"]\n[[vm.replug]]\ndriver = \"usb-kbd\"\nid = \"hca0\"\n\
                 [vm.destination]\nqmp = {:?}\nuri = \"unix:{}\"\n[[vm.destination.plug]]\ndriver = \"usb-kbd\"\nid = \"hca0\"\n",
                src.socket().display().to_string(),
                dst.socket().display().to_string(),
                dst.dir.join("migration.sock").display()
            );
        }
        let p = dir.join(format!("plan-{}.toml", moves[0].0));
        fs::write(&p, text).unwrap();
        p
    };
    let vmm = |action: &str, plan: &Path, record: &Path, extra: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(kawarimi_tests::job::cli())
            .args(["vmm", action, "--job", &job.name, "--plan"])
            .arg(plan)
            .arg("--record")
            .arg(record)
            .args(extra)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kawarimi vmm {action} failed:\n{text}");
        eprintln!("{text}");
        let rec: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(record.with_extension("json")).unwrap()).unwrap();
        let svg = fs::read_to_string(record.with_extension("svg")).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains(&format!("kawarimi vmm {action}")) && svg.contains("<rect"),
            "{svg}"
        );
        rec
    };
    let (a0, b0) = (
        vm(format!("e2e-a0-{}", std::process::id()), true, false),
        vm(format!("e2e-b0-{}", std::process::id()), true, false),
    );
    let (a1, b1) = (
        vm(format!("e2e-a1-{}", std::process::id()), false, true),
        vm(format!("e2e-b1-{}", std::process::id()), false, true),
    );
    let there = vmm("migrate", &plan(&[("a", &a0, &a1), ("b", &b0, &b1)]), &dir.join("there"), &[]);
    let switches: Vec<&str> = there["switches"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(switches, ["quiesce", "resume", "quiesce", "resume"], "{there:#}");
    assert_eq!(there["moved"].as_array().unwrap().len(), 2, "{there:#}");
    assert!(there["failure"].is_null(), "{there:#}");
    let stall = there["job_stall_s"].as_f64().unwrap();
    assert!(stall > 0.0 && stall < there["wall_s"].as_f64().unwrap(), "{there:#}");

    let (a2, b2) = (
        vm(format!("e2e-a2-{}", std::process::id()), false, true),
        vm(format!("e2e-b2-{}", std::process::id()), false, true),
    );
    let back =
        vmm("migrate", &plan(&[("a-back", &a1, &a2), ("b-back", &b1, &b2)]), &dir.join("back"), &["--pause".as_ref()]);
    let switches: Vec<&str> = back["switches"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(switches, ["quiesce", "resume"], "{back:#}");
    assert_eq!(back["moved"].as_array().unwrap().len(), 2, "{back:#}");

    // Saved to files (the job stays quiesced meanwhile), then started again in fresh QEMUs.
    let saved = dir.join("saved");
    let (a3, b3) = (
        vm(format!("e2e-a3-{}", std::process::id()), false, true),
        vm(format!("e2e-b3-{}", std::process::id()), false, true),
    );
    let keep = plan(&[("c", &a2, &a3), ("d", &b2, &b3)]);
    let save = vmm("checkpoint", &keep, &dir.join("save"), &["--to".as_ref(), saved.as_os_str()]);
    let switches: Vec<&str> = save["switches"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(switches, ["quiesce"], "{save:#}");
    assert!(saved.join("c.vmstate").is_file() && saved.join("d.vmstate").is_file());
    let again = vmm("restore", &keep, &dir.join("restore"), &["--from".as_ref(), saved.as_os_str()]);
    let switches: Vec<&str> = again["switches"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(switches, ["resume"], "{again:#}");
    let (ok, out, err) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("OK stress"), "stress failed after the moves:\nstdout:\n{out}\nstderr:\n{err}");
    let _ = fs::remove_dir_all(&dir);
}
