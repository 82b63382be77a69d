//! `kawarimi vmm`: the operator's side of a migration (see docs/vmm.md): `check` reads a plan
//! and checks it against the live VMs without touching them; `migrate` moves the VMs and the
//! job in them, `checkpoint` saves them to files and `restore` starts them again
//! ([`kawarimi_vmm::migrate`]).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Subcommand;
use kawarimi_control::client::CtlClient;
use kawarimi_control::proto::Reply;
use kawarimi_vmm::migrate::{self, Action, Job, Options, Order, Switched};
use kawarimi_vmm::plan::Plan;
use nix::sys::signal::{SigSet, Signal};

#[derive(Subcommand)]
pub enum VmmCmd {
    /// Read a migration plan and check it against the live VMs, touching nothing: every
    /// source QEMU answers on its QMP socket and has the devices the plan unplugs, every
    /// destination QEMU waits for an incoming migration. Prints what it found; exits 0 if the
    /// plan can be carried out.
    Check {
        /// The plan file (TOML; docs/vmm.md describes it).
        #[arg(long)]
        plan: String,
        /// Seconds each QMP connection and call may take.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Move the job's VMs as the plan says: quiesce the job, unplug each VM's passthrough
    /// devices, live-migrate the VMs together, plug the destinations' devices, resume. By
    /// default the job resumes over TCP right after the unplug and computes while the VMs
    /// move, then switches onto the destinations' devices; `--pause` keeps it quiesced
    /// throughout. A failure or Ctrl-C rolls back to a running job on the source VMs.
    Migrate {
        #[command(flatten)]
        common: MoveArgs,
        /// Keep the job quiesced for the whole move (one switch instead of two).
        #[arg(long)]
        pause: bool,
        /// Print the steps and touch nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Save the job's VMs to files (DIR/<vm>.vmstate): quiesce the job, unplug the devices,
    /// migrate every VM into its file. The job stays quiesced until `vmm restore`.
    Checkpoint {
        #[command(flatten)]
        common: MoveArgs,
        /// The directory the VMs are saved in.
        #[arg(long)]
        to: PathBuf,
    },
    /// Start the VMs a checkpoint saved in the plan's destination QEMUs (started with
    /// -incoming defer), plug their devices, and resume the job.
    Restore {
        #[command(flatten)]
        common: MoveArgs,
        /// The directory `vmm checkpoint` saved the VMs in.
        #[arg(long)]
        from: PathBuf,
    },
}

/// What every move of the VMs takes.
#[derive(clap::Args)]
pub struct MoveArgs {
    /// The plan file (TOML; docs/vmm.md describes it).
    #[arg(long)]
    plan: String,
    /// The job (default: the only job of this user on this host).
    #[arg(long)]
    job: Option<String>,
    /// Print the record of the move as JSON on stdout instead of the progress lines.
    #[arg(long)]
    json: bool,
    /// Also write the record to FILE.json and its timeline plot to FILE.svg.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Seconds each QMP call and each job switch may take.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Seconds an unplug may wait for the guest to release the device.
    #[arg(long, default_value_t = 30.0)]
    unplug_timeout: f64,
    /// Seconds a VM's live migration (or its save or restore) may take.
    #[arg(long, default_value_t = 600.0)]
    migration_timeout: f64,
}

/// The job, through its coordinator.
struct CtlJob {
    client: CtlClient,
    timeout: Duration,
}

fn switched(r: Reply) -> Result<Switched, String> {
    match r {
        Reply::SafeToUnplug { epoch, ranks, total_ms, slowest_rank_ms }
        | Reply::Resumed { epoch, ranks, total_ms, slowest_rank_ms } => {
            Ok(Switched { epoch: u64::from(epoch), ranks, total_ms, slowest_rank_ms })
        }
        other => Err(format!("unexpected answer from the coordinator: {other:?}")),
    }
}

impl Job for CtlJob {
    fn quiesce(&mut self) -> Result<Switched, String> {
        self.client.quiesce(self.timeout).map_err(|e| e.to_string()).and_then(switched)
    }
    fn resume(&mut self) -> Result<Switched, String> {
        self.client.resume(self.timeout, None).map_err(|e| e.to_string()).and_then(switched)
    }
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{name} {v} must be a positive number of seconds"))
    }
}

pub fn vmm(command: VmmCmd) -> Result<ExitCode, String> {
    match command {
        VmmCmd::Check { plan, timeout } => {
            let p = Plan::load(Path::new(&plan)).map_err(|e| e.to_string())?;
            let found = p.check(&plan, Duration::from_secs_f64(timeout.max(0.001))).map_err(|e| e.to_string())?;
            for (v, f) in p.vm.iter().zip(&found) {
                let (major, minor, micro) = f.source.0;
                println!("{}: QEMU {major}.{minor}.{micro} at {} ({})", v.name, v.qmp.display(), f.source.1);
                println!(
                    "  devices: {}",
                    if f.devices.is_empty() { "none with an id".into() } else { f.devices.join(", ") }
                );
                println!("  unplug: {}", if v.unplug.is_empty() { "nothing".into() } else { v.unplug.join(", ") });
                println!(
                    "  destination: {} waits for a migration from {}",
                    v.destination.qmp.display(),
                    v.destination.uri
                );
                let plug: Vec<&str> = v.destination.plug.iter().map(|d| d.id.as_str()).collect();
                println!("  plug there: {}", if plug.is_empty() { "nothing".into() } else { plug.join(", ") });
            }
            println!("plan {plan}: {} VM(s) checked, nothing touched", found.len());
            Ok(ExitCode::SUCCESS)
        }
        VmmCmd::Migrate { common, pause, dry_run } => {
            let order = if pause { Order::Pause } else { Order::Through };
            if dry_run {
                let p = Plan::load(Path::new(&common.plan)).map_err(|e| e.to_string())?;
                for (i, step) in migrate::steps(&p, order).iter().enumerate() {
                    println!("{:2}. {step}", i + 1);
                }
                println!("(dry run: nothing touched)");
                return Ok(ExitCode::SUCCESS);
            }
            carry_out(common, order, Action::Migrate)
        }
        VmmCmd::Checkpoint { common, to } => carry_out(common, Order::Pause, Action::Checkpoint(&to)),
        VmmCmd::Restore { common, from } => carry_out(common, Order::Pause, Action::Restore(&from)),
    }
}

/// Checks the plan (what the action touches of it), reaches the job, and runs the action.
fn carry_out(a: MoveArgs, order: Order, action: Action<'_>) -> Result<ExitCode, String> {
    let p = Plan::load(Path::new(&a.plan)).map_err(|e| e.to_string())?;
    let timeout = seconds("--timeout", a.timeout)?;
    // A checkpoint has no destinations yet; a restore's sources are gone.
    if matches!(action, Action::Migrate) {
        p.check(&a.plan, timeout).map_err(|e| e.to_string())?;
    }
    let (client, _) = crate::ctl::connect(a.job.as_deref(), timeout)?;
    let mut job = CtlJob { client, timeout };
    let interrupted = Arc::new(AtomicBool::new(false));
    watch_interrupts(interrupted.clone())?;
    let json = a.json;
    let say = move |line: &str| {
        if !json {
            println!("{line}");
        }
    };
    let options = Options {
        order,
        qmp_timeout: timeout,
        unplug_timeout: seconds("--unplug-timeout", a.unplug_timeout)?,
        migration_timeout: seconds("--migration-timeout", a.migration_timeout)?,
        progress_every: Duration::from_millis(200),
        interrupted: &interrupted,
        say: &say,
    };
    let (rec, failure) = match migrate::carry_out(&p, &mut job, &options, action) {
        Ok(rec) => (rec, None),
        Err(b) => {
            let (f, rec) = *b;
            (rec, Some(f))
        }
    };
    let text = serde_json::to_string_pretty(&rec).map_err(|e| e.to_string())?;
    if let Some(base) = &a.record {
        let with = |ext: &str| base.with_extension(ext);
        std::fs::write(with("json"), &text).map_err(|e| format!("{}: {e}", with("json").display()))?;
        std::fs::write(with("svg"), rec.svg()).map_err(|e| format!("{}: {e}", with("svg").display()))?;
    }
    if json {
        println!("{text}");
    } else {
        print_summary(&rec);
        if let Action::Checkpoint(dir) = action {
            if failure.is_none() {
                println!(
                    "saved in {}; the job stays quiesced until `kawarimi vmm restore --from {}`",
                    dir.display(),
                    dir.display()
                );
            }
        }
    }
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(f) => Err(format!("the {} failed: {f}", rec.action)),
    }
}

