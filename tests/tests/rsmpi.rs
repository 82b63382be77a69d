//! Rust programs on rsmpi (the `mpi` crate) run on kawarimi both ways: preloaded like any
//! binary, and linked (one dependency and `use kawarimi as _;`, no LD_PRELOAD). Each run
//! also proves which MPI answered: with `KAWARIMI_TRANSPORT=carrier-pigeon`, a transport no
//! build has, kawarimi refuses to start and says so, while native Open MPI ignores the
//! variable.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kawarimi_tests::{kawarimi_lib, mpirun, workspace_root};

fn example(name: &str) -> PathBuf {
    let p = workspace_root().join("target/release").join(name);
    assert!(p.exists(), "{} missing: run `cargo build --release -p kawarimi-examples`", p.display());
    p
}

/// Runs `exe` on `ranks` ranks; `preload` adds kawarimi by LD_PRELOAD. Returns (success, output).
fn run(exe: &PathBuf, ranks: u32, preload: bool, extra_env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(mpirun().unwrap());
    cmd.args(["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", &ranks.to_string()]);
    if preload {
        let lib = kawarimi_lib().unwrap_or_else(|e| panic!("{e}"));
        cmd.arg("-x").arg(format!("LD_PRELOAD={}", lib.display()));
    }
    for (k, v) in extra_env {
        cmd.arg("-x").arg(format!("{k}={v}"));
    }
    cmd.arg(exe).env_remove("LD_PRELOAD").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start mpirun");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{} did not finish in 60 s", exe.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

const REFUSED: &str = "\"carrier-pigeon\" is not available";

#[test]
fn plain_rsmpi_program_runs_natively_and_preloaded() {
    let exe = example("rsmpi-ring");
    for ranks in [2, 3, 4] {
        let (ok, out) = run(&exe, ranks, false, &[]);
        assert!(ok && out.contains("OK rsmpi ring"), "native, {ranks} ranks:\n{out}");
        let (ok, out) = run(&exe, ranks, true, &[]);
        assert!(ok && out.contains("OK rsmpi ring"), "preloaded, {ranks} ranks:\n{out}");
    }
    // Natively the variable means nothing; preloaded, kawarimi is the one refusing.
    let (ok, out) = run(&exe, 2, false, &[("KAWARIMI_TRANSPORT", "carrier-pigeon")]);
    assert!(ok && !out.contains(REFUSED), "native Open MPI answered:\n{out}");
    let (ok, out) = run(&exe, 2, true, &[("KAWARIMI_TRANSPORT", "carrier-pigeon")]);
    assert!(!ok && out.contains(REFUSED), "kawarimi answered the preloaded program:\n{out}");
}

#[test]
fn linked_rsmpi_program_uses_kawarimi_without_preload() {
    let exe = example("rsmpi-ring-linked");
    for ranks in [2, 3, 4] {
        let (ok, out) = run(&exe, ranks, false, &[]);
        assert!(ok && out.contains("OK rsmpi ring"), "linked, {ranks} ranks:\n{out}");
    }
    let (ok, out) = run(&exe, 2, false, &[("KAWARIMI_TRANSPORT", "carrier-pigeon")]);
    assert!(!ok && out.contains(REFUSED), "kawarimi, linked in, answered without any preload:\n{out}");
}

/// `KAWARIMI_TRANSPORT=verbs` runs the job on verbs where this host has a port, and where it
/// has none ends MPI_Init with an error that says so, rather than a silent fall back to TCP.
/// (This host decides which half runs; the VM lab forces verbs on Soft-RoCE every time.)
#[test]
fn forced_verbs_runs_on_a_port_and_is_refused_without_one_naming_why() {
    let kawarimi = workspace_root().join("target/release/kawarimi");
    let devices = Command::new(&kawarimi).arg("devices").output().expect("run kawarimi devices");
    let (ok, out) = run(&example("rsmpi-ring"), 2, true, &[("KAWARIMI_TRANSPORT", "verbs")]);
    if devices.status.code() == Some(0) {
        assert!(ok, "forced verbs on a host with a port ({}):\n{out}", String::from_utf8_lossy(&devices.stdout));
    } else {
        assert!(!ok && out.contains("verbs was forced, but"), "forced verbs without a port:\n{out}");
    }
}
