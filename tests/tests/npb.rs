//! The NAS Parallel Benchmarks written for kawarimi in Rust on rsmpi (`examples/src/npb/`): the
//! kernels EP, IS, CG, MG, FT and the pseudo-applications LU, BT and SP. Classes S and W at 4 ranks,
//! natively and preloaded with kawarimi, must report `VERIFICATION SUCCESSFUL` against NPB's
//! official values; and each must still verify when its job is live-migrated twice in mid-run
//! under `kawarimi run`, also when the migrations move it between shared memory and TCP.

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use kawarimi_control::proto::Reply;
use kawarimi_tests::job::KawarimiJob;
use kawarimi_tests::{mode, ranks_not_on_shm, run_in, workspace_root, ModeKind};

const BENCHMARKS: &[&str] = &["ep", "is", "cg", "mg", "ft", "lu", "bt", "sp"];
const RANKS: u32 = 4;

fn bin(name: &str) -> PathBuf {
    let p = workspace_root().join("target/release").join(format!("npb-{name}"));
    assert!(p.exists(), "{} missing: run `cargo build --release -p kawarimi-examples`", p.display());
    p
}

fn mpirun_npb(name: &str, class: &str, kind: ModeKind) -> (bool, String) {
    let out = run_in(&bin(name), &[class], None, &mode(kind), RANKS, Duration::from_secs(300));
    assert!(!out.timed_out, "npb-{name} class {class} ({kind:?}) did not finish:\n{}", out.report());
    (out.success(), out.combined())
}

/// Natively and on kawarimi over TCP.
#[test]
fn classes_s_and_w_verify_natively_and_on_kawarimi_over_tcp() {
    for name in BENCHMARKS {
        for class in ["S", "W"] {
            for kind in [ModeKind::Native, ModeKind::Kawarimi] {
                let (ok, out) = mpirun_npb(name, class, kind);
                assert!(
                    ok && out.contains("VERIFICATION SUCCESSFUL"),
                    "npb-{name} class {class} at {RANKS} ranks ({kind:?}):\n{out}"
                );
                let line = out.lines().find(|l| l.starts_with("npb=")).unwrap_or("");
                eprintln!("{kind:?} {line}");
            }
        }
    }
}

fn verify_on_shared_memory(kind: ModeKind, classes: &[&str]) {
    for name in BENCHMARKS {
        for class in classes {
            let (ok, out) = mpirun_npb(name, class, kind);
            assert!(ok && out.contains("VERIFICATION SUCCESSFUL"), "npb-{name} class {class} ({kind:?}):\n{out}");
            let off = ranks_not_on_shm(&out, RANKS);
            assert!(
                off.is_empty(),
                "npb-{name} class {class} ({kind:?}): ranks {off:?} not all on shared memory:\n{out}"
            );
        }
    }
}

/// The same on shared memory: each benchmark verifies, and every rank reports each of its
/// peers carried by shared memory.
#[test]
fn classes_s_and_w_verify_on_shared_memory() {
    verify_on_shared_memory(ModeKind::KawarimiShm, &["S", "W"]);
}

/// Class W on shared memory with every payload read by single copy from the sender's memory.
#[test]
fn class_w_verifies_on_shared_memory_by_single_copy() {
    verify_on_shared_memory(ModeKind::KawarimiShmSingleCopy, &["W"]);
}

/// Class W on shared memory with every payload through the rings (two copies).
#[test]
fn class_w_verifies_on_shared_memory_by_two_copies() {
    verify_on_shared_memory(ModeKind::KawarimiShmTwoCopy, &["W"]);
}

