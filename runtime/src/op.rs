//! The reduction engine: predefined operations applied to packed primitive elements
//! (MPI-3.1 §5.9.2, §5.9.4), for reductions and for `MPI_Accumulate` (§11.3.4).
//!
//! Both buffers are in the packed representation of the datatype engine
//! ([`crate::datatype`]): elements of [`Primitive::packed_size`] bytes, little endian,
//! pair types without their C padding. Slices may be at any alignment: elements are read
//! with `from_le_bytes` on copies, never reinterpreted in place.
//!
//! C `long double` (x87 80-bit) and Fortran `REAL*16` (IEEE binary128) have no Rust
//! arithmetic. MIN/MAX/MINLOC/MAXLOC compare their values exactly here; SUM/PROD go through
//! hooks that the shim installs with a C implementation ([`set_wide_float_math`]). Without
//! a hook they fail with `ErrorClass::Op` rather than give an approximate answer.

use std::sync::OnceLock;

use crate::datatype::Primitive;
use crate::error::{err, ErrorClass, MpiResult};

/// The predefined reduction operations (MPI-3.1 §5.9.2) and the two accumulate-only ones,
/// MPI_REPLACE and MPI_NO_OP (§11.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PredefinedOp {
    Max,
    Min,
    Sum,
    Prod,
    Land,
    Band,
    Lor,
    Bor,
    Lxor,
    Bxor,
    Maxloc,
    Minloc,
    Replace,
    NoOp,
}

impl PredefinedOp {
    /// Every variant, in declaration order.
    pub const ALL: [PredefinedOp; 14] = [
        PredefinedOp::Max,
        PredefinedOp::Min,
        PredefinedOp::Sum,
        PredefinedOp::Prod,
        PredefinedOp::Land,
        PredefinedOp::Band,
        PredefinedOp::Lor,
        PredefinedOp::Bor,
        PredefinedOp::Lxor,
        PredefinedOp::Bxor,
        PredefinedOp::Maxloc,
        PredefinedOp::Minloc,
        PredefinedOp::Replace,
        PredefinedOp::NoOp,
    ];

    /// The standard's name, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            PredefinedOp::Max => "MPI_MAX",
            PredefinedOp::Min => "MPI_MIN",
            PredefinedOp::Sum => "MPI_SUM",
            PredefinedOp::Prod => "MPI_PROD",
            PredefinedOp::Land => "MPI_LAND",
            PredefinedOp::Band => "MPI_BAND",
            PredefinedOp::Lor => "MPI_LOR",
            PredefinedOp::Bor => "MPI_BOR",
            PredefinedOp::Lxor => "MPI_LXOR",
            PredefinedOp::Bxor => "MPI_BXOR",
            PredefinedOp::Maxloc => "MPI_MAXLOC",
            PredefinedOp::Minloc => "MPI_MINLOC",
            PredefinedOp::Replace => "MPI_REPLACE",
            PredefinedOp::NoOp => "MPI_NO_OP",
        }
    }

    /// All predefined operations are commutative (MPI-3.1 §5.9.2).
    pub fn is_commutative(self) -> bool {
        true
    }
}

/// The categories of MPI-3.1 §5.9.2 a primitive belongs to. One `Primitive` may stand for
/// both a C and a Fortran type (I32 is MPI_INT and MPI_INTEGER), so integer primitives
/// count as "C integer" and "Fortran integer" at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Integer,
    Floating,
    Logical,
    Complex,
    Byte,
    Pair,
}

