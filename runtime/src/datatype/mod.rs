//! The datatype engine: predefined types, derived type constructors, type maps, pack/unpack.
//! (MPI-3.1 chapter 4.)
//!
//! This file holds the types and their queries; `build.rs` the constructors (and the
//! `Builder` that gives every constructor Open MPI's bounds), `pack.rs` the data movement
//! (pack, unpack, and counting the elements in packed bytes).
//!
//! A [`Datatype`] is a type map (MPI-3.1 §4.1) described compactly, plus its size, bounds
//! and true bounds. The description ([`Map`]) is an ordered list of items, each either a
//! run of `count` primitives back to back (adjacent runs of one primitive merged) or a
//! *repeat*: `count` copies of a sub-description at a stride. Small types are flattened
//! into runs, which is the quickest to walk; when a constructor would make more than
//! [`FLATTEN_LIMIT`] items, it keeps the loop instead, so `MPI_Type_vector(10^8, ...)`
//! costs one item and memory does not grow with the count (the constructors describe
//! nested loops, and so does the description). Pack and unpack walk repeats directly,
//! with a tight loop when the repeated body is one dense run (the strided vector).
//!
//! # Bounds follow Open MPI 4.1, not only the letter of the standard
//! The shim stands in for Open MPI 4.1, so an application must see the numbers Open MPI
//! would give it. Every constructor is therefore expressed, as Open MPI's own constructors
//! are, as a sequence of *adds* of `count` copies of an old type at a displacement with a
//! stride (see [`Builder::add`]); each add updates `lb`/`ub` from the old type's `lb`/`ub`,
//! honours explicit bound markers set by `MPI_Type_create_resized` (§4.1.7), and rounds
//! the extent up to the largest alignment seen (the `ε` of §4.1.6) unless an upper-bound
//! marker is present. Open MPI applies that rounding after *every* add and in every
//! constructor (not only structs): `hvector(2,1,3 bytes,MPI_INT)` has extent 8 there.
//! The numbers in `runtime/tests/datatype_openmpi.rs` were measured with Open MPI 4.1.4.
//!
//! # Packed representation
//! The packed form of `count` elements is, element after element, each block's primitives
//! in type-map order, each primitive in its *packed* form ([`Primitive::packed_size`]):
//! plain primitives as their bytes in memory (little endian, x86-64), pair types as their
//! members without the C struct padding (MPI_SHORT_INT packs as 2 + 4 bytes, MPI_DOUBLE_INT
//! as 8 + 4). That is also what `MPI_Type_size` counts in Open MPI, so `size()` bytes per
//! element, and what the reduction engine ([`crate::op`]) reads.

use std::sync::Arc;

use crate::error::{err, ErrorClass, MpiResult};

/// Upper bound on the items of one description level. Repeats keep constructors with
/// large counts small, so only a type listed item by item (an indexed or struct type of
/// millions of user-given blocks, or one that merges nothing) can approach it; it then
/// fails cleanly with MPI_ERR_NO_MEM instead of exhausting memory. Each item costs 40
/// bytes: 640 MiB of description at the limit.
pub const MAX_ITEMS: usize = 1 << 24;

/// Copies of an old type are written out as runs while the result stays within this many
/// items, and kept as a repeat beyond it: short lists walk fastest, long ones cost memory
/// and cache for no gain (the repeat walk of a strided vector is as quick as its runs).
pub const FLATTEN_LIMIT: usize = 1024;

/// Upper bound on `ndims` of `MPI_Type_create_subarray`: far beyond any real array, small
/// enough that the per-dimension work is trivial.
pub const MAX_SUBARRAY_DIMS: usize = 64;

/// The primitive element kinds that every type map is made of. One variant per distinct
/// memory representation and reduction behaviour; several MPI names map to one variant
/// (MPI_INT, MPI_INT32_T and MPI_INTEGER are all `I32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Primitive {
    /// Raw bytes (MPI_BYTE, MPI_PACKED): no arithmetic, only copies.
    Byte,
    /// C `char` (signed on x86-64) and MPI_SIGNED_CHAR, MPI_INT8_T.
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    /// x87 80-bit extended, stored in 16 bytes (C `long double` on x86-64).
    LongDouble,
    /// IEEE 754 binary128 (Fortran `REAL*16` in gfortran, C `__float128`).
    F128,
    /// C `_Bool`, C++ bool: one byte, logical ops only.
    CBool,
    /// Fortran LOGICAL: 4 bytes, zero is false.
    FLogical,
    /// Complex of two f32 / two f64 / two long double.
    ComplexF32,
    ComplexF64,
    ComplexLongDouble,
    /// Complex of two binary128 (Fortran `COMPLEX*32`).
    ComplexF128,
    /// Pair types for MINLOC/MAXLOC: (value, int index), with C struct layout and padding.
    FloatInt,
    DoubleInt,
    LongInt,
    TwoInt,
    ShortInt,
    LongDoubleInt,
    /// Fortran pair types: (value, value) of the same type.
    TwoF32,
    TwoF64,
}

