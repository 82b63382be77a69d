//! POSIX shared-memory segments (`/dev/shm`) that name their owner, so that nothing a killed
//! job leaves there can trouble the next one.
//!
//! A segment is created by one process (`shm_open` with `O_EXCL`, mode 0600, sized, mapped
//! shared) under the name `kawarimi.<pid>.<start ticks>.<tag>`: the owner's pid and start time
//! (see [`crate::process`]) name it for good. Peers map it by name and check its size. Once
//! every peer has mapped it, its owner [`Segment::unlink`]s the name: the memory lives on for
//! whoever maps it and goes with the last mapping, so from then on not even a `kill -9` leaves
//! anything in `/dev/shm`. What a process killed before that point left is removed by
//! [`reclaim`], which every job runs at start-up: a segment whose owner is gone is unlinked.

use std::ffi::c_void;
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::fcntl::OFlag;
use nix::sys::mman::{mmap, munmap, shm_open, shm_unlink, MapFlags, ProtFlags};
use nix::sys::stat::Mode;

/// How every segment is mapped: shared, not populated. Populated segments spared the first
/// frames through a ring their page faults, but every switch then allocated and freed all of
/// every ring (at 4 ranks a quiesce took 14 ms instead of 4.7, a resume 45 ms instead of 24);
/// the rings keep their traffic on a few warm pages instead (see the shm transport).
const MAPPING: MapFlags = MapFlags::MAP_SHARED;

use crate::process;

/// Where POSIX shared memory lives on Linux.
pub const SHM_DIR: &str = "/dev/shm";
/// The first part of every kawarimi segment name.
const PREFIX: &str = "kawarimi.";

/// A mapped segment: one this process created, or a peer's.
#[derive(Debug)]
pub struct Segment {
    name: String,
    ptr: NonNull<c_void>,
    len: usize,
    /// Created here and not yet unlinked: dropping it removes the name too.
    owned_name: bool,
}

// SAFETY: a `Segment` owns its mapping; moving it to another thread moves that ownership.
unsafe impl Send for Segment {}
// SAFETY: through `&Segment` only the name, length and address are read; every access to the
// memory goes through `as_ptr` under the caller's own `unsafe` and synchronisation (atomics,
// the rings' protocol).
unsafe impl Sync for Segment {}

fn io_error(context: String) -> impl FnOnce(nix::Error) -> io::Error {
    move |e| io::Error::new(io::Error::from(e).kind(), format!("{context}: {e}"))
}

/// The name a segment of this process with `tag` gets (`tag`: letters, digits, `-`, `_`).
pub fn own_name(tag: &str) -> io::Result<String> {
    if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("segment tag {tag:?}")));
    }
    let pid = std::process::id();
    let started = process::start_ticks(pid).ok_or_else(|| io::Error::other("no start time of this process"))?;
    Ok(format!("{PREFIX}{pid}.{started}.{tag}"))
}

/// The owner a segment name gives, `(pid, start ticks)`; `None` for a name that is not a
/// kawarimi segment's.
fn owner_of(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(PREFIX)?.splitn(3, '.');
    let pid = parts.next()?.parse().ok()?;
    let started = parts.next()?.parse().ok()?;
    parts.next().filter(|tag| !tag.is_empty())?;
    Some((pid, started))
}

impl Segment {
    /// Creates this process's segment `tag` of `len` bytes, zeroed, readable and writable by
    /// this user only.
    pub fn create(tag: &str, len: usize) -> io::Result<Segment> {
        Segment::create_named(&own_name(tag)?, len)
    }

    fn create_named(name: &str, len: usize) -> io::Result<Segment> {
        let size =
            NonZeroUsize::new(len).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty segment"))?;
        let path = format!("/{name}");
        let fd =
            shm_open(path.as_str(), OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR, Mode::from_bits_truncate(0o600))
                .map_err(io_error(format!("shm_open {name}")))?;
        let mapped = (|| {
            nix::unistd::ftruncate(&fd, len as i64).map_err(io_error(format!("sizing {name} to {len} bytes")))?;
            // SAFETY: a new shared mapping of the whole object just sized; nothing else in this
            // process refers to that address range.
            unsafe { mmap(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MAPPING, &fd, 0) }
                .map_err(io_error(format!("mapping {name}")))
        })();
        match mapped {
            Ok(ptr) => Ok(Segment { name: name.to_string(), ptr, len, owned_name: true }),
            Err(e) => {
                let _ = shm_unlink(path.as_str());
                Err(e)
            }
        }
    }

