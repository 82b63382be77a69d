//! Real one-sided libraries nobody here wrote, from Debian's packages, on kawarimi's windows:
//! ARMCI-MPI (the communication layer of Global Arrays) and OpenCoarrays (coarray Fortran).
//! Our programs `tests/armci/armci.c` and `tests/coarray/coarray.f90` drive them and check
//! every value. Each runs at 2, 3 and 4 ranks natively (Open MPI's `osc` over shared memory:
//! native one-sided needs it, its TCP path has no window component), and under kawarimi over
//! TCP and over shared memory; then under `kawarimi run` with live switches in mid-run.
//!
//! Defects these found: OpenCoarrays' `event wait` holds `MPI_Win_lock_all(MPI_MODE_NOCHECK)`
//! on its own window while other images lock it exclusively to post; kawarimi took the locks
//! regardless of the assertion and the images deadlocked.

use std::path::Path;
use std::time::Duration;

use kawarimi_tests::job::{switch_once, KawarimiJob};
use kawarimi_tests::{check_program_lang, compiled_lang, Lang, ModeKind};

fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// `$name` runs the program `$program` of `$lang` in mode `$kind` at 2, 3 and 4 ranks.
macro_rules! library_tests {
    ($($name:ident: $lang:expr, $program:literal, $kind:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check_program_lang($lang, $program, $kind, build_dir());
            }
        )*
    };
}

library_tests! {
    armci_natively: Lang::Armci, "armci", ModeKind::Native;
    armci_under_kawarimi_over_tcp: Lang::Armci, "armci", ModeKind::Kawarimi;
    armci_under_kawarimi_on_shared_memory: Lang::Armci, "armci", ModeKind::KawarimiShm;
    coarray_natively: Lang::Coarray, "coarray", ModeKind::Native;
    coarray_under_kawarimi_over_tcp: Lang::Coarray, "coarray", ModeKind::Kawarimi;
    coarray_under_kawarimi_on_shared_memory: Lang::Coarray, "coarray", ModeKind::KawarimiShm;
}

/// Runs `name` (of `lang`) for `rounds` rounds at 4 ranks on shared memory under `kawarimi
/// run`, quiescing and resuming it `switches` times while it runs; it must still verify.
fn survives_switches(lang: Lang, name: &str, rounds: u32, switches: u32) {
    const RANKS: u32 = 4;
    let exe = compiled_lang(lang, name, build_dir());
    let words: Vec<String> = ["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", "4"]
        .iter()
        .map(|s| s.to_string())
        .chain([exe.display().to_string(), rounds.to_string()])
        .collect();
    let mut job = KawarimiJob::start(&format!("{name}-switch-{}", std::process::id()), &words, |cmd| {
        cmd.env("KAWARIMI_SHM", "1");
    });
    let (mut c, _pids, _coord) = job.ready(RANKS, Duration::from_secs(30));
    for i in 0..switches {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(switch_once(&mut c, &format!("{name}, switch {i}")), i + 1);
    }
    drop(c);
    let (ok, out, err) = job.finish(Duration::from_secs(180));
    assert!(
        ok && out.contains(&format!("OK {name}")),
        "{name} failed across switches:\nstdout:\n{out}\nstderr:\n{err}"
    );
}

/// ARMCI-MPI's puts, gets, accumulates, read-modify-writes and mutexes through 10 switches.
#[test]
fn armci_survives_10_switches() {
    survives_switches(Lang::Armci, "armci", 3_000, 10);
}

/// Coarray puts and gets, collectives, events, atomics, critical sections and locks through
/// 10 switches.
#[test]
fn coarray_survives_10_switches() {
    survives_switches(Lang::Coarray, "coarray", 300, 10);
}
