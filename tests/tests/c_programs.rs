//! The C MPI test programs in `tests/c`, each at 2, 3 and 4 ranks, natively
//! on Open MPI (`native::*`) and with kawarimi preloaded (`kawarimi::*`).
//!
//! The kawarimi tests need `libkawarimi.so` (`cargo build --release -p
//! kawarimi-shim`, or `KAWARIMI_LIB`); without it they fail and say so.

use std::path::Path;
use std::time::Duration;

use kawarimi_tests::{check_abort_rank, check_program, ModeKind};

fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// How long the job may take to end after a rank is SIGKILLed.
const ABORT_BOUND: Duration = Duration::from_secs(30);

macro_rules! program_tests {
    ($kind:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_program(stringify!($name), $kind, build_dir());
            }
        )*

        /// The last of 4 ranks SIGKILLs itself: the job must end within 30 s
        /// with a non-zero status.
        #[test]
        fn abort_rank_kill() {
            check_abort_rank($kind, build_dir(), 4, ABORT_BOUND);
        }
    };
}

/// [`program_tests!`] for every program in `tests/c`.
macro_rules! every_program {
    ($kind:expr) => {
        program_tests!($kind;
            p2p_basic, p2p_wildcard, p2p_large, requests, collectives, comms_groups,
            topology, datatypes, errors, env, info_misc, p2p_mprobe, nbc, progress, intercomm, memory_reuse,
            conformance, neighbor, rma, persistent_coll, rma_lock_switch, threads);
    };
}

mod native {
    use super::*;
    every_program!(ModeKind::Native);
}

mod kawarimi {
    use super::*;
    every_program!(ModeKind::Kawarimi);
}

/// The same programs with shared memory between the ranks (all on this host): every rank
/// must report each of its peers carried by shared memory.
mod kawarimi_shm {
    use super::*;
    every_program!(ModeKind::KawarimiShm);
}

/// The same programs with each way large payloads cross forced: single copy for every payload
/// (a wire-up that cannot read a peer's memory fails), and everything through the rings.
mod kawarimi_shm_single_copy {
    use super::*;
    every_program!(ModeKind::KawarimiShmSingleCopy);
}

mod kawarimi_shm_two_copy {
    use super::*;
    every_program!(ModeKind::KawarimiShmTwoCopy);
}

/// A segment left in /dev/shm by a job killed during its wire-up (its owner is gone) is
/// removed by the next job that uses shared memory, which itself leaves nothing behind.
#[test]
fn a_dead_jobs_segment_is_reclaimed_by_the_next_job() {
    use kawarimi_tests::{compiled, mode, run, timeout_or, DEFAULT_TIMEOUT};
    // A pid that cannot exist (pid_max is at most 2^22) stands for the killed owner.
    let orphan = std::path::Path::new("/dev/shm").join(format!("kawarimi.{}.1.r0-e0", u32::MAX - 5));
    std::fs::write(&orphan, b"left by a killed job").unwrap();
    let out = run(&compiled("p2p_basic", build_dir()), &mode(ModeKind::KawarimiShm), 2, timeout_or(DEFAULT_TIMEOUT));
    assert!(out.success(), "{}", out.report());
    let left = orphan.exists();
    let _ = std::fs::remove_file(&orphan);
    assert!(!left, "the orphaned segment is still there after a job on shared memory");
    // Other tests' jobs may hold segments for a moment during their wire-up; none may be left
    // by a process that is gone, as this job's ranks now are.
    let orphans = kawarimi_transports::shm::segment::orphans();
    assert!(orphans.is_empty(), "segments of processes that are gone: {orphans:?}");
}