/// Where the ranks of a job live across its two migrations, as `KAWARIMI_HOST_ID_FILE` labels
/// (one machine cannot change its kernel, so a label per rank stands for the host): before
/// the first, after the first, after the second, with what every rank must then report as
/// carrying its data.
struct HostMoves {
    labels: [&'static str; 3],
    carriers: [&'static str; 3],
}

/// On one host on shared memory; split over two hosts (each pair across them on TCP); back.
const SHM_TCP_SHM: HostMoves =
    HostMoves { labels: ["a a a a", "a a b b", "a a a a"], carriers: ["shm:3", "shm:1+tcp:2", "shm:3"] };

/// Runs one benchmark under `kawarimi run` and migrates it twice while it computes; with
/// `moves`, on shared memory, the ranks' hosts changing at each migration as it says.
fn migrate_twice(name: &str, class: &str, moves: Option<&HostMoves>) {
    let job_name = format!("npb-{name}-{}", std::process::id());
    let exe = bin(name).display().to_string();
    let words = ["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", &RANKS.to_string(), &exe, class];
    let labels = std::env::temp_dir().join(format!("{job_name}.hosts"));
    if let Some(m) = moves {
        std::fs::write(&labels, m.labels[0]).unwrap();
    }
    let mut job = KawarimiJob::start(&job_name, &words, |cmd| {
        if moves.is_some() {
            cmd.env("KAWARIMI_SHM", "1").env("KAWARIMI_HOST_ID_FILE", &labels);
        } else {
            cmd.env("KAWARIMI_SHM", "0");
        }
    });
    let (mut ctl, _, _) = job.ready(RANKS, Duration::from_secs(30));
    let mut carried = Vec::new();
    let mut carriers = |ctl: &mut kawarimi_control::client::CtlClient, round: usize| {
        let Some(m) = moves else { return };
        let got: Vec<String> = ctl.status().expect("status").ranks.iter().map(|r| r.transport.clone()).collect();
        let want = m.carriers[round];
        assert!(
            got.iter().all(|t| t.ends_with(want)),
            "npb-{name} on {:?}: every rank should run on {want}: {got:?}",
            m.labels[round]
        );
        carried.push(want);
    };
    carriers(&mut ctl, 0);
    // Both switches land early in the run: the shortest kernel here (CG class A) computes for
    // about 0.35 s at 4 ranks on a 2-core machine, and a faster machine halves that.
    for (round, delay_ms) in [(1u32, 100), (2, 50)] {
        thread::sleep(Duration::from_millis(delay_ms));
        match ctl.quiesce(Duration::from_secs(30)) {
            Ok(Reply::SafeToUnplug { .. }) => {}
            other => panic!("npb-{name}: quiesce {round}: {other:?} (did the run end before it? use a larger class)"),
        }
        if let Some(m) = moves {
            std::fs::write(&labels, m.labels[round as usize]).unwrap();
        }
        match ctl.resume(Duration::from_secs(30), None) {
            Ok(Reply::Resumed { epoch, .. }) => assert_eq!(epoch, round),
            other => panic!("npb-{name}: resume {round}: {other:?}"),
        }
        carriers(&mut ctl, round as usize);
    }
    drop(ctl);
    let (ok, out, err) = job.finish(Duration::from_secs(300));
    let _ = std::fs::remove_file(&labels);
    assert!(
        ok && out.contains("VERIFICATION SUCCESSFUL"),
        "npb-{name} class {class} after two migrations:\n{out}\n{err}"
    );
    let line = out.lines().find(|l| l.starts_with("npb=")).unwrap_or("");
    eprintln!("migrated twice ({}): {line}", if carried.is_empty() { "tcp".to_string() } else { carried.join(" -> ") });
}

#[test]
fn every_kernel_verifies_after_two_migrations_in_mid_run() {
    // Classes long enough that both migrations land inside the computation (see migrate_twice).
    for (name, class) in
        [("ep", "W"), ("is", "A"), ("cg", "A"), ("mg", "A"), ("ft", "A"), ("lu", "W"), ("bt", "W"), ("sp", "W")]
    {
        migrate_twice(name, class, None);
    }
}

/// A resume rediscovers co-location under the NPB kernels too: the job starts on shared
/// memory, the first migration splits the ranks over two hosts and the second brings them
/// back, each in mid-run, and every kernel still verifies.
#[test]
fn kernels_verify_when_migrations_move_them_between_shared_memory_and_tcp() {
    for (name, class) in [("is", "A"), ("cg", "A"), ("mg", "A"), ("ft", "A"), ("lu", "W")] {
        migrate_twice(name, class, Some(&SHM_TCP_SHM));
    }
}
