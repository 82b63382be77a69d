//! `kawarimi vmm`: the operator's side of a migration (issue 18; see docs/vmm.md). So far:
//! `check`, which reads a plan and checks it against the live VMs without touching them.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use kawarimi_vmm::plan::Plan;

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
    }
}
