//! Debian's `hpcc` (HPC Challenge, built by Debian against Open MPI; nobody here wrote it) at
//! 4 ranks with a small input (`tests/hpcc/hpccinf.txt`), natively and under kawarimi (over TCP,
//! and over shared memory with each way of moving large payloads): every check it makes must
//! pass (HPL's scaled residuals, PTRANS, RandomAccess and FFT error counts, and its overall
//! `Success=1`).

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use kawarimi_tests::{mode, ranks_not_on_shm, run_in, workspace_root, ModeKind};

fn hpcc() -> PathBuf {
    let p = PathBuf::from("/usr/bin/hpcc");
    if !p.exists() {
        panic!("/usr/bin/hpcc is missing: run ci/install-deps (it installs Debian's hpcc)");
    }
    p
}

/// Runs hpcc in a fresh folder in mode `kind`; returns its summary file's text and what the
/// ranks wrote to stderr.
fn run(kind: ModeKind) -> (String, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hpcc-{kind:?}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::copy(workspace_root().join("tests/hpcc/hpccinf.txt"), dir.join("hpccinf.txt")).unwrap();
    let out = run_in(&hpcc(), &[], Some(&dir), &mode(kind), 4, Duration::from_secs(300));
    assert!(out.success(), "hpcc failed ({kind:?}):\n{}", out.report());
    let err = out.stderr;
    let summary =
        fs::read_to_string(dir.join("hpccoutf.txt")).unwrap_or_else(|e| panic!("no hpccoutf.txt: {e}\n{err}"));
    (summary, err)
}

fn check(text: &str, mode: &str) {
    assert!(text.lines().any(|l| l.trim() == "Success=1"), "{mode}: hpcc did not report Success=1");
    assert!(!text.contains("FAILED"), "{mode}: a check FAILED:\n{text}");
    // PTRANS result rows: `WALL   500   500  80  80   2   2  ...  PASSED ...`.
    let ptrans: Vec<&str> = text
        .lines()
        .filter(|l| matches!(l.split_whitespace().next(), Some("WALL" | "CPU")))
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|n| n.parse::<u64>().is_ok()))
        .collect();
    assert!(!ptrans.is_empty() && ptrans.iter().all(|l| l.contains("PASSED")), "{mode}: PTRANS checks: {ptrans:?}");
    // HPL's scaled residual checks.
    let hpl: Vec<&str> = text.lines().filter(|l| l.starts_with("||Ax-b||") && l.contains("......")).collect();
    assert!(!hpl.is_empty() && hpl.iter().all(|l| l.contains("PASSED")), "{mode}: HPL residual checks: {hpl:?}");
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with("Found ")).collect();
    assert!(!found.is_empty() && found.iter().all(|l| l.starts_with("Found 0 errors")), "{mode}: {found:?}");
    for key in ["HPL_Tflops", "PTRANS_GBs", "MPIRandomAccess_GUPs", "MPIFFT_Gflops", "RandomlyOrderedRingLatency_usec"]
    {
        let v = text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or("missing");
        eprintln!("hpcc {mode}: {key}={v}");
    }
}

#[test]
fn hpcc_passes_every_check_natively_and_on_kawarimi_over_tcp() {
    check(&run(ModeKind::Native).0, "native");
    check(&run(ModeKind::Kawarimi).0, "kawarimi over TCP");
}

/// hpcc on shared memory, with large payloads crossing as kawarimi chooses, every payload by
/// single copy, and every payload through the rings: every check passes and every rank
/// reports its 3 peers on shared memory.
#[test]
fn hpcc_passes_every_check_on_shared_memory() {
    for kind in [ModeKind::KawarimiShm, ModeKind::KawarimiShmSingleCopy, ModeKind::KawarimiShmTwoCopy] {
        let (summary, stderr) = run(kind);
        check(&summary, &format!("{kind:?}"));
        let off = ranks_not_on_shm(&stderr, 4);
        assert!(off.is_empty(), "{kind:?}: ranks {off:?} not all on shared memory:\n{stderr}");
    }
}
