//! What a rank cleans up when it ends in a way other than `MPI_Finalize`.
//!
//! The only thing kawarimi leaves on disk is the job file of a coordinator a rank hosts
//! (rank 0 under plain `mpirun`; see `kawarimi_control::jobfile`). An abort or fatal
//! error removes it in [`crate::export::die`]. A launcher that ends a job sends its ranks
//! SIGTERM (or the user's Ctrl-C or a hang-up arrives): for those, the hosting rank takes the
//! termination signals whose disposition is still the default, removes the file, and dies of
//! the same signal as before. A program's own handler is never replaced; a rank that cannot
//! clean up (SIGKILL, a program's handler) leaves a file that the next job or `kawarimi ctl`
//! reclaims, since its owner process is gone.

use std::ffi::c_int;

use kawarimi_control::jobfile;

const TERMINATING: [c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn on_terminating_signal(sig: c_int) {
    // Only async-signal-safe work here: two atomic loads and unlink(2).
    if let Some(path) = jobfile::owned_path() {
        // SAFETY: `path` is a NUL-terminated string that lives for the whole process.
        unsafe { libc::unlink(path.as_ptr()) };
    }
    // SA_RESETHAND put the default action back on entry: the signal raised again here is
    // delivered as soon as this handler returns, and ends the process as it would have.
    // SAFETY: raise(3) is async-signal-safe.
    unsafe { libc::raise(sig) };
}

/// Takes the termination signals that still have their default action, for a process that
/// owns a job file. Does nothing when it owns none.
pub fn install() {
    if jobfile::owned_path().is_none() {
        return;
    }
    for sig in TERMINATING {
        // SAFETY: an all-zero sigaction is a valid "query" buffer; sigaction(2) with a null
        // new action only reads the current one.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: see above; `old` is a valid out-pointer.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 || old.sa_sigaction != libc::SIG_DFL {
            continue;
        }
        // SAFETY: zeroed is a valid sigaction; the handler only calls async-signal-safe
        // functions; the mask is emptied by sigemptyset before use.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_terminating_signal as *const () as libc::sighandler_t;
            act.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}
