//! `kawarimi`: runs MPI jobs on kawarimi's runtime and controls them.
//!
//! - `kawarimi run [mpirun flags] PROGRAM [ARGS]` starts the job's coordinator, then Open
//!   MPI's `mpirun` with `libkawarimi.so` preloaded into every rank, the coordinator's address
//!   and a fresh per-job secret. kawarimi's own options (`--job-name`, `--lib`, `--mpirun`)
//!   may stand anywhere before the program; every other word is passed to `mpirun` unchanged.
//! - `kawarimi ctl status` asks a running job's coordinator for the job's state.
//! - `kawarimi vmm check --plan plan.toml` checks a migration plan against the live VMs
//!   (the operator's side, issue 18, in progress; docs/vmm.md).
//! - `kawarimi devices` lists the verbs devices and active ports this host has now, as a rank
//!   would find them when it (re)discovers its transports.

mod ctl;
mod run;
mod run_args;
mod verbs_check;
mod vmm;

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
    /// `--map-by`, `--bind-to`, ...) and passes them to mpirun unchanged; kawarimi's own
    /// options below may stand before them or among them, anywhere before the program.
    Run {
        /// Path of libkawarimi.so (default: $KAWARIMI_LIB, else next to this executable).
        #[arg(long)]
        lib: Option<String>,
        /// The mpirun launcher to wrap (default: mpirun).
        #[arg(long)]
        mpirun: Option<String>,
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
    /// The operator's side of a migration, through QEMU's machine protocol (docs/vmm.md).
    Vmm {
        #[command(subcommand)]
        command: vmm::VmmCmd,
    },
    /// List the verbs devices and active ports of this host (what rediscovery would find).
    /// Exits 0 if at least one port is usable, 1 if none is.
    Devices,
    /// Check kawarimi's verbs transport between two hosts without MPI: frames of every size
    /// both ways, latency, bandwidth, and that dropping it leaves no uverbs descriptor open.
    /// Run `--listen PORT` on one host, then `--connect HOST:PORT` on the other.
    VerbsCheck {
        /// The verbs device to use (default: the first with an active port).
        #[arg(long)]
        device: Option<String>,
        #[arg(long, conflicts_with = "connect")]
        listen: Option<u16>,
        #[arg(long)]
        connect: Option<String>,
        /// Round trips for the latency figure.
        #[arg(long, default_value_t = 1000)]
        iterations: u32,
    },
}

fn devices() -> ExitCode {
    use kawarimi_transports::verbs;
    let found = verbs::discover();
    for p in &found.ports {
        println!(
            "{} port {}: {:?}, lid {}, gid[{}] {} ({:?}){}",
            p.device,
            p.port,
            p.fabric,
            p.lid,
            p.gid.index,
            p.gid.gid,
            p.gid.kind,
            p.netdev.as_deref().map(|n| format!(", netdev {n}")).unwrap_or_default()
        );
    }
    for why in &found.skipped {
        println!("skipped: {why}");
    }
    let held = verbs::open_uverbs_fds();
    if !held.is_empty() {
        eprintln!("kawarimi: discovery left uverbs descriptors open: {held:?}");
        return ExitCode::from(2);
    }
    if found.ports.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run { lib, mpirun, job_name, args } => {
            run_args::split(&args).and_then(|mut a| {
                // Options clap took (before mpirun's first word) and those found among mpirun's.
                for (option, value) in [("--lib", lib), ("--mpirun", mpirun), ("--job-name", job_name)] {
                    if let Some(v) = value {
                        a.set(option, v)?;
                    }
                }
                let lib = a.lib.map(PathBuf::from).or_else(|| std::env::var_os("KAWARIMI_LIB").map(PathBuf::from));
                run::run(lib, a.mpirun.as_deref().unwrap_or("mpirun"), a.job_name, &a.for_mpirun)
            })
        }
        Cmd::Ctl { command, job, timeout, json } => ctl::ctl(command, job.as_deref(), timeout, json),
        Cmd::Vmm { command } => vmm::vmm(command),
        Cmd::Devices => Ok(devices()),
        Cmd::VerbsCheck { device, listen, connect, iterations } => {
            verbs_check::verbs_check(device.as_deref(), listen, connect.as_deref(), iterations.max(1))
                .map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kawarimi: {e}");
            ExitCode::from(2)
        }
    }
}
