//! `kawarimi run`: the job's coordinator plus `mpirun` with kawarimi preloaded.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use kawarimi_runtime::control::client::COORD_ENV;
use kawarimi_runtime::control::coordinator::CoordinatorConfig;
use kawarimi_runtime::control::jobfile::JobFile;
use kawarimi_runtime::control::server;
use kawarimi_runtime::wireup::public_ip;
use kawarimi_transports::auth::{JobSecret, SECRET_ENV};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

fn default_lib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.join("libkawarimi.so");
    lib.exists().then_some(lib)
}

/// Builds the mpirun command line: kawarimi's `-x` exports first, then the user's words.
pub fn mpirun_command(mpirun: &str, lib: &Path, user_args: &[String]) -> Command {
    let mut cmd = Command::new(mpirun);
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", lib.display()),
        _ => lib.display().to_string(),
    };
    cmd.env("LD_PRELOAD", &preload);
    // `-x NAME` exports the variable as set in mpirun's own environment, so the secret never
    // appears on a command line where other users could read it.
    cmd.args(["-x", "LD_PRELOAD", "-x", SECRET_ENV, "-x", COORD_ENV]);
    cmd.args(user_args);
    cmd
}

/// The signals `kawarimi run` passes on to mpirun instead of dying of them.
fn forwarded() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        s.add(sig);
    }
    s
}

pub fn run(lib: Option<PathBuf>, mpirun: &str, job_name: Option<String>, args: &[String]) -> Result<ExitCode, String> {
    let lib = lib
        .or_else(default_lib)
        .ok_or("libkawarimi.so not found next to kawarimi; pass --lib or set KAWARIMI_LIB")?;
    let lib = lib.canonicalize().map_err(|e| format!("{}: {e}", lib.display()))?;
    // Blocked here, in every thread started from now on, and waited for by one thread that
    // forwards them; std resets the mask in the child, so mpirun gets them normally.
    forwarded().thread_block().map_err(|e| format!("cannot block signals: {e}"))?;

    let secret = JobSecret::generate().map_err(|e| e.to_string())?;
    let job = job_name.unwrap_or_else(|| format!("kw-{}", std::process::id()));
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("job name {job:?} must be letters, digits, '-', '_' or '.'"));
    }
    let ip = public_ip()?;
    let coordinator = server::spawn(None, ip, job.clone(), secret.clone(), CoordinatorConfig::default())
        .map_err(|e| format!("cannot start the coordinator: {e}"))?;
    let jobfile = JobFile { job, coordinator: coordinator.addr(), secret: secret.to_hex(), pid: std::process::id() };
    jobfile.write().map_err(|e| format!("cannot write the job file: {e}"))?;

    let mut cmd = mpirun_command(mpirun, &lib, args);
    cmd.env(SECRET_ENV, secret.to_hex()).env(COORD_ENV, coordinator.addr().to_string());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            jobfile.remove();
            return Err(format!("cannot start {mpirun}: {e}"));
        }
    };
    let child_pid = Pid::from_raw(child.id() as i32);
    std::thread::Builder::new()
        .name("kawarimi-signals".into())
        .spawn(move || loop {
            if let Ok(sig) = forwarded().wait() {
                let _ = kill(child_pid, sig);
            }
        })
        .map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| format!("waiting for {mpirun}: {e}"));
    jobfile.remove();
    drop(coordinator);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded()), None);
    let status = status?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_flags_follow_kawarimis_exports_unchanged() {
        let args: Vec<String> = ["-np", "4", "--oversubscribe", "-x", "FOO", "./prog", "-v"].map(String::from).to_vec();
        let cmd = mpirun_command("mpirun", Path::new("/x/libkawarimi.so"), &args);
        let got: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(got[..6], ["-x", "LD_PRELOAD", "-x", SECRET_ENV, "-x", COORD_ENV]);
        assert_eq!(got[6..], args[..]);
        let preload = cmd.get_envs().find(|(k, _)| *k == "LD_PRELOAD").and_then(|(_, v)| v).unwrap();
        assert!(preload.to_string_lossy().starts_with("/x/libkawarimi.so"));
    }
}
