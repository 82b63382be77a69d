//! However a job ends, nothing of it stays behind: no rank process, no job file.
//!
//! Each test runs a real job (`tests/c/job_end.c`, 3 ranks) under plain `mpirun` with
//! kawarimi preloaded or under `kawarimi run`, in a session of its own (so that a rank
//! re-parented to init is still found) and with a job directory of its own
//! (`XDG_RUNTIME_DIR`), ends it one way (its launcher killed with SIGTERM as `timeout` does,
//! or with SIGKILL; `MPI_Abort`; a fatal MPI error), and then requires every process of the
//! session to end by itself within [`GONE_BOUND`], the job directory to be empty and no
//! segment of its ranks in `/dev/shm` (some of the jobs run on shared memory). The
//! harness's own clean-up (which kills leftovers) is not used here, so a survivor fails.
//!
//! A SIGTERM'd `mpirun` kills its ranks itself when it has the time; under load it may exit
//! first, and that race is what left ranks running before the launcher watch. A SIGKILL'd
//! `mpirun` never has the time: `ranks_end_when_mpirun_is_killed` is the deterministic form
//! of that defect (it fails without the watch, with the three ranks re-parented to init).

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use kawarimi_tests::{compiled, find_in_path, job::cli, kawarimi_lib, kill_all, mpirun, session_processes};
use kawarimi_transports::process::start_ticks;

const RANKS: u32 = 3;
/// How long the ranks may take to notice: the launcher watch polls every 200 ms, and a
/// loaded 2-core machine is slow to schedule them.
const GONE_BOUND: Duration = Duration::from_secs(20);
const UP_BOUND: Duration = Duration::from_secs(60);

fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

#[derive(Clone, Copy, Debug)]
enum Launcher {
    /// `mpirun -x LD_PRELOAD=libkawarimi.so`: rank 0 hosts the coordinator and its job file.
    Preloaded,
    /// `kawarimi run`: the coordinator and its job file are in `kawarimi run`.
    KawarimiRun,
}

/// A job directory of the test's own: `$XDG_RUNTIME_DIR/kawarimi` for the job and for `ctl`.
struct JobsDir(PathBuf);