fn category(prim: Primitive) -> Category {
    match prim {
        Primitive::I8
        | Primitive::U8
        | Primitive::I16
        | Primitive::U16
        | Primitive::I32
        | Primitive::U32
        | Primitive::I64
        | Primitive::U64 => Category::Integer,
        Primitive::F32 | Primitive::F64 | Primitive::LongDouble | Primitive::F128 => Category::Floating,
        Primitive::CBool | Primitive::FLogical => Category::Logical,
        Primitive::ComplexF32 | Primitive::ComplexF64 | Primitive::ComplexLongDouble | Primitive::ComplexF128 => {
            Category::Complex
        }
        Primitive::Byte => Category::Byte,
        Primitive::FloatInt
        | Primitive::DoubleInt
        | Primitive::LongInt
        | Primitive::TwoInt
        | Primitive::ShortInt
        | Primitive::LongDoubleInt
        | Primitive::TwoF32
        | Primitive::TwoF64 => Category::Pair,
    }
}

/// Whether `prim` is a floating-point or complex type, which `MPI_Compare_and_swap` refuses
/// (§11.3.4: a compare of floating-point bits is not the compare the program means).
pub fn is_floating_point(prim: Primitive) -> bool {
    matches!(category(prim), Category::Floating | Category::Complex)
}

/// Whether `op` applies to `prim` (MPI-3.1 §5.9.2 table; MINLOC/MAXLOC §5.9.4;
/// REPLACE/NO_OP apply to every predefined type, §11.3.4). `ErrorClass::Op` otherwise.
pub fn check(op: PredefinedOp, prim: Primitive) -> MpiResult<()> {
    use Category::*;
    let c = category(prim);
    let ok = match op {
        PredefinedOp::Max | PredefinedOp::Min => matches!(c, Integer | Floating),
        PredefinedOp::Sum | PredefinedOp::Prod => matches!(c, Integer | Floating | Complex),
        PredefinedOp::Land | PredefinedOp::Lor | PredefinedOp::Lxor => matches!(c, Integer | Logical),
        PredefinedOp::Band | PredefinedOp::Bor | PredefinedOp::Bxor => matches!(c, Integer | Byte),
        PredefinedOp::Maxloc | PredefinedOp::Minloc => c == Pair,
        PredefinedOp::Replace | PredefinedOp::NoOp => true,
    };
    if ok {
        Ok(())
    } else {
        err(ErrorClass::Op, format!("{} is not defined for {prim:?} (MPI-3.1 §5.9.2)", op.name()))
    }
}

/// The 16-byte floating-point formats Rust has no arithmetic for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WideFloat {
    /// C `long double` on x86-64: x87 80-bit extended in its 16-byte memory form (value in
    /// the low ten bytes).
    X87,
    /// Fortran `REAL*16` (gfortran) and C `__float128`: IEEE 754 binary128.
    Binary128,
}

/// Addition and multiplication of one [`WideFloat`] format, provided by the shim's C code.
#[derive(Clone, Copy)]
struct WideMath {
    add: fn(&[u8; 16], &[u8; 16]) -> [u8; 16],
    mul: fn(&[u8; 16], &[u8; 16]) -> [u8; 16],
}

static WIDE_MATH: [OnceLock<WideMath>; 2] = [OnceLock::new(), OnceLock::new()];

/// Installs addition and multiplication of `format` for SUM/PROD on its real and complex
/// types (MPI_LONG_DOUBLE and MPI_C_LONG_DOUBLE_COMPLEX; MPI_REAL16 and MPI_COMPLEX32).
/// Process-wide; the first installation wins, later calls are ignored (the shim installs
/// once at load).
pub fn set_wide_float_math(
    format: WideFloat,
    add: fn(&[u8; 16], &[u8; 16]) -> [u8; 16],
    mul: fn(&[u8; 16], &[u8; 16]) -> [u8; 16],
) {
    let _ = WIDE_MATH[format as usize].set(WideMath { add, mul });
}

