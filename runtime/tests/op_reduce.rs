//! Predefined reductions (MPI-3.1 §5.9.2, §5.9.4) against references computed in plain
//! Rust, the applicability table, MINLOC/MAXLOC ties, exact long double MIN/MAX, and the
//! refusal of long double arithmetic when no hook is installed. No test in this binary
//! installs the hook (that is `op_long_double_hook.rs`, a separate process).

use kawarimi_runtime::datatype::Primitive;
use kawarimi_runtime::error::ErrorClass;
use kawarimi_runtime::op::{apply, check, PredefinedOp as Op};
use proptest::prelude::*;

/// Runs `apply` on buffers shifted by one byte, so no element is aligned.
fn run(op: Op, prim: Primitive, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut ina = vec![0u8; a.len() + 1];
    ina[1..].copy_from_slice(a);
    let mut inout = vec![0u8; b.len() + 3];
    inout[1..1 + b.len()].copy_from_slice(b);
    apply(op, prim, &ina[1..], &mut inout[1..1 + b.len()]).unwrap();
    inout[1..1 + b.len()].to_vec()
}

/// The §5.9.2 table, written out independently of the engine's categories.
fn allowed(op: Op, prim: Primitive) -> bool {
    use Primitive::*;
    let int = matches!(prim, I8 | U8 | I16 | U16 | I32 | U32 | I64 | U64);
    let float = matches!(prim, F32 | F64 | LongDouble | F128);
    let complex = matches!(prim, ComplexF32 | ComplexF64 | ComplexLongDouble | ComplexF128);
    let logical = matches!(prim, CBool | FLogical);
    let pair = matches!(prim, FloatInt | DoubleInt | LongInt | TwoInt | ShortInt | LongDoubleInt | TwoF32 | TwoF64);
    match op {
        Op::Max | Op::Min => int || float,
        Op::Sum | Op::Prod => int || float || complex,
        Op::Land | Op::Lor | Op::Lxor => int || logical,
        Op::Band | Op::Bor | Op::Bxor => int || prim == Byte,
        Op::Maxloc | Op::Minloc => pair,
        Op::Replace | Op::NoOp => true,
    }
}

#[test]
fn applicability_matches_the_standard_table() {
    let mut refused = 0;
    for op in Op::ALL {
        for prim in Primitive::ALL {
            let r = check(op, prim);
            assert_eq!(r.is_ok(), allowed(op, prim), "{op:?} on {prim:?}");
            if let Err(e) = r {
                refused += 1;
                assert_eq!(e.class, ErrorClass::Op);
                assert!(e.detail.contains(op.name()) && e.detail.contains(&format!("{prim:?}")), "{}", e.detail);
                let n = prim.packed_size();
                let e = apply(op, prim, &vec![0; n], &mut vec![0; n]).unwrap_err();
                assert_eq!(e.class, ErrorClass::Op);
            }
        }
    }
    assert!(refused > 100, "the table refuses most pairs; got {refused}");
}

#[test]
fn mismatched_lengths_are_internal_errors() {
    let e = apply(Op::Sum, Primitive::I32, &[0; 8], &mut [0; 4]).unwrap_err();
    assert_eq!(e.class, ErrorClass::Intern);
    let e = apply(Op::Sum, Primitive::I32, &[0; 6], &mut [0; 6]).unwrap_err();
    assert_eq!(e.class, ErrorClass::Intern);
    let e = apply(Op::Minloc, Primitive::ShortInt, &[0; 8], &mut [0; 8]).unwrap_err();
    assert_eq!(e.class, ErrorClass::Intern, "MPI_SHORT_INT packs in 6 bytes, 8 is not a multiple");
}

