//! Tests of the harness itself (natively, no kawarimi needed).

use std::fs;
use std::path::Path;
use std::time::Duration;

use kawarimi_tests::{compiled, run, Mode};

fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// Pids of running processes whose command line mentions `needle`.
fn processes_running(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                // zombies have an empty cmdline, so whatever matches is live
                found.push(pid);
            }
        }
    }
    found
}

/// A job that never ends is killed at the timeout, reported as such, and
/// leaves no process behind.
#[test]
fn timeout_kills_the_whole_job() {
    let exe = compiled("harness_hang", build_dir());
    let out = run(&exe, &Mode::Native, 3, Duration::from_secs(3));
    assert!(out.timed_out, "expected a timeout:\n{}", out.report());
    assert!(!out.success());
    assert!(out.elapsed < Duration::from_secs(20), "killing took too long:\n{}", out.report());
    let report = out.report();
    assert!(report.contains("TIMED OUT") && report.contains("harness_hang"));
    assert!(report.contains("3 ranks") && report.contains("native"));
    let needle = exe.to_string_lossy().into_owned();
    let mut left = processes_running(&needle);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = processes_running(&needle);
    }
    assert!(left.is_empty(), "processes of the job survived: {left:?}\n{report}");
}