impl Primitive {
    /// Every variant, in declaration order (for tests and for tables in the shim).
    pub const ALL: [Primitive; 27] = [
        Primitive::Byte,
        Primitive::I8,
        Primitive::U8,
        Primitive::I16,
        Primitive::U16,
        Primitive::I32,
        Primitive::U32,
        Primitive::I64,
        Primitive::U64,
        Primitive::F32,
        Primitive::F64,
        Primitive::LongDouble,
        Primitive::F128,
        Primitive::CBool,
        Primitive::FLogical,
        Primitive::ComplexF32,
        Primitive::ComplexF64,
        Primitive::ComplexLongDouble,
        Primitive::ComplexF128,
        Primitive::FloatInt,
        Primitive::DoubleInt,
        Primitive::LongInt,
        Primitive::TwoInt,
        Primitive::ShortInt,
        Primitive::LongDoubleInt,
        Primitive::TwoF32,
        Primitive::TwoF64,
    ];

    /// `sizeof` of the C object in memory on x86-64 Linux, padding included: the extent
    /// of the predefined datatype (MPI-3.1 §4.1.6). MPI_DOUBLE_INT is `struct{double; int}`
    /// and so 16 here, while its [`packed_size`](Self::packed_size) is 12.
    pub fn size(self) -> usize {
        match self {
            Primitive::Byte | Primitive::I8 | Primitive::U8 | Primitive::CBool => 1,
            Primitive::I16 | Primitive::U16 => 2,
            Primitive::I32 | Primitive::U32 | Primitive::F32 | Primitive::FLogical => 4,
            Primitive::I64 | Primitive::U64 | Primitive::F64 => 8,
            Primitive::LongDouble | Primitive::F128 => 16,
            Primitive::ComplexF32 => 8,
            Primitive::ComplexF64 => 16,
            Primitive::ComplexLongDouble | Primitive::ComplexF128 => 32,
            Primitive::FloatInt | Primitive::TwoInt | Primitive::ShortInt => 8,
            Primitive::DoubleInt | Primitive::LongInt => 16,
            Primitive::LongDoubleInt => 32,
            Primitive::TwoF32 => 8,
            Primitive::TwoF64 => 16,
        }
    }

    /// Alignment of the C object (x86-64 System V ABI); feeds the `ε` rounding of extents
    /// (MPI-3.1 §4.1.6).
    pub fn align(self) -> usize {
        match self {
            Primitive::Byte | Primitive::I8 | Primitive::U8 | Primitive::CBool => 1,
            Primitive::I16 | Primitive::U16 => 2,
            Primitive::I32 | Primitive::U32 | Primitive::F32 | Primitive::FLogical => 4,
            Primitive::I64 | Primitive::U64 | Primitive::F64 => 8,
            Primitive::LongDouble
            | Primitive::ComplexLongDouble
            | Primitive::LongDoubleInt
            | Primitive::F128
            | Primitive::ComplexF128 => 16,
            Primitive::ComplexF32 => 4,
            Primitive::ComplexF64 => 8,
            Primitive::FloatInt | Primitive::TwoInt | Primitive::ShortInt | Primitive::TwoF32 => 4,
            Primitive::DoubleInt | Primitive::LongInt | Primitive::TwoF64 => 8,
        }
    }

    /// Bytes of data, without the struct padding of pair types: what `MPI_Type_size`
    /// returns for the predefined type in Open MPI 4.1 (6 for MPI_SHORT_INT, 12 for
    /// MPI_DOUBLE_INT, 20 for MPI_LONG_DOUBLE_INT), and the length of one element in the
    /// packed representation.
    pub fn packed_size(self) -> usize {
        self.members().iter().sum()
    }