    /// Maps the segment `name` another process created, which must be `len` bytes.
    pub fn open(name: &str, len: usize) -> io::Result<Segment> {
        Segment::open_sized(name, Some(len))
    }

    /// Maps the whole segment `name` another process created, whatever its size (which its
    /// contents must then vouch for).
    pub fn open_whole(name: &str) -> io::Result<Segment> {
        Segment::open_sized(name, None)
    }

    fn open_sized(name: &str, expected: Option<usize>) -> io::Result<Segment> {
        if owner_of(name).is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a kawarimi segment")));
        }
        let fd = shm_open(format!("/{name}").as_str(), OFlag::O_RDWR, Mode::empty())
            .map_err(io_error(format!("shm_open {name}")))?;
        let actual = nix::sys::stat::fstat(&fd).map_err(io_error(format!("fstat {name}")))?.st_size;
        let len = expected.unwrap_or(actual.max(0) as usize);
        if actual != len as i64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment {name} has {actual} bytes, not the {len} expected"),
            ));
        }
        let size = NonZeroUsize::new(len).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty segment"))?;
        // SAFETY: a new shared mapping of the whole object, whose size was just checked.
        let ptr = unsafe { mmap(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MAPPING, &fd, 0) }
            .map_err(io_error(format!("mapping {name}")))?;
        Ok(Segment { name: name.to_string(), ptr, len, owned_name: false })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mapping's first byte (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr() as *mut u8
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes the segment's name (its creator does, once every peer has it mapped); the
    /// memory stays for every mapping. Idempotent.
    pub fn unlink(&mut self) -> io::Result<()> {
        if self.owned_name {
            self.owned_name = false;
            shm_unlink(format!("/{}", self.name).as_str()).map_err(io_error(format!("shm_unlink {}", self.name)))?;
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = self.unlink();
        // SAFETY: the mapping this segment made, of `len` bytes; nothing borrowed from it
        // outlives the segment (the rings over it are dropped first by their owner).
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// The names of this user's kawarimi segments in `/dev/shm` whose owner is gone (a job killed
/// before it unlinked its segments). Segments of live processes, and files that are not
/// kawarimi segments or belong to another user, are not among them.
pub fn orphans() -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(SHM_DIR) else { return Vec::new() };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    entries
        .flatten()
        .filter(|entry| entry.metadata().is_ok_and(|m| m.uid() == uid))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| owner_of(name).is_some_and(|(pid, started)| !process::is_alive(pid, started)))
        .collect()
}