/// `inoutvec[i] = invec[i] op inoutvec[i]` for every packed element (MPI-3.1 §5.9.1:
/// `invec` holds the earlier operand). `ErrorClass::Op` when `op` does not apply to
/// `prim`, or for `long double` SUM/PROD without [`set_long_double_math`];
/// `ErrorClass::Intern` when the buffers differ in length or hold partial elements.
///
/// Integer SUM/PROD wrap around, as every MPI implementation does. MAX/MIN on floating
/// point follow Open MPI's C expressions (`inout > in ? inout : in`), so a NaN in either
/// operand yields `in`. Logical ops store 1 or 0 (C's `&&`, gfortran's .TRUE. is 1).
/// MINLOC/MAXLOC keep the lower index on ties (§5.9.4).
pub fn apply(op: PredefinedOp, prim: Primitive, invec: &[u8], inoutvec: &mut [u8]) -> MpiResult<()> {
    check(op, prim)?;
    let n = prim.packed_size();
    if invec.len() != inoutvec.len() || !invec.len().is_multiple_of(n) {
        return err(
            ErrorClass::Intern,
            format!(
                "{} on {prim:?}: operands of {} and {} bytes are not equal multiples of {n}",
                op.name(),
                invec.len(),
                inoutvec.len()
            ),
        );
    }
    match op {
        PredefinedOp::NoOp => return Ok(()),
        PredefinedOp::Replace => {
            inoutvec.copy_from_slice(invec);
            return Ok(());
        }
        _ => {}
    }
    match prim {
        Primitive::I8 => int_op::<i8>(op, invec, inoutvec),
        Primitive::U8 => int_op::<u8>(op, invec, inoutvec),
        Primitive::I16 => int_op::<i16>(op, invec, inoutvec),
        Primitive::U16 => int_op::<u16>(op, invec, inoutvec),
        Primitive::I32 => int_op::<i32>(op, invec, inoutvec),
        Primitive::U32 => int_op::<u32>(op, invec, inoutvec),
        Primitive::I64 => int_op::<i64>(op, invec, inoutvec),
        Primitive::U64 => int_op::<u64>(op, invec, inoutvec),
        // Byte takes only bitwise ops (checked above): same bits as u8.
        Primitive::Byte => int_op::<u8>(op, invec, inoutvec),
        Primitive::CBool => logical_op::<u8>(op, invec, inoutvec),
        Primitive::FLogical => logical_op::<i32>(op, invec, inoutvec),
        Primitive::F32 => float_op::<f32>(op, invec, inoutvec),
        Primitive::F64 => float_op::<f64>(op, invec, inoutvec),
        Primitive::ComplexF32 => complex_op::<f32>(op, invec, inoutvec),
        Primitive::ComplexF64 => complex_op::<f64>(op, invec, inoutvec),
        Primitive::LongDouble => wide_op::<LongDouble>(op, invec, inoutvec),
        Primitive::ComplexLongDouble => complex_wide_op::<LongDouble>(op, invec, inoutvec),
        Primitive::F128 => wide_op::<Binary128>(op, invec, inoutvec),
        Primitive::ComplexF128 => complex_wide_op::<Binary128>(op, invec, inoutvec),
        Primitive::FloatInt => loc_op::<f32, i32>(op, invec, inoutvec),
        Primitive::DoubleInt => loc_op::<f64, i32>(op, invec, inoutvec),
        Primitive::LongInt => loc_op::<i64, i32>(op, invec, inoutvec),
        Primitive::TwoInt => loc_op::<i32, i32>(op, invec, inoutvec),
        Primitive::ShortInt => loc_op::<i16, i32>(op, invec, inoutvec),
        Primitive::TwoF32 => loc_op::<f32, f32>(op, invec, inoutvec),
        Primitive::TwoF64 => loc_op::<f64, f64>(op, invec, inoutvec),
        Primitive::LongDoubleInt => loc_op::<LongDouble, i32>(op, invec, inoutvec),
    }
}

/// A value read from and written to packed little-endian bytes, with the ordering C's
/// `<`, `>` and `==` give it (partial for floating point).
trait Scalar: Copy {
    const N: usize;
    fn read(b: &[u8]) -> Self;
    fn write(self, b: &mut [u8]);
    fn lt(self, o: Self) -> bool;
    fn gt(self, o: Self) -> bool {
        o.lt(self)
    }
    fn eq(self, o: Self) -> bool;
}