/// Sets `flag` on the first SIGINT or SIGTERM (blocked in every thread, and waited for by one
/// of its own): the move then rolls back instead of dying half-way.
fn watch_interrupts(flag: Arc<AtomicBool>) -> Result<(), String> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().map_err(|e| format!("cannot block signals: {e}"))?;
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("kawarimi vmm: {sig:?}: rolling the migration back");
            flag.store(true, Ordering::SeqCst);
        }
    });
    Ok(())
}

fn print_summary(rec: &migrate::Record) {
    println!("timeline (seconds from the start):");
    for ph in &rec.phases {
        println!(
            "  {:>8.3} {:>8.3}  {:<10} {:<10} {}{}",
            ph.start_s,
            ph.end_s,
            ph.vm.as_deref().unwrap_or("job"),
            ph.phase,
            if ph.ok { "" } else { "FAILED: " },
            ph.detail
        );
    }
    for m in &rec.moved {
        println!(
            "{}: migrated {:.1} MiB in {:.3} s, downtime {} ms",
            m.vm,
            m.transferred_bytes as f64 / f64::from(1 << 20),
            m.migration_s,
            m.downtime_ms.map_or("?".into(), |d| d.to_string())
        );
    }
    println!("move took {:.3} s; the job stalled {:.3} s", rec.wall_s, rec.job_stall_s);
}
