//! The calls that can give the program's memory back, seen on their way to libc, so that the
//! verbs transport's kept registrations never outlive the pages they pinned (see
//! `kawarimi_transports::memory`).
//!
//! This library defines `munmap`, `mremap`, `mmap`, `madvise`, `brk`, `sbrk`, `malloc_trim`
//! and `mallopt`. Preloaded or linked ahead of libc, its definitions take every call the
//! program and its libraries make through the dynamic linker. Each forwards to the kernel or
//! to libc's own function and then logs the range whose pages may have changed. Calls libc
//! makes to itself (its malloc unmapping a block) never come here, which is why only memory
//! those cannot touch counts as stable.
//!
//! [`install`] runs at `MPI_Init`, before any transport exists, unless `KAWARIMI_REG_CACHE=0`.

use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

use kawarimi_transports::verbs::memory;

/// Makes the heap stable for the registration cache, unless the user turned the cache off or
/// this library's definitions are not the ones the process calls (libmpi opened with
/// `dlopen` after libc, as by a Python or Julia binding: then no call would be seen).
pub fn install() {
    if std::env::var("KAWARIMI_REG_CACHE").is_ok_and(|v| v == "0") {
        return;
    }
    let ours: [(&CStr, usize); 9] = [
        (c"munmap", munmap as *const () as usize),
        (c"mremap", mremap as *const () as usize),
        (c"mmap", mmap as *const () as usize),
        (c"mmap64", mmap64 as *const () as usize),
        (c"madvise", madvise as *const () as usize),
        (c"brk", brk as *const () as usize),
        (c"sbrk", sbrk as *const () as usize),
        (c"malloc_trim", malloc_trim as *const () as usize),
        (c"mallopt", mallopt as *const () as usize),
    ];
    // SAFETY: NUL-terminated names; RTLD_DEFAULT looks the name up as a call would.
    let seen = ours.iter().all(|&(name, f)| unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize == f);
    if seen {
        memory::install();
    }
}

/// `madvise` advice that leaves a page's contents and mapping alone. Any other (those that
/// drop pages, guard pages, poison, and whatever a later kernel adds) is logged.
fn harmless(advice: c_int) -> bool {
    use libc::*;
    // MADV_WIPEONFORK, MADV_KEEPONFORK: they change the child's copy only.
    let fork_only = [18, 19];
    matches!(
        advice,
        MADV_NORMAL
            | MADV_RANDOM
            | MADV_SEQUENTIAL
            | MADV_WILLNEED
            | MADV_DONTFORK
            | MADV_DOFORK
            | MADV_MERGEABLE
            | MADV_UNMERGEABLE
            | MADV_HUGEPAGE
            | MADV_NOHUGEPAGE
            | MADV_DONTDUMP
            | MADV_DODUMP
    ) || fork_only.contains(&advice)
}

/// Runs `log` and leaves `errno` as the forwarded call set it (logging may take a lock, which
/// can change it).
fn keeping_errno(log: impl FnOnce()) {
    // SAFETY: errno is this thread's.
    let saved = unsafe { *libc::__errno_location() };
    log();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

fn note_given_back(addr: usize, len: usize) {
    keeping_errno(|| memory::note_given_back(addr, len));
}

fn note_unmapped(addr: usize, len: usize) {
    keeping_errno(|| memory::note_unmapped(addr, len));
}

/// # Safety
/// As libc's `munmap`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: libc::size_t) -> c_int {
    // SAFETY: the caller's arguments, passed to the kernel as libc's wrapper would.
    let r = unsafe { libc::syscall(libc::SYS_munmap, addr, len) } as c_int;
    note_unmapped(addr as usize, len);
    r
}

/// `mremap` is variadic in C (`new_address` only with `MREMAP_FIXED`); on x86-64 a variadic
/// pointer argument travels in the same register as a fixed fifth one, so this definition
/// receives it, and reads it only when the flags say it was passed (as glibc does).
///
/// # Safety
/// As libc's `mremap`.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: libc::size_t,
    new_len: libc::size_t,
    flags: c_int,
    new_address: *mut c_void,
) -> *mut c_void {
    let fixed = flags & libc::MREMAP_FIXED != 0;
    let target = if fixed { new_address } else { std::ptr::null_mut() };
    // SAFETY: the caller's arguments, passed to the kernel as libc's wrapper would.
    let r = unsafe { libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, target) } as *mut c_void;
    note_unmapped(old as usize, old_len);
    if fixed {
        note_unmapped(new_address as usize, new_len);
    } else if r != libc::MAP_FAILED {
        note_unmapped(r as usize, new_len);
    }
    r
}