/// Integer arithmetic as C does it on x86-64, with signed overflow wrapping.
trait Int: Scalar {
    fn wadd(self, o: Self) -> Self;
    fn wmul(self, o: Self) -> Self;
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn is_zero(self) -> bool;
    fn from_bool(b: bool) -> Self;
}

trait Float: Scalar {
    fn fadd(self, o: Self) -> Self;
    fn fsub(self, o: Self) -> Self;
    fn fmul(self, o: Self) -> Self;
}

macro_rules! scalar_int {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const N: usize = std::mem::size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::N]);
                <$t>::from_le_bytes(a)
            }
            fn write(self, b: &mut [u8]) {
                b[..Self::N].copy_from_slice(&self.to_le_bytes());
            }
            fn lt(self, o: Self) -> bool { self < o }
            fn eq(self, o: Self) -> bool { self == o }
        }
        impl Int for $t {
            fn wadd(self, o: Self) -> Self { self.wrapping_add(o) }
            fn wmul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn and(self, o: Self) -> Self { self & o }
            fn or(self, o: Self) -> Self { self | o }
            fn xor(self, o: Self) -> Self { self ^ o }
            fn is_zero(self) -> bool { self == 0 }
            fn from_bool(b: bool) -> Self { <$t>::from(b) }
        }
    )*};
}
scalar_int!(i8, u8, i16, u16, i32, u32, i64, u64);

macro_rules! scalar_float {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const N: usize = std::mem::size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::N]);
                <$t>::from_le_bytes(a)
            }
            fn write(self, b: &mut [u8]) {
                b[..Self::N].copy_from_slice(&self.to_le_bytes());
            }
            fn lt(self, o: Self) -> bool { self < o }
            fn eq(self, o: Self) -> bool { self == o }
        }
        impl Float for $t {
            fn fadd(self, o: Self) -> Self { self + o }
            fn fsub(self, o: Self) -> Self { self - o }
            fn fmul(self, o: Self) -> Self { self * o }
        }
    )*};
}
scalar_float!(f32, f64);

/// Runs `f(in, inout)` over every element of `N` bytes, storing into `inout`.
fn each<T: Scalar>(invec: &[u8], inout: &mut [u8], f: impl Fn(T, T) -> T) {
    for (a, b) in invec.chunks_exact(T::N).zip(inout.chunks_exact_mut(T::N)) {
        let r = f(T::read(a), T::read(b));
        r.write(b);
    }
}

/// C's `(b > a) ? b : a` with `b` the inout operand, as Open MPI's MPI_MAX is written.
fn c_max<T: Scalar>(a: T, b: T) -> T {
    if b.gt(a) {
        b
    } else {
        a
    }
}

fn c_min<T: Scalar>(a: T, b: T) -> T {
    if b.lt(a) {
        b
    } else {
        a
    }
}

fn int_op<T: Int>(op: PredefinedOp, invec: &[u8], inout: &mut [u8]) -> MpiResult<()> {
    match op {
        PredefinedOp::Max => each::<T>(invec, inout, c_max),
        PredefinedOp::Min => each::<T>(invec, inout, c_min),
        PredefinedOp::Sum => each::<T>(invec, inout, |a, b| a.wadd(b)),
        PredefinedOp::Prod => each::<T>(invec, inout, |a, b| a.wmul(b)),
        PredefinedOp::Band => each::<T>(invec, inout, |a, b| a.and(b)),
        PredefinedOp::Bor => each::<T>(invec, inout, |a, b| a.or(b)),
        PredefinedOp::Bxor => each::<T>(invec, inout, |a, b| a.xor(b)),
        PredefinedOp::Land | PredefinedOp::Lor | PredefinedOp::Lxor => return logical_op::<T>(op, invec, inout),
        _ => return unreachable_op(op, "integer"),
    }
    Ok(())
}