/// Runs `exe` at 2 ranks under kawarimi with its transport report (`KAWARIMI_REPORT=1`) and
/// the mpirun arguments `extra`; whether it succeeded, and stdout and stderr together.
fn run_reporting(exe: &std::path::Path, extra: &[&str]) -> (bool, String) {
    use kawarimi_tests::{kawarimi_lib, mpirun};
    let lib = kawarimi_lib().unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg(mpirun().unwrap())
        .args(["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", "2"])
        .arg("-x")
        .arg(format!("LD_PRELOAD={}", lib.display()))
        .args(["-x", "KAWARIMI_REPORT=1"])
        .args(extra)
        .arg(exe)
        .env_remove("LD_PRELOAD")
        .env_remove("KAWARIMI_SHM")
        .output()
        .expect("run mpirun");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// With nothing said, ranks on one host talk through shared memory; `KAWARIMI_SHM` other than
/// 0 or 1 is refused at start-up with an error that names it.
#[test]
fn shared_memory_is_the_default_and_a_bad_setting_is_named() {
    use kawarimi_tests::{compiled, ranks_not_on_shm};
    let exe = compiled("p2p_basic", build_dir());
    let run = |extra: &[&str]| run_reporting(&exe, extra);
    let (ok, out) = run(&[]);
    assert!(ok && out.contains("OK p2p_basic"), "{out}");
    assert_eq!(ranks_not_on_shm(&out, 2), Vec::<u32>::new(), "ranks not on shared memory by default:\n{out}");
    let (ok, out) = run(&["-x", "KAWARIMI_SHM=yes"]);
    assert!(!ok && out.contains("KAWARIMI_SHM") && out.contains("neither 0 nor 1"), "{out}");
}

/// Over TCP, large payloads are read from the socket straight into the receive buffer: the
/// large-message program (which checks every byte it receives) passes, and every rank's
/// report counts payloads read into place.
#[test]
fn tcp_reads_large_payloads_into_the_receive_buffer() {
    let exe = kawarimi_tests::compiled("p2p_large", build_dir());
    let (ok, text) = run_reporting(&exe, &["-x", "KAWARIMI_SHM=0"]);
    assert!(ok && text.contains("OK p2p_large"), "{text}");
    for rank in 0..2 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("kawarimi: rank {rank}: ran tcp:1,")))
            .unwrap_or_else(|| panic!("no TCP report of rank {rank}:\n{text}"));
        let placed: u64 = line
            .split("payloads read into place ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("rank {rank} counts no placed payloads: {line}"));
        assert!(placed > 0, "rank {rank} read no payload into place: {line}");
    }
}

/// The same programs under `kawarimi run`, wired up through its coordinator rather than
/// mpirun's PMIx server: the path a launcher without PMIx takes.
mod kawarimi_run {
    use super::*;
    program_tests!(ModeKind::KawarimiRun;
        p2p_basic, p2p_wildcard, p2p_large, requests, collectives, comms_groups,
        topology, datatypes, errors, env, info_misc, p2p_mprobe, nbc, progress, intercomm, conformance, neighbor, rma,
        persistent_coll, threads);
}

/// A passive-target operation on a rank that computes for 3 s without calling MPI completes
/// long before the computation ends: kawarimi's progress thread applies it. The bound (1 s)
/// only separates "progresses" from "waits for the target" (without the thread it took 2.7 s).
#[test]
fn passive_target_progresses_while_the_target_computes() {
    let exe = kawarimi_tests::compiled("rma_progress", build_dir());
    let out = kawarimi_tests::run_in(
        &exe,
        &["1000"],
        None,
        &kawarimi_tests::mode(ModeKind::Kawarimi),
        3,
        Duration::from_secs(60),
    );
    assert!(out.success() && out.stdout.contains("OK rma_progress"), "{}", out.report());
}

/// `MPI_Abort`'s code is the job's exit status under mpirun, 0 included (MPI-3.1 §8.7: it is
/// "returned to the invoking environment"), as native Open MPI does: checked natively, then
/// with kawarimi over TCP and over shared memory. (A rank that exited unfinalised with 0
/// made mpirun exit 1.)
#[test]
fn mpi_abort_code_is_the_jobs_exit_status() {
    use kawarimi_tests::{compiled, mode, run_in, timeout_or, DEFAULT_TIMEOUT};
    let exe = compiled("abort_code", build_dir());
    for kind in [ModeKind::Native, ModeKind::Kawarimi, ModeKind::KawarimiShm] {
        for code in [0, 5] {
            let arg = code.to_string();
            let out = run_in(&exe, &[&arg], None, &mode(kind), 3, timeout_or(DEFAULT_TIMEOUT));
            assert!(
                !out.timed_out && out.status.and_then(|s| s.code()) == Some(code),
                "MPI_Abort({code}) in mode {kind:?}: mpirun exited with {:?}\n{}",
                out.status,
                out.report()
            );
        }
    }
}
