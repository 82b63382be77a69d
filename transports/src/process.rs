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
    // SAFETY: `dst` is writable memory of this process, borrowed mutably for the call.
    unsafe {
        copy_pieces(pid, Direction::FromPeer, &[(dst.as_mut_ptr() as usize, dst.len())], &[(addr as usize, dst.len())])
    }
}

/// Which way [`copy_pieces`] copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the other process into this one (`process_vm_readv`).
    FromPeer,
    /// From this process into the other one (`process_vm_writev`).
    ToPeer,
}

/// The most pieces one `process_vm_readv`/`_writev` takes on each side (Linux's `IOV_MAX`).
const IOV_BATCH: usize = 1024;

/// Copies between pieces `(address, bytes)` of this process's memory and pieces of process
/// `pid`'s, one kernel copy with no staging buffer, as few system calls as `IOV_MAX` allows:
/// the bytes of `local` in order pair with the bytes of `remote` in order, and both lists add
/// up to the same length (`InvalidInput` otherwise). The kernel checks every remote piece
/// (`EFAULT` outside the peer's mappings); the permission is that of [`read_memory`].
///
/// # Safety
/// Every `local` piece is memory of this process that stays mapped for the call, writable
/// for [`Direction::FromPeer`], and no Rust reference to it is alive meanwhile.
pub unsafe fn copy_pieces(
    pid: u32,
    direction: Direction,
    local: &[(usize, usize)],
    remote: &[(usize, usize)],
) -> std::io::Result<()> {
    let total: usize = local.iter().map(|p| p.1).sum();
    if remote.iter().map(|p| p.1).sum::<usize>() != total {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "local and remote pieces differ in length"));
    }
    let (mut l, mut r) = (Pieces::new(local), Pieces::new(remote));
    let mut done = 0;
    while done < total {
        let (liov, riov) = (l.batch(), r.batch());
        let call = match direction {
            Direction::FromPeer => libc::process_vm_readv,
            Direction::ToPeer => libc::process_vm_writev,
        };
        // SAFETY: `liov` describes local pieces the caller vouches for (read for `ToPeer`,
        // written for `FromPeer`); the kernel checks `riov` against the other process's
        // mappings.
        let n = unsafe { call(pid as libc::pid_t, liov.as_ptr(), liov.len() as _, riov.as_ptr(), riov.len() as _, 0) };
        match n {
            n if n > 0 => {
                let n = n as usize;
                l.advance(n);
                r.advance(n);
                done += n;
            }
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("nothing copied at {:#x} in process {pid}", r.address()),
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

/// A cursor over a list of pieces: the next byte is `offset` into piece `index`.
struct Pieces<'a> {
    pieces: &'a [(usize, usize)],
    index: usize,
    offset: usize,
}

impl<'a> Pieces<'a> {
    fn new(pieces: &'a [(usize, usize)]) -> Self {
        Pieces { pieces, index: 0, offset: 0 }
    }

    /// The address of the next byte.
    fn address(&self) -> usize {
        self.pieces.get(self.index).map_or(0, |p| p.0 + self.offset)
    }

    /// The next pieces, at most `IOV_BATCH`, empty ones left out.
    fn batch(&self) -> Vec<libc::iovec> {
        let mut out = Vec::with_capacity(IOV_BATCH.min(self.pieces.len() - self.index));
        let mut offset = self.offset;
        for &(addr, len) in &self.pieces[self.index..] {
            if out.len() == IOV_BATCH {
                break;
            }
            if len > offset {
                out.push(libc::iovec { iov_base: (addr + offset) as *mut libc::c_void, iov_len: len - offset });
            }
            offset = 0;
        }
        out
    }

    /// Moves past `n` bytes.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let left = self.pieces[self.index].1 - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.index += 1;
            self.offset = 0;
        }
        while self.index < self.pieces.len() && self.pieces[self.index].1 == self.offset {
            self.index += 1;
            self.offset = 0;
        }
    }
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

    /// Pieces that do not line up on the two sides, empty pieces, more pieces than one system
    /// call takes, both directions; and a length mismatch refused.
    #[test]
    fn pieces_are_copied_in_order_both_ways() {
        let me = std::process::id();
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut dst = vec![0u8; 5000];
        // Local: 2 500 pieces of 2 bytes (more than IOV_BATCH) with an empty one between;
        // remote: three uneven pieces.
        let base = dst.as_mut_ptr() as usize;
        let mut local: Vec<(usize, usize)> = (0..2500).map(|k| (base + 2 * k, 2)).collect();
        local.insert(7, (base, 0));
        let s = src.as_ptr() as usize;
        let remote = [(s, 1), (s + 1, 3998), (s + 3999, 1001)];
        // SAFETY: `dst` is this test's, with no reference alive during the copy.
        unsafe { copy_pieces(me, Direction::FromPeer, &local, &remote).unwrap() };
        assert_eq!(dst, src);
        let mut back = vec![0u8; 5000];
        let b = back.as_mut_ptr() as usize;
        let every_other: Vec<(usize, usize)> = (0..2500).map(|k| (s + 2 * k, 2)).collect();
        // SAFETY: as above; the local pieces (`src`) are only read.
        unsafe { copy_pieces(me, Direction::ToPeer, &every_other, &[(b, 5000)]).unwrap() };
        assert_eq!(back, src);
        // SAFETY: as above.
        let e = unsafe { copy_pieces(me, Direction::ToPeer, &[(s, 10)], &[(b, 9)]) }.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
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
