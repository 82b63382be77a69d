//! `kawarimi ctl`: talks to a running job's coordinator.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use kawarimi_runtime::control::client::CtlClient;
use kawarimi_runtime::control::jobfile::JobFile;
use kawarimi_transports::auth::JobSecret;

#[derive(Subcommand)]
pub enum CtlCmd {
    /// Show the job: ranks, hosts, processes.
    Status,
    /// List this user's running jobs on this host.
    List,
}

pub fn ctl(cmd: CtlCmd, job: Option<&str>, timeout_s: f64, json: bool) -> Result<ExitCode, String> {
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        return Err(format!("--timeout {timeout_s} must be a positive number of seconds"));
    }
    let timeout = Duration::from_secs_f64(timeout_s);
    match cmd {
        CtlCmd::List => {
            let jobs = JobFile::list().map_err(|e| format!("cannot read the job directory: {e}"))?;
            if json {
                let v: Vec<_> = jobs.iter().map(|j| serde_json::json!({"job": j.job, "coordinator": j.coordinator.to_string(), "pid": j.pid})).collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for j in &jobs {
                    println!("{}\t{}\tpid {}", j.job, j.coordinator, j.pid);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCmd::Status => {
            let jf = JobFile::find(job)?;
            let secret = JobSecret::from_hex(&jf.secret).map_err(|e| format!("job file of {}: {e}", jf.job))?;
            let mut c = CtlClient::connect(jf.coordinator, &secret, timeout).map_err(|e| e.to_string())?;
            let st = c.status().map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?);
            } else {
                println!("job {} ({} ranks, coordinator {})", st.job, st.size.map_or("?".into(), |s| s.to_string()), jf.coordinator);
                for i in &st.ranks {
                    let state = if i.finalized { "finalized" } else if i.connected { "running" } else { "LOST" };
                    println!("  rank {:>5}  {:<20} pid {:<8} {state}", i.rank, i.host, i.pid);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
