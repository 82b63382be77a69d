//! The rank's lifeline to its launcher: a rank ends when the launcher that started it is gone.
//!
//! Under native Open MPI a rank whose `mpirun` (or `orted`) dies is ended by the MPI library
//! itself: it loses its PMIx server and aborts. kawarimi never initialises that library, so
//! without this watch a rank outlives a killed launcher for ever, re-parented to init, and
//! rank 0 keeps its coordinator and job file. Two things are watched, every
//! [`POLL_INTERVAL`]:
//! - the parent process: the launcher forks the rank, so a parent that changes (the rank was
//!   re-parented) means the launcher went away;
//! - under `kawarimi run`, the `kawarimi run` process itself, on its own host
//!   ([`LAUNCHER_ENV`]: host, pid and start time). Killed outright, it cannot pass its signal
//!   on to `mpirun`, which then lives on with the ranks; a local rank that ends makes `mpirun`
//!   end the rest of the job.
//!
//! [`Lifeline::check`] decides from what it is given, so it is tested without processes.

use std::time::Duration;

use kawarimi_control::jobfile::process_start_ticks;

/// Set by `kawarimi run` for every rank: `HOST/PID/START_TICKS` of the `kawarimi run` process.
pub const LAUNCHER_ENV: &str = "KAWARIMI_LAUNCHER";

/// How often the watch looks. A killed launcher's ranks end within about this long.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A process named for good: its pid and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start_ticks: u64,
}

impl ProcessId {
    /// This very process.
    pub fn current() -> Option<ProcessId> {
        let pid = std::process::id();
        process_start_ticks(pid).map(|start_ticks| ProcessId { pid, start_ticks })
    }

    /// The value of [`LAUNCHER_ENV`] that names this process on `host`.
    pub fn to_env(self, host: &str) -> String {
        format!("{host}/{}/{}", self.pid, self.start_ticks)
    }
}

/// What the rank watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifeline {
    /// The parent the rank had when it started.
    pub parent: u32,
    /// `kawarimi run`, when it runs on this rank's host.
    pub run: Option<ProcessId>,
}

impl Lifeline {
    /// What to watch for this rank: its parent now, and `kawarimi run` if the launcher
    /// variable names this host. A malformed variable is an error (it is ours to set).
    pub fn new(parent: u32, host: &str, launcher_env: Option<&str>) -> Result<Lifeline, String> {
        let run = match launcher_env {
            None | Some("") => None,
            Some(v) => {
                let bad = || format!("{LAUNCHER_ENV}={v:?} is not HOST/PID/START_TICKS");
                let mut it = v.rsplitn(3, '/');
                let start_ticks = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
                let pid = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
                let on = it.next().ok_or_else(bad)?;
                (on == host).then_some(ProcessId { pid, start_ticks })
            }
        };
        Ok(Lifeline { parent, run })
    }

    /// Why the launcher is gone, or `None` while it is there. `parent_now` is the rank's
    /// parent pid now; `start_ticks_of` gives a live process's start time.
    pub fn check(&self, parent_now: u32, start_ticks_of: impl Fn(u32) -> Option<u64>) -> Option<String> {
        if parent_now != self.parent {
            return Some(format!(
                "the launcher that started this rank (pid {}) has gone: the rank's parent is now pid {parent_now}",
                self.parent
            ));
        }
        if let Some(run) = self.run {
            if start_ticks_of(run.pid) != Some(run.start_ticks) {
                return Some(format!("kawarimi run (pid {}), which launched this job, has gone", run.pid));
            }
        }
        None
    }
}

/// Starts the watch for a rank started by a launcher: `on_gone` runs once, with the reason,
/// when the launcher is gone (it is expected to end the process).
pub fn watch(host: &str, on_gone: impl FnOnce(String) + Send + 'static) -> Result<(), String> {
    let env = std::env::var(LAUNCHER_ENV).ok();
    let lifeline = Lifeline::new(std::os::unix::process::parent_id(), host, env.as_deref())?;
    std::thread::Builder::new()
        .name("kawarimi-lifeline".into())
        .spawn(move || loop {
            std::thread::sleep(POLL_INTERVAL);
            if let Some(why) = lifeline.check(std::os::unix::process::parent_id(), process_start_ticks) {
                on_gone(why);
                return;
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the launcher watch: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32, ticks: u64) -> impl Fn(u32) -> Option<u64> {
        move |p| (p == pid).then_some(ticks)
    }

    #[test]
    fn a_rank_with_its_parent_and_no_kawarimi_run_is_fine_until_reparented() {
        let l = Lifeline::new(100, "h", None).unwrap();
        assert_eq!(l.run, None);
        assert_eq!(l.check(100, |_| None), None);
        let why = l.check(1, |_| None).expect("re-parented");
        assert!(why.contains("pid 100") && why.contains("now pid 1"), "{why}");
    }

    #[test]
    fn kawarimi_run_on_this_host_is_watched_by_pid_and_start_time() {
        let l = Lifeline::new(100, "h", Some("h/42/777")).unwrap();
        assert_eq!(l.run, Some(ProcessId { pid: 42, start_ticks: 777 }));
        assert_eq!(l.check(100, alive(42, 777)), None);
        // Gone, or its pid taken by a process that started later.
        for probe in [alive(43, 777), alive(42, 778)] {
            let why = l.check(100, probe).expect("kawarimi run gone");
            assert!(why.contains("kawarimi run (pid 42)"), "{why}");
        }
    }

    #[test]
    fn kawarimi_run_on_another_host_is_not_watched_and_bad_values_are_refused() {
        assert_eq!(Lifeline::new(100, "h", Some("other/42/777")).unwrap().run, None);
        // A host name with a slash cannot confuse the parse: the last two fields are numbers.
        assert_eq!(Lifeline::new(1, "a/b", Some("a/b/5/6")).unwrap().run, Some(ProcessId { pid: 5, start_ticks: 6 }));
        for bad in ["h/42", "h/x/7", "h/42/y", "42"] {
            let e = Lifeline::new(100, "h", Some(bad)).unwrap_err();
            assert!(e.contains(LAUNCHER_ENV), "{e}");
        }
        assert_eq!(Lifeline::new(100, "h", Some("")).unwrap().run, None);
    }

    #[test]
    fn this_process_has_an_identity() {
        let me = ProcessId::current().expect("/proc/self/stat");
        assert_eq!(me.pid, std::process::id());
        let l = Lifeline::new(std::os::unix::process::parent_id(), "h", Some(&me.to_env("h"))).unwrap();
        assert_eq!(l.check(std::os::unix::process::parent_id(), process_start_ticks), None);
    }
}