/// Unlinks every [`orphans`] segment; returns the names it removed.
pub fn reclaim() -> Vec<String> {
    let mut removed = orphans();
    removed.retain(|name| shm_unlink(format!("/{name}").as_str()).is_ok());
    for name in &removed {
        tracing::debug!("removed the shared-memory segment {name} of a process that is gone");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::ring;

    fn in_dev_shm(name: &str) -> bool {
        std::path::Path::new(SHM_DIR).join(name).exists()
    }

    #[test]
    fn a_segment_is_shared_by_its_mappings_and_unlinking_keeps_the_memory() {
        let mut a = Segment::create("test-share", 8192).unwrap();
        let name = a.name().to_string();
        assert!(name.starts_with(&format!("kawarimi.{}.", std::process::id())), "{name}");
        assert_eq!(owner_of(&name).map(|(pid, _)| pid), Some(std::process::id()));
        assert!(in_dev_shm(&name));
        let mode = std::fs::metadata(std::path::Path::new(SHM_DIR).join(&name)).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
        let b = Segment::open(&name, 8192).unwrap();
        // SAFETY: both mappings are 8192 bytes and alive; nothing else uses them.
        unsafe {
            assert_eq!(*b.as_ptr().add(4000), 0, "a new segment is zeroed");
            *a.as_ptr().add(4000) = 42;
            assert_eq!(*b.as_ptr().add(4000), 42, "one memory");
        }
        a.unlink().unwrap();
        assert!(!in_dev_shm(&name), "the name is gone");
        // SAFETY: as above; the mappings outlive the name.
        unsafe {
            *b.as_ptr().add(10) = 7;
            assert_eq!(*a.as_ptr().add(10), 7, "the memory stays while mapped");
        }
        assert!(Segment::open(&name, 8192).is_err(), "an unlinked segment cannot be opened");
        a.unlink().unwrap();
    }

    #[test]
    fn dropping_a_segment_not_unlinked_removes_its_name() {
        let a = Segment::create("test-drop", 4096).unwrap();
        let name = a.name().to_string();
        drop(a);
        assert!(!in_dev_shm(&name));
    }

    #[test]
    fn wrong_sizes_names_and_tags_are_refused() {
        let a = Segment::create("test-size", 4096).unwrap();
        let err = Segment::open(a.name(), 8192).unwrap_err();
        assert!(err.to_string().contains("has 4096 bytes, not the 8192 expected"), "{err}");
        let err = Segment::open("someone-else", 4096).unwrap_err();
        assert!(err.to_string().contains("not a kawarimi segment"), "{err}");
        assert!(Segment::create("a/b", 4096).is_err());
        assert!(Segment::create("", 4096).is_err());
        assert!(Segment::create("test-empty", 0).is_err());
        let err = Segment::create_named(a.name(), 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
    }

    #[test]
    fn reclaim_removes_what_dead_owners_left_and_nothing_else() {
        // A pid that cannot exist (pid_max is at most 2^22) stands for a killed owner.
        let dead_name = format!("{PREFIX}{}.12345.test-reclaim", u32::MAX - 3);
        let dead = Segment::create_named(&dead_name, 4096).unwrap();
        let live = Segment::create("test-reclaim-live", 4096).unwrap();
        // A live pid with another start time is a reused pid: its owner is gone too.
        let reused_name = format!("{PREFIX}{}.1.test-reclaim-reused", std::process::id());
        let reused = Segment::create_named(&reused_name, 4096).unwrap();
        assert!(in_dev_shm(&dead_name) && in_dev_shm(&reused_name));
        // Another job's start-up may reclaim at the same moment, so what this call removed is
        // checked only for what it must not remove; the orphans must be gone either way.
        let removed = reclaim();
        assert!(!removed.contains(&live.name().to_string()), "{removed:?}");
        assert!(!in_dev_shm(&dead_name) && !in_dev_shm(&reused_name), "orphans left: {removed:?}");
        assert!(in_dev_shm(live.name()), "a live owner's segment was removed");
        drop((dead, reused, live));
    }

    const CROSS_CAPACITY: usize = 4096;
    const CROSS_FRAMES: u64 = 20_000;

    fn cross_frame(i: u64) -> Vec<u8> {
        (0..(i % 200) as usize).map(|j| (i as usize + j * 3) as u8).collect()
    }

    /// A ring in a segment carries frames from another process: the test re-runs its own
    /// binary as the producer (`producer_in_another_process`), which maps the segment by name.
    #[test]
    fn a_ring_in_a_segment_crosses_processes() {
        let mut seg = Segment::create("test-cross", ring::region_bytes(CROSS_CAPACITY)).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "shm::segment::tests::producer_in_another_process", "--ignored", "--nocapture"])
            .env("KAWARIMI_TEST_SEGMENT", seg.name())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // SAFETY: the segment is mapped, aligned to a page, zeroed, and outlives the consumer;
        // the child is the one producer.
        let mut rx = unsafe { ring::consumer(seg.as_ptr(), CROSS_CAPACITY) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut out = Vec::new();
        for i in 0..CROSS_FRAMES {
            while !rx.pop_into(&mut out).unwrap() {
                assert!(std::time::Instant::now() < deadline, "frame {i} never came");
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(rx.pop_into(&mut out).unwrap(), "the producer ended ({status}) before frame {i}");
                    break;
                }
                std::thread::yield_now();
            }
            assert_eq!(out, cross_frame(i), "frame {i}");
        }
        assert!(child.wait().unwrap().success());
        seg.unlink().unwrap();
    }

    /// The producing half of `a_ring_in_a_segment_crosses_processes`, run in a child process.
    #[test]
    #[ignore = "run by a_ring_in_a_segment_crosses_processes in a process of its own"]
    fn producer_in_another_process() {
        let name = std::env::var("KAWARIMI_TEST_SEGMENT").expect("started by the crossing test");
        let seg = Segment::open(&name, ring::region_bytes(CROSS_CAPACITY)).unwrap();
        // SAFETY: the parent's segment, mapped for the whole loop; this is its one producer.
        let mut tx = unsafe { ring::producer(seg.as_ptr(), CROSS_CAPACITY) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for i in 0..CROSS_FRAMES {
            let f = cross_frame(i);
            while !tx.push(&[&f]).unwrap() {
                assert!(std::time::Instant::now() < deadline, "the consumer stopped reading");
                std::thread::yield_now();
            }
        }
    }
}