impl JobsDir {
    fn new(name: &str) -> JobsDir {
        let root = build_dir().join(format!("job-end-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        JobsDir(root)
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.0.join("kawarimi"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// `kawarimi ctl ARGS` with this job directory; (exit success, stdout + stderr).
    fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(cli())
            .arg("ctl")
            .args(args)
            .env("XDG_RUNTIME_DIR", &self.0)
            .env_remove("LD_PRELOAD")
            .output()
            .expect("run kawarimi ctl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

impl Drop for JobsDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What carries the ranks' data: each way a job ends must leave nothing on either.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Carrier {
    Tcp,
    /// Shared memory (`KAWARIMI_SHM=1`): the segments in `/dev/shm` must go too.
    Shm,
}

struct Job {
    child: Child,
    /// The session of the job's processes (the launcher's pid: setsid execs it).
    session: u32,
    /// The session's processes once every rank is up (the ranks among them).
    pids: Vec<u32>,
    carrier: Carrier,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    what: String,
    /// The file whose creation lets the ranks go on past "up".
    go: PathBuf,
}

impl Job {
    fn start(launcher: Launcher, carrier: Carrier, how: &str, job_name: Option<&str>, dir: &JobsDir) -> Job {
        let exe = compiled("job_end", build_dir());
        let setsid = find_in_path("setsid").expect("setsid (util-linux) not found");
        let mut cmd = Command::new(setsid);
        // Not a process group leader, setsid execs the launcher itself: its pid is the session.
        cmd.arg("--wait");
        let common = ["--oversubscribe", "--allow-run-as-root", "--bind-to", "none"];
        match launcher {
            Launcher::Preloaded => {
                let lib = kawarimi_lib().unwrap_or_else(|e| panic!("{e}"));
                cmd.arg(mpirun().unwrap_or_else(|e| panic!("{e}"))).args(common);
                cmd.arg("-x").arg(format!("LD_PRELOAD={}", lib.display()));
            }
            Launcher::KawarimiRun => {
                // kawarimi's own option after mpirun's: it must still be taken.
                cmd.arg(cli()).arg("run").args(common);
                if let Some(n) = job_name {
                    cmd.args(["--job-name", n]);
                }
            }
        }
        cmd.args(["-x", if carrier == Carrier::Shm { "KAWARIMI_SHM=1" } else { "KAWARIMI_SHM=0" }]);
        // The ranks wait for this file once up: `wait_up` looks at them before any may end.
        let go = dir.0.join("go");
        let _ = fs::remove_file(&go);
        cmd.args(["-np", &RANKS.to_string()]).arg(&exe).arg(how).arg(&go);
        cmd.env("XDG_RUNTIME_DIR", &dir.0).env_remove("LD_PRELOAD");
        let what = format!("{launcher:?} job_end {how} on {carrier:?}");
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the job");
        let (tx, lines) = mpsc::channel();
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let session = child.id();
        Job { child, session, pids: Vec::new(), carrier, lines, seen: Vec::new(), what, go }
    }

    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    fn output(&mut self) -> String {
        self.drain();
        self.seen.join("\n")
    }

    /// Waits until every rank printed "up".
    fn wait_up(&mut self) {
        let deadline = Instant::now() + UP_BOUND;
        while self.seen.iter().filter(|l| l.starts_with("up ")).count() < RANKS as usize {
            if Instant::now() > deadline {
                let out = self.output();
                panic!("{}: ranks not up within {UP_BOUND:?}:\n{out}", self.what);
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                let out = self.output();
                panic!("{}: ended ({s}) before every rank was up:\n{out}", self.what);
            }
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(l);
            }
        }
        self.pids = session_processes(self.session);
        if self.carrier == Carrier::Shm {
            // The ranks' rings are in segments they map (unlinked from /dev/shm once every
            // peer has mapped them, so the mapping is what shows them).
            let mapped =
                |pid: &u32| fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("/kawarimi."));
            let n = self.pids.iter().filter(|p| mapped(p)).count();
            assert_eq!(n, RANKS as usize, "{}: ranks mapping kawarimi segments: {n} of {RANKS}", self.what);
        }
        fs::write(&self.go, b"").expect("create the file that lets the ranks go on");
    }

    fn signal_launcher(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// Requires every process of the job to end by itself within [`GONE_BOUND`].
    fn require_all_gone(&mut self) {
        let deadline = Instant::now() + GONE_BOUND;
        let _ = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let mut left = session_processes(self.session);
        while !left.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
            left = session_processes(self.session);
        }
        if !left.is_empty() {
            kill_all(&left);
            let _ = self.child.kill();
            let _ = self.child.wait();
            let out = self.output();
            panic!("{}: processes still alive {GONE_BOUND:?} after the job ended: {left:?}\n{out}", self.what);
        }
        let _ = self.child.wait();
        // A segment is named `kawarimi.<owner pid>.<start ticks>.<tag>`.
        let segments: Vec<String> = fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| self.pids.iter().any(|pid| name.starts_with(&format!("kawarimi.{pid}."))))
            .collect();
        assert!(segments.is_empty(), "{}: segments of its ranks left in /dev/shm: {segments:?}", self.what);
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        kill_all(&session_processes(self.session));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill_launcher_of_hanging_job(launcher: Launcher, carrier: Carrier, sig: nix::sys::signal::Signal) -> JobsDir {
    let dir = JobsDir::new(&format!("{launcher:?}-{carrier:?}-{sig:?}"));
    let mut job = Job::start(launcher, carrier, "hang", None, &dir);
    job.wait_up();
    assert_eq!(dir.files().iter().filter(|f| f.ends_with(".json")).count(), 1, "one job file while it runs");
    job.signal_launcher(sig);
    job.require_all_gone();
    dir
}

#[test]
fn ranks_end_when_mpirun_is_terminated() {
    let dir = kill_launcher_of_hanging_job(Launcher::Preloaded, Carrier::Tcp, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(dir.files(), Vec::<String>::new(), "rank 0's job file is removed");
}

#[test]
fn ranks_end_when_mpirun_is_killed() {
    for carrier in [Carrier::Tcp, Carrier::Shm] {
        let dir = kill_launcher_of_hanging_job(Launcher::Preloaded, carrier, nix::sys::signal::Signal::SIGKILL);
        assert_eq!(dir.files(), Vec::<String>::new(), "rank 0's job file is removed");
    }
}

#[test]
fn ranks_end_when_kawarimi_run_is_terminated() {
    let dir = kill_launcher_of_hanging_job(Launcher::KawarimiRun, Carrier::Shm, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(dir.files(), Vec::<String>::new(), "kawarimi run removes its job file");
}

/// `kawarimi run` killed outright takes the coordinator with it, but not the job: mpirun and
/// the ranks run on without switching (tests/tests/switch.rs checks that the job finishes).
/// The file it could not remove is reclaimed by the next `ctl`, and the job ends with mpirun.
#[test]
fn a_killed_kawarimi_runs_file_is_reclaimed_and_its_job_ends_with_mpirun() {
    let dir = JobsDir::new("run-killed");
    let mut job = Job::start(Launcher::KawarimiRun, Carrier::Tcp, "hang", None, &dir);
    job.wait_up();
    job.signal_launcher(nix::sys::signal::Signal::SIGKILL);
    let _ = job.child.wait();
    assert_eq!(dir.files().len(), 1, "the killed kawarimi run's file: {:?}", dir.files());
    let (ok, text) = dir.ctl(&["status"]);
    assert!(!ok && text.contains("no running kawarimi job"), "{text}");
    assert_eq!(dir.files(), Vec::<String>::new(), "reclaimed");
    let mpirun: Vec<u32> = session_processes(job.session)
        .into_iter()
        .filter(|p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "mpirun"))
        .collect();
    assert_eq!(mpirun.len(), 1, "mpirun runs on: {:?}", session_processes(job.session));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(mpirun[0] as i32), nix::sys::signal::Signal::SIGTERM);
    job.require_all_gone();
}

fn end_by_itself(launcher: Launcher, carrier: Carrier, how: &str, expect_in_output: &str) {
    let dir = JobsDir::new(&format!("{launcher:?}-{carrier:?}-{how}"));
    let mut job = Job::start(launcher, carrier, how, None, &dir);
    job.wait_up();
    job.require_all_gone();
    let out = job.output();
    assert!(out.contains(expect_in_output), "{}: expected {expect_in_output:?} in:\n{out}", job.what);
    assert_eq!(dir.files(), Vec::<String>::new(), "{}: job files left behind", job.what);
}

#[test]
fn an_aborted_job_leaves_nothing() {
    end_by_itself(Launcher::Preloaded, Carrier::Tcp, "abort", "MPI_Abort");
    end_by_itself(Launcher::KawarimiRun, Carrier::Shm, "abort", "MPI_Abort");
}

#[test]
fn a_job_ended_by_a_fatal_error_leaves_nothing() {
    end_by_itself(Launcher::Preloaded, Carrier::Tcp, "error", "MPI_Send");
    end_by_itself(Launcher::Preloaded, Carrier::Shm, "error", "MPI_Send");
}

/// A stale file whose pid a live process has taken again, a dead pid's file and a leftover
/// `.tmp` do not count as jobs: `ctl` finds the one running job without `--job`, and removes
/// the dead ones. A file whose owner lives but whose coordinator does not answer is not
/// listed and not removed (its owner removes it).
#[test]
fn ctl_tells_running_jobs_by_their_coordinator_and_reclaims_dead_ones() {
    let dir = JobsDir::new("reclaim");
    let mut job = Job::start(Launcher::KawarimiRun, Carrier::Tcp, "hang", Some("end-running"), &dir);
    job.wait_up();
    let jobs = dir.0.join("kawarimi");
    let me = std::process::id();
    let my_start = start_ticks(me).unwrap();
    let unused_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let secret = "00".repeat(32);
    let stale = |name: &str, pid: u32, started: Option<u64>| {
        let started = started.map(|s| format!(", \"started\": {s}")).unwrap_or_default();
        let text = format!(
            "{{\"job\": \"{name}\", \"coordinator\": \"127.0.0.1:{unused_port}\", \"secret\": \"{secret}\", \"pid\": {pid}{started}}}"
        );
        fs::write(jobs.join(format!("{name}.json")), text).unwrap();
    };
    stale("kw-reused", me, Some(my_start + 1)); // this pid, but another process's start time
    stale("kw-dead", 4_194_304 + 7, Some(1)); // above any pid_max
    stale("kw-silent", me, Some(my_start)); // owner alive, coordinator silent
    stale("kw-old-silent", me, None); // a file from before start times, coordinator silent
    fs::write(jobs.join("kw-half.tmp"), "{").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::options().write(true).open(jobs.join("kw-half.tmp")).unwrap().set_modified(old).unwrap();

    let (ok, text) = dir.ctl(&["status"]);
    assert!(ok && text.contains("end-running"), "ctl without --job must find the one running job:\n{text}");
    let (ok, text) = dir.ctl(&["list"]);
    assert!(ok, "{text}");
    assert_eq!(text.lines().filter(|l| !l.trim().is_empty()).count(), 1, "only the running job is listed:\n{text}");
    assert_eq!(
        dir.files(),
        ["end-running.json", "kw-old-silent.json", "kw-silent.json"],
        "dead jobs' files reclaimed, live owners' kept"
    );
    let (ok, text) = dir.ctl(&["--job", "kw-silent", "status"]);
    assert!(!ok && text.contains("does not answer"), "{text}");
    job.signal_launcher(nix::sys::signal::Signal::SIGTERM);
    job.require_all_gone();
    assert_eq!(dir.files(), ["kw-old-silent.json", "kw-silent.json"]);
}

/// `kawarimi run` takes its own options anywhere before the program, and leaves the
/// program's own words alone.
#[test]
fn kawarimi_run_takes_its_options_anywhere_before_the_program() {
    let dir = JobsDir::new("order");
    for (i, before) in [true, false].into_iter().enumerate() {
        let name = format!("end-order-{i}");
        let exe = compiled("job_end", build_dir());
        let mut cmd = Command::new(cli());
        cmd.arg("run");
        if before {
            cmd.args(["--job-name", &name]);
        }
        cmd.args(["--oversubscribe", "--allow-run-as-root", "-np", "2"]);
        if !before {
            cmd.args(["--job-name", &name]);
        }
        // The program's own --job-name is its argument, not kawarimi's: job_end reads
        // argv[1] only, "hang".
        cmd.arg(&exe).args(["hang", "--job-name", "not-kawarimis"]);
        cmd.env("XDG_RUNTIME_DIR", &dir.0).env_remove("LD_PRELOAD");
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + UP_BOUND;
        let mut status = String::new();
        while Instant::now() < deadline {
            let (ok, text) = dir.ctl(&["--job", &name, "status"]);
            if ok && text.contains("rank     1") {
                status = text;
                break;
            }
            if let Ok(Some(s)) = child.try_wait() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                panic!(
                    "kawarimi run ended ({s}) with --job-name {}:\n{err}",
                    if before { "first" } else { "among mpirun's" }
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        assert!(!status.is_empty(), "job {name} never answered ctl status");
        assert!(!dir.files().iter().any(|f| f.contains("not-kawarimis")));
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = child.wait();
    }
}
