//! Job files: how `kawarimi ctl` finds the coordinator of a job and its secret.
//!
//! One file per job in a per-user directory (`$XDG_RUNTIME_DIR/kawarimi`, else
//! `/tmp/kawarimi-<uid>`), created with mode 0700 and the file with 0600, so only the job's
//! owner can read the secret. The file is removed when the job ends.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    pub job: String,
    pub coordinator: SocketAddr,
    /// The per-job secret, hex.
    pub secret: String,
    /// Process hosting the coordinator (`kawarimi run`, or rank 0).
    pub pid: u32,
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

impl JobFile {
    pub fn path(&self) -> std::io::Result<PathBuf> {
        Ok(jobs_dir()?.join(format!("{}.json", self.job)))
    }

    /// Writes the file readable by its owner only; returns its path.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        let path = self.path()?;
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(self).map_err(std::io::Error::other)?.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Every job file of this user whose host process is still alive.
    pub fn list() -> std::io::Result<Vec<JobFile>> {
        let mut jobs = Vec::new();
        for e in fs::read_dir(jobs_dir()?)? {
            let p = e?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(text) = fs::read_to_string(&p) else { continue };
            let Ok(j) = serde_json::from_str::<JobFile>(&text) else { continue };
            if PathBuf::from(format!("/proc/{}", j.pid)).exists() {
                jobs.push(j);
            }
        }
        jobs.sort_by(|a, b| a.job.cmp(&b.job));
        Ok(jobs)
    }

    /// The job named `job`, or the only job when `None`.
    pub fn find(job: Option<&str>) -> Result<JobFile, String> {
        let jobs = Self::list().map_err(|e| format!("cannot read the job directory: {e}"))?;
        match job {
            Some(name) => {
                jobs.into_iter().find(|j| j.job == name).ok_or_else(|| format!("no running job named {name}"))
            }
            None => match jobs.len() {
                0 => Err("no running kawarimi job of this user on this host".into()),
                1 => Ok(jobs.into_iter().next().expect("one job")),
                _ => Err(format!(
                    "{} jobs are running ({}); choose one with --job",
                    jobs.len(),
                    jobs.iter().map(|j| j.job.as_str()).collect::<Vec<_>>().join(", ")
                )),
            },
        }
    }

    pub fn remove(&self) {
        if let Ok(p) = self.path() {
            let _ = fs::remove_file(p);
        }
    }
}