macro_rules! int_case {
    ($name:ident, $t:ty, $prim:expr) => {
        proptest! {
            #[test]
            fn $name(v in prop::collection::vec((any::<$t>(), any::<$t>()), 0..20), small in prop::collection::vec(0..3 as $t, 4)) {
                // Mix in zeros, ones and twos so logical ops see both truth values.
                let mut v = v;
                for (k, s) in small.iter().enumerate() { v.push((*s, small[(k + 1) % 4])); }
                let a: Vec<u8> = v.iter().flat_map(|p| p.0.to_le_bytes()).collect();
                let b: Vec<u8> = v.iter().flat_map(|p| p.1.to_le_bytes()).collect();
                let cases: [(Op, fn($t, $t) -> $t); 12] = [
                    (Op::Max, |x, y| x.max(y)),
                    (Op::Min, |x, y| x.min(y)),
                    (Op::Sum, |x, y| x.wrapping_add(y)),
                    (Op::Prod, |x, y| x.wrapping_mul(y)),
                    (Op::Land, |x, y| ((x != 0) && (y != 0)) as $t),
                    (Op::Lor, |x, y| ((x != 0) || (y != 0)) as $t),
                    (Op::Lxor, |x, y| ((x != 0) != (y != 0)) as $t),
                    (Op::Band, |x, y| x & y),
                    (Op::Bor, |x, y| x | y),
                    (Op::Bxor, |x, y| x ^ y),
                    (Op::Replace, |x, _| x),
                    (Op::NoOp, |_, y| y),
                ];
                for (op, f) in cases {
                    let got = run(op, $prim, &a, &b);
                    let expect: Vec<u8> = v.iter().flat_map(|&(x, y)| f(x, y).to_le_bytes()).collect();
                    prop_assert_eq!(got, expect, "{:?}", op);
                }
            }
        }
    };
}
int_case!(ops_on_i8, i8, Primitive::I8);
int_case!(ops_on_u8, u8, Primitive::U8);
int_case!(ops_on_i16, i16, Primitive::I16);
int_case!(ops_on_u16, u16, Primitive::U16);
int_case!(ops_on_i32, i32, Primitive::I32);
int_case!(ops_on_u32, u32, Primitive::U32);
int_case!(ops_on_i64, i64, Primitive::I64);
int_case!(ops_on_u64, u64, Primitive::U64);

proptest! {
    #[test]
    fn bitwise_on_byte(v in prop::collection::vec((any::<u8>(), any::<u8>()), 0..20)) {
        let a: Vec<u8> = v.iter().map(|p| p.0).collect();
        let b: Vec<u8> = v.iter().map(|p| p.1).collect();
        prop_assert_eq!(run(Op::Band, Primitive::Byte, &a, &b), v.iter().map(|p| p.0 & p.1).collect::<Vec<_>>());
        prop_assert_eq!(run(Op::Bor, Primitive::Byte, &a, &b), v.iter().map(|p| p.0 | p.1).collect::<Vec<_>>());
        prop_assert_eq!(run(Op::Bxor, Primitive::Byte, &a, &b), v.iter().map(|p| p.0 ^ p.1).collect::<Vec<_>>());
    }

    #[test]
    fn floats(v in prop::collection::vec((-1e6f64..1e6, -1e6f64..1e6), 0..20)) {
        let a: Vec<u8> = v.iter().flat_map(|p| p.0.to_le_bytes()).collect();
        let b: Vec<u8> = v.iter().flat_map(|p| p.1.to_le_bytes()).collect();
        type F64Op = fn(f64, f64) -> f64;
        let cases: [(Op, F64Op); 4] =
            [(Op::Max, f64::max), (Op::Min, f64::min), (Op::Sum, |x, y| x + y), (Op::Prod, |x, y| x * y)];
        for (op, f) in cases {
            let expect: Vec<u8> = v.iter().flat_map(|&(x, y)| f(x, y).to_le_bytes()).collect();
            prop_assert_eq!(run(op, Primitive::F64, &a, &b), expect);
            let a32: Vec<u8> = v.iter().flat_map(|p| (p.0 as f32).to_le_bytes()).collect();
            let b32: Vec<u8> = v.iter().flat_map(|p| (p.1 as f32).to_le_bytes()).collect();
            let f32f: fn(f32, f32) -> f32 = match op {
                Op::Max => f32::max, Op::Min => f32::min, Op::Sum => |x, y| x + y, _ => |x, y| x * y,
            };
            let expect32: Vec<u8> = v.iter().flat_map(|&(x, y)| f32f(x as f32, y as f32).to_le_bytes()).collect();
            prop_assert_eq!(run(op, Primitive::F32, &a32, &b32), expect32);
        }
    }

    #[test]
    fn complex(v in prop::collection::vec(((-1e3f64..1e3, -1e3f64..1e3), (-1e3f64..1e3, -1e3f64..1e3)), 0..10)) {
        let enc = |c: (f64, f64)| [c.0.to_le_bytes(), c.1.to_le_bytes()].concat();
        let a: Vec<u8> = v.iter().flat_map(|p| enc(p.0)).collect();
        let b: Vec<u8> = v.iter().flat_map(|p| enc(p.1)).collect();
        let sum: Vec<u8> = v.iter().flat_map(|&((ar, ai), (br, bi))| enc((ar + br, ai + bi))).collect();
        let prod: Vec<u8> = v.iter().flat_map(|&((ar, ai), (br, bi))| enc((ar * br - ai * bi, ar * bi + ai * br))).collect();
        prop_assert_eq!(run(Op::Sum, Primitive::ComplexF64, &a, &b), sum);
        prop_assert_eq!(run(Op::Prod, Primitive::ComplexF64, &a, &b), prod);
        let enc32 = |c: (f64, f64)| [(c.0 as f32).to_le_bytes(), (c.1 as f32).to_le_bytes()].concat();
        let a: Vec<u8> = v.iter().flat_map(|p| enc32(p.0)).collect();
        let b: Vec<u8> = v.iter().flat_map(|p| enc32(p.1)).collect();
        let f = |x: f64| x as f32;
        let prod: Vec<u8> = v.iter().flat_map(|&((ar, ai), (br, bi))| {
            let (ar, ai, br, bi) = (f(ar), f(ai), f(br), f(bi));
            [(ar * br - ai * bi).to_le_bytes(), (ar * bi + ai * br).to_le_bytes()].concat()
        }).collect();
        prop_assert_eq!(run(Op::Prod, Primitive::ComplexF32, &a, &b), prod);
    }
}

