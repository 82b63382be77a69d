//! Application memory as Rust slices.
//!
//! MPI's rules are what make these conversions sound: the application must not touch a send
//! buffer's bytes in a way that changes them, nor read or write a receive buffer, until the
//! operation completes, and kawarimi completes every operation before the request's `Wait`
//! returns. The `'static` lifetime stands for "until the request completes".

use std::ffi::c_void;

use kawarimi_runtime::error::ErrorClass;

use crate::state::{fail, Res};

/// Checks that `[ptr+lo, ptr+hi)` can be a slice: non-null when non-empty, and not wrapping.
fn range(ptr: *const c_void, lo: isize, hi: isize) -> Res<Option<(*const u8, usize)>> {
    if hi <= lo {
        return Ok(None);
    }
    let start = (ptr as usize).wrapping_add_signed(lo);
    if start == 0 {
        return fail(ErrorClass::Buffer, "buffer is NULL but the datatype and count describe data");
    }
    let len = (hi - lo) as usize;
    if start.checked_add(len).is_none() || len > isize::MAX as usize {
        return fail(ErrorClass::Buffer, format!("buffer of {len} bytes at {start:#x} wraps the address space"));
    }
    Ok(Some((start as *const u8, len)))
}

/// The bytes `[ptr+lo, ptr+hi)` of a send buffer.
///
/// # Safety
/// The range must be memory the application owns and keeps unmodified until the operation
/// that reads it completes (the MPI standard's send-buffer rule).
pub unsafe fn user_bytes(ptr: *const c_void, lo: isize, hi: isize) -> Res<&'static [u8]> {
    Ok(match range(ptr, lo, hi)? {
        None => &[],
        // SAFETY: non-null, in bounds of one allocation per the caller's contract, and not
        // mutated while the slice lives.
        Some((p, len)) => unsafe { std::slice::from_raw_parts(p, len) },
    })
}

/// The bytes `[ptr+lo, ptr+hi)` of a receive buffer.
///
/// # Safety
/// The range must be memory the application owns and does not access until the operation
/// that writes it completes (the MPI standard's receive-buffer rule); no other live slice
/// may overlap it.
pub unsafe fn user_bytes_mut(ptr: *mut c_void, lo: isize, hi: isize) -> Res<&'static mut [u8]> {
    Ok(match range(ptr, lo, hi)? {
        None => &mut [],
        // SAFETY: as above, and exclusively ours until completion per the caller's contract.
        Some((p, len)) => unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) },
    })
}

/// Reads `n` values of `T` from a C array argument.
///
/// # Safety
/// `p` must point to `n` initialised values of `T` (or `n` must be 0).
pub unsafe fn c_array<'a, T>(p: *const T, n: usize) -> Res<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return fail(ErrorClass::Arg, format!("NULL array where {n} values are expected"));
    }
    // SAFETY: per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A writable C array argument of `n` values.
///
/// # Safety
/// `p` must point to `n` writable values of `T` (or `n` must be 0).
pub unsafe fn c_array_mut<'a, T>(p: *mut T, n: usize) -> Res<&'a mut [T]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return fail(ErrorClass::Arg, format!("NULL array where {n} values are expected"));
    }
    // SAFETY: per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// Writes `v` through an output pointer argument.
///
/// # Safety
/// `p` must be NULL or point to writable memory for a `T`.
pub unsafe fn out<T>(p: *mut T, v: T) -> Res<()> {
    if p.is_null() {
        return fail(ErrorClass::Arg, "NULL output argument");
    }
    // SAFETY: non-null and writable per the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Copies `s` into a C string buffer of `cap` bytes (NUL included), returning the length.
///
/// # Safety
/// `buf` must point to at least `cap` writable bytes.
pub unsafe fn c_string(buf: *mut std::ffi::c_char, cap: usize, s: &str) -> Res<c_int_len> {
    if buf.is_null() || cap == 0 {
        return fail(ErrorClass::Arg, "NULL string buffer");
    }
    let n = s.len().min(cap - 1);
    // SAFETY: `n + 1 <= cap` bytes are written into the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf as *mut u8, n);
        *buf.add(n) = 0;
    }
    Ok(n as c_int_len)
}

#[allow(non_camel_case_types)]
pub type c_int_len = std::ffi::c_int;
