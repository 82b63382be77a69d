//! Installs C's arithmetic of the 16-byte floating-point formats (csrc/widefloat.c: x87
//! `long double` and IEEE binary128) into the runtime's reductions.

use kawarimi_runtime::op::{set_wide_float_math, WideFloat};

extern "C" {
    fn kw_ld_add(a: *const u8, b: *const u8, out: *mut u8);
    fn kw_ld_mul(a: *const u8, b: *const u8, out: *mut u8);
    fn kw_q_add(a: *const u8, b: *const u8, out: *mut u8);
    fn kw_q_mul(a: *const u8, b: *const u8, out: *mut u8);
}

/// Calls one of the C functions above.
fn through(f: unsafe extern "C" fn(*const u8, *const u8, *mut u8), a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    // SAFETY: each C function reads 16 bytes from each input and writes 16 to `out`.
    unsafe { f(a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) };
    out
}

pub fn install() {
    set_wide_float_math(WideFloat::X87, |a, b| through(kw_ld_add, a, b), |a, b| through(kw_ld_mul, a, b));
    set_wide_float_math(WideFloat::Binary128, |a, b| through(kw_q_add, a, b), |a, b| through(kw_q_mul, a, b));
}

#[cfg(test)]
mod tests {
    use kawarimi_runtime::datatype::Primitive;
    use kawarimi_runtime::op::{apply, PredefinedOp as Op};

    /// 1 + 2^-111 and its binary128 neighbours: sums and products that f64 or x87 arithmetic
    /// would round away.
    fn q(exponent: u16, fraction: u128) -> Vec<u8> {
        ((u128::from(exponent) << 112) | fraction).to_le_bytes().to_vec()
    }

    #[test]
    fn binary128_sum_and_product_are_exact() {
        super::install();
        let one_and_a_bit = q(16383, 2); // 1 + 2^-111
        let mut inout = one_and_a_bit.clone();
        apply(Op::Sum, Primitive::F128, &one_and_a_bit, &mut inout).unwrap();
        assert_eq!(inout, q(16384, 2), "2 + 2^-110");
        let mut inout = one_and_a_bit.clone();
        apply(Op::Prod, Primitive::F128, &one_and_a_bit, &mut inout).unwrap();
        assert_eq!(inout, q(16383, 4), "1 + 2^-110 (+ 2^-222, rounded away)");
        // (a + bi)(a - bi) = a^2 + b^2 with a = 1 + 2^-111, b = 1: 2 + 2^-110 (rounded).
        let mut conj = one_and_a_bit.clone();
        let mut neg_one = q(16383, 0);
        neg_one[15] |= 0x80;
        conj.extend_from_slice(&neg_one);
        let mut z = one_and_a_bit.clone();
        z.extend_from_slice(&q(16383, 0));
        apply(Op::Prod, Primitive::ComplexF128, &z, &mut conj).unwrap();
        assert_eq!(&conj[..16], &q(16384, 2)[..], "real part");
        assert_eq!(u128::from_le_bytes(conj[16..].try_into().unwrap()) << 1, 0, "imaginary part ±0");
    }
}
