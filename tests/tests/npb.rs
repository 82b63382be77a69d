//! The NAS Parallel Benchmarks written for kawarimi in Rust on rsmpi (`examples/src/npb/`): the
//! kernels EP, IS, CG, MG, FT and the pseudo-applications LU, BT and SP. Classes S and W at 4 ranks,
//! natively and preloaded with kawarimi, must report `VERIFICATION SUCCESSFUL` against NPB's
//! official values; and each must still verify when its job is live-migrated twice in mid-run
//! under `kawarimi run`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kawarimi_control::proto::Reply;
use kawarimi_tests::job::KawarimiJob;
use kawarimi_tests::{kawarimi_lib, mpirun, ranks_not_on_shm, workspace_root};

const BENCHMARKS: &[&str] = &["ep", "is", "cg", "mg", "ft", "lu", "bt", "sp"];
const RANKS: u32 = 4;

fn bin(name: &str) -> PathBuf {
    let p = workspace_root().join("target/release").join(format!("npb-{name}"));
    assert!(p.exists(), "{} missing: run `cargo build --release -p kawarimi-examples`", p.display());
    p
}

fn wait_output(mut child: std::process::Child, bound: Duration, what: &str) -> (bool, String) {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        s + &e
    });
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {bound:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status.success(), reader.join().unwrap())
}

/// How a benchmark runs: natively, on kawarimi, or on kawarimi with shared memory between
/// the ranks (which then report what carried their data).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Run {
    Native,
    Kawarimi,
    KawarimiShm,
}

fn mpirun_npb(name: &str, class: &str, how: Run) -> (bool, String) {
    let mut cmd = Command::new(mpirun().unwrap());
    cmd.args(["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", &RANKS.to_string()]);
    if how != Run::Native {
        cmd.arg("-x").arg(format!("LD_PRELOAD={}", kawarimi_lib().unwrap_or_else(|e| panic!("{e}")).display()));
    }
    if how == Run::KawarimiShm {
        cmd.args(["-x", "KAWARIMI_SHM=1", "-x", "KAWARIMI_REPORT=1"]);
    }
    cmd.arg(bin(name))
        .arg(class)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("npb-{name} class {class} ({how:?})");
    wait_output(cmd.spawn().unwrap(), Duration::from_secs(300), &what)
}

#[test]
fn classes_s_and_w_verify_natively_and_on_kawarimi() {
    for name in BENCHMARKS {
        for class in ["S", "W"] {
            for how in [Run::Native, Run::Kawarimi] {
                let (ok, out) = mpirun_npb(name, class, how);
                assert!(
                    ok && out.contains("VERIFICATION SUCCESSFUL"),
                    "npb-{name} class {class} at {RANKS} ranks ({how:?}):\n{out}"
                );
                let line = out.lines().find(|l| l.starts_with("npb=")).unwrap_or("");
                eprintln!("{how:?} {line}");
            }
        }
    }
}

/// The same on shared memory: each benchmark verifies, and every rank reports each of its
/// peers carried by shared memory.
#[test]
fn classes_s_and_w_verify_on_shared_memory() {
    for name in BENCHMARKS {
        for class in ["S", "W"] {
            let (ok, out) = mpirun_npb(name, class, Run::KawarimiShm);
            assert!(ok && out.contains("VERIFICATION SUCCESSFUL"), "npb-{name} class {class} on shared memory:\n{out}");
            let off = ranks_not_on_shm(&out, RANKS);
            assert!(off.is_empty(), "npb-{name} class {class}: ranks {off:?} not all on shared memory:\n{out}");
        }
    }
}

/// Runs one benchmark under `kawarimi run` and migrates it twice while it computes.
fn migrate_twice(name: &str, class: &str) {
    let job_name = format!("npb-{name}-{}", std::process::id());
    let exe = bin(name).display().to_string();
    let words = ["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", &RANKS.to_string(), &exe, class];
    let mut job = KawarimiJob::start(&job_name, &words, |_| {});
    let (mut ctl, _, _) = job.ready(RANKS, Duration::from_secs(30));
    // Both switches land early in the run: the shortest kernel here (CG class A) computes for
    // about 0.35 s at 4 ranks on a 2-core machine, and a faster machine halves that.
    for (round, delay_ms) in [(1u32, 100), (2, 50)] {
        thread::sleep(Duration::from_millis(delay_ms));
        match ctl.quiesce(Duration::from_secs(30)) {
            Ok(Reply::SafeToUnplug { .. }) => {}
            other => panic!("npb-{name}: quiesce {round}: {other:?} (did the run end before it? use a larger class)"),
        }
        match ctl.resume(Duration::from_secs(30), None) {
            Ok(Reply::Resumed { epoch, .. }) => assert_eq!(epoch, round),
            other => panic!("npb-{name}: resume {round}: {other:?}"),
        }
    }
    drop(ctl);
    let (ok, out, err) = job.finish(Duration::from_secs(300));
    assert!(
        ok && out.contains("VERIFICATION SUCCESSFUL"),
        "npb-{name} class {class} after two migrations:\n{out}\n{err}"
    );
    eprintln!("migrated twice: {}", out.lines().find(|l| l.starts_with("npb=")).unwrap_or(""));
}

#[test]
fn every_kernel_verifies_after_two_migrations_in_mid_run() {
    // Classes long enough that both migrations land inside the computation (see migrate_twice).
    for (name, class) in
        [("ep", "W"), ("is", "A"), ("cg", "A"), ("mg", "A"), ("ft", "A"), ("lu", "W"), ("bt", "W"), ("sp", "W")]
    {
        migrate_twice(name, class);
    }
}
