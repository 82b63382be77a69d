//! Size, bounds and true bounds of predefined and derived datatypes, checked against the
//! values Open MPI 4.1.4 reports on x86-64 Linux (MPI_Type_size, MPI_Type_get_extent,
//! MPI_Type_get_true_extent). The numbers come from small C probes (built with Debian's
//! `mpicc`, run with `mpirun -np 1`) that construct each type below and print
//! `size lb extent true_lb true_extent`; the probe sources are not kept, the expected
//! values are quoted here verbatim.

use kawarimi_runtime::datatype::{Block, Combiner, Datatype, Order, Primitive};
use kawarimi_runtime::error::ErrorClass;

fn p(prim: Primitive) -> Datatype {
    Datatype::predefined(prim).unwrap()
}

/// `(size, lb, extent, true_lb, true_extent)` as the Open MPI probe printed them.
#[track_caller]
fn assert_bounds(dt: &Datatype, expect: (usize, isize, isize, isize, isize)) {
    let got = (dt.size(), dt.lb(), dt.extent(), dt.true_lb(), dt.true_extent());
    assert_eq!(got, expect, "(size, lb, extent, true_lb, true_extent)");
}

fn st2(a: &Datatype, da: isize, b: &Datatype, db: isize) -> Datatype {
    Datatype::create_struct(&[1, 1], &[da, db], &[a, b]).unwrap()
}

#[test]
fn predefined_types_match_open_mpi() {
    use Primitive::*;
    // (primitive, MPI names it stands for, size, extent, true extent) from the probe.
    let table = [
        (Byte, "MPI_BYTE MPI_PACKED", 1, 1, 1),
        (I8, "MPI_CHAR MPI_SIGNED_CHAR MPI_INT8_T MPI_INTEGER1", 1, 1, 1),
        (U8, "MPI_UNSIGNED_CHAR MPI_UINT8_T", 1, 1, 1),
        (I16, "MPI_SHORT MPI_INT16_T MPI_INTEGER2", 2, 2, 2),
        (U16, "MPI_UNSIGNED_SHORT", 2, 2, 2),
        (I32, "MPI_INT MPI_WCHAR MPI_INTEGER", 4, 4, 4),
        (U32, "MPI_UNSIGNED", 4, 4, 4),
        (I64, "MPI_LONG MPI_LONG_LONG MPI_AINT MPI_OFFSET MPI_COUNT MPI_INTEGER8", 8, 8, 8),
        (U64, "MPI_UNSIGNED_LONG MPI_UINT64_T", 8, 8, 8),
        (F32, "MPI_FLOAT MPI_REAL", 4, 4, 4),
        (F64, "MPI_DOUBLE MPI_DOUBLE_PRECISION", 8, 8, 8),
        (LongDouble, "MPI_LONG_DOUBLE", 16, 16, 16),
        (F128, "MPI_REAL16", 16, 16, 16),
        (CBool, "MPI_C_BOOL MPI_CXX_BOOL", 1, 1, 1),
        (FLogical, "MPI_LOGICAL", 4, 4, 4),
        (ComplexF32, "MPI_C_FLOAT_COMPLEX MPI_COMPLEX", 8, 8, 8),
        (ComplexF64, "MPI_C_DOUBLE_COMPLEX MPI_DOUBLE_COMPLEX", 16, 16, 16),
        (ComplexLongDouble, "MPI_C_LONG_DOUBLE_COMPLEX", 32, 32, 32),
        (ComplexF128, "MPI_COMPLEX32", 32, 32, 32),
        (FloatInt, "MPI_FLOAT_INT", 8, 8, 8),
        (DoubleInt, "MPI_DOUBLE_INT", 12, 16, 12),
        (LongInt, "MPI_LONG_INT", 12, 16, 12),
        (TwoInt, "MPI_2INT MPI_2INTEGER", 8, 8, 8),
        (ShortInt, "MPI_SHORT_INT", 6, 8, 8),
        (LongDoubleInt, "MPI_LONG_DOUBLE_INT", 20, 32, 20),
        (TwoF32, "MPI_2REAL", 8, 8, 8),
        (TwoF64, "MPI_2DOUBLE_PRECISION", 16, 16, 16),
    ];
    assert_eq!(table.len(), Primitive::ALL.len());
    for (prim, names, size, extent, true_extent) in table {
        let dt = p(prim);
        let got = (dt.size(), dt.lb(), dt.extent(), dt.true_lb(), dt.true_extent());
        assert_eq!(got, (size, 0, extent, 0, true_extent), "{names}");
        assert_eq!(prim.size() as isize, extent, "{names}: sizeof");
        assert_eq!(prim.packed_size(), size, "{names}: packed size");
        assert!(dt.is_committed());
        assert_eq!(dt.primitives(), Some(prim));
        assert_eq!(dt.is_contiguous(), size as isize == extent, "{names}");
    }
}

