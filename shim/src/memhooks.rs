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

use kawarimi_transports::memory::{self, note_given_back};

/// Makes the heap stable for the registration cache (unless the user turned the cache off).
pub fn install() {
    if std::env::var("KAWARIMI_REG_CACHE").is_ok_and(|v| v == "0") {
        return;
    }
    memory::install();
}

/// `madvise` advice after which a page reads back as new (zeroes or the file's contents).
/// `MADV_DONTNEED_LOCKED` (Linux 5.18) is 24; the libc crate does not name it.
fn drops_pages(advice: c_int) -> bool {
    matches!(advice, libc::MADV_DONTNEED | libc::MADV_FREE | libc::MADV_REMOVE | 24)
}

/// # Safety
/// As libc's `munmap`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: libc::size_t) -> c_int {
    // SAFETY: the caller's arguments, passed to the kernel as libc's wrapper would.
    let r = unsafe { libc::syscall(libc::SYS_munmap, addr, len) } as c_int;
    note_given_back(addr as usize, len);
    r
}

/// `mremap` is variadic in C (`new_address` only with `MREMAP_FIXED`); on x86-64 a variadic
/// pointer argument travels in the same register as a fixed fifth one, so this definition
/// receives it, and reads it only when the flags say it was passed.
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
    let fixed = flags & (libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP) != 0;
    let target = if fixed { new_address } else { std::ptr::null_mut() };
    // SAFETY: the caller's arguments, passed to the kernel as libc's wrapper would.
    let r = unsafe { libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, target) } as *mut c_void;
    note_given_back(old as usize, old_len);
    if fixed {
        note_given_back(new_address as usize, new_len);
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
    // A fixed mapping replaces whatever was there.
    if flags & libc::MAP_FIXED != 0 && r != libc::MAP_FAILED {
        note_given_back(addr as usize, len);
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
    if drops_pages(advice) {
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
    let r = f(pad);
    note_given_back(0, usize::MAX);
    r
}

/// # Safety
/// As libc's `mallopt`. A setting that lets malloc give memory back again ends the stability
/// of the heap for good; the settings kawarimi itself makes change nothing.
#[no_mangle]
pub unsafe extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    // SAFETY: the address of libc's `mallopt`, whose signature this is.
    let f: extern "C" fn(c_int, c_int) -> c_int = unsafe { std::mem::transmute(next(c"mallopt", &LIBC_MALLOPT)) };
    let r = f(param, value);
    let harmless = match param {
        libc::M_TRIM_THRESHOLD => value == -1,
        libc::M_MMAP_MAX => value == 0,
        _ => true,
    };
    if !harmless {
        memory::malloc_settings_changed();
    }
    r
}
