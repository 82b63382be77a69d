//! Which of the process's memory keeps its pages, so that a memory registration of it may be
//! kept and used again, and the log of memory the process gave back.
//!
//! A registration pins the pages that back a range of addresses when it is made. If the range
//! is later unmapped and mapped again (a large block freed, then another allocated at the same
//! address), the addresses have new pages and a kept registration would let the peer read the
//! old ones: a silent wrong answer. So registrations are kept ([`super::regcache`]) only
//! of memory whose pages cannot change behind kawarimi's back:
//! - the main heap, from its start to the current break, once glibc's malloc has been told
//!   ([`install`]) never to give memory back to the kernel (`M_TRIM_THRESHOLD`) and never to
//!   map a large block on its own (`M_MMAP_MAX` 0), which is what Open MPI's `leave_pinned`
//!   does too. Its pages then change only through a call the program makes itself;
//! - the program's own data and bss segments, which live as long as the process.
//!
//! Every call that can change those pages (`munmap`, `mremap`, `mmap` at a fixed address,
//! `madvise` that drops pages, `brk`/`sbrk`, `malloc_trim`) must be reported here by
//! [`note_given_back`] before it returns. The shim does that for the whole process: it puts
//! its own definitions of those functions in front of libc's. A program without the shim
//! installs nothing, and nothing is kept. A program that changes malloc's settings
//! (`mallopt`) afterwards makes everything unstable again ([`malloc_settings_changed`]).
//!
//! Threads' malloc arenas and blocks mapped on their own are outside these ranges: glibc can
//! give them back from inside libc, where no interposition sees it.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The ranges [`install`] found stable.
struct Stable {
    /// The program's writable segments, page-aligned.
    segments: Vec<Range<usize>>,
    /// Where the main heap starts; it ends at the current break.
    heap_start: usize,
}

/// Set by [`install`]: `None` where the process could not be made stable.
static STABLE: OnceLock<Option<Stable>> = OnceLock::new();
/// Set for good once malloc's settings change after [`install`] (or too many holes were made).
static UNSTABLE: AtomicBool = AtomicBool::new(false);
/// The highest break [`is_stable`] has vouched up to: a range given back above it cannot
/// overlap a kept registration, so it is not logged (the log is short; every `munmap` of the
/// process would flood it).
static HIGHEST_BREAK: AtomicUsize = AtomicUsize::new(0);
/// Calls under way that give back memory from inside libc (`malloc_trim`): while one runs,
/// nothing is vouched for ([`giving_back`]).
static GIVING_BACK: AtomicUsize = AtomicUsize::new(0);
/// Ranges unmapped inside the stable regions: libc may map something of its own there later
/// (a thread's arena, a stack), where no call of the program's is seen. At most [`MAX_HOLES`];
/// past that nothing is stable any more.
static HOLES: Mutex<[(usize, usize); MAX_HOLES]> = Mutex::new([(0, 0); MAX_HOLES]);
const MAX_HOLES: usize = 16;

/// Ranges given back, kept until every cache has seen them, within a bound: a cache that
/// falls further behind drops everything it holds (see [`GivenBack::take`]).
pub struct GivenBackLog {
    /// How many ranges were ever logged (read without the lock: the cheap check).
    total: AtomicU64,
    ring: Mutex<[(usize, usize); LOG_LEN]>,
}

/// Ranges the log keeps.
const LOG_LEN: usize = 64;

/// The process's log, which the shim's interposed calls write.
pub static PROCESS_LOG: GivenBackLog = GivenBackLog::new();

impl GivenBackLog {
    pub const fn new() -> GivenBackLog {
        GivenBackLog { total: AtomicU64::new(0), ring: Mutex::new([(0, 0); LOG_LEN]) }
    }

    /// Logs `range` as given back. Takes a lock for a moment and never allocates: it runs
    /// inside `munmap` on any thread, also inside libraries kawarimi calls.
    pub fn note(&self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.total.load(Ordering::Relaxed);
        ring[(n % LOG_LEN as u64) as usize] = (range.start, range.end);
        self.total.store(n + 1, Ordering::Release);
    }
}

impl Default for GivenBackLog {
    fn default() -> Self {
        GivenBackLog::new()
    }
}

/// What a cache must drop since it last looked.
#[derive(Debug, PartialEq, Eq)]
pub enum Changes {
    None,
    /// Whatever overlaps these ranges.
    Ranges(Vec<Range<usize>>),
    /// Everything: more was given back than the log keeps.
    All,
}

/// One reader's place in a [`GivenBackLog`].
pub struct GivenBack {
    log: &'static GivenBackLog,
    seen: u64,
}

impl GivenBack {
    /// A reader that sees what is logged from now on.
    pub fn new(log: &'static GivenBackLog) -> GivenBack {
        GivenBack { log, seen: log.total.load(Ordering::Acquire) }
    }

