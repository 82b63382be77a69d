//! Start-up wire-up: find the peers and connect the data path.
//!
//! 1. The per-job secret comes from `KAWARIMI_JOB_SECRET` (set by `kawarimi run`), or, under
//!    plain `mpirun`, rank 0 generates it and publishes it through the launcher's PMIx server,
//!    which serves only this job's processes.
//! 2. Every rank binds a TCP listener, publishes its address under [`TCP_ADDR_KEY`], fences,
//!    reads every peer's address, and connects the full mesh; each connection proves it
//!    holds the secret before carrying a frame.

use std::net::SocketAddr;
use std::time::Duration;

use kawarimi_transports::auth::JobSecret;
use kawarimi_transports::bootstrap::{self, Bootstrap};
use kawarimi_transports::{tcp, Transport};

use crate::error::{ErrorClass, MpiError, MpiResult};
use crate::launch::ProcInfo;

/// Bootstrap key under which a rank publishes its TCP listener address.
pub const TCP_ADDR_KEY: &str = "kawarimi.tcp.addr";
/// Bootstrap key under which rank 0 publishes a secret it generated.
pub const SECRET_KEY: &str = "kawarimi.secret";

fn boot_err(what: &str, e: impl std::fmt::Display) -> MpiError {
    MpiError::new(ErrorClass::Other, format!("wire-up: {what}: {e}"))
}

/// The result of wire-up: the connected transport (none for a job of one) and the bootstrap
/// service, kept for the wire-ups after each switch.
pub struct Wired {
    pub transport: Option<Box<dyn Transport>>,
    pub bootstrap: Box<dyn Bootstrap>,
    pub secret: JobSecret,
}

/// Connects this rank to every other rank of the job.
pub fn wire_up(proc: &ProcInfo, timeout: Duration) -> MpiResult<Wired> {
    let mut boot = bootstrap::from_env().map_err(|e| boot_err("bootstrap", e))?;
    if boot.rank() != proc.rank || boot.size() != proc.size {
        return Err(boot_err(
            "launcher disagrees with itself",
            format!(
                "environment says rank {} of {}, PMIx says rank {} of {}",
                proc.rank,
                proc.size,
                boot.rank(),
                boot.size()
            ),
        ));
    }
    let secret = match JobSecret::from_env() {
        Ok(s) => s,
        Err(_) if proc.size == 1 => JobSecret::generate().map_err(|e| boot_err("secret", e))?,
        Err(_) => {
            if proc.rank == 0 {
                let s = JobSecret::generate().map_err(|e| boot_err("secret", e))?;
                boot.put(SECRET_KEY, s.as_bytes()).map_err(|e| boot_err("publish secret", e))?;
                boot.commit().map_err(|e| boot_err("commit", e))?;
                boot.fence(timeout).map_err(|e| boot_err("fence", e))?;
                s
            } else {
                boot.commit().map_err(|e| boot_err("commit", e))?;
                boot.fence(timeout).map_err(|e| boot_err("fence", e))?;
                let b = boot.get(0, SECRET_KEY).map_err(|e| boot_err("read secret", e))?;
                let b: [u8; 32] = b.try_into().map_err(|_| boot_err("read secret", "not 32 bytes"))?;
                JobSecret::from_bytes(b)
            }
        }
    };
    if proc.size == 1 {
        return Ok(Wired { transport: None, bootstrap: boot, secret });
    }
    let endpoint = tcp::bind(proc.rank, None, secret.clone()).map_err(|e| boot_err("bind", e))?;
    let addr = endpoint.local_addr().to_string();
    boot.put(TCP_ADDR_KEY, addr.as_bytes()).map_err(|e| boot_err("publish address", e))?;
    boot.commit().map_err(|e| boot_err("commit", e))?;
    boot.fence(timeout).map_err(|e| boot_err("fence", e))?;
    let mut peers = Vec::with_capacity(proc.size as usize);
    for r in (0..proc.size).filter(|&r| r != proc.rank) {
        let raw = boot.get(r, TCP_ADDR_KEY).map_err(|e| boot_err(&format!("address of rank {r}"), e))?;
        let text = String::from_utf8_lossy(&raw);
        let sa: SocketAddr =
            text.parse().map_err(|_| boot_err(&format!("address of rank {r}"), format!("{text:?} is not ip:port")))?;
        peers.push((r, sa));
    }
    let transport = endpoint.connect_all(&peers, timeout).map_err(|e| boot_err("connect", e))?;
    Ok(Wired { transport: Some(Box::new(transport)), bootstrap: boot, secret })
}
