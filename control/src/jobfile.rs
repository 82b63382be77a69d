//! Job files: how `kawarimi ctl` finds the coordinator of a job and its secret.
//!
//! One file per job in a per-user directory (`$XDG_RUNTIME_DIR/kawarimi`, else
//! `/tmp/kawarimi-<uid>`), created with mode 0700 and the file with 0600, so only the job's
//! owner can read the secret.
//!
//! A job file must not outlive its job: it holds the secret, and a stale one makes `ctl` see
//! jobs that are gone. So:
//! - the process that wrote it removes it whenever the job ends in a way it sees: a normal end
//!   ([`JobFile::remove`]), an abort or a fatal error ([`remove_owned`]), and a signal the
//!   shim handles ([`owned_path`] gives the handler the path without allocating or locking);
//! - a job killed outright (SIGKILL) cannot, so every new job and every `ctl list`/`find`
//!   reclaims the files whose owner process is gone ([`JobFile::reclaim`]). "Gone" is the pid
//!   *and* its start time: a pid is reused, the pair is not;
//! - a job counts as running only when its coordinator answers, authenticated with the file's
//!   secret, under the file's job name ([`JobFile::answers`]); a live pid alone proves nothing.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use kawarimi_transports::auth::JobSecret;
use serde::{Deserialize, Serialize};

use crate::client::CtlClient;

/// How long `list` and `find` wait for one job's coordinator to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    pub job: String,
    pub coordinator: SocketAddr,
    /// The per-job secret, hex.
    pub secret: String,
    /// Process hosting the coordinator (`kawarimi run`, or rank 0).
    pub pid: u32,
    /// That process's start time (clock ticks after boot, `/proc/PID/stat` field 22): with
    /// the pid, it names the process for good. 0 in files written before it was recorded.
    #[serde(default)]
    pub started: u64,
}

/// This user's directory of job files.
pub fn jobs_dir() -> std::io::Result<PathBuf> {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("kawarimi"),
        _ => {
            // The uid of this process is the owner of its /proc entry.
            let uid = fs::metadata("/proc/self")?.uid();
            PathBuf::from(format!("/tmp/kawarimi-{uid}"))
        }
    };
    fs::create_dir_all(&dir)?;
    let meta = fs::metadata(&dir)?;
    let uid = fs::metadata("/proc/self")?.uid();
    if meta.uid() != uid {
        return Err(std::io::Error::other(format!("{} belongs to another user", dir.display())));
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// The job file this process wrote and still owns, for removal where no allocation or lock
/// may happen (a signal handler, an abort).
static OWNED_PATH: OnceLock<CString> = OnceLock::new();
/// Whether [`OWNED_PATH`] is still this process's to remove: cleared once removed, so that a
/// process that lives on after its job cannot remove a later job's file of the same name.
static OWNED_ARMED: AtomicBool = AtomicBool::new(false);

/// The path of the job file this process owns, while it owns one. Reads two statics only, so
/// a signal handler may call it and `unlink` the result.
pub fn owned_path() -> Option<&'static CStr> {
    if OWNED_ARMED.load(Ordering::Acquire) {
        OWNED_PATH.get().map(CString::as_c_str)
    } else {
        None
    }
}

/// Removes the job file this process owns, if any (an abort or a fatal error: the normal end
/// goes through [`JobFile::remove`]).
pub fn remove_owned() {
    if OWNED_ARMED.swap(false, Ordering::AcqRel) {
        if let Some(p) = OWNED_PATH.get() {
            let _ = fs::remove_file(Path::new(std::ffi::OsStr::from_bytes(p.as_bytes())));
        }
    }
}

/// The job file at `path`; `None` for one that cannot be read or is not ours (left alone).
fn read(path: &Path) -> Option<JobFile> {
    fs::read_to_string(path).ok().and_then(|t| serde_json::from_str::<JobFile>(&t).ok())
}

impl JobFile {
    /// The job file of a coordinator this process hosts.
    pub fn new(job: String, coordinator: SocketAddr, secret: &JobSecret) -> JobFile {
        let pid = std::process::id();
        JobFile {
            job,
            coordinator,
            secret: secret.to_hex(),
            pid,
            started: kawarimi_transports::process::start_ticks(pid).unwrap_or(0),
        }
    }

    pub fn path(&self) -> std::io::Result<PathBuf> {
        Self::path_of(&self.job)
    }

    fn path_of(job: &str) -> std::io::Result<PathBuf> {
        Self::check_name(job).map_err(std::io::Error::other)?;
        Ok(jobs_dir()?.join(format!("{job}.json")))
    }