#[test]
fn struct_extent_is_padded_to_alignment() {
    let (d, c, i, s) = (p(Primitive::F64), p(Primitive::I8), p(Primitive::I32), p(Primitive::I16));
    assert_bounds(&st2(&d, 0, &c, 8), (9, 0, 16, 0, 9));
    assert_bounds(&st2(&i, 0, &c, 4), (5, 0, 8, 0, 5));
    assert_bounds(&st2(&c, 0, &d, 1), (9, 0, 16, 0, 9));
    assert_bounds(&st2(&c, 0, &c, 1), (2, 0, 2, 0, 2));
    assert_bounds(&st2(&s, 0, &c, 2), (3, 0, 4, 0, 3));
    assert_bounds(&st2(&d, -3, &c, 8), (9, -3, 16, -3, 12));
    assert_bounds(&st2(&c, -3, &d, 8), (9, -3, 24, -3, 19));
    assert_bounds(&st2(&p(Primitive::ShortInt), 0, &c, 8), (7, 0, 12, 0, 9));
    assert_bounds(&st2(&p(Primitive::LongDouble), 0, &c, 16), (17, 0, 32, 0, 17));
    assert_bounds(&st2(&p(Primitive::DoubleInt), 0, &c, 16), (13, 0, 24, 0, 17));
    assert_bounds(&st2(&p(Primitive::ComplexF64), 0, &c, 16), (17, 0, 24, 0, 17));
    let contig1 = Datatype::contiguous(1, &st2(&d, 0, &c, 8)).unwrap();
    assert_bounds(&st2(&contig1, 0, &c, 16), (10, 0, 24, 0, 17));
}

#[test]
fn replicated_padded_struct() {
    let sdc = st2(&p(Primitive::F64), 0, &p(Primitive::I8), 8);
    assert_bounds(&Datatype::contiguous(2, &sdc).unwrap(), (18, 0, 32, 0, 25));
    // Open MPI rounds every constructor's extent, hvector included.
    assert_bounds(&Datatype::hvector(2, 1, 9, &sdc).unwrap(), (18, 0, 32, 0, 18));
    assert_bounds(&Datatype::hvector(2, 1, -9, &sdc).unwrap(), (18, -9, 32, -9, 18));
    assert_bounds(&Datatype::vector(2, 1, 1, &sdc).unwrap(), (18, 0, 32, 0, 25));
    let i = p(Primitive::I32);
    assert_bounds(&Datatype::hvector(2, 1, 3, &i).unwrap(), (8, 0, 8, 0, 7));
    assert_bounds(&Datatype::hvector(2, 2, 5, &i).unwrap(), (16, 0, 16, 0, 13));
    assert_bounds(&Datatype::contiguous(3, &p(Primitive::DoubleInt)).unwrap(), (36, 0, 48, 0, 44));
}

#[test]
fn vectors_and_indexed() {
    let i = p(Primitive::I32);
    assert_bounds(&Datatype::contiguous(0, &i).unwrap(), (0, 0, 0, 0, 0));
    assert_bounds(&Datatype::vector(3, 2, 4, &i).unwrap(), (24, 0, 40, 0, 40));
    assert_bounds(&Datatype::vector(3, 2, -4, &i).unwrap(), (24, -32, 40, -32, 40));
    assert_bounds(&Datatype::vector(0, 2, 4, &i).unwrap(), (0, 0, 0, 0, 0));
    assert_bounds(&Datatype::vector(3, 0, 4, &i).unwrap(), (0, 0, 0, 0, 0));
    assert_bounds(&Datatype::indexed(&[2, 0, 1], &[5, 1, -2], &i).unwrap(), (12, -8, 36, -8, 36));
    assert_bounds(&Datatype::indexed(&[0, 1], &[-100, 0], &i).unwrap(), (4, 0, 4, 0, 4));
    assert_bounds(&Datatype::indexed_block(1, &[3, -2, 0], &p(Primitive::F64)).unwrap(), (24, -16, 48, -16, 48));
    assert_bounds(&Datatype::hindexed_block(2, &[3, -2, 0], &i).unwrap(), (24, -2, 16, -2, 13));
    assert_bounds(&Datatype::hindexed(&[2, 3], &[-10, 7], &p(Primitive::I16)).unwrap(), (10, -10, 24, -10, 23));
    assert_bounds(&Datatype::vector(2, 1, 2, &p(Primitive::ShortInt)).unwrap(), (12, 0, 24, 0, 24));
}