#[test]
fn float_nan_follows_open_mpi_c_expressions() {
    // inout = (inout > in) ? inout : in: a NaN anywhere yields `in`.
    let nan = f64::NAN.to_le_bytes();
    let one = 1f64.to_le_bytes();
    assert!(f64::from_le_bytes(run(Op::Max, Primitive::F64, &nan, &one).try_into().unwrap()).is_nan());
    assert_eq!(run(Op::Max, Primitive::F64, &one, &nan), one);
    assert_eq!(run(Op::Min, Primitive::F64, &one, &nan), one);
}

#[test]
fn logical_types_store_one_or_zero() {
    let a = [0u8, 0, 2, 255];
    let b = [0u8, 7, 0, 1];
    assert_eq!(run(Op::Land, Primitive::CBool, &a, &b), vec![0, 0, 0, 1]);
    assert_eq!(run(Op::Lor, Primitive::CBool, &a, &b), vec![0, 1, 1, 1]);
    assert_eq!(run(Op::Lxor, Primitive::CBool, &a, &b), vec![0, 1, 1, 0]);
    let enc = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (fa, fb) = (enc(&[0, 0, -1, 5]), enc(&[0, 1, 0, 1]));
    assert_eq!(run(Op::Land, Primitive::FLogical, &fa, &fb), enc(&[0, 0, 0, 1]));
    assert_eq!(run(Op::Lor, Primitive::FLogical, &fa, &fb), enc(&[0, 1, 1, 1]));
    assert_eq!(run(Op::Lxor, Primitive::FLogical, &fa, &fb), enc(&[0, 1, 1, 0]));
}

/// A packed pair: value bytes then index bytes.
fn pair<V: AsRef<[u8]>, I: AsRef<[u8]>>(v: V, i: I) -> Vec<u8> {
    [v.as_ref(), i.as_ref()].concat()
}