fn logical_op<T: Int>(op: PredefinedOp, invec: &[u8], inout: &mut [u8]) -> MpiResult<()> {
    match op {
        PredefinedOp::Land => each::<T>(invec, inout, |a, b| T::from_bool(!a.is_zero() && !b.is_zero())),
        PredefinedOp::Lor => each::<T>(invec, inout, |a, b| T::from_bool(!a.is_zero() || !b.is_zero())),
        PredefinedOp::Lxor => each::<T>(invec, inout, |a, b| T::from_bool(a.is_zero() != b.is_zero())),
        _ => return unreachable_op(op, "logical"),
    }
    Ok(())
}

fn float_op<T: Float>(op: PredefinedOp, invec: &[u8], inout: &mut [u8]) -> MpiResult<()> {
    match op {
        PredefinedOp::Max => each::<T>(invec, inout, c_max),
        PredefinedOp::Min => each::<T>(invec, inout, c_min),
        PredefinedOp::Sum => each::<T>(invec, inout, |a, b| a.fadd(b)),
        PredefinedOp::Prod => each::<T>(invec, inout, |a, b| a.fmul(b)),
        _ => return unreachable_op(op, "floating point"),
    }
    Ok(())
}

fn complex_op<T: Float>(op: PredefinedOp, invec: &[u8], inout: &mut [u8]) -> MpiResult<()> {
    let n = T::N;
    for (a, b) in invec.chunks_exact(2 * n).zip(inout.chunks_exact_mut(2 * n)) {
        let (ar, ai) = (T::read(a), T::read(&a[n..]));
        let (br, bi) = (T::read(b), T::read(&b[n..]));
        let (r, i) = match op {
            PredefinedOp::Sum => (ar.fadd(br), ai.fadd(bi)),
            // The textbook product; C's Annex G only differs when infinities meet NaNs.
            PredefinedOp::Prod => (ar.fmul(br).fsub(ai.fmul(bi)), ar.fmul(bi).fadd(ai.fmul(br))),
            _ => return unreachable_op(op, "complex"),
        };
        r.write(b);
        i.write(&mut b[n..]);
    }
    Ok(())
}

/// MINLOC/MAXLOC over `(value, index)` pairs (MPI-3.1 §5.9.4), written as Open MPI's
/// C is: a strictly better `in` replaces `inout`, equal values keep the lower index, and
/// a comparison involving NaN changes nothing.
fn loc_op<V: Scalar, I: Scalar>(op: PredefinedOp, invec: &[u8], inout: &mut [u8]) -> MpiResult<()> {
    let n = V::N + I::N;
    let better: fn(V, V) -> bool = match op {
        PredefinedOp::Maxloc => |a, b| a.gt(b),
        PredefinedOp::Minloc => |a, b| a.lt(b),
        _ => return unreachable_op(op, "pair"),
    };
    for (a, b) in invec.chunks_exact(n).zip(inout.chunks_exact_mut(n)) {
        let (av, ai) = (V::read(a), I::read(&a[V::N..]));
        let (bv, bi) = (V::read(b), I::read(&b[V::N..]));
        if better(av, bv) {
            b.copy_from_slice(a);
        } else if av.eq(bv) && ai.lt(bi) {
            ai.write(&mut b[V::N..]);
        }
    }
    Ok(())
}

fn unreachable_op(op: PredefinedOp, kind: &str) -> MpiResult<()> {
    // `check` ran first, so this is a bug in the table here, not a user error.
    err(ErrorClass::Intern, format!("{} reached the {kind} kernel although check() refuses it", op.name()))
}

/// An x87 80-bit extended value in its 16-byte memory form: bits 0..64 the significand
/// with its explicit integer bit, bits 64..79 the biased exponent, bit 79 the sign.
/// Bytes 10..16 are padding; they travel with the value but carry nothing.
#[derive(Clone, Copy, Debug)]
pub struct LongDouble(pub [u8; 16]);

impl LongDouble {
    fn mantissa(self) -> u64 {
        let mut m = [0u8; 8];
        m.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(m)
    }

    fn sign_exp(self) -> u16 {
        u16::from_le_bytes([self.0[8], self.0[9]])
    }