#[test]
fn resized_markers_propagate() {
    let i = p(Primitive::I32);
    let r = Datatype::create_resized(&i, -4, 12).unwrap();
    assert_bounds(&r, (4, -4, 12, 0, 4));
    assert_bounds(&Datatype::contiguous(2, &r).unwrap(), (8, -4, 24, 0, 16));
    // An explicit marker defines the bound alone (MPI-3.1 §4.1.7).
    assert_bounds(&st2(&r, 0, &p(Primitive::F64), 100), (12, -4, 12, 0, 108));
    assert_bounds(&st2(&p(Primitive::F64), -100, &r, 0), (12, -4, 12, -100, 104));
    let r2 = Datatype::create_resized(&i, 0, 16).unwrap();
    assert_bounds(&st2(&r, 0, &r2, 100), (8, -4, 120, 0, 104));
    let sdc = st2(&p(Primitive::F64), 0, &p(Primitive::I8), 8);
    let r9 = Datatype::create_resized(&sdc, 0, 9).unwrap();
    assert_bounds(&r9, (9, 0, 9, 0, 9));
    assert_bounds(&Datatype::contiguous(2, &r9).unwrap(), (18, 0, 18, 0, 18));
    assert_bounds(&st2(&r9, 0, &p(Primitive::I8), 20), (10, 0, 9, 0, 21));
    let zero = Datatype::create_resized(&i, 0, 0).unwrap();
    assert_bounds(&zero, (4, 0, 0, 0, 4));
    assert_bounds(&Datatype::contiguous(3, &zero).unwrap(), (12, 0, 0, 0, 4));
    assert_bounds(&Datatype::create_resized(&i, 4, -8).unwrap(), (4, 4, -8, 0, 4));
    assert_bounds(&Datatype::dup(&p(Primitive::DoubleInt)).unwrap(), (12, 0, 16, 0, 12));
}

#[test]
fn empty_types_and_zero_blocks() {
    let i = p(Primitive::I32);
    let empty = Datatype::contiguous(0, &i).unwrap();
    // A zero block length adds nothing; an empty type still places its bounds.
    assert_bounds(&Datatype::create_struct(&[0, 1], &[-100, 0], &[&i, &i]).unwrap(), (4, 0, 4, 0, 4));
    assert_bounds(&st2(&empty, 50, &i, 0), (4, 0, 52, 0, 4));
    assert_bounds(&Datatype::create_resized(&empty, 0, 8).unwrap(), (0, 0, 8, 0, 0));
    assert_eq!(empty.primitives(), None);
    assert_eq!(empty.span(5), (0, 0));
}

#[test]
fn subarrays() {
    let d = p(Primitive::F64);
    let (s, ss, st) = ([4, 5], [2, 3], [1, 2]);
    assert_bounds(&Datatype::create_subarray(2, &s, &ss, &st, Order::C, &d).unwrap(), (48, 0, 160, 56, 64));
    assert_bounds(&Datatype::create_subarray(2, &s, &ss, &st, Order::Fortran, &d).unwrap(), (48, 0, 160, 72, 80));
    let r = Datatype::create_resized(&p(Primitive::I32), -4, 12).unwrap();
    assert_bounds(&Datatype::create_subarray(2, &s, &ss, &st, Order::C, &r).unwrap(), (24, 0, 240, 84, 88));
    let sdc = st2(&d, 0, &p(Primitive::I8), 8);
    assert_bounds(&Datatype::create_subarray(2, &s, &ss, &st, Order::C, &sdc).unwrap(), (54, 0, 320, 112, 121));
    let whole = Datatype::create_subarray(1, &[10], &[10], &[0], Order::C, &p(Primitive::I32)).unwrap();
    assert_bounds(&whole, (40, 0, 40, 0, 40));
    assert!(whole.is_contiguous());
    // Open MPI 4.1 refuses a zero subsize with MPI_ERR_ARG.
    let e = Datatype::create_subarray(1, &[10], &[0], &[3], Order::C, &d).unwrap_err();
    assert_eq!(e.class, ErrorClass::Arg);
    let e = Datatype::create_subarray(1, &[10], &[4], &[7], Order::C, &d).unwrap_err();
    assert_eq!(e.class, ErrorClass::Arg);
    let e = Datatype::create_subarray(2, &[10], &[4], &[0], Order::C, &d).unwrap_err();
    assert_eq!(e.class, ErrorClass::Arg);
}

