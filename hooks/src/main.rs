//! `kawarimi`: runs MPI jobs on kawarimi's runtime and controls them.
//!
//! - `kawarimi run [mpirun flags] PROGRAM [ARGS]` starts the job's coordinator, then Open
//!   MPI's `mpirun` with `libkawarimi.so` preloaded into every rank, the coordinator's address
//!   and a fresh per-job secret. Every flag is passed to `mpirun` unchanged.
//! - `kawarimi ctl status` asks a running job's coordinator for the job's state.

mod ctl;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

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
        /// Path of libkawarimi.so (default: next to this executable).
        #[arg(long, env = "KAWARIMI_LIB")]
        lib: Option<PathBuf>,
        /// The mpirun launcher to wrap.
        #[arg(long, default_value = "mpirun")]
        mpirun: String,
        /// Name of the job, for `kawarimi ctl --job` (default: kw-<pid>).
        #[arg(long = "job-name")]
        job_name: Option<String>,
        /// mpirun's flags, then the program and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Control a running job.
    Ctl {
        #[command(subcommand)]
        command: ctl::CtlCmd,
        /// The job (default: the only job of this user on this host).
        #[arg(long, global = true)]
        job: Option<String>,
        /// Seconds to wait for the coordinator.
        #[arg(long, global = true, default_value_t = 10.0)]
        timeout: f64,
        /// Print machine-readable JSON.
        #[arg(long, global = true)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run { lib, mpirun, job_name, args } => run::run(lib, &mpirun, job_name, &args),
        Cmd::Ctl { command, job, timeout, json } => ctl::ctl(command, job.as_deref(), timeout, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kawarimi: {e}");
            ExitCode::from(2)
        }
    }
}
