//! Property tests of the datatype engine against a naive reference: random nested derived
//! types (negative displacements and strides, resized extents, pair types with holes),
//! whose type maps are listed by a direct recursive walk of the constructor tree
//! (MPI-3.1 §4.1.2's definitions), and whose packed stream is then just those bytes.
//! Every type is built under several flatten limits, from "every copy that does not merge
//! is a repeat" to "every copy written out", so both descriptions and their mixtures meet
//! the same reference.

use kawarimi_runtime::datatype::{Datatype, Primitive};
use kawarimi_runtime::error::ErrorClass;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Tree {
    Prim(Primitive),
    Contig(i32, Box<Tree>),
    Vector(i32, i32, i32, Box<Tree>),
    Hvector(i32, i32, isize, Box<Tree>),
    Indexed(Vec<(i32, i32)>, Box<Tree>),
    Hindexed(Vec<(i32, isize)>, Box<Tree>),
    IndexedBlock(i32, Vec<i32>, Box<Tree>),
    Struct(Vec<(i32, isize, Tree)>),
    Resized(isize, isize, Box<Tree>),
}

fn build(t: &Tree) -> Datatype {
    match t {
        Tree::Prim(p) => Datatype::predefined(*p).unwrap(),
        Tree::Contig(n, c) => Datatype::contiguous(*n, &build(c)).unwrap(),
        Tree::Vector(n, bl, s, c) => Datatype::vector(*n, *bl, *s, &build(c)).unwrap(),
        Tree::Hvector(n, bl, s, c) => Datatype::hvector(*n, *bl, *s, &build(c)).unwrap(),
        Tree::Indexed(v, c) => {
            let (bl, d): (Vec<i32>, Vec<i32>) = v.iter().copied().unzip();
            Datatype::indexed(&bl, &d, &build(c)).unwrap()
        }
        Tree::Hindexed(v, c) => {
            let (bl, d): (Vec<i32>, Vec<isize>) = v.iter().copied().unzip();
            Datatype::hindexed(&bl, &d, &build(c)).unwrap()
        }
        Tree::IndexedBlock(bl, d, c) => Datatype::indexed_block(*bl, d, &build(c)).unwrap(),
        Tree::Struct(items) => {
            let types: Vec<Datatype> = items.iter().map(|(_, _, t)| build(t)).collect();
            let refs: Vec<&Datatype> = types.iter().collect();
            let bl: Vec<i32> = items.iter().map(|i| i.0).collect();
            let d: Vec<isize> = items.iter().map(|i| i.1).collect();
            Datatype::create_struct(&bl, &d, &refs).unwrap()
        }
        Tree::Resized(lb, ext, c) => Datatype::create_resized(&build(c), *lb, *ext).unwrap(),
    }
}

/// The type map of one element: `(displacement, primitive)` in type-map order, by the
/// standard's definitions. Extents of children come from the engine; the bound rules are
/// checked separately against Open MPI's numbers.
fn entries(t: &Tree) -> Vec<(isize, Primitive)> {
    let shifted = |c: &Tree, shifts: Vec<isize>| -> Vec<(isize, Primitive)> {
        let inner = entries(c);
        shifts.into_iter().flat_map(|s| inner.iter().map(move |&(d, p)| (d + s, p))).collect()
    };
    match t {
        Tree::Prim(p) => vec![(0, *p)],
        Tree::Contig(n, c) => {
            let e = build(c).extent();
            shifted(c, (0..*n as isize).map(|k| k * e).collect())
        }
        Tree::Vector(n, bl, s, c) => {
            let e = build(c).extent();
            let mut v = vec![];
            for i in 0..*n as isize {
                for j in 0..*bl as isize {
                    v.push((i * *s as isize + j) * e);
                }
            }
            shifted(c, v)
        }
        Tree::Hvector(n, bl, s, c) => {
            let e = build(c).extent();
            let mut v = vec![];
            for i in 0..*n as isize {
                for j in 0..*bl as isize {
                    v.push(i * s + j * e);
                }
            }
            shifted(c, v)
        }
        Tree::Indexed(blocks, c) => {
            let e = build(c).extent();
            let v = blocks.iter().flat_map(|&(bl, d)| (0..bl as isize).map(move |j| (d as isize + j) * e)).collect();
            shifted(c, v)
        }
        Tree::Hindexed(blocks, c) => {
            let e = build(c).extent();
            let v = blocks.iter().flat_map(|&(bl, d)| (0..bl as isize).map(move |j| d + j * e)).collect();
            shifted(c, v)
        }
        Tree::IndexedBlock(bl, displs, c) => {
            let e = build(c).extent();
            let v = displs.iter().flat_map(|&d| (0..*bl as isize).map(move |j| (d as isize + j) * e)).collect();
            shifted(c, v)
        }
        Tree::Struct(items) => items
            .iter()
            .flat_map(|(bl, d, c)| {
                let e = build(c).extent();
                shifted(c, (0..*bl as isize).map(|j| d + j * e).collect())
            })
            .collect(),
        Tree::Resized(_, _, c) => entries(c),
    }
}

