//! `long double` SUM/PROD through the hook the shim installs (`set_wide_float_math`).
//! The test hook computes through f64, exact for the operands used here (small dyadic
//! values whose sums and products fit 53 bits); it checks the plumbing, including the
//! complex product assembled from add/mul/negation.

use kawarimi_runtime::datatype::Primitive;
use kawarimi_runtime::op::{apply, set_wide_float_math, PredefinedOp as Op, WideFloat};

fn to80(x: f64) -> [u8; 16] {
    let bits = x.to_bits();
    let mut b = [0u8; 16];
    if x != 0.0 {
        let exp = ((bits >> 52) & 0x7ff) as i32 - 1023 + 16383;
        let m = (1u64 << 63) | ((bits & ((1 << 52) - 1)) << 11);
        b[..8].copy_from_slice(&m.to_le_bytes());
        b[8..10].copy_from_slice(&(exp as u16).to_le_bytes());
    }
    b[9] |= ((bits >> 63) as u8) << 7;
    b
}

fn from80(b: &[u8; 16]) -> f64 {
    let m = u64::from_le_bytes(b[..8].try_into().unwrap());
    let se = u16::from_le_bytes([b[8], b[9]]);
    let sign = if se & 0x8000 != 0 { -1.0 } else { 1.0 };
    if m == 0 {
        return 0.0 * sign;
    }
    let e = (se & 0x7fff) as i32 - 16383;
    assert_eq!(m & ((1 << 11) - 1), 0, "test values must be exact in f64");
    sign * (m as f64 / (1u64 << 63) as f64) * 2f64.powi(e)
}

fn add(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    to80(from80(a) + from80(b))
}

fn mul(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    to80(from80(a) * from80(b))
}

fn enc(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|&x| to80(x)).collect()
}

#[test]
fn sum_and_prod_use_the_installed_hook() {
    set_wide_float_math(WideFloat::X87, add, mul);
    let a = enc(&[1.5, -2.0, 0.25]);
    let mut b = enc(&[2.0, 8.0, -4.0]);
    apply(Op::Sum, Primitive::LongDouble, &a, &mut b).unwrap();
    assert_eq!(b, enc(&[3.5, 6.0, -3.75]));
    let mut b = enc(&[2.0, 8.0, -4.0]);
    apply(Op::Prod, Primitive::LongDouble, &a, &mut b).unwrap();
    assert_eq!(b, enc(&[3.0, -16.0, -1.0]));

    // (1 + 2i)(3 - 4i) = 11 + 2i; (1 + 2i) + (3 - 4i) = 4 - 2i.
    let a = enc(&[1.0, 2.0]);
    let mut b = enc(&[3.0, -4.0]);
    apply(Op::Prod, Primitive::ComplexLongDouble, &a, &mut b).unwrap();
    assert_eq!(b, enc(&[11.0, 2.0]));
    let mut b = enc(&[3.0, -4.0]);
    apply(Op::Sum, Primitive::ComplexLongDouble, &a, &mut b).unwrap();
    assert_eq!(b, enc(&[4.0, -2.0]));
}