    /// Packed sizes of the members that `MPI_Get_elements` counts separately (MPI-3.1
    /// §4.1.11): Open MPI 4.1 counts the value and the index of a pair type as two basic
    /// elements, and a complex number as one.
    pub fn members(self) -> &'static [usize] {
        match self {
            Primitive::FloatInt | Primitive::TwoInt | Primitive::TwoF32 => &[4, 4],
            Primitive::DoubleInt | Primitive::LongInt => &[8, 4],
            Primitive::ShortInt => &[2, 4],
            Primitive::LongDoubleInt => &[16, 4],
            Primitive::TwoF64 => &[8, 8],
            Primitive::Byte | Primitive::I8 | Primitive::U8 | Primitive::CBool => &[1],
            Primitive::I16 | Primitive::U16 => &[2],
            Primitive::I32 | Primitive::U32 | Primitive::F32 | Primitive::FLogical => &[4],
            Primitive::I64 | Primitive::U64 | Primitive::F64 | Primitive::ComplexF32 => &[8],
            Primitive::LongDouble | Primitive::F128 | Primitive::ComplexF64 => &[16],
            Primitive::ComplexLongDouble | Primitive::ComplexF128 => &[32],
        }
    }

    /// Where the packed bytes of one element lie in memory: `(offset, len)` runs inside
    /// the C object, in packed order. Only MPI_SHORT_INT has a hole inside its data
    /// (`short` at 0, `int` at 4); the other pair types have their padding at the end.
    fn segments(self) -> &'static [(usize, usize)] {
        match self {
            Primitive::ShortInt => &[(0, 2), (4, 4)],
            Primitive::DoubleInt | Primitive::LongInt => &[(0, 12)],
            Primitive::LongDoubleInt => &[(0, 20)],
            // Dense primitives: one segment covering the whole object. Spelled out per
            // size because the slice must be 'static.
            p => match p.size() {
                1 => &[(0, 1)],
                2 => &[(0, 2)],
                4 => &[(0, 4)],
                8 => &[(0, 8)],
                16 => &[(0, 16)],
                _ => &[(0, 32)],
            },
        }
    }

    /// The numbers the external32 representation (MPI-3.1 §13.5.2) writes big-endian one
    /// after the other for one element, by size: each member of a pair type, each half of a
    /// complex number, the whole of any other primitive. (`long double` is kept in its x87
    /// layout, byte-reversed, rather than converted to binary128: it round-trips through
    /// kawarimi, as Open MPI's does through Open MPI.)
    pub fn external_parts(self) -> &'static [usize] {
        match self {
            Primitive::ComplexF32 => &[4, 4],
            Primitive::ComplexF64 => &[8, 8],
            Primitive::ComplexLongDouble | Primitive::ComplexF128 => &[16, 16],
            p => p.members(),
        }
    }

    /// True when the packed bytes of an element are exactly its bytes in memory, so a run
    /// of such elements packs with one copy.
    pub fn is_dense(self) -> bool {
        self.packed_size() == self.size()
    }

    /// Bytes of data from the start of the C object to the end of its last member: the
    /// true upper bound of the predefined type (8 for MPI_SHORT_INT, 12 for MPI_DOUBLE_INT).
    fn data_end(self) -> usize {
        let segments = self.segments();
        let (offset, len) = segments[segments.len() - 1];
        offset + len
    }
}

/// Storage order of `MPI_Type_create_subarray` (MPI-3.1 §4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// Row major: the last dimension varies fastest (MPI_ORDER_C).
    C,
    /// Column major: the first dimension varies fastest (MPI_ORDER_FORTRAN).
    Fortran,
}

/// Which constructor made a datatype: the `combiner` of `MPI_Type_get_envelope`
/// (MPI-3.1 §4.1.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Combiner {
    Named,
    Dup,
    Contiguous,
    Vector,
    Hvector,
    Indexed,
    Hindexed,
    IndexedBlock,
    HindexedBlock,
    Struct,
    Subarray,
    Resized,
    /// `MPI_Type_create_f90_integer/real/complex` (§17.1.9): a predefined type chosen by
    /// precision and range, remembered with those parameters.
    F90Integer,
    F90Real,
    F90Complex,
    Darray,
}

/// How `MPI_Type_create_darray` distributes one dimension over its processes (§4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Blocks of `darg` (default ⌈gsize/psize⌉) consecutive elements, one per process.
    Block,
    /// Blocks of `darg` (default 1) dealt round-robin.
    Cyclic,
    /// Not distributed (the process count of the dimension must be 1).
    None,
}