/// Checks MAXLOC and MINLOC on one pair type: a strictly larger/smaller value wins with
/// its index, equal values keep the lower index whichever side it is on (§5.9.4).
fn loc_cases(prim: Primitive, val: impl Fn(i32) -> Vec<u8>, idx: impl Fn(i32) -> Vec<u8>) {
    let p = |v: i32, i: i32| pair(val(v), idx(i));
    let ins = [p(5, 1), p(3, 2), p(4, 9), p(4, 3), p(-7, 0), p(-7, 4)];
    let inouts = [p(3, 0), p(5, 7), p(4, 3), p(4, 9), p(-7, 4), p(-7, 0)];
    let max_expect = [p(5, 1), p(5, 7), p(4, 3), p(4, 3), p(-7, 0), p(-7, 0)];
    let min_expect = [p(3, 0), p(3, 2), p(4, 3), p(4, 3), p(-7, 0), p(-7, 0)];
    let a = ins.concat();
    let b = inouts.concat();
    assert_eq!(a.len(), 6 * prim.packed_size(), "{prim:?}");
    assert_eq!(run(Op::Maxloc, prim, &a, &b), max_expect.concat(), "MAXLOC {prim:?}");
    assert_eq!(run(Op::Minloc, prim, &a, &b), min_expect.concat(), "MINLOC {prim:?}");
}

#[test]
fn minloc_maxloc_on_every_pair_type() {
    let i32b = |i: i32| i.to_le_bytes().to_vec();
    loc_cases(Primitive::FloatInt, |v| (v as f32).to_le_bytes().to_vec(), i32b);
    loc_cases(Primitive::DoubleInt, |v| (v as f64).to_le_bytes().to_vec(), i32b);
    loc_cases(Primitive::LongInt, |v| (v as i64).to_le_bytes().to_vec(), i32b);
    loc_cases(Primitive::TwoInt, i32b, i32b);
    loc_cases(Primitive::ShortInt, |v| (v as i16).to_le_bytes().to_vec(), i32b);
    loc_cases(Primitive::TwoF32, |v| (v as f32).to_le_bytes().to_vec(), |i| (i as f32).to_le_bytes().to_vec());
    loc_cases(Primitive::TwoF64, |v| (v as f64).to_le_bytes().to_vec(), |i| (i as f64).to_le_bytes().to_vec());
    loc_cases(Primitive::LongDoubleInt, |v| f80(v as f64).to_vec(), i32b);
}

/// x87 80-bit encoding, in its 16-byte memory form, of an f64 (exact: f80 is wider).
fn f80(x: f64) -> [u8; 16] {
    let bits = x.to_bits();
    let sign = (bits >> 63) as u16;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (e80, m): (u16, u64) = if exp == 0 && frac == 0 {
        (0, 0)
    } else if exp == 0x7ff {
        (0x7fff, (1 << 63) | (frac << 11))
    } else {
        assert!(exp != 0, "no f64 subnormals in these tests");
        ((exp - 1023 + 16383) as u16, (1 << 63) | (frac << 11))
    };
    raw80(sign != 0, e80, m)
}

fn raw80(negative: bool, exp: u16, mantissa: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&mantissa.to_le_bytes());
    b[8..10].copy_from_slice(&(exp | if negative { 0x8000 } else { 0 }).to_le_bytes());
    // Padding bytes carry garbage in real memory; the engine must ignore them.
    b[10..].copy_from_slice(&[0xAB; 6]);
    b
}

/// MAX and MIN of every pair of `ordered` (strictly increasing values of `prim`) give the
/// larger and the smaller, comparing the first `bytes` bytes of each.
fn assert_min_max_follow(prim: Primitive, ordered: &[[u8; 16]], bytes: usize) {
    for (i, x) in ordered.iter().enumerate() {
        for (j, y) in ordered.iter().enumerate() {
            let max = run(Op::Max, prim, x, y);
            let min = run(Op::Min, prim, x, y);
            // On equality `in` is kept, as C's expression does.
            let (hi, lo) = if i > j {
                (x, y)
            } else if i < j {
                (y, x)
            } else {
                (x, x)
            };
            assert_eq!(&max[..bytes], &hi[..bytes], "{prim:?}: max of #{i} and #{j}");
            assert_eq!(&min[..bytes], &lo[..bytes], "{prim:?}: min of #{i} and #{j}");
        }
    }
}

