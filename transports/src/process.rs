//! Naming a process for good: a pid is reused, a pid with its start time is not. Job files
//! and shared-memory segments name their owner this way, so that whatever a killed job left
//! behind is recognised as orphaned by the next one. And reading another process's memory,
//! for the shared-memory transport's single copy.

/// When process `pid` started (clock ticks after boot, `/proc/PID/stat` field 22), or `None`
/// when there is no such process.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')': the fields
    // after it start past the last ')'. Field 22 is the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `started` still runs (`started` 0: unknown, the
/// pid alone decides).
pub fn is_alive(pid: u32, started: u64) -> bool {
    start_ticks(pid).is_some_and(|t| started == 0 || t == started)
}

/// Copies `dst.len()` bytes from `addr` in process `pid`'s memory into `dst`, in one copy by
/// the kernel (`process_vm_readv`, as Open MPI's CMA path does). Allowed only where this
/// process may ptrace `pid` (the same user, and Yama's `ptrace_scope` or a container's
/// seccomp profile not forbidding it): `PermissionDenied` otherwise.
pub fn read_memory(pid: u32, addr: u64, dst: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < dst.len() {
        let rest = dst.len() - done;
        let local = libc::iovec { iov_base: dst[done..].as_mut_ptr().cast(), iov_len: rest };
        let remote = libc::iovec { iov_base: (addr + done as u64) as *mut libc::c_void, iov_len: rest };
        // SAFETY: `local` describes the writable tail of `dst`, which this call borrows
        // mutably; `remote` is only read by the kernel, in the other process, which checks it.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        match n {
            n if n > 0 => done += n as usize,
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("nothing readable at {:#x} in process {pid}", addr + done as u64),
                ))
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_a_child_and_a_bad_address_or_dead_process_is_an_error() {
        // This process reads its own memory through the same system call a peer uses.
        let src: Vec<u8> = (0..300_000u32).map(|i| (i * 31) as u8).collect();
        let mut dst = vec![0u8; src.len()];
        read_memory(std::process::id(), src.as_ptr() as u64, &mut dst).unwrap();
        assert_eq!(dst, src);
        let e = read_memory(std::process::id(), 8, &mut dst[..16]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EFAULT), "{e}");
        let e = read_memory(u32::MAX / 2, src.as_ptr() as u64, &mut dst[..16]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "{e}");
    }

    #[test]
    fn start_ticks_name_this_process_and_no_dead_one() {
        let me = start_ticks(std::process::id()).expect("own start time");
        assert!(me > 0);
        assert_eq!(start_ticks(std::process::id()), Some(me), "stable");
        // pid_max is at most 2^22 on Linux.
        assert_eq!(start_ticks(u32::MAX - 1), None);
        assert!(is_alive(std::process::id(), me));
        assert!(!is_alive(std::process::id(), me + 1), "the same pid, started at another time");
        assert!(is_alive(std::process::id(), 0));
    }
}
