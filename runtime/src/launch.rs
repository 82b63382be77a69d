//! Who this process is: rank, size and node-local rank, read from the launcher's environment.
//!
//! kawarimi never initialises the MPI library the application linked, so it learns its place
//! in the job the way that library would have: from the variables the launcher sets. Each
//! launcher is one row of [`LAUNCHERS`]; adding one is adding a row.

use std::env;

/// Where this process stands in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub rank: u32,
    pub size: u32,
    pub local_rank: u32,
    pub local_size: u32,
    /// Which launcher's variables were found (`"singleton"` when none).
    pub launcher: &'static str,
}

/// The environment variables of one launcher.
struct LauncherVars {
    name: &'static str,
    rank: &'static str,
    size: &'static str,
    local_rank: &'static str,
    local_size: &'static str,
}

const LAUNCHERS: &[LauncherVars] = &[
    LauncherVars {
        name: "open-mpi",
        rank: "OMPI_COMM_WORLD_RANK",
        size: "OMPI_COMM_WORLD_SIZE",
        local_rank: "OMPI_COMM_WORLD_LOCAL_RANK",
        local_size: "OMPI_COMM_WORLD_LOCAL_SIZE",
    },
    LauncherVars {
        name: "slurm",
        rank: "SLURM_PROCID",
        size: "SLURM_NTASKS",
        local_rank: "SLURM_LOCALID",
        local_size: "SLURM_NTASKS_PER_NODE",
    },
    LauncherVars {
        name: "hydra",
        rank: "PMI_RANK",
        size: "PMI_SIZE",
        local_rank: "MPI_LOCALRANKID",
        local_size: "MPI_LOCALNRANKS",
    },
];

fn parse(var: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<u32>, String> {
    match lookup(var) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| format!("{var}={v:?} is not a number")),
    }
}

/// Reads the process's place from `lookup` (the environment in production).
pub fn detect_with(lookup: &dyn Fn(&str) -> Option<String>) -> Result<ProcInfo, String> {
    for l in LAUNCHERS {
        let (Some(rank), Some(size)) = (parse(l.rank, lookup)?, parse(l.size, lookup)?) else { continue };
        if size == 0 || rank >= size {
            return Err(format!("{}={rank} is not below {}={size}", l.rank, l.size));
        }
        let local_rank = parse(l.local_rank, lookup)?.unwrap_or(rank);
        let local_size = parse(l.local_size, lookup)?.unwrap_or(size);
        return Ok(ProcInfo { rank, size, local_rank, local_size, launcher: l.name });
    }
    Ok(ProcInfo { rank: 0, size: 1, local_rank: 0, local_size: 1, launcher: "singleton" })
}

/// This host's name, as ranks compare it (the kernel's, so that every rank and `kawarimi run`
/// on one host read the same).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Reads the process's place from the environment.
pub fn detect() -> Result<ProcInfo, String> {
    detect_with(&|k| env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<ProcInfo, String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        detect_with(&move |k| m.get(k).cloned())
    }

    #[test]
    fn reads_open_mpi_and_falls_back_to_singleton() {
        let p = with(&[
            ("OMPI_COMM_WORLD_RANK", "2"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ])
        .unwrap();
        assert_eq!((p.rank, p.size, p.local_rank, p.local_size, p.launcher), (2, 4, 0, 2, "open-mpi"));
        assert_eq!(with(&[]).unwrap().launcher, "singleton");
        assert_eq!(with(&[("SLURM_PROCID", "1"), ("SLURM_NTASKS", "3")]).unwrap().launcher, "slurm");
    }

    #[test]
    fn rejects_nonsense() {
        assert!(with(&[("OMPI_COMM_WORLD_RANK", "4"), ("OMPI_COMM_WORLD_SIZE", "4")]).is_err());
        assert!(with(&[("OMPI_COMM_WORLD_RANK", "x"), ("OMPI_COMM_WORLD_SIZE", "4")]).is_err());
    }
}