    /// What was given back since the last call.
    pub fn take(&mut self) -> Changes {
        if self.log.total.load(Ordering::Acquire) == self.seen {
            return Changes::None;
        }
        // Copied out under the lock without allocating: an allocator may give memory back
        // (`madvise` through the shim, which takes this lock) from inside an allocation.
        let (ring, total) = {
            let ring = self.log.ring.lock().unwrap_or_else(|e| e.into_inner());
            (*ring, self.log.total.load(Ordering::Acquire))
        };
        let from = std::mem::replace(&mut self.seen, total);
        if total - from > LOG_LEN as u64 {
            return Changes::All;
        }
        Changes::Ranges((from..total).map(|i| ring[(i % LOG_LEN as u64) as usize]).map(|(s, e)| s..e).collect())
    }
}

/// Reports that the pages of `[addr, addr + len)` may change (see the module's comment).
pub fn note_given_back(addr: usize, len: usize) {
    if let Some(range) = relevant(addr, len) {
        PROCESS_LOG.note(range);
    }
}

/// Reports that `[addr, addr + len)` was unmapped (or mapped over): its pages may change, and
/// if it lies in a stable region, the hole it leaves is not stable any more.
pub fn note_unmapped(addr: usize, len: usize) {
    let Some(range) = relevant(addr, len) else { return };
    {
        let mut holes = HOLES.lock().unwrap_or_else(|e| e.into_inner());
        match holes.iter_mut().find(|h| h.0 == h.1) {
            Some(free) => *free = (range.start, range.end),
            None => UNSTABLE.store(true, Ordering::Release),
        }
    }
    PROCESS_LOG.note(range);
}

/// The page-aligned range, if it may overlap memory a cache keeps: nothing is kept before
/// [`install`], nor outside the program's segments and the heap up to the highest break seen.
fn relevant(addr: usize, len: usize) -> Option<Range<usize>> {
    let s = STABLE.get()?.as_ref()?;
    let range = addr & !(page_size() - 1)..addr.saturating_add(len);
    let overlaps = |r: &Range<usize>| r.start < range.end && range.start < r.end;
    let heap = s.heap_start..HIGHEST_BREAK.load(Ordering::Acquire);
    (overlaps(&heap) || s.segments.iter().any(overlaps) || range.end == usize::MAX).then_some(range)
}

/// Brackets a call that gives memory back from inside libc, where the range is known only
/// afterwards: nothing is vouched for until [`end_giving_back`], which logs `everything`.
pub fn begin_giving_back() {
    GIVING_BACK.fetch_add(1, Ordering::AcqRel);
}

pub fn end_giving_back() {
    PROCESS_LOG.note(0..usize::MAX);
    GIVING_BACK.fetch_sub(1, Ordering::AcqRel);
}

/// Whether memory is being given back right now from inside libc: a cache must neither
/// answer from nor add to what it keeps.
pub fn giving_back() -> bool {
    GIVING_BACK.load(Ordering::Acquire) != 0
}

/// Reports that malloc's settings changed (`mallopt`): the heap may shrink again, so nothing
/// is stable from now on, and whatever is kept goes.
/// Called before the setting is made, so that nothing is vouched for once malloc may act on it.
pub fn malloc_settings_changed() {
    if STABLE.get().is_none() {
        // Before `install`, whose own settings come last.
        return;
    }
    UNSTABLE.store(true, Ordering::Release);
    PROCESS_LOG.note(0..usize::MAX);
}

/// Makes the main heap and the program's writable segments stable (see the module's comment):
/// sets malloc's options, then notes where the heap starts. Only for a process in which every
/// call that gives memory back reaches [`note_given_back`]: one with the shim, or a program
/// that makes no such call itself. Once per process; later calls change nothing. Returns
/// whether the options took.
pub fn install() -> bool {
    STABLE
        .get_or_init(|| {
            // SAFETY: plain calls into libc's malloc configuration, allowed at any time.
            let set =
                || unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, -1) == 1 && libc::mallopt(libc::M_MMAP_MAX, 0) == 1 };
            (fork_keeps_pinned_pages() && set()).then(|| Stable {
                segments: writable_segments(),
                heap_start: heap_start().unwrap_or_else(current_break),
            })
        })
        .is_some()
}

/// Whether the pages of `range` cannot change without a [`note_given_back`].
pub fn is_stable(range: &Range<usize>) -> bool {
    let Some(Some(s)) = STABLE.get() else { return false };
    if UNSTABLE.load(Ordering::Acquire) || range.is_empty() || giving_back() {
        return false;
    }
    let top = current_break();
    HIGHEST_BREAK.fetch_max(top, Ordering::AcqRel);
    let within = |r: &Range<usize>| r.start <= range.start && range.end <= r.end;
    let holes = *HOLES.lock().unwrap_or_else(|e| e.into_inner());
    let in_hole = holes.iter().any(|&(a, b)| a < range.end && range.start < b);
    !in_hole && (within(&(s.heap_start..top)) || s.segments.iter().any(within))
}

/// Whether a fork leaves this process its pinned pages: since Linux 5.9 the kernel copies a
/// pinned page for the child at fork, while before it the parent's next write after a fork
/// (`system()`, say) would give it a new page and a kept registration would hold the old one.
fn fork_keeps_pinned_pages() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else { return false };
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (5, 9)
}

pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096))
}

