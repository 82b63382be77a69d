//! Shared memory between ranks on one host:
//! - [`ring`]: the single-producer single-consumer ring that carries frames from one
//!   co-located rank to another;
//! - [`segment`]: `/dev/shm` segments that name their owner (pid and start time), unlinked
//!   once every peer has mapped them, and reclaimed from owners that are gone;
//! - [`slots`]: the slots in each segment where small blocking collectives are published and
//!   read in place;
//! - [`transport`]: a segment of inbound rings per rank, proof of co-location by mapping,
//!   single-copy large payloads (`process_vm_readv`) where the kernel allows them, and a
//!   futex doorbell that wakes an idle receiver.

pub mod ring;
pub mod segment;
pub mod slots;
pub mod transport;

/// What two processes must share for one's segment to be mappable by the other: the kernel
/// (its boot id), the IPC and mount namespaces, and the user. Ranks with equal identities are
/// candidates for shared memory; [`transport::ShmEndpoint::attach`] then proves it by mapping
/// the peer's segment. Not the host name: two containers on one host may share a name and no
/// memory, and a migrated VM keeps its name.
///
/// `KAWARIMI_HOST_ID_FILE` names a file of whitespace-separated labels, one per rank in turn
/// (rank `r` takes label `r % count`), added to the identity when it is read: the tests move
/// ranks between "hosts" with it across a switch, since one machine cannot change its kernel.
pub fn host_identity(rank: u32) -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns =
        |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).map(|p| p.display().to_string()).unwrap_or_default();
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut id = format!("{} {} {} uid {uid}", boot.trim(), ns("ipc"), ns("mnt"));
    if let Some(labels) = std::env::var_os("KAWARIMI_HOST_ID_FILE").and_then(|f| std::fs::read_to_string(f).ok()) {
        let labels: Vec<&str> = labels.split_whitespace().collect();
        if !labels.is_empty() {
            id.push_str(&format!(" label {}", labels[rank as usize % labels.len()]));
        }
    }
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_identity_names_kernel_namespaces_and_user() {
        let id = super::host_identity(0);
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert!(
            id.starts_with(boot.trim()) && id.contains("ipc:[") && id.contains("mnt:[") && id.contains(" uid "),
            "{id}"
        );
        assert_eq!(id, super::host_identity(0), "stable");
    }
}
