//! The rank's lifeline to its launcher: a rank ends when the launcher that started it is gone.
//!
//! Under native Open MPI a rank whose `mpirun` (or `orted`) dies is ended by the MPI library
//! itself: it loses its PMIx server and aborts. kawarimi never initialises that library, so
//! without this watch a rank outlives a killed launcher for ever, re-parented to init, and
//! rank 0 keeps its coordinator and job file. The launcher forks the rank, so the watch looks
//! at the rank's parent every [`POLL_INTERVAL`]: a parent that changed (the rank was
//! re-parented) means the launcher went away.
//!
//! Only the process that started the rank counts. Under `kawarimi run` that is `mpirun`, not
//! `kawarimi run`: a `kawarimi run` that is killed outright takes the coordinator with it, and
//! the job runs on without switching, as before (`kawarimi run` passes any signal it can take
//! on to `mpirun`, which then ends and the ranks with it).
//!
//! [`Lifeline::check`] decides from what it is given, so it is tested without processes.

use std::time::Duration;

/// How often the watch looks. A killed launcher's ranks end within about this long.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What the rank watches: the parent it had when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifeline {
    pub parent: u32,
}

impl Lifeline {
    /// Why the launcher is gone, or `None` while it is there. `parent_now` is the rank's
    /// parent pid now.
    pub fn check(&self, parent_now: u32) -> Option<String> {
        (parent_now != self.parent).then(|| {
            format!(
                "the launcher that started this rank (pid {}) has gone: the rank's parent is now pid {parent_now}",
                self.parent
            )
        })
    }
}

/// Starts the watch for a rank started by a launcher: `on_gone` runs once, with the reason,
/// when the launcher is gone (it is expected to end the process).
pub fn watch(on_gone: impl FnOnce(String) + Send + 'static) -> Result<(), String> {
    let lifeline = Lifeline { parent: std::os::unix::process::parent_id() };
    std::thread::Builder::new()
        .name("kawarimi-lifeline".into())
        .spawn(move || loop {
            std::thread::sleep(POLL_INTERVAL);
            if let Some(why) = lifeline.check(std::os::unix::process::parent_id()) {
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

    #[test]
    fn a_rank_is_fine_with_its_parent_and_told_why_once_reparented() {
        let l = Lifeline { parent: 100 };
        assert_eq!(l.check(100), None);
        let why = l.check(1).expect("re-parented");
        assert!(why.contains("pid 100") && why.contains("now pid 1"), "{why}");
    }

    #[test]
    fn this_process_keeps_its_parent() {
        let l = Lifeline { parent: std::os::unix::process::parent_id() };
        assert_eq!(l.check(std::os::unix::process::parent_id()), None);
    }
}
