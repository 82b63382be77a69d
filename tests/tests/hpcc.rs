//! Debian's `hpcc` (HPC Challenge, built by Debian against Open MPI; nobody here wrote it) at
//! 4 ranks with a small input (`tests/hpcc/hpccinf.txt`), natively and under kawarimi: every
//! check it makes must pass (HPL's scaled residuals, PTRANS, RandomAccess and FFT error
//! counts, and its overall `Success=1`).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kawarimi_tests::{kawarimi_lib, mpirun, ranks_not_on_shm, workspace_root};

fn hpcc() -> PathBuf {
    let p = PathBuf::from("/usr/bin/hpcc");
    if !p.exists() {
        panic!("/usr/bin/hpcc is missing: run ci/install-deps (it installs Debian's hpcc)");
    }
    p
}

/// Runs hpcc in a fresh folder (on kawarimi when `preload`, with shared memory between the
/// ranks too when `shm`); returns its summary file's text and what the ranks wrote to stderr.
fn run(preload: bool, shm: bool) -> (String, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "hpcc-{}-{}",
        match (preload, shm) {
            (false, _) => "native",
            (true, false) => "kawarimi",
            (true, true) => "kawarimi-shm",
        },
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::copy(workspace_root().join("tests/hpcc/hpccinf.txt"), dir.join("hpccinf.txt")).unwrap();
    let mut cmd = Command::new(mpirun().unwrap());
    cmd.args(["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", "4"]);
    if preload {
        cmd.arg("-x").arg(format!("LD_PRELOAD={}", kawarimi_lib().unwrap_or_else(|e| panic!("{e}")).display()));
    }
    if shm {
        cmd.args(["-x", "KAWARIMI_SHM=1", "-x", "KAWARIMI_REPORT=1"]);
    }
    let mut child = cmd
        .arg(hpcc())
        .current_dir(&dir)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hpcc did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hpcc failed (preload={preload}):\n{err}");
    let summary =
        fs::read_to_string(dir.join("hpccoutf.txt")).unwrap_or_else(|e| panic!("no hpccoutf.txt: {e}\n{err}"));
    (summary, err.into_owned())
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
fn hpcc_passes_every_check_natively_and_on_kawarimi() {
    check(&run(false, false).0, "native");
    check(&run(true, false).0, "kawarimi");
}

/// hpcc on shared memory: every check passes and every rank reports its 3 peers on it.
#[test]
fn hpcc_passes_every_check_on_shared_memory() {
    let (summary, stderr) = run(true, true);
    check(&summary, "kawarimi on shared memory");
    let off = ranks_not_on_shm(&stderr, 4);
    assert!(off.is_empty(), "ranks {off:?} not all on shared memory:\n{stderr}");
}
