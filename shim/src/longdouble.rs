//! Installs C's `long double` arithmetic (csrc/longdouble.c) into the runtime's reductions.

extern "C" {
    fn kw_ld_add(a: *const u8, b: *const u8, out: *mut u8);
    fn kw_ld_mul(a: *const u8, b: *const u8, out: *mut u8);
}

fn add(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    // SAFETY: the C function reads 16 bytes from each input and writes 16 to `out`.
    unsafe { kw_ld_add(a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) };
    out
}

fn mul(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    // SAFETY: as for `add`.
    unsafe { kw_ld_mul(a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) };
    out
}

pub fn install() {
    kawarimi_runtime::op::set_long_double_math(add, mul);
}