/// # Safety
/// As libc's `mmap`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: libc::size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: libc::off_t,
) -> *mut c_void {
    // SAFETY: the caller's arguments, passed to the kernel as libc's wrapper would (on
    // x86-64 the offset goes as it is).
    let r = unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, offset) } as *mut c_void;
    // A fixed mapping replaces whatever was there (a failed one may have unmapped it already).
    if flags & libc::MAP_FIXED != 0 {
        note_unmapped(addr as usize, len);
    }
    r
}

/// # Safety
/// As libc's `mmap64` (the same call on x86-64).
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: libc::size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: libc::off64_t,
) -> *mut c_void {
    // SAFETY: the same contract.
    unsafe { mmap(addr, len, prot, flags, fd, offset) }
}

/// # Safety
/// As libc's `madvise`.
#[no_mangle]
pub unsafe extern "C" fn madvise(addr: *mut c_void, len: libc::size_t, advice: c_int) -> c_int {
    // SAFETY: the caller's arguments, passed to the kernel as libc's wrapper would.
    let r = unsafe { libc::syscall(libc::SYS_madvise, addr, len, advice) } as c_int;
    if !harmless(advice) {
        note_given_back(addr as usize, len);
    }
    r
}

/// libc's own definition of `name` (the next one after this library's).
fn next(name: &CStr, cache: &AtomicUsize) -> usize {
    let mut f = cache.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: a NUL-terminated name; RTLD_NEXT looks past this object.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        assert!(f != 0, "kawarimi: libc has no {name:?}");
        cache.store(f, Ordering::Release);
    }
    f
}

static LIBC_SBRK: AtomicUsize = AtomicUsize::new(0);
static LIBC_BRK: AtomicUsize = AtomicUsize::new(0);
static LIBC_MALLOC_TRIM: AtomicUsize = AtomicUsize::new(0);
static LIBC_MALLOPT: AtomicUsize = AtomicUsize::new(0);

fn libc_sbrk(increment: libc::intptr_t) -> *mut c_void {
    // SAFETY: the address of libc's `sbrk`, whose signature this is.
    let f: extern "C" fn(libc::intptr_t) -> *mut c_void = unsafe { std::mem::transmute(next(c"sbrk", &LIBC_SBRK)) };
    f(increment)
}

/// # Safety
/// As libc's `sbrk`. (Through libc's, which keeps its own idea of the break.)
#[no_mangle]
pub unsafe extern "C" fn sbrk(increment: libc::intptr_t) -> *mut c_void {
    let old = libc_sbrk(increment);
    if increment < 0 && old as isize != -1 {
        let start = (old as usize).wrapping_add_signed(increment);
        note_given_back(start, increment.unsigned_abs());
    }
    old
}

/// # Safety
/// As libc's `brk`.
#[no_mangle]
pub unsafe extern "C" fn brk(addr: *mut c_void) -> c_int {
    let old = libc_sbrk(0) as usize;
    // SAFETY: the address of libc's `brk`, whose signature this is.
    let f: extern "C" fn(*mut c_void) -> c_int = unsafe { std::mem::transmute(next(c"brk", &LIBC_BRK)) };
    let r = f(addr);
    if (addr as usize) < old {
        note_given_back(addr as usize, old - addr as usize);
    }
    r
}

/// # Safety
/// As libc's `malloc_trim`, which gives free heap pages back (all of them may have changed).
#[no_mangle]
pub unsafe extern "C" fn malloc_trim(pad: libc::size_t) -> c_int {
    // SAFETY: the address of libc's `malloc_trim`, whose signature this is.
    let f: extern "C" fn(libc::size_t) -> c_int =
        unsafe { std::mem::transmute(next(c"malloc_trim", &LIBC_MALLOC_TRIM)) };
    // Another thread may take memory it frees before it returns: nothing is vouched for
    // while it runs.
    memory::begin_giving_back();
    let r = f(pad);
    keeping_errno(memory::end_giving_back);
    r
}

/// # Safety
/// As libc's `mallopt`. A setting that lets malloc give memory back again ends the stability
/// of the heap for good; the settings kawarimi itself makes change nothing.
#[no_mangle]
pub unsafe extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    // SAFETY: the address of libc's `mallopt`, whose signature this is.
    let f: extern "C" fn(c_int, c_int) -> c_int = unsafe { std::mem::transmute(next(c"mallopt", &LIBC_MALLOPT)) };
    let harmless = match param {
        libc::M_TRIM_THRESHOLD => value == -1,
        libc::M_MMAP_MAX => value == 0,
        _ => true,
    };
    // Before the setting takes: another thread's free may act on it at once.
    if !harmless {
        memory::malloc_settings_changed();
    }
    f(param, value)
}