    fn negative(self) -> bool {
        self.sign_exp() & 0x8000 != 0
    }

    fn exponent(self) -> u16 {
        self.sign_exp() & 0x7fff
    }

    /// NaNs, and the encodings the 387 and later reject as invalid operands (pseudo-NaN,
    /// pseudo-infinity, unnormal: a non-zero exponent without the integer bit), which
    /// compare unordered like a NaN.
    fn is_unordered(self) -> bool {
        let (e, m) = (self.exponent(), self.mantissa());
        let integer_bit = m >> 63 == 1;
        if e == 0x7fff {
            return m != 1 << 63;
        }
        e != 0 && !integer_bit
    }

    /// Magnitude order: exponent first, then significand. Exact for normals, denormals
    /// and infinities. (A pseudo-denormal, exponent 0 with the integer bit set, equals
    /// the value at exponent 1; it is ordered just below it, a deviation no compiler
    /// produces.)
    fn magnitude(self) -> (u16, u64) {
        (self.exponent(), self.mantissa())
    }

    fn signed(self) -> (bool, (u16, u64)) {
        (self.negative(), self.magnitude())
    }

    /// C's `<` on long double.
    pub fn less(self, o: LongDouble) -> bool {
        !self.is_unordered() && !o.is_unordered() && signed_less(self.signed(), o.signed())
    }

    /// C's `==` on long double (+0 == -0, NaN != NaN).
    pub fn equal(self, o: LongDouble) -> bool {
        !self.is_unordered() && !o.is_unordered() && signed_equal(self.signed(), o.signed())
    }
}

/// C's `<` on two sign-and-magnitude floating-point values that are not NaN, each given as
/// `(negative, magnitude)`: magnitudes order as the absolute values, zero is
/// `M::default()`, and zeros of either sign are equal.
fn signed_less<M: Ord + Default>((a_negative, a): (bool, M), (b_negative, b): (bool, M)) -> bool {
    let zero = M::default();
    match (a_negative && a != zero, b_negative && b != zero) {
        (true, false) => true,
        (false, true) => false,
        (false, false) => a < b,
        (true, true) => a > b,
    }
}

/// C's `==` on the values of [`signed_less`].
fn signed_equal<M: Ord + Default>((a_negative, a): (bool, M), (b_negative, b): (bool, M)) -> bool {
    a == b && (a == M::default() || a_negative == b_negative)
}

impl Scalar for LongDouble {
    const N: usize = 16;
    fn read(b: &[u8]) -> Self {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        LongDouble(a)
    }
    fn write(self, b: &mut [u8]) {
        b[..16].copy_from_slice(&self.0);
    }
    fn lt(self, o: Self) -> bool {
        self.less(o)
    }
    fn eq(self, o: Self) -> bool {
        self.equal(o)
    }
}

/// A 16-byte floating-point value whose arithmetic comes from a hook.
trait Wide: Scalar {
    const FORMAT: WideFloat;
    /// The MPI names of its real and complex types, for messages.
    const NAMES: (&'static str, &'static str);
    /// The byte holding the sign bit (its top bit): negation is flipping it.
    const SIGN_BYTE: usize;
    fn bytes(self) -> [u8; 16];
    fn from_bytes(b: [u8; 16]) -> Self;
}

impl Wide for LongDouble {
    const FORMAT: WideFloat = WideFloat::X87;
    const NAMES: (&'static str, &'static str) = ("MPI_LONG_DOUBLE", "MPI_C_LONG_DOUBLE_COMPLEX");
    const SIGN_BYTE: usize = 9;
    fn bytes(self) -> [u8; 16] {
        self.0
    }
    fn from_bytes(b: [u8; 16]) -> Self {
        LongDouble(b)
    }
}

impl Wide for Binary128 {
    const FORMAT: WideFloat = WideFloat::Binary128;
    const NAMES: (&'static str, &'static str) = ("MPI_REAL16", "MPI_COMPLEX32");
    const SIGN_BYTE: usize = 15;
    fn bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }
    fn from_bytes(b: [u8; 16]) -> Self {
        Binary128(u128::from_le_bytes(b))
    }
}