/// The constructor recipe, kept so that `MPI_Type_get_envelope`/`MPI_Type_get_contents`
/// (MPI-3.1 §4.1.13) can be answered: the integers, addresses and datatypes exactly in
/// the order the standard lists them for each combiner.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub combiner: Combiner,
    pub integers: Vec<i64>,
    pub addresses: Vec<isize>,
    pub types: Vec<Datatype>,
}

/// One run of the type map: `count` primitives laid out back to back in memory (stride
/// `prim.size()`) from `disp`, relative to the start of the datatype element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub disp: isize,
    pub prim: Primitive,
    pub count: usize,
}

impl Block {
    fn packed_len(&self) -> usize {
        self.count * self.prim.packed_size()
    }

    fn mem_len(&self) -> isize {
        (self.count * self.prim.size()) as isize
    }
}

/// `count` copies of `body`, the first at `disp`, each next one `stride` bytes further
/// (negative strides allowed), in copy order.
#[derive(Debug, Clone)]
struct Repeat {
    disp: isize,
    count: usize,
    stride: isize,
    body: Arc<Map>,
}

#[derive(Debug, Clone)]
enum Item {
    Run(Block),
    Repeat(Repeat),
}

impl Item {
    fn packed_len(&self) -> usize {
        match self {
            Item::Run(b) => b.packed_len(),
            Item::Repeat(r) => r.count * r.body.size,
        }
    }

    fn elements(&self) -> usize {
        match self {
            Item::Run(b) => b.count.saturating_mul(b.prim.members().len()),
            Item::Repeat(r) => r.count.saturating_mul(r.body.elements),
        }
    }

    /// The same item `delta` bytes further.
    fn shifted(&self, delta: isize) -> Option<Item> {
        Some(match self {
            Item::Run(b) => Item::Run(Block { disp: b.disp.checked_add(delta)?, ..*b }),
            Item::Repeat(r) => Item::Repeat(Repeat { disp: r.disp.checked_add(delta)?, ..r.clone() }),
        })
    }
}

/// Which primitives a description holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prims {
    None,
    One(Primitive),
    Mixed,
}

impl Prims {
    fn and(self, other: Prims) -> Prims {
        match (self, other) {
            (Prims::None, x) | (x, Prims::None) => x,
            (Prims::One(a), Prims::One(b)) if a == b => Prims::One(a),
            _ => Prims::Mixed,
        }
    }
}

/// The description of one element's type map (see the module doc).
#[derive(Debug)]
struct Map {
    items: Vec<Item>,
    /// `packed_start[i]`: packed offset of item `i` inside one copy of the map; lets a
    /// window of the packed stream find its first item by binary search.
    packed_start: Vec<usize>,
    /// Packed bytes of one copy.
    size: usize,
    /// Basic elements in one copy, as `MPI_Get_elements` counts them.
    elements: usize,
    prims: Prims,
    /// `Some((disp, len))` when the packed stream is exactly the memory `[disp, disp +
    /// len)`: every primitive dense and every item abutting the one before.
    dense: Option<(isize, usize)>,
}

impl Map {
    fn new(items: Vec<Item>) -> Map {
        let mut packed_start = Vec::with_capacity(items.len());
        let (mut size, mut elements, mut prims) = (0usize, 0usize, Prims::None);
        let mut dense: Option<Option<(isize, usize)>> = None;
        for item in &items {
            packed_start.push(size);
            size += item.packed_len();
            elements = elements.saturating_add(item.elements());
            let (item_prims, item_dense) = match item {
                Item::Run(b) => (Prims::One(b.prim), b.prim.is_dense().then_some((b.disp, b.mem_len() as usize))),
                Item::Repeat(r) => {
                    let d = r.body.dense.and_then(|(disp, len)| {
                        (r.count == 1 || r.stride == len as isize).then_some((r.disp + disp, r.count * len))
                    });
                    (r.body.prims, d)
                }
            };
            prims = prims.and(item_prims);
            dense = Some(match (dense, item_dense) {
                (None, d) => d,
                (Some(Some((start, len))), Some((d, l))) if start + len as isize == d => Some((start, len + l)),
                _ => None,
            });
        }
        Map { items, packed_start, size, elements, prims, dense: dense.unwrap_or(Some((0, 0))) }
    }