/// The program break (the end of the main heap).
fn current_break() -> usize {
    // SAFETY: sbrk(0) only reads the break.
    unsafe { libc::sbrk(0) as usize }
}

/// Where `[heap]` starts in `/proc/self/maps`, if the process has one yet.
fn heap_start() -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[heap]"))?;
    usize::from_str_radix(line.split('-').next()?, 16).ok()
}

/// The writable `PT_LOAD` segments of the program itself (data and bss), page-aligned.
fn writable_segments() -> Vec<Range<usize>> {
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        out: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `out` is the vector passed below; `info` and its program headers are valid
        // for the duration of the callback (dl_iterate_phdr's contract).
        let (out, info) = unsafe { (&mut *(out as *mut Vec<Range<usize>>), &*info) };
        let page = page_size();
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: `dlpi_phdr` has `dlpi_phnum` entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_W != 0 {
                let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
                let end = start + ph.p_memsz as usize;
                out.push(start.next_multiple_of(page)..end & !(page - 1));
            }
        }
        // The first object is the program; stop there.
        1
    }
    let mut out: Vec<Range<usize>> = Vec::new();
    // SAFETY: the callback matches dl_iterate_phdr's signature and only writes `out`.
    unsafe { libc::dl_iterate_phdr(Some(first_object), &mut out as *mut Vec<Range<usize>> as *mut libc::c_void) };
    out.retain(|r| !r.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaked_log() -> &'static GivenBackLog {
        Box::leak(Box::new(GivenBackLog::new()))
    }

    #[test]
    fn a_reader_sees_what_was_logged_since_it_last_looked() {
        let log = leaked_log();
        log.note(0x1000..0x2000);
        let mut r = GivenBack::new(log);
        assert_eq!(r.take(), Changes::None, "logged before the reader began");
        log.note(0x3000..0x5000);
        log.note(0x8000..0x8000);
        log.note(0x9000..0xa000);
        assert_eq!(r.take(), Changes::Ranges(vec![0x3000..0x5000, 0x9000..0xa000]));
        assert_eq!(r.take(), Changes::None);
    }

    #[test]
    fn a_reader_that_fell_behind_the_log_drops_everything() {
        let log = leaked_log();
        let mut r = GivenBack::new(log);
        for i in 0..LOG_LEN {
            log.note(i * 0x1000..(i + 1) * 0x1000);
        }
        assert!(matches!(r.take(), Changes::Ranges(v) if v.len() == LOG_LEN), "a full log is still complete");
        for i in 0..=LOG_LEN {
            log.note(i * 0x1000..(i + 1) * 0x1000);
        }
        assert_eq!(r.take(), Changes::All);
    }

    #[test]
    fn only_installed_memory_is_stable_and_the_program_data_is() {
        use std::sync::atomic::AtomicU8;
        // Interior mutability puts it in the writable data segment (a plain constant array
        // would be in read-only data, which is not counted).
        static IN_DATA: [AtomicU8; 1 << 16] = [const { AtomicU8::new(1) }; 1 << 16];
        let page = page_size();
        let data = IN_DATA.as_ptr() as usize;
        let inner = data.next_multiple_of(page)..data.next_multiple_of(page) + page;
        let on_stack = [0u8; 64];
        let stack = on_stack.as_ptr() as usize..on_stack.as_ptr() as usize + 64;
        // A test binary has the process to itself, so installing here is sound: nothing in
        // it gives heap memory back by a call of its own.
        assert!(install(), "glibc takes the options");
        assert!(
            is_stable(&inner),
            "a page of the program's data {inner:x?}: {:x?}",
            STABLE.get().and_then(Option::as_ref).map(|s| &s.segments)
        );
        // (Where a test thread's malloc puts a block depends on its arena; the lab's
        // registration test checks a program's own heap through the shim.)
        let s = STABLE.get().and_then(Option::as_ref).expect("installed");
        let top = current_break();
        assert!(top > s.heap_start, "the heap has pages");
        assert!(is_stable(&(s.heap_start..top)), "the main heap up to the break");
        assert!(!is_stable(&(s.heap_start..top + page)), "past the break");
        assert!(!is_stable(&stack), "the stack is not vouched for");
        assert!(!is_stable(&(s.heap_start..s.heap_start)), "an empty range");
        // While libc gives memory back by itself, nothing is vouched for.
        begin_giving_back();
        assert!(!is_stable(&inner));
        end_giving_back();
        assert!(is_stable(&inner));
        // A range unmapped inside a stable region is a hole from then on (libc may map its
        // own things there); its neighbours stay stable.
        let next = inner.end..inner.end + page;
        assert!(is_stable(&next));
        note_unmapped(next.start + 8, 16);
        assert!(!is_stable(&next), "the page holding the unmapped bytes");
        assert!(is_stable(&inner), "the page before it");
        // What cannot overlap stable memory is not logged (the log would flood).
        let mut reader = GivenBack::new(&PROCESS_LOG);
        let on_stack = stack.start;
        note_given_back(on_stack, 64);
        note_given_back(inner.start, 1);
        assert_eq!(reader.take(), Changes::Ranges(std::iter::once(inner.start..inner.start + 1).collect()));
    }
}
