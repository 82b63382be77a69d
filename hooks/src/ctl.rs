//! `kawarimi ctl`: talks to a running job's coordinator.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use kawarimi_control::client::CtlClient;
use kawarimi_control::jobfile::JobFile;
use kawarimi_control::proto::Reply;
use kawarimi_transports::auth::JobSecret;

/// Connects to the coordinator of `job` (the only job of this user on this host by default).
pub(crate) fn connect(job: Option<&str>, timeout: Duration) -> Result<(CtlClient, JobFile), String> {
    let jf = JobFile::find(job)?;
    let secret = JobSecret::from_hex(&jf.secret).map_err(|e| format!("job file of {}: {e}", jf.job))?;
    let c = CtlClient::connect(jf.coordinator, &secret, timeout).map_err(|e| e.to_string())?;
    Ok((c, jf))
}

fn quiesce(c: &mut CtlClient, timeout: Duration, json: bool) -> Result<serde_json::Value, String> {
    if !json {
        println!("quiescing: every rank drains and releases its devices...");
    }
    let r = c.quiesce(timeout).map_err(|e| e.to_string())?;
    if let (false, Reply::SafeToUnplug { epoch, ranks, total_ms, slowest_rank_ms }) = (json, &r) {
        println!("safe to unplug (switch {epoch}, {ranks} ranks): quiesce took {total_ms:.2} ms, slowest rank {slowest_rank_ms:.2} ms");
    }
    serde_json::to_value(&r).map_err(|e| e.to_string())
}

fn resume(
    c: &mut CtlClient,
    timeout: Duration,
    transport: Option<String>,
    json: bool,
) -> Result<serde_json::Value, String> {
    if !json {
        println!("resuming: every rank rediscovers its networks and reconnects...");
    }
    let r = c.resume(timeout, transport).map_err(|e| e.to_string())?;
    if let (false, Reply::Resumed { epoch, ranks, total_ms, slowest_rank_ms }) = (json, &r) {
        println!("running again (epoch {epoch}, {ranks} ranks): resume took {total_ms:.2} ms, slowest rank {slowest_rank_ms:.2} ms");
    }
    serde_json::to_value(&r).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
pub enum CtlCmd {
    /// Show the job: ranks, hosts, processes, epoch, phase.
    Status,
    /// List this user's running jobs on this host.
    List,
    /// Drain every rank and release every device resource; prints "safe to unplug".
    Quiesce,
    /// Rediscover networks, reconnect and continue a quiesced job.
    Resume {
        /// Force a transport for every peer (for tests): `tcp`.
        #[arg(long)]
        transport: Option<String>,
    },
    /// Quiesce, run CMD while detached (e.g. move addresses or VMs), then resume.
    Migrate {
        /// Shell command to run while the job is detached; the resume happens even if it fails.
        #[arg(long)]
        exec: Option<String>,
        /// Force a transport after the move (for tests): `tcp`.
        #[arg(long)]
        transport: Option<String>,
    },
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
                let v: Vec<_> = jobs
                    .iter()
                    .map(|j| serde_json::json!({"job": j.job, "coordinator": j.coordinator.to_string(), "pid": j.pid}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for j in &jobs {
                    println!("{}\t{}\tpid {}", j.job, j.coordinator, j.pid);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCmd::Quiesce => {
            let (mut c, _) = connect(job, timeout)?;
            let r = quiesce(&mut c, timeout, json)?;
            if json {
                println!("{r}");
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCmd::Resume { transport } => {
            let (mut c, _) = connect(job, timeout)?;
            let r = resume(&mut c, timeout, transport, json)?;
            if json {
                println!("{r}");
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCmd::Migrate { exec, transport } => {
            let (mut c, _) = connect(job, timeout)?;
            let q = quiesce(&mut c, timeout, json)?;
            let mut exec_ok = true;
            let mut exec_ms = 0.0;
            if let Some(cmd) = &exec {
                if !json {
                    println!("running while detached: {cmd}");
                }
                let t = std::time::Instant::now();
                let status = std::process::Command::new("sh").arg("-c").arg(cmd).status();
                exec_ms = t.elapsed().as_secs_f64() * 1e3;
                exec_ok = matches!(&status, Ok(s) if s.success());
                if !exec_ok {
                    eprintln!("kawarimi: the command run while detached failed ({status:?}); resuming anyway");
                }
            }
            let r = resume(&mut c, timeout, transport, json)?;
            if json {
                println!("{}", serde_json::json!({"quiesce": q, "exec_ms": exec_ms, "exec_ok": exec_ok, "resume": r}));
            }
            Ok(if exec_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        CtlCmd::Status => {
            let (mut c, jf) = connect(job, timeout)?;
            let st = c.status().map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?);
            } else {
                println!(
                    "job {} ({} ranks, coordinator {}): {}, epoch {}",
                    st.job,
                    st.size.map_or("?".into(), |s| s.to_string()),
                    jf.coordinator,
                    st.phase,
                    st.epoch
                );
                for i in &st.ranks {
                    let state = if i.finalized {
                        "finalized".to_string()
                    } else if i.connected {
                        format!("{:?}", i.switch_phase).to_lowercase()
                    } else {
                        "LOST".into()
                    };
                    println!("  rank {:>5}  {:<20} pid {:<8} {:<10} {}", i.rank, i.host, i.pid, state, i.transport);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