/// Memory runs of one primitive's packed bytes: pair types lose their padding, and
/// MPI_SHORT_INT has a hole between its short and its int.
fn segments(p: Primitive) -> Vec<(isize, usize)> {
    match p {
        Primitive::ShortInt => vec![(0, 2), (4, 4)],
        _ => vec![(0, p.packed_size())],
    }
}

/// Byte offsets of one element's packed stream, in order, plus for each packed byte
/// whether it ends a primitive (for the prefix rule of short unpacks).
fn byte_map(t: &Tree) -> (Vec<isize>, Vec<bool>) {
    let mut bytes = vec![];
    let mut ends = vec![];
    for (d, p) in entries(t) {
        for (off, len) in segments(p) {
            for k in 0..len as isize {
                bytes.push(d + off + k);
                ends.push(false);
            }
        }
        *ends.last_mut().unwrap() = true;
    }
    (bytes, ends)
}

fn prim() -> impl Strategy<Value = Primitive> {
    prop::sample::select(vec![
        Primitive::U8,
        Primitive::I16,
        Primitive::I32,
        Primitive::F64,
        Primitive::LongDouble,
        Primitive::DoubleInt,
        Primitive::ShortInt,
        Primitive::FloatInt,
        Primitive::ComplexF32,
    ])
}

fn tree() -> impl Strategy<Value = Tree> {
    prim().prop_map(Tree::Prim).prop_recursive(3, 24, 3, |inner| {
        let b = || inner.clone().prop_map(Box::new);
        prop_oneof![
            (0..4i32, b()).prop_map(|(n, c)| Tree::Contig(n, c)),
            (0..4i32, 0..3i32, -4..5i32, b()).prop_map(|(n, bl, s, c)| Tree::Vector(n, bl, s, c)),
            (0..4i32, 0..3i32, -40..41isize, b()).prop_map(|(n, bl, s, c)| Tree::Hvector(n, bl, s, c)),
            (prop::collection::vec((0..3i32, -5..6i32), 0..4), b()).prop_map(|(v, c)| Tree::Indexed(v, c)),
            (prop::collection::vec((0..3i32, -40..41isize), 0..4), b()).prop_map(|(v, c)| Tree::Hindexed(v, c)),
            (0..3i32, prop::collection::vec(-5..6i32, 0..4), b()).prop_map(|(bl, d, c)| Tree::IndexedBlock(bl, d, c)),
            prop::collection::vec((0..3i32, -40..41isize, inner.clone()), 1..4).prop_map(Tree::Struct),
            (-16..17isize, -8..48isize, b()).prop_map(|(lb, e, c)| Tree::Resized(lb, e, c)),
        ]
    })
}

struct Case {
    dt: Datatype,
    /// Offsets, relative to the buffer address, of every packed byte of `count` elements.
    stream: Vec<isize>,
    ends: Vec<bool>,
    count: usize,
}

/// Flatten limits to build under: 0 makes every copy a repeat, `usize::MAX` none.
fn limit() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![0, 1, 3, usize::MAX])
}

fn case(t: &Tree, count: usize, limit: usize) -> Case {
    let dt = Datatype::with_flatten_limit(limit, || build(t));
    let (one, one_ends) = byte_map(t);
    let mut stream = vec![];
    let mut ends = vec![];
    for e in 0..count as isize {
        stream.extend(one.iter().map(|&b| b + e * dt.extent()));
        ends.extend(one_ends.iter().copied());
    }
    Case { dt, stream, ends, count }
}

