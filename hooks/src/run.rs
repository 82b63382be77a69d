//! `kawarimi run`: the job's coordinator plus `mpirun` with kawarimi preloaded.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kawarimi_control::client::COORD_ENV;
use kawarimi_control::coordinator::CoordinatorConfig;
use kawarimi_control::jobfile::JobFile;
use kawarimi_control::server;
use kawarimi_runtime::wireup::public_ip;
use kawarimi_transports::auth::{JobSecret, SECRET_ENV};
use nix::spawn::{posix_spawnp, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

fn default_lib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.join("libkawarimi.so");
    lib.exists().then_some(lib)
}

/// The mpirun command line: kawarimi's `-x` exports first, then the user's words unchanged.
/// `-x NAME` exports the variable as set in mpirun's own environment, so the secret never
/// appears on a command line where other users could read it.
pub fn mpirun_argv(mpirun: &str, user_args: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = vec![mpirun.to_string()];
    argv.extend(["-x", "LD_PRELOAD", "-x", SECRET_ENV, "-x", COORD_ENV].map(String::from));
    argv.extend(user_args.iter().cloned());
    argv
}

/// `LD_PRELOAD` for the ranks: kawarimi first, then whatever the user preloads already.
pub fn preload_value(lib: &Path) -> String {
    match std::env::var("LD_PRELOAD") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", lib.display()),
        _ => lib.display().to_string(),
    }
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
    let lib =
        lib.or_else(default_lib).ok_or("libkawarimi.so not found next to kawarimi; pass --lib or set KAWARIMI_LIB")?;
    let lib = lib.canonicalize().map_err(|e| format!("{}: {e}", lib.display()))?;
    // Blocked here, in every thread started from now on, and waited for by one thread that
    // forwards them to mpirun (which starts with an empty mask: see spawn_unblocked).
    forwarded().thread_block().map_err(|e| format!("cannot block signals: {e}"))?;

    let secret = JobSecret::generate().map_err(|e| e.to_string())?;
    let job = job_name.unwrap_or_else(|| format!("kw-{}", std::process::id()));
    JobFile::check_name(&job)?;
    let ip = public_ip()?;
    let config = CoordinatorConfig::from_env()?;
    let coordinator = server::spawn(None, ip, job.clone(), secret.clone(), config)
        .map_err(|e| format!("cannot start the coordinator: {e}"))?;
    let jobfile = JobFile::new(job, coordinator.addr(), &secret);
    jobfile.write().map_err(|e| format!("cannot write the job file: {e}"))?;

    // mpirun is started with posix_spawn so that it gets an empty signal mask: a child
    // inherits its parent thread's mask (std's Command keeps it), and mpirun must receive
    // the signals this process forwards.
    let mut env: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| k != "LD_PRELOAD" && k != SECRET_ENV && k != COORD_ENV).collect();
    env.push(("LD_PRELOAD".into(), preload_value(&lib)));
    env.push((SECRET_ENV.into(), secret.to_hex()));
    env.push((COORD_ENV.into(), coordinator.addr().to_string()));
    let child_pid = match spawn_unblocked(&mpirun_argv(mpirun, args), &env) {
        Ok(p) => p,
        Err(e) => {
            jobfile.remove();
            return Err(format!("cannot start {mpirun}: {e}"));
        }
    };
    std::thread::Builder::new()
        .name("kawarimi-signals".into())
        .spawn(move || loop {
            if let Ok(sig) = forwarded().wait() {
                let _ = kill(child_pid, sig);
            }
        })
        .map_err(|e| e.to_string())?;
    let status = loop {
        match waitpid(child_pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(|e| format!("waiting for {mpirun}: {e}")),
        }
    };
    jobfile.remove();
    drop(coordinator);
    Ok(match status? {
        WaitStatus::Exited(_, c) => ExitCode::from(c.clamp(0, 255) as u8),
        WaitStatus::Signaled(_, sig, _) => ExitCode::from((128 + sig as i32).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    })
}

/// Starts `argv` (looked up in `PATH`) with `env` and an empty signal mask.
fn spawn_unblocked(argv: &[String], env: &[(String, String)]) -> Result<Pid, String> {
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
    let args = argv.iter().map(|a| cstr(a)).collect::<Result<Vec<_>, _>>()?;
    let envp = env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
    let mut attr = PosixSpawnAttr::init().map_err(|e| e.to_string())?;
    attr.set_sigmask(&SigSet::empty()).map_err(|e| e.to_string())?;
    attr.set_flags(PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK).map_err(|e| e.to_string())?;
    let actions = PosixSpawnFileActions::init().map_err(|e| e.to_string())?;
    posix_spawnp(&args[0], &actions, &attr, &args, &envp).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::SigmaskHow;

    #[test]
    fn user_flags_follow_kawarimis_exports_unchanged() {
        let args: Vec<String> = ["-np", "4", "--oversubscribe", "-x", "FOO", "./prog", "-v"].map(String::from).to_vec();
        let argv = mpirun_argv("mpirun", &args);
        assert_eq!(argv[..7], ["mpirun", "-x", "LD_PRELOAD", "-x", SECRET_ENV, "-x", COORD_ENV]);
        assert_eq!(argv[7..], args[..]);
        assert!(preload_value(Path::new("/x/libkawarimi.so")).starts_with("/x/libkawarimi.so"));
    }

    #[test]
    fn the_child_starts_with_no_blocked_signals_even_when_the_parent_blocks_them() {
        forwarded().thread_block().unwrap();
        let out = std::env::temp_dir().join(format!("kawarimi-sigmask-{}", std::process::id()));
        let argv = ["sh", "-c", &format!("grep SigBlk /proc/self/status > {}", out.display())].map(String::from);
        let env: Vec<(String, String)> = std::env::vars().collect();
        let pid = spawn_unblocked(&argv, &env).unwrap();
        assert!(matches!(waitpid(pid, None), Ok(WaitStatus::Exited(_, 0))));
        let text = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded()), None);
        assert_eq!(text.split_whitespace().nth(1), Some("0000000000000000"), "{text}");
    }
}
