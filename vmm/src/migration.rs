//! A VM's live migration through QMP: the destination is told where to listen
//! (`migrate-incoming`, for a QEMU started with `-incoming defer`), the source starts sending
//! (`migrate`), and its progress is read from `query-migrate` until it ends.

use std::time::{Duration, Instant};

use crate::client::{ClientError, QmpClient};

/// One reading of a migration's progress (`query-migrate` on the source).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// QEMU's status: `setup`, `active`, `device`, `completed`, `failed`, `cancelled`, …
    pub status: String,
    /// RAM bytes sent so far, still to send, and in all.
    pub transferred_bytes: u64,
    pub remaining_bytes: u64,
    pub total_bytes: u64,
    /// Pages dirtied per second by the running guest.
    pub dirty_pages_per_s: u64,
    /// QEMU's estimate of the stop-and-copy pause, while active.
    pub expected_downtime_ms: Option<u64>,
    /// The pause the guest had, once completed.
    pub downtime_ms: Option<u64>,
    /// QEMU's reason, when failed.
    pub error: Option<String>,
}

impl Progress {
    /// Whether the migration has ended, one way or another.
    pub fn ended(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }
}

/// Has the destination listen on `uri` for the incoming migration.
pub fn listen(dst: &mut QmpClient, uri: &str, timeout: Duration) -> Result<(), ClientError> {
    let incoming = qapi_qmp::migrate_incoming { uri: Some(uri.to_string()), channels: None, exit_on_error: None };
    dst.execute(&incoming, timeout).map(drop)
}

/// Starts sending the source to `uri` (the destination listens there).
pub fn start(src: &mut QmpClient, uri: &str, timeout: Duration) -> Result<(), ClientError> {
    let migrate = qapi_qmp::migrate { uri: Some(uri.to_string()), channels: None, detach: None, resume: None };
    src.execute(&migrate, timeout).map(drop)
}

/// The migration's progress now.
pub fn progress(src: &mut QmpClient, timeout: Duration) -> Result<Progress, ClientError> {
    let info = src.execute(&qapi_qmp::query_migrate {}, timeout)?;
    let status = info
        .status
        .map(|s| serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
        .unwrap_or_else(|| "none".to_string());
    let ram = info.ram.as_ref();
    let bytes = |f: fn(&qapi_qmp::MigrationStats) -> i64| ram.map_or(0, |r| f(r).max(0) as u64);
    Ok(Progress {
        status,
        transferred_bytes: bytes(|r| r.transferred),
        remaining_bytes: bytes(|r| r.remaining),
        total_bytes: bytes(|r| r.total),
        dirty_pages_per_s: bytes(|r| r.dirty_pages_rate),
        expected_downtime_ms: info.expected_downtime.map(|d| d.max(0) as u64),
        downtime_ms: info.downtime.map(|d| d.max(0) as u64),
        error: info.error_desc,
    })
}

/// Reads the progress every `every` until the migration ends or `timeout` passes, handing
/// each reading to `seen`, which may stop the wait (`false`: [`MigrationError::Stopped`]);
/// returns the last reading. A migration that failed or was cancelled is an error naming
/// QEMU's reason.
pub fn wait(
    src: &mut QmpClient,
    timeout: Duration,
    every: Duration,
    mut seen: impl FnMut(&Progress) -> bool,
) -> Result<Progress, MigrationError> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let p = progress(src, left.max(Duration::from_millis(100)))?;
        if !seen(&p) && !p.ended() {
            return Err(MigrationError::Stopped(Box::new(p)));
        }
        match p.status.as_str() {
            "completed" => return Ok(p),
            "failed" | "cancelled" => return Err(MigrationError::Ended(Box::new(p))),
            _ if start.elapsed() >= timeout => {
                return Err(MigrationError::TimedOut { after: timeout, last: Box::new(p) })
            }
            _ => std::thread::sleep(every.min(left)),
        }
    }
}

/// Why a migration did not complete.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("{0}")]
    Qmp(#[from] ClientError),
    #[error("the migration ended {}: {}", .0.status, .0.error.as_deref().unwrap_or("QEMU gave no reason"))]
    Ended(Box<Progress>),
    #[error("the migration did not complete within {after:?} (last status {}, {} of {} bytes sent)", .last.status, .last.transferred_bytes, .last.total_bytes)]
    TimedOut { after: Duration, last: Box<Progress> },
    #[error("the wait for the migration was stopped (status {}, {} of {} bytes sent)", .0.status, .0.transferred_bytes, .0.total_bytes)]
    Stopped(Box<Progress>),
}

/// Cancels the source's migration (`migrate_cancel`) and waits, at most `timeout`, until
/// QEMU says it has ended; the source VM then runs on as before. A migration that completed
/// meanwhile cannot be taken back: that is an error.
pub fn cancel(src: &mut QmpClient, timeout: Duration) -> Result<Progress, MigrationError> {
    let start = Instant::now();
    src.execute(&qapi_qmp::migrate_cancel {}, timeout)?;
    let left = timeout.saturating_sub(start.elapsed());
    match wait(src, left, Duration::from_millis(20), |_| true) {
        Err(MigrationError::Ended(p)) if p.status == "cancelled" || p.status == "failed" => Ok(*p),
        Ok(p) => Err(MigrationError::Ended(Box::new(Progress {
            error: Some("it completed before the cancel reached it".into()),
            ..p
        }))),
        Err(e) => Err(e),
    }
}