    /// A job name is a file name in the jobs directory: letters, digits, '-', '_' and '.',
    /// not starting with '.'.
    pub fn check_name(job: &str) -> Result<(), String> {
        if job.is_empty()
            || job.starts_with('.')
            || !job.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!("job name {job:?} must be letters, digits, '-', '_' or '.' (not first)"));
        }
        Ok(())
    }

    /// Writes the file readable by its owner only; returns its path. Reclaims dead jobs'
    /// files first, and refuses a name that a running job holds.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        Self::reclaim()?;
        let path = self.path()?;
        if let Some(other) = read(&path) {
            if other.owner_alive() && other.answers(PROBE_TIMEOUT) {
                return Err(std::io::Error::other(format!(
                    "a running job is already named {} (pid {}); choose another name",
                    other.job, other.pid
                )));
            }
        }
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(self).map_err(std::io::Error::other)?.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
            // One coordinator per process: a second job file (never written today) would
            // not be removable from a signal handler, only by its `remove` and by reclaim.
            if OWNED_PATH.set(c).is_ok()
                || OWNED_PATH.get().is_some_and(|p| p.as_bytes() == path.as_os_str().as_bytes())
            {
                OWNED_ARMED.store(true, Ordering::Release);
            }
        }
        Ok(path)
    }

    /// Whether the process that wrote the file still runs: the same pid with the same start
    /// time (a file without a start time: the pid alone).
    pub fn owner_alive(&self) -> bool {
        kawarimi_transports::process::is_alive(self.pid, self.started)
    }

    /// Whether the job's coordinator answers within `timeout`, proving it holds the file's
    /// secret and calling itself by the file's job name.
    pub fn answers(&self, timeout: Duration) -> bool {
        let Ok(secret) = JobSecret::from_hex(&self.secret) else { return false };
        CtlClient::connect(self.coordinator, &secret, timeout)
            .and_then(|mut c| c.status())
            .is_ok_and(|st| st.job == self.job)
    }

    /// Removes the files (and half-written `.tmp` files) of jobs whose owner process is gone.
    pub fn reclaim() -> std::io::Result<()> {
        Self::scan().map(drop)
    }

    /// One pass over the jobs directory: removes what [`JobFile::reclaim`] removes and
    /// returns the files whose owner lives.
    fn scan() -> std::io::Result<Vec<JobFile>> {
        let mut live = Vec::new();
        for e in fs::read_dir(jobs_dir()?)? {
            let p = e?.path();
            let dead = match p.extension().and_then(|x| x.to_str()) {
                Some("json") => match read(&p) {
                    Some(j) if j.owner_alive() => {
                        live.push(j);
                        false
                    }
                    Some(_) => true,
                    None => false,
                },
                // A writer that died between create and rename; one still writing is younger
                // than a minute.
                Some("tmp") => fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(60))),
                _ => false,
            };
            if dead {
                let _ = fs::remove_file(&p);
            }
        }
        Ok(live)
    }

    /// Every running job of this user on this host: whose owner lives and whose coordinator
    /// answers as that job. Reclaims dead jobs' files on the way.
    pub fn list() -> std::io::Result<Vec<JobFile>> {
        let candidates = Self::scan()?;
        // Probe in parallel: one silent coordinator must not make the listing slow.
        let mut jobs: Vec<JobFile> = std::thread::scope(|s| {
            let probes: Vec<_> =
                candidates.into_iter().map(|j| s.spawn(move || j.answers(PROBE_TIMEOUT).then_some(j))).collect();
            probes.into_iter().filter_map(|h| h.join().ok().flatten()).collect()
        });
        jobs.sort_by(|a, b| a.job.cmp(&b.job));
        Ok(jobs)
    }

    /// The job named `job`, or the only job when `None`.
    pub fn find(job: Option<&str>) -> Result<JobFile, String> {
        let dir_err = |e: std::io::Error| format!("cannot read the job directory: {e}");
        match job {
            Some(name) => {
                Self::reclaim().map_err(dir_err)?;
                match read(&Self::path_of(name).map_err(|e| e.to_string())?) {
                    Some(j) if j.job == name && j.owner_alive() && j.answers(PROBE_TIMEOUT) => Ok(j),
                    Some(j) if j.job == name && j.owner_alive() => {
                        Err(format!("job {name} (pid {}) does not answer at {}", j.pid, j.coordinator))
                    }
                    _ => Err(format!("no running job named {name}")),
                }
            }
            None => {
                let jobs = Self::list().map_err(dir_err)?;
                match jobs.len() {
                    0 => Err("no running kawarimi job of this user on this host".into()),
                    1 => Ok(jobs.into_iter().next().expect("one job")),
                    _ => Err(format!(
                        "{} jobs are running ({}); choose one with --job",
                        jobs.len(),
                        jobs.iter().map(|j| j.job.as_str()).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }
    }

    /// Removes the file at the job's normal end.
    pub fn remove(&self) {
        if let Ok(p) = self.path() {
            if owned_path().is_some_and(|o| o.to_bytes() == p.as_os_str().as_bytes()) {
                OWNED_ARMED.store(false, Ordering::Release);
            }
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_is_not_the_owner() {
        let secret = JobSecret::generate().unwrap();
        let mut j = JobFile::new("x".into(), SocketAddr::from(([127, 0, 0, 1], 1)), &secret);
        assert!(j.owner_alive());
        j.started += 1; // the same pid, started at another time: another process
        assert!(!j.owner_alive());
        j.started = 0; // an old file: the pid is all it has
        assert!(j.owner_alive());
    }

    #[test]
    fn a_coordinator_that_is_not_there_does_not_answer() {
        let secret = JobSecret::generate().unwrap();
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let j = JobFile::new("gone".into(), SocketAddr::from(([127, 0, 0, 1], port)), &secret);
        assert!(!j.answers(Duration::from_millis(500)));
    }
}
