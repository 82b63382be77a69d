//! `kawarimi`: runs MPI jobs on kawarimi's runtime.
//!
//! `kawarimi run [mpirun flags] PROGRAM [ARGS]` wraps Open MPI's `mpirun`: it preloads
//! `libkawarimi.so` into every rank and hands the ranks a fresh per-job secret, which every
//! data-path connection must prove it holds. Every flag is passed to `mpirun` unchanged.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kawarimi", version, about = "Interconnect-transparent MPI switching runtime")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an MPI program on kawarimi: `kawarimi run -np 4 ./prog args`. Takes mpirun's flags
    /// (`-np/-n`, `--oversubscribe`, `--allow-run-as-root`, `-x`, `--host`, `--hostfile`,
    /// `--map-by`, `--bind-to`, ...) and passes them to mpirun unchanged.
    Run {
        /// Path of libkawarimi.so (default: next to this executable, or $KAWARIMI_LIB).
        #[arg(long, env = "KAWARIMI_LIB")]
        lib: Option<PathBuf>,
        /// The mpirun launcher to wrap.
        #[arg(long, default_value = "mpirun")]
        mpirun: String,
        /// mpirun's flags, then the program and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

fn default_lib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.join("libkawarimi.so");
    lib.exists().then_some(lib)
}

fn random_secret_hex() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Builds the mpirun command line: kawarimi's `-x` exports first, then the user's words.
fn mpirun_command(mpirun: &str, lib: &Path, user_args: &[String]) -> Command {
    let mut cmd = Command::new(mpirun);
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", lib.display()),
        _ => lib.display().to_string(),
    };
    cmd.env("LD_PRELOAD", &preload);
    // `-x NAME` exports the variable as set in mpirun's own environment, so the secret never
    // appears on a command line where other users could read it.
    cmd.args(["-x", "LD_PRELOAD", "-x", "KAWARIMI_JOB_SECRET"]);
    cmd.args(user_args);
    cmd
}

fn run(lib: Option<PathBuf>, mpirun: &str, args: &[String]) -> Result<(), String> {
    let lib = lib
        .or_else(default_lib)
        .ok_or("libkawarimi.so not found next to kawarimi; pass --lib or set KAWARIMI_LIB")?;
    let lib = lib.canonicalize().map_err(|e| format!("{}: {e}", lib.display()))?;
    let secret = random_secret_hex().map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let mut cmd = mpirun_command(mpirun, &lib, args);
    cmd.env("KAWARIMI_JOB_SECRET", secret);
    // Replace this process: mpirun's exit status and signals are the job's.
    let err = cmd.exec();
    Err(format!("cannot start {mpirun}: {err}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run { lib, mpirun, args } => run(lib, &mpirun, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kawarimi: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_flags_follow_kawarimis_exports_unchanged() {
        let args: Vec<String> = ["-np", "4", "--oversubscribe", "-x", "FOO", "./prog", "-v"].map(String::from).to_vec();
        let cmd = mpirun_command("mpirun", Path::new("/x/libkawarimi.so"), &args);
        let got: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(got[..4], ["-x", "LD_PRELOAD", "-x", "KAWARIMI_JOB_SECRET"]);
        assert_eq!(got[4..], args[..]);
        let preload = cmd.get_envs().find(|(k, _)| *k == "LD_PRELOAD").and_then(|(_, v)| v).unwrap();
        assert!(preload.to_string_lossy().starts_with("/x/libkawarimi.so"));
    }
}