#[test]
fn subarray_packs_the_right_elements() {
    // A 4x5 row-major array of ints holding their own index; the [1..3, 2..5] block.
    let i = p(Primitive::I32);
    let dt = Datatype::create_subarray(2, &[4, 5], &[2, 3], &[1, 2], Order::C, &i).unwrap();
    let base: Vec<u8> = (0..20i32).flat_map(|v| v.to_le_bytes()).collect();
    let (lo, hi) = dt.span(1);
    let mut out = vec![];
    dt.pack(&base[lo as usize..hi as usize], (-lo) as usize, 1, &mut out);
    let got: Vec<i32> = out.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(got, vec![7, 8, 9, 12, 13, 14]);
}

#[test]
fn argument_errors() {
    let i = p(Primitive::I32);
    assert_eq!(Datatype::contiguous(-1, &i).unwrap_err().class, ErrorClass::Count);
    assert_eq!(Datatype::vector(-1, 1, 1, &i).unwrap_err().class, ErrorClass::Count);
    assert_eq!(Datatype::vector(1, -1, 1, &i).unwrap_err().class, ErrorClass::Arg);
    assert_eq!(Datatype::hvector(2, -2, 8, &i).unwrap_err().class, ErrorClass::Arg);
    assert_eq!(Datatype::indexed(&[1, -1], &[0, 4], &i).unwrap_err().class, ErrorClass::Arg);
    assert_eq!(Datatype::indexed(&[1], &[0, 4], &i).unwrap_err().class, ErrorClass::Arg);
    assert_eq!(Datatype::indexed_block(-3, &[0], &i).unwrap_err().class, ErrorClass::Arg);
    assert_eq!(Datatype::create_struct(&[1, 1], &[0, 4], &[&i]).unwrap_err().class, ErrorClass::Arg);
    assert_eq!(Datatype::hvector(2, 1, isize::MAX, &i).unwrap_err().class, ErrorClass::Arg);
    assert_eq!(Datatype::create_resized(&i, isize::MAX, 1).unwrap_err().class, ErrorClass::Arg);
}

fn blocks(t: &Datatype) -> Vec<Block> {
    let mut v = vec![];
    t.for_each_block(|b| v.push(b));
    v
}

#[test]
fn large_counts_cost_memory_independent_of_the_count() {
    let i = p(Primitive::I32);
    // 10^8 separate ints, then 2^24 of them two levels deep: a few items each.
    let v = Datatype::vector(100_000_000, 1, 2, &i).unwrap();
    assert_eq!(v.size(), 400_000_000);
    assert_eq!(v.extent(), (2 * 100_000_000 - 1) * 4);
    assert_eq!(v.elements_per_type(), 100_000_000);
    assert!(v.described_items() <= 2, "{} items", v.described_items());
    assert_eq!(v.run_count(), 100_000_000);
    let inner = Datatype::vector(4096, 1, 2, &i).unwrap();
    let nested = Datatype::hvector(4096, 1, 1 << 20, &inner).unwrap();
    assert_eq!(nested.size(), 4096 * 4096 * 4);
    assert!(nested.described_items() <= 4, "{} items", nested.described_items());
    // A window from the middle of the nested type packs the ints it names: copy 4000 of
    // the outer vector, int 17 of the inner one, and the next 3 ints.
    let (lo, hi) = nested.span(1);
    assert_eq!(lo, 0);
    let mut base = vec![0u8; hi as usize];
    let at = |outer: usize, inner: usize| outer * (1 << 20) + inner * 8;
    for (k, v) in [(17, 1u32), (18, 2), (19, 3), (20, 4)] {
        base[at(4000, k)..at(4000, k) + 4].copy_from_slice(&v.to_le_bytes());
    }
    let mut out = vec![];
    let start = (4000 * 4096 + 17) * 4;
    assert_eq!(nested.pack_range(&base, 0, 1, start, 16, &mut out), 16);
    let ints: Vec<u32> = out.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(ints, [1, 2, 3, 4]);
    // Elements and the whole-primitive prefix descend into the loops too.
    assert_eq!(nested.elements_in(start + 6), None);
    assert_eq!(nested.elements_in(start + 8), Some(4000 * 4096 + 19));
    // Abutting copies merge, so a huge contiguous type is one run.
    let big = Datatype::contiguous(i32::MAX, &Datatype::contiguous(1 << 20, &i).unwrap()).unwrap();
    assert_eq!(blocks(&big).len(), 1);
    assert!(big.is_contiguous());
    // A contiguous run of a vector continues its loop: still one repeat.
    let rows = Datatype::contiguous(1 << 20, &Datatype::create_resized(&v, 0, 2 * 100_000_000 * 4).unwrap()).unwrap();
    assert!(rows.described_items() <= 3, "{} items", rows.described_items());
}