fn wide_math<T: Wide>(op: PredefinedOp, name: &str) -> MpiResult<WideMath> {
    match WIDE_MATH[T::FORMAT as usize].get() {
        Some(m) => Ok(*m),
        None => err(ErrorClass::Op, format!("{} on {name}: its arithmetic is not available in this build", op.name())),
    }
}

fn wide_op<T: Wide>(op: PredefinedOp, invec: &[u8], inout: &mut [u8]) -> MpiResult<()> {
    match op {
        PredefinedOp::Max => each::<T>(invec, inout, c_max),
        PredefinedOp::Min => each::<T>(invec, inout, c_min),
        PredefinedOp::Sum | PredefinedOp::Prod => {
            let m = wide_math::<T>(op, T::NAMES.0)?;
            let f = if op == PredefinedOp::Sum { m.add } else { m.mul };
            each::<T>(invec, inout, |a, b| T::from_bytes(f(&a.bytes(), &b.bytes())));
        }
        _ => return unreachable_op(op, T::NAMES.0),
    }
    Ok(())
}

fn complex_wide_op<T: Wide>(op: PredefinedOp, invec: &[u8], inout: &mut [u8]) -> MpiResult<()> {
    let m = wide_math::<T>(op, T::NAMES.1)?;
    for (a, b) in invec.chunks_exact(32).zip(inout.chunks_exact_mut(32)) {
        let (ar, ai) = (T::read(a).bytes(), T::read(&a[16..]).bytes());
        let (br, bi) = (T::read(b).bytes(), T::read(&b[16..]).bytes());
        let (r, i) = match op {
            PredefinedOp::Sum => ((m.add)(&ar, &br), (m.add)(&ai, &bi)),
            PredefinedOp::Prod => {
                // Negation is exact (a sign flip), so subtraction is addition of it.
                let mut bd = (m.mul)(&ai, &bi);
                bd[T::SIGN_BYTE] ^= 0x80;
                ((m.add)(&(m.mul)(&ar, &br), &bd), (m.add)(&(m.mul)(&ar, &bi), &(m.mul)(&ai, &br)))
            }
            _ => return unreachable_op(op, T::NAMES.1),
        };
        b[..16].copy_from_slice(&r);
        b[16..].copy_from_slice(&i);
    }
    Ok(())
}

/// An IEEE 754 binary128 value (Fortran `REAL*16`), as its bits: sign at bit 127, a 15-bit
/// biased exponent, a 112-bit fraction.
#[derive(Clone, Copy, Debug)]
pub struct Binary128(pub u128);

impl Binary128 {
    const SIGN: u128 = 1 << 127;

    /// The bits without the sign: for values that are not NaN, their order is the order of
    /// the magnitudes (normals, subnormals, zero and infinity alike).
    fn magnitude(self) -> u128 {
        self.0 & !Self::SIGN
    }

    fn is_nan(self) -> bool {
        self.magnitude() > 0x7fff_u128 << 112
    }

    fn signed(self) -> (bool, u128) {
        (self.0 & Self::SIGN != 0, self.magnitude())
    }
}

impl Scalar for Binary128 {
    const N: usize = 16;
    fn read(b: &[u8]) -> Self {
        Binary128(u128::from_le_bytes(b[..16].try_into().expect("16 bytes")))
    }
    fn write(self, b: &mut [u8]) {
        b[..16].copy_from_slice(&self.0.to_le_bytes());
    }
    /// C's `<` (+0 == -0, NaN unordered).
    fn lt(self, o: Self) -> bool {
        !self.is_nan() && !o.is_nan() && signed_less(self.signed(), o.signed())
    }
    fn eq(self, o: Self) -> bool {
        !self.is_nan() && !o.is_nan() && signed_equal(self.signed(), o.signed())
    }
}