    /// Index of the item holding packed offset `at` (< `size`) of one copy.
    fn item_at(&self, at: usize) -> usize {
        self.packed_start.partition_point(|&s| s <= at) - 1
    }

    /// Items in the description, nested bodies counted once each time they are named.
    fn described_items(&self) -> usize {
        self.items
            .iter()
            .map(|i| match i {
                Item::Run(_) => 1,
                Item::Repeat(r) => 1 + r.body.described_items(),
            })
            .sum()
    }

    /// Runs in the type map with its repeats expanded (saturating), without expanding them.
    fn runs(&self) -> usize {
        self.items
            .iter()
            .map(|i| match i {
                Item::Run(_) => 1,
                Item::Repeat(r) => r.count.saturating_mul(r.body.runs()),
            })
            .fold(0usize, usize::saturating_add)
    }

    /// Calls `f` for every run of the type map, repeats expanded, in type-map order.
    fn for_each_block(&self, origin: isize, f: &mut impl FnMut(Block)) {
        for item in &self.items {
            match item {
                Item::Run(b) => f(Block { disp: origin + b.disp, ..*b }),
                Item::Repeat(r) => {
                    for k in 0..r.count {
                        r.body.for_each_block(origin + r.disp + k as isize * r.stride, f);
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    map: Arc<Map>,
    lb: isize,
    ub: isize,
    true_lb: isize,
    true_ub: isize,
    /// Explicit bound markers (MPI-3.1 §4.1.7), set by `create_resized` and inherited.
    user_lb: bool,
    user_ub: bool,
    align: usize,
    contiguous: bool,
    name: Option<&'static str>,
    recipe: Option<Recipe>,
}

/// A predefined or derived MPI datatype (MPI-3.1 §4.1). Cloning is cheap (an `Arc`).
///
/// Getters: [`size`](Self::size), [`extent`](Self::extent), [`lb`](Self::lb),
/// [`ub`](Self::ub), [`true_lb`](Self::true_lb), [`true_extent`](Self::true_extent),
/// [`is_contiguous`](Self::is_contiguous), [`primitives`](Self::primitives),
/// [`for_each_block`](Self::for_each_block), [`recipe`](Self::recipe). Data movement:
/// [`span`](Self::span) first, then [`pack`](Self::pack)/[`unpack`](Self::unpack) or
/// their windowed forms [`pack_range`](Self::pack_range)/[`unpack_range`](Self::unpack_range).
#[derive(Debug, Clone)]
pub struct Datatype {
    inner: Arc<Inner>,
    /// `MPI_Type_commit` (MPI-3.1 §4.1.9) is per handle; predefined types are committed.
    committed: bool,
}

mod build;
mod pack;

impl Datatype {
    /// `MPI_Type_commit` (MPI-3.1 §4.1.9). The type map is already in its final form, so
    /// committing only marks the handle usable for communication.
    pub fn commit(&mut self) {
        self.committed = true;
    }

    pub fn is_committed(&self) -> bool {
        self.committed
    }

    /// `MPI_Type_size`: bytes of data in one element (MPI-3.1 §4.1.5).
    pub fn size(&self) -> usize {
        self.inner.map.size
    }

    /// `ub - lb` (MPI-3.1 §4.1.6, §4.1.7).
    pub fn extent(&self) -> isize {
        self.inner.ub - self.inner.lb
    }

    pub fn lb(&self) -> isize {
        self.inner.lb
    }

    pub fn ub(&self) -> isize {
        self.inner.ub
    }

    /// `MPI_Type_get_true_extent`'s lb: the lowest byte of data, markers ignored (§4.1.8).
    pub fn true_lb(&self) -> isize {
        self.inner.true_lb
    }

    pub fn true_ub(&self) -> isize {
        self.inner.true_ub
    }

    pub fn true_extent(&self) -> isize {
        self.inner.true_ub - self.inner.true_lb
    }

    /// True when `count` elements are exactly `count * size()` bytes at the buffer
    /// address, in packed order: a send can go straight from the user buffer.
    pub fn is_contiguous(&self) -> bool {
        self.inner.contiguous
    }

    /// The primitive of every block, if they all share one (a predefined reduction applies
    /// only then, MPI-3.1 §5.9.2). `None` for heterogeneous and for empty types.
    pub fn primitives(&self) -> Option<Primitive> {
        match self.inner.map.prims {
            Prims::One(p) => Some(p),
            Prims::None | Prims::Mixed => None,
        }
    }

    /// Calls `f` for every run of one element's type map, in type-map order. Expands the
    /// loops of the description, so it takes time in proportion to the type map.
    pub fn for_each_block(&self, mut f: impl FnMut(Block)) {
        self.inner.map.for_each_block(0, &mut f);
    }

    /// The memory `count` elements at `base` occupy, as pieces `(address, bytes)` in
    /// type-map order, adjacent ones merged: what a copy straight between two processes moves
    /// (`kawarimi_transports::process::copy_pieces`). `None` past `max_pieces` pieces, or when
    /// an element holds padding that is not data (the pair types such as `MPI_DOUBLE_INT`),
    /// which such a copy would write over.
    pub fn memory_pieces(&self, base: usize, count: usize, max_pieces: usize) -> Option<Vec<(usize, usize)>> {
        let bytes = count.checked_mul(self.size())?;
        if bytes == 0 {
            return Some(Vec::new());
        }
        if self.is_contiguous() {
            return Some(vec![(base, bytes)]);
        }
        if self.run_count() > max_pieces {
            return None;
        }
        let mut blocks = Vec::new();
        let mut padded = false;
        self.for_each_block(|b| {
            padded |= b.prim.size() != b.prim.packed_size();
            blocks.push(b);
        });
        if padded {
            return None;
        }
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        for k in 0..count {
            let element = base.wrapping_add_signed(k as isize * self.extent());
            for b in &blocks {
                let (addr, len) = (element.wrapping_add_signed(b.disp), b.count * b.prim.size());
                let full = pieces.len() == max_pieces;
                match pieces.last_mut() {
                    Some(last) if last.0 + last.1 == addr => last.1 += len,
                    _ if full => return None,
                    _ => pieces.push((addr, len)),
                }
            }
        }
        Some(pieces)
    }

    /// Runs [`for_each_block`](Self::for_each_block) would give (at most; adjacent runs of
    /// copies are not merged), counted without expanding the description.
    pub fn run_count(&self) -> usize {
        self.inner.map.runs()
    }

    /// Items in the compact description of the type map: what its memory grows with.
    pub fn described_items(&self) -> usize {
        self.inner.map.described_items()
    }

    /// Basic elements in one element, as `MPI_Get_elements` counts them (§4.1.11).
    pub fn elements_per_type(&self) -> usize {
        self.inner.map.elements
    }

    /// True when `lb` / `ub` come from explicit markers (MPI-3.1 §4.1.7).
    pub fn has_explicit_bounds(&self) -> (bool, bool) {
        (self.inner.user_lb, self.inner.user_ub)
    }

    /// Largest alignment of the primitives, the modulus of the `ε` rounding (§4.1.6).
    pub fn align(&self) -> usize {
        self.inner.align
    }

    pub fn name(&self) -> Option<&'static str> {
        self.inner.name
    }

    /// The constructor recipe (`None` for predefined types), for
    /// `MPI_Type_get_envelope`/`MPI_Type_get_contents` (MPI-3.1 §4.1.13).
    pub fn recipe(&self) -> Option<&Recipe> {
        self.inner.recipe.as_ref()
    }

    /// `span` without the panic: `None` when the range does not fit an address.
    pub fn checked_span(&self, count: usize) -> Option<(isize, isize)> {
        if count == 0 || self.size() == 0 {
            return Some((0, 0));
        }
        let last = isize::try_from(count - 1).ok()?.checked_mul(self.extent())?;
        let (tlb, tub) = (self.inner.true_lb, self.inner.true_ub);
        let lo = tlb.min(last.checked_add(tlb)?);
        let hi = tub.max(last.checked_add(tub)?);
        Some((lo, hi))
    }

    /// The byte range `[lo, hi)`, relative to the buffer address, that `count` elements
    /// touch (true bounds of each element, MPI-3.1 §4.1.8); `(0, 0)` when nothing is
    /// touched. The caller builds a slice `base` covering exactly this range and passes
    /// `origin = -lo` to the pack/unpack calls.
    ///
    /// # Panics
    /// When the range does not fit in an address (see [`checked_span`](Self::checked_span)).
    pub fn span(&self, count: usize) -> (isize, isize) {
        match self.checked_span(count) {
            Some(s) => s,
            None => panic!("datatype span of {count} elements overflows an address"),
        }
    }
}