#[test]
fn flattening_merges_and_homogeneity() {
    let i = p(Primitive::I32);
    let v = Datatype::vector(3, 2, 2, &i).unwrap();
    assert_eq!(blocks(&v).len(), 1, "stride == blocklen is contiguous");
    assert!(v.is_contiguous());
    let mixed = st2(&i, 0, &p(Primitive::F32), 4);
    assert_eq!(mixed.primitives(), None);
    assert!(mixed.is_contiguous(), "int then float, no holes");
    let holes = Datatype::vector(3, 1, 2, &i).unwrap();
    assert_eq!(blocks(&holes).len(), 3);
    assert_eq!(holes.primitives(), Some(Primitive::I32));
    assert!(!holes.is_contiguous());
    let shifted = Datatype::create_resized(&i, -4, 8).unwrap();
    assert!(!shifted.is_contiguous());
}

#[test]
fn recipes_and_commit() {
    let i = p(Primitive::I32);
    let mut v = Datatype::vector(3, 2, 4, &i).unwrap();
    assert!(!v.is_committed());
    v.commit();
    assert!(v.is_committed());
    let r = v.recipe().unwrap();
    assert_eq!(r.combiner, Combiner::Vector);
    assert_eq!(r.integers, vec![3, 2, 4]);
    assert_eq!(r.types.len(), 1);
    let h = Datatype::create_resized(&v, -8, 64).unwrap();
    assert_eq!(h.recipe().unwrap().addresses, vec![-8, 64]);
    assert_eq!(h.recipe().unwrap().combiner, Combiner::Resized);
    assert!(i.recipe().is_none());
    let named = Datatype::predefined_named(Primitive::I32, "MPI_INT").unwrap();
    assert_eq!(named.name(), Some("MPI_INT"));
    let d = Datatype::dup(&v).unwrap();
    assert!(d.is_committed());
    assert_eq!(d.recipe().unwrap().combiner, Combiner::Dup);
}

#[test]
fn elements_of_pair_types_count_both_members() {
    // Open MPI 4.1: two MPI_DOUBLE_INT received into contiguous(4, MPI_DOUBLE_INT) give
    // MPI_Get_elements 4; 12 bytes (double + int) give 2; 8 bytes (a double) give 1.
    let di = Datatype::contiguous(4, &p(Primitive::DoubleInt)).unwrap();
    assert_eq!(di.elements_in(24), Some(4));
    assert_eq!(di.elements_in(12), Some(2));
    assert_eq!(di.elements_in(8), Some(1));
    assert_eq!(di.elements_in(10), None);
    assert_eq!(di.count_in(24), None);
    assert_eq!(di.count_in(48), Some(1));
    let si = Datatype::contiguous(4, &p(Primitive::ShortInt)).unwrap();
    assert_eq!(si.elements_in(12), Some(4));
}

#[test]
fn external32_reverses_each_number_on_its_own() {
    // MPI_DOUBLE_INT packs as a double then an int; a complex as two floats.
    let di = p(Primitive::DoubleInt);
    let mut packed: Vec<u8> = (1..=12).collect();
    di.swap_external32(&mut packed);
    assert_eq!(packed, [8, 7, 6, 5, 4, 3, 2, 1, 12, 11, 10, 9]);
    let c = Datatype::contiguous(2, &p(Primitive::ComplexF32)).unwrap();
    let mut packed: Vec<u8> = (1..=16).collect();
    c.swap_external32(&mut packed);
    assert_eq!(packed, [4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13]);
    // Runs of mixed types, two elements: the swap is its own inverse.
    let mixed = st2(&p(Primitive::I16), 0, &p(Primitive::F64), 8);
    let original: Vec<u8> = (0..2 * mixed.size() as u8).collect();
    let mut packed = original.clone();
    mixed.swap_external32(&mut packed);
    assert_eq!(&packed[..2], &[1, 0]);
    assert_eq!(&packed[2..10], &[9, 8, 7, 6, 5, 4, 3, 2]);
    mixed.swap_external32(&mut packed);
    assert_eq!(packed, original);
}