fn buffer(c: &Case, seed: u8) -> (Vec<u8>, usize) {
    let (lo, hi) = c.dt.span(c.count);
    let len = (hi - lo) as usize;
    let base: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    (base, (-lo) as usize)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn type_map_size_and_span_match_reference(t in tree(), count in 0usize..4, limit in limit()) {
        let c = case(&t, count, limit);
        prop_assert_eq!(c.dt.size() * count, c.stream.len());
        let mut blocks_len = 0;
        let mut touched = vec![];
        let mut runs = 0;
        c.dt.for_each_block(|b| {
            runs += 1;
            blocks_len += b.count * b.prim.packed_size();
            touched.extend((0..b.count as isize).map(|k| (b.disp + k * b.prim.size() as isize, b.prim)));
        });
        prop_assert_eq!(blocks_len, c.dt.size());
        prop_assert_eq!(runs, c.dt.run_count(), "runs counted without expanding");
        prop_assert_eq!(touched, entries(&t), "the expanded description is the type map");
        let (lo, hi) = c.dt.span(count);
        if c.stream.is_empty() {
            prop_assert_eq!((lo, hi), (0, 0));
        } else {
            // The span is exactly the touched range: every byte inside, both ends touched.
            prop_assert_eq!(lo, *c.stream.iter().min().unwrap());
            prop_assert_eq!(hi, *c.stream.iter().max().unwrap() + 1);
        }
        if count == 1 && !c.stream.is_empty() {
            prop_assert_eq!(c.dt.true_lb(), lo);
            prop_assert_eq!(c.dt.true_ub(), hi);
        }
    }

    #[test]
    fn pack_matches_reference_and_round_trips(t in tree(), count in 0usize..4, seed in any::<u8>(), limit in limit()) {
        let c = case(&t, count, limit);
        let (base, origin) = buffer(&c, seed);
        let mut packed = vec![0xEE];
        c.dt.pack(&base, origin, count, &mut packed);
        let expect: Vec<u8> = std::iter::once(0xEE)
            .chain(c.stream.iter().map(|&b| base[(origin as isize + b) as usize]))
            .collect();
        prop_assert_eq!(&packed, &expect);

        let mut out = vec![0u8; base.len()];
        c.dt.unpack(&packed[1..], &mut out, origin, count).unwrap();
        let mut reference = vec![0u8; base.len()];
        for (i, &b) in c.stream.iter().enumerate() {
            reference[(origin as isize + b) as usize] = packed[1 + i];
        }
        prop_assert_eq!(&out, &reference);
        // Round trip: every touched byte got its original value back.
        for &b in &c.stream {
            let at = (origin as isize + b) as usize;
            prop_assert_eq!(out[at], base[at]);
        }
        // Contiguity claims must be true: packed bytes are the buffer itself.
        if c.dt.is_contiguous() && count > 0 {
            prop_assert_eq!(&packed[1..], &base[origin..origin + count * c.dt.size()]);
        }
    }

    /// The memory pieces of a type are its type map in order: reading them one after the
    /// other gives the packed stream (where the type has no padded pair primitives, the
    /// only ones refused), and a cap on their number is kept.
    #[test]
    fn memory_pieces_read_in_order_are_the_packed_stream(t in tree(), count in 0usize..4, seed in any::<u8>(), limit in limit(), cap in 1usize..40) {
        let c = case(&t, count, limit);
        let (base, origin) = buffer(&c, seed);
        let at = base.as_ptr() as usize + origin;
        let padded = entries(&t).iter().any(|(_, p)| p.size() != p.packed_size());
        match c.dt.memory_pieces(at, count, usize::MAX) {
            None => prop_assert!(padded && !c.stream.is_empty(), "refused without a padded primitive"),
            Some(pieces) => {
                prop_assert!(!padded || c.stream.is_empty() || c.dt.is_contiguous());
                let read: Vec<u8> = pieces.iter().flat_map(|&(a, n)| base[a - base.as_ptr() as usize..][..n].to_vec()).collect();
                let expect: Vec<u8> = c.stream.iter().map(|&b| base[(origin as isize + b) as usize]).collect();
                prop_assert_eq!(read, expect);
                prop_assert!(pieces.windows(2).all(|w| w[0].0 + w[0].1 != w[1].0), "adjacent pieces merged");
                match c.dt.memory_pieces(at, count, cap) {
                    Some(capped) => prop_assert_eq!(capped, pieces),
                    None => prop_assert!(pieces.len() > cap || c.dt.run_count() > cap),
                }
            }
        }
    }

    #[test]
    fn windows_concatenate_to_the_full_stream(
        t in tree(), count in 0usize..4, seed in any::<u8>(), cuts in prop::collection::vec(1usize..13, 1..40),
        limit in limit(),
    ) {
        let c = case(&t, count, limit);
        let (base, origin) = buffer(&c, seed);
        let mut full = vec![];
        c.dt.pack(&base, origin, count, &mut full);
        let total = full.len();
        let mut joined = vec![];
        let mut out = vec![0u8; base.len()];
        let mut off = 0;
        let mut k = 0;
        while off < total {
            let len = cuts[k % cuts.len()];
            k += 1;
            let mut w = vec![];
            let n = c.dt.pack_range(&base, origin, count, off, len, &mut w);
            prop_assert_eq!(n, len.min(total - off));
            prop_assert_eq!(w.len(), n);
            c.dt.unpack_range(&w, &mut out, origin, count, off).unwrap();
            joined.extend_from_slice(&w);
            off += n;
        }
        prop_assert_eq!(&joined, &full);
        let mut whole = vec![0u8; base.len()];
        c.dt.unpack(&full, &mut whole, origin, count).unwrap();
        prop_assert_eq!(&out, &whole);
        // Past the end: nothing appended, and an unpack window past the end is refused.
        let mut w = vec![];
        prop_assert_eq!(c.dt.pack_range(&base, origin, count, total, 5, &mut w), 0);
        let e = c.dt.unpack_range(&[0], &mut out, origin, count, total).unwrap_err();
        prop_assert_eq!(e.class, ErrorClass::Truncate);
    }

    #[test]
    fn short_unpack_writes_whole_primitives_only(t in tree(), count in 1usize..4, seed in any::<u8>(), cut in any::<prop::sample::Index>(), limit in limit()) {
        let c = case(&t, count, limit);
        prop_assume!(!c.stream.is_empty());
        let (base, origin) = buffer(&c, seed);
        let mut full = vec![];
        c.dt.pack(&base, origin, count, &mut full);
        let n = cut.index(full.len());
        let mut out = vec![0u8; base.len()];
        c.dt.unpack(&full[..n], &mut out, origin, count).unwrap();
        let usable = (0..n).rev().find(|&i| c.ends[i]).map_or(0, |i| i + 1);
        let mut reference = vec![0u8; base.len()];
        for i in 0..usable {
            reference[(origin as isize + c.stream[i]) as usize] = full[i];
        }
        prop_assert_eq!(&out, &reference);
        // A longer message than the buffer is a truncation error.
        let mut long = full.clone();
        long.push(0);
        let e = c.dt.unpack(&long, &mut out, origin, count).unwrap_err();
        prop_assert_eq!(e.class, ErrorClass::Truncate);
    }

    #[test]
    fn counts_and_elements(t in tree(), nbytes in 0usize..200, limit in limit()) {
        let dt = Datatype::with_flatten_limit(limit, || build(&t));
        let per: usize = entries(&t).iter().map(|&(_, p)| p.members().len()).sum();
        prop_assert_eq!(dt.elements_per_type(), per);
        if dt.size() == 0 {
            prop_assert_eq!(dt.count_in(0), Some(0));
            return Ok(());
        }
        let expect_count = if nbytes % dt.size() == 0 { Some(nbytes / dt.size()) } else { None };
        prop_assert_eq!(dt.count_in(nbytes), expect_count);
        // Reference for MPI_Get_elements: walk members of the repeated type map.
        let members: Vec<usize> = entries(&t).iter().flat_map(|&(_, p)| p.members().to_vec()).collect();
        let mut left = nbytes;
        let mut n = 0usize;
        let mut expect = None;
        'outer: loop {
            for &m in &members {
                if left == 0 { expect = Some(n); break 'outer; }
                if left < m { break 'outer; }
                left -= m;
                n += 1;
            }
        }
        prop_assert_eq!(dt.elements_in(nbytes), expect);
    }
}