#[test]
fn long_double_min_max_are_exact() {
    // Values one unit in the last place of a 64-bit significand apart: equal as f64.
    let one = 1u64 << 63;
    let a = raw80(false, 16383, one | 1); // 1 + 2^-63
    let b = raw80(false, 16383, one); // 1
    let c = raw80(true, 16383, one | 1); // -(1 + 2^-63)
    let d = raw80(true, 16383, one); // -1
    let big = raw80(false, 16384, one); // 2
    let tiny = raw80(false, 0, 1); // the smallest denormal
    let zero = raw80(false, 0, 0);
    let negzero = raw80(true, 0, 0);
    let inf = raw80(false, 0x7fff, one);
    let neginf = raw80(true, 0x7fff, one);
    // The padding bytes are not compared: only the ten that hold the value.
    assert_min_max_follow(Primitive::LongDouble, &[neginf, c, d, negzero, tiny, b, a, big, inf], 10);
    // +0 and -0 compare equal: the result is `in`.
    assert_eq!(run(Op::Max, Primitive::LongDouble, &zero, &negzero), zero.to_vec());
    assert_eq!(run(Op::Min, Primitive::LongDouble, &negzero, &zero), negzero.to_vec());
    // NaN: comparisons are false, so the result is `in`.
    let nan = raw80(false, 0x7fff, one | 5);
    assert_eq!(run(Op::Max, Primitive::LongDouble, &nan, &b), nan.to_vec());
    assert_eq!(run(Op::Max, Primitive::LongDouble, &b, &nan), b.to_vec());
    // An unnormal (no integer bit) is an invalid operand: unordered like NaN.
    let unnormal = raw80(false, 16383, 5);
    assert_eq!(run(Op::Min, Primitive::LongDouble, &b, &unnormal), b.to_vec());
}

#[test]
fn wide_float_arithmetic_without_hook_is_refused() {
    for (op, prim, n, name) in [
        (Op::Sum, Primitive::LongDouble, 16, "MPI_LONG_DOUBLE"),
        (Op::Prod, Primitive::LongDouble, 16, "MPI_LONG_DOUBLE"),
        (Op::Sum, Primitive::ComplexLongDouble, 32, "MPI_C_LONG_DOUBLE_COMPLEX"),
        (Op::Prod, Primitive::ComplexLongDouble, 32, "MPI_C_LONG_DOUBLE_COMPLEX"),
        (Op::Sum, Primitive::F128, 16, "MPI_REAL16"),
        (Op::Prod, Primitive::ComplexF128, 32, "MPI_COMPLEX32"),
    ] {
        let e = apply(op, prim, &vec![0; n], &mut vec![0; n]).unwrap_err();
        assert_eq!(e.class, ErrorClass::Op);
        assert!(
            e.detail.contains(&format!("on {name}: its arithmetic is not available in this build")),
            "{}",
            e.detail
        );
    }
}

/// A binary128 value from its sign, biased exponent and 112-bit fraction.
fn raw128(negative: bool, exponent: u16, fraction: u128) -> [u8; 16] {
    ((u128::from(negative) << 127) | (u128::from(exponent) << 112) | fraction).to_le_bytes()
}

#[test]
fn binary128_min_max_are_exact() {
    // One unit in the last place of the 112-bit fraction apart: equal as f64 or x87.
    let a = raw128(false, 16383, 1); // 1 + 2^-112
    let b = raw128(false, 16383, 0); // 1
    let c = raw128(true, 16383, 1); // -(1 + 2^-112)
    let d = raw128(true, 16383, 0); // -1
    let big = raw128(false, 16384, 0); // 2
    let tiny = raw128(false, 0, 1); // the smallest subnormal
    let negzero = raw128(true, 0, 0);
    let zero = raw128(false, 0, 0);
    let inf = raw128(false, 0x7fff, 0);
    let neginf = raw128(true, 0x7fff, 0);
    assert_min_max_follow(Primitive::F128, &[neginf, c, d, negzero, tiny, b, a, big, inf], 16);
    // +0 and -0 compare equal: the result is `in`.
    assert_eq!(run(Op::Max, Primitive::F128, &zero, &negzero), zero.to_vec());
    assert_eq!(run(Op::Min, Primitive::F128, &negzero, &zero), negzero.to_vec());
    // NaN (quiet or signalling): comparisons are false, so the result is `in`.
    for nan in [raw128(false, 0x7fff, 1 << 111), raw128(true, 0x7fff, 1)] {
        assert_eq!(run(Op::Max, Primitive::F128, &nan, &b), nan.to_vec());
        assert_eq!(run(Op::Min, Primitive::F128, &b, &nan), b.to_vec());
    }
}
