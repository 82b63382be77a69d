//! The datatype engine: predefined types, derived type constructors, type maps, pack/unpack.
//! (MPI-3.1 chapter 4.)
//!
//! A [`Datatype`] is a flattened type map (MPI-3.1 §4.1): the ordered list of
//! `(displacement, primitive, count)` blocks that one element of the type touches, with
//! adjacent runs of the same primitive merged, plus its size, bounds and true bounds.
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

/// Upper bound on the number of blocks in a flattened type map. Each block costs 32
/// bytes, so a type at the limit holds 128 MiB of description; a pathological constructor
/// (say a vector of a million structs of a million holes) fails cleanly instead of
/// exhausting memory.
pub const MAX_BLOCKS: usize = 1 << 22;

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
    /// C `_Bool`, C++ bool: one byte, logical ops only.
    CBool,
    /// Fortran LOGICAL: 4 bytes, zero is false.
    FLogical,
    /// Complex of two f32 / two f64 / two long double.
    ComplexF32,
    ComplexF64,
    ComplexLongDouble,
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
    pub const ALL: [Primitive; 25] = [
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
        Primitive::CBool,
        Primitive::FLogical,
        Primitive::ComplexF32,
        Primitive::ComplexF64,
        Primitive::ComplexLongDouble,
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
            Primitive::LongDouble => 16,
            Primitive::ComplexF32 => 8,
            Primitive::ComplexF64 => 16,
            Primitive::ComplexLongDouble => 32,
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
            Primitive::LongDouble | Primitive::ComplexLongDouble | Primitive::LongDoubleInt => 16,
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
            Primitive::LongDouble | Primitive::ComplexF64 => &[16],
            Primitive::ComplexLongDouble => &[32],
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

/// One run of the flattened type map: `count` primitives laid out back to back in memory
/// (stride `prim.size()`) from `disp`, relative to the start of the datatype element.
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

#[derive(Debug)]
struct Inner {
    blocks: Vec<Block>,
    /// `packed_start[i]`: packed offset of block `i` inside one element; lets a window of
    /// the packed stream find its first block by binary search.
    packed_start: Vec<usize>,
    size: usize,
    /// Basic elements per datatype element, as `MPI_Get_elements` counts them.
    elements: usize,
    lb: isize,
    ub: isize,
    true_lb: isize,
    true_ub: isize,
    /// Explicit bound markers (MPI-3.1 §4.1.7), set by `create_resized` and inherited.
    user_lb: bool,
    user_ub: bool,
    align: usize,
    contiguous: bool,
    homogeneous: Option<Primitive>,
    name: Option<&'static str>,
    recipe: Option<Recipe>,
}

/// A predefined or derived MPI datatype (MPI-3.1 §4.1). Cloning is cheap (an `Arc`).
///
/// Getters: [`size`](Self::size), [`extent`](Self::extent), [`lb`](Self::lb),
/// [`ub`](Self::ub), [`true_lb`](Self::true_lb), [`true_extent`](Self::true_extent),
/// [`is_contiguous`](Self::is_contiguous), [`primitives`](Self::primitives),
/// [`blocks`](Self::blocks), [`recipe`](Self::recipe). Data movement:
/// [`span`](Self::span) first, then [`pack`](Self::pack)/[`unpack`](Self::unpack) or
/// their windowed forms [`pack_range`](Self::pack_range)/[`unpack_range`](Self::unpack_range).
#[derive(Debug, Clone)]
pub struct Datatype {
    inner: Arc<Inner>,
    /// `MPI_Type_commit` (MPI-3.1 §4.1.9) is per handle; predefined types are committed.
    committed: bool,
}

/// Accumulates a type map the way Open MPI's `opal_datatype_add` does (see module doc).
struct Builder {
    blocks: Vec<Block>,
    size: usize,
    elements: usize,
    /// `None` until the first add with a non-zero count: an empty type has bounds 0.
    bounds: Option<(isize, isize)>,
    /// `None` until the first add that carries data.
    true_bounds: Option<(isize, isize)>,
    user_lb: bool,
    user_ub: bool,
    align: usize,
}

fn overflow<T>(what: &str) -> MpiResult<T> {
    err(ErrorClass::Arg, format!("{what}: displacement arithmetic overflows an address"))
}

fn mul(a: isize, b: isize, what: &str) -> MpiResult<isize> {
    match a.checked_mul(b) {
        Some(v) => Ok(v),
        None => overflow(what),
    }
}

fn add(a: isize, b: isize, what: &str) -> MpiResult<isize> {
    match a.checked_add(b) {
        Some(v) => Ok(v),
        None => overflow(what),
    }
}

fn to_isize(v: usize, what: &str) -> MpiResult<isize> {
    match isize::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => overflow(what),
    }
}

impl Builder {
    fn new() -> Self {
        Builder {
            blocks: Vec::new(),
            size: 0,
            elements: 0,
            bounds: None,
            true_bounds: None,
            user_lb: false,
            user_ub: false,
            align: 1,
        }
    }

    /// Appends `count` copies of `old`, the first at `disp`, each next one `stride` bytes
    /// further (MPI-3.1 §4.1.2's replication). Bound rules are Open MPI 4.1's
    /// `opal_datatype_add`: the copies span `[disp + old.lb, disp + (count-1)*stride +
    /// old.ub]` (ordered for negative strides); a side with an explicit marker wins over
    /// one without (§4.1.7); `ε` rounds the extent to the alignment unless `ub` is
    /// explicit (§4.1.6). A zero count adds nothing, not even bounds (MPI-3.1 §4.1 p.84);
    /// a type of size zero adds bounds but no data.
    fn add(&mut self, old: &Datatype, count: usize, disp: isize, stride: isize, what: &str) -> MpiResult<()> {
        if count == 0 {
            return Ok(());
        }
        let o = &old.inner;
        let span = mul(to_isize(count - 1, what)?, stride, what)?;
        let last = add(disp, span, what)?;
        let (lo, hi) = if disp <= last { (disp, last) } else { (last, disp) };
        let block_lb = add(lo, o.lb, what)?;
        let block_ub = add(hi, o.ub, what)?;

        let (mut lb, mut ub) = self.bounds.unwrap_or((block_lb, block_ub));
        if self.bounds.is_some() {
            // A side that carries an explicit marker defines the bound alone.
            if self.user_lb == o.user_lb {
                lb = lb.min(block_lb);
            } else if o.user_lb {
                lb = block_lb;
            }
            if self.user_ub == o.user_ub {
                ub = ub.max(block_ub);
            } else if o.user_ub {
                ub = block_ub;
            }
        }
        self.user_lb |= o.user_lb;
        self.user_ub |= o.user_ub;
        self.align = self.align.max(o.align);
        if !self.user_ub {
            let align = self.align as isize;
            let rem = (ub - lb).rem_euclid(align);
            if rem != 0 {
                ub = add(ub, align - rem, what)?;
            }
        }
        self.bounds = Some((lb, ub));

        if o.size == 0 {
            return Ok(());
        }
        // True bounds of the copies, ordered for negative strides.
        let tlb = add(lo, o.true_lb, what)?;
        let tub = add(hi, o.true_ub, what)?;
        self.true_bounds = Some(match self.true_bounds {
            None => (tlb, tub),
            Some((a, b)) => (a.min(tlb), b.max(tub)),
        });
        self.size = match count.checked_mul(o.size).and_then(|s| s.checked_add(self.size)) {
            Some(s) => s,
            None => return overflow(what),
        };
        self.elements = self.elements.saturating_add(count.saturating_mul(o.elements));
        self.push_copies(o, count, disp, stride, what)
    }

    fn push_copies(&mut self, o: &Inner, count: usize, disp: isize, stride: isize, what: &str) -> MpiResult<()> {
        // Fast path: one block whose copies abut, as in contiguous(n, MPI_DOUBLE), becomes
        // one block in O(1) instead of `count` merges.
        if let [b] = o.blocks[..] {
            if stride == b.mem_len() {
                let total = match b.count.checked_mul(count) {
                    Some(t) => t,
                    None => return overflow(what),
                };
                return self.push(Block { disp: add(disp, b.disp, what)?, prim: b.prim, count: total }, what);
            }
        }
        let mut base = disp;
        for copy in 0..count {
            if copy > 0 {
                base = add(base, stride, what)?;
            }
            for b in &o.blocks {
                self.push(Block { disp: add(base, b.disp, what)?, prim: b.prim, count: b.count }, what)?;
            }
        }
        Ok(())
    }

    fn push(&mut self, b: Block, what: &str) -> MpiResult<()> {
        debug_assert!(b.count > 0);
        if let Some(last) = self.blocks.last_mut() {
            if last.prim == b.prim && last.disp.checked_add(last.mem_len()) == Some(b.disp) {
                last.count += b.count;
                return Ok(());
            }
        }
        if self.blocks.len() >= MAX_BLOCKS {
            return err(ErrorClass::NoMem, format!("{what}: the flattened type map would exceed {MAX_BLOCKS} blocks"));
        }
        self.blocks.push(b);
        Ok(())
    }

    fn finish(self, name: Option<&'static str>, recipe: Option<Recipe>) -> Datatype {
        let (lb, ub) = self.bounds.unwrap_or((0, 0));
        let (true_lb, true_ub) = self.true_bounds.unwrap_or((0, 0));
        let mut packed_start = Vec::with_capacity(self.blocks.len());
        let mut offset = 0usize;
        for b in &self.blocks {
            packed_start.push(offset);
            offset += b.packed_len();
        }
        debug_assert_eq!(offset, self.size);
        let homogeneous = match self.blocks.first() {
            Some(first) if self.blocks.iter().all(|b| b.prim == first.prim) => Some(first.prim),
            _ => None,
        };
        // One dense run from displacement 0 whose elements abut: memory is the packed form.
        let mut run_end = 0isize;
        let mut dense = true;
        for b in &self.blocks {
            if b.disp != run_end || !b.prim.is_dense() {
                dense = false;
                break;
            }
            run_end += b.mem_len();
        }
        let contiguous = dense && lb == 0 && ub - lb == self.size as isize && run_end == self.size as isize;
        Datatype {
            inner: Arc::new(Inner {
                blocks: self.blocks,
                packed_start,
                size: self.size,
                elements: self.elements,
                lb,
                ub,
                true_lb,
                true_ub,
                user_lb: self.user_lb,
                user_ub: self.user_ub,
                align: self.align,
                contiguous,
                homogeneous,
                name,
                recipe,
            }),
            committed: false,
        }
    }
}

fn check_count(count: i32, what: &str) -> MpiResult<usize> {
    if count < 0 {
        return err(ErrorClass::Count, format!("{what}: count {count} is negative"));
    }
    Ok(count as usize)
}

fn check_blocklen(blocklen: i32, what: &str) -> MpiResult<usize> {
    if blocklen < 0 {
        return err(ErrorClass::Arg, format!("{what}: block length {blocklen} is negative"));
    }
    Ok(blocklen as usize)
}

fn check_same_len(a: usize, b: usize, what: &str) -> MpiResult<()> {
    if a != b {
        return err(ErrorClass::Arg, format!("{what}: {a} block lengths but {b} displacements"));
    }
    Ok(())
}

fn check_slice_count(len: usize, what: &str) -> MpiResult<()> {
    if len > i32::MAX as usize {
        return err(ErrorClass::Count, format!("{what}: {len} blocks exceed the C int range"));
    }
    Ok(())
}

fn recipe(combiner: Combiner, integers: Vec<i64>, addresses: Vec<isize>, types: Vec<Datatype>) -> Option<Recipe> {
    Some(Recipe { combiner, integers, addresses, types })
}

impl Datatype {
    /// A predefined datatype (MPI-3.1 §3.2.2, §4.1.6): lb 0, extent `sizeof` the C object,
    /// size [`Primitive::packed_size`]. Never fails; returns a result like every other
    /// constructor so that the shim treats them alike.
    pub fn predefined(prim: Primitive) -> MpiResult<Datatype> {
        Ok(Self::make_predefined(prim, None))
    }

    /// [`predefined`](Self::predefined) with the MPI name (`"MPI_INT"`), which
    /// `MPI_Type_get_name` reports (MPI-3.1 §6.8).
    pub fn predefined_named(prim: Primitive, name: &'static str) -> MpiResult<Datatype> {
        Ok(Self::make_predefined(prim, Some(name)))
    }

    fn make_predefined(prim: Primitive, name: Option<&'static str>) -> Datatype {
        let size = prim.packed_size();
        Datatype {
            inner: Arc::new(Inner {
                blocks: vec![Block { disp: 0, prim, count: 1 }],
                packed_start: vec![0],
                size,
                elements: prim.members().len(),
                lb: 0,
                ub: prim.size() as isize,
                true_lb: 0,
                true_ub: prim.data_end() as isize,
                user_lb: false,
                user_ub: false,
                align: prim.align(),
                contiguous: prim.is_dense(),
                homogeneous: Some(prim),
                name,
                recipe: None,
            }),
            committed: true,
        }
    }

    /// `MPI_Type_contiguous` (MPI-3.1 §4.1.2).
    pub fn contiguous(count: i32, old: &Datatype) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_contiguous";
        let n = check_count(count, WHAT)?;
        let mut b = Builder::new();
        b.add(old, n, 0, old.extent(), WHAT)?;
        Ok(b.finish(None, recipe(Combiner::Contiguous, vec![count.into()], vec![], vec![old.clone()])))
    }

    /// `MPI_Type_vector` (MPI-3.1 §4.1.2): `stride` counts extents of `old`.
    pub fn vector(count: i32, blocklen: i32, stride: i32, old: &Datatype) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_vector";
        let stride_bytes = mul(stride as isize, old.extent(), WHAT)?;
        let t = Self::strided(count, blocklen, stride_bytes, old, WHAT)?;
        let r = recipe(Combiner::Vector, vec![count.into(), blocklen.into(), stride.into()], vec![], vec![old.clone()]);
        Ok(t.finish(None, r))
    }

    /// `MPI_Type_create_hvector` (MPI-3.1 §4.1.2): `stride_bytes` in bytes.
    pub fn hvector(count: i32, blocklen: i32, stride_bytes: isize, old: &Datatype) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_create_hvector";
        let t = Self::strided(count, blocklen, stride_bytes, old, WHAT)?;
        let r = recipe(Combiner::Hvector, vec![count.into(), blocklen.into()], vec![stride_bytes], vec![old.clone()]);
        Ok(t.finish(None, r))
    }

    /// Shared by vector and hvector, with Open MPI's decomposition (which matters only for
    /// where `ε` rounding happens): one add when the blocks abut or there is one block, a
    /// strided add of single elements, or a strided add of a contiguous block type.
    fn strided(count: i32, blocklen: i32, stride_bytes: isize, old: &Datatype, what: &str) -> MpiResult<Builder> {
        let n = check_count(count, what)?;
        let bl = check_blocklen(blocklen, what)?;
        let ext = old.extent();
        let mut b = Builder::new();
        if n == 0 || bl == 0 {
            return Ok(b);
        }
        let block_bytes = mul(bl as isize, ext, what)?;
        if block_bytes == stride_bytes || n == 1 {
            let total = match n.checked_mul(bl) {
                Some(t) => t,
                None => return overflow(what),
            };
            b.add(old, total, 0, ext, what)?;
        } else if bl == 1 {
            b.add(old, n, 0, stride_bytes, what)?;
        } else {
            let mut inner = Builder::new();
            inner.add(old, bl, 0, ext, what)?;
            let block = inner.finish(None, None);
            b.add(&block, n, 0, stride_bytes, what)?;
        }
        Ok(b)
    }

    /// `MPI_Type_indexed` (MPI-3.1 §4.1.2): displacements count extents of `old`.
    pub fn indexed(blocklens: &[i32], displs: &[i32], old: &Datatype) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_indexed";
        check_same_len(blocklens.len(), displs.len(), WHAT)?;
        let ext = old.extent();
        let mut byte_displs = Vec::with_capacity(displs.len());
        for &d in displs {
            byte_displs.push(mul(d as isize, ext, WHAT)?);
        }
        let b = Self::indexed_bytes(blocklens, &byte_displs, old, WHAT)?;
        let mut ints: Vec<i64> = vec![blocklens.len() as i64];
        ints.extend(blocklens.iter().map(|&v| i64::from(v)));
        ints.extend(displs.iter().map(|&v| i64::from(v)));
        Ok(b.finish(None, recipe(Combiner::Indexed, ints, vec![], vec![old.clone()])))
    }

    /// `MPI_Type_create_hindexed` (MPI-3.1 §4.1.2): displacements in bytes.
    pub fn hindexed(blocklens: &[i32], displs_bytes: &[isize], old: &Datatype) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_create_hindexed";
        check_same_len(blocklens.len(), displs_bytes.len(), WHAT)?;
        let b = Self::indexed_bytes(blocklens, displs_bytes, old, WHAT)?;
        let mut ints: Vec<i64> = vec![blocklens.len() as i64];
        ints.extend(blocklens.iter().map(|&v| i64::from(v)));
        Ok(b.finish(None, recipe(Combiner::Hindexed, ints, displs_bytes.to_vec(), vec![old.clone()])))
    }

    /// `MPI_Type_create_indexed_block` (MPI-3.1 §4.1.2).
    pub fn indexed_block(blocklen: i32, displs: &[i32], old: &Datatype) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_create_indexed_block";
        check_blocklen(blocklen, WHAT)?;
        let ext = old.extent();
        let mut byte_displs = Vec::with_capacity(displs.len());
        for &d in displs {
            byte_displs.push(mul(d as isize, ext, WHAT)?);
        }
        let blocklens = vec![blocklen; displs.len()];
        let b = Self::indexed_bytes(&blocklens, &byte_displs, old, WHAT)?;
        let mut ints: Vec<i64> = vec![displs.len() as i64, blocklen.into()];
        ints.extend(displs.iter().map(|&v| i64::from(v)));
        Ok(b.finish(None, recipe(Combiner::IndexedBlock, ints, vec![], vec![old.clone()])))
    }

    /// `MPI_Type_create_hindexed_block` (MPI-3.1 §4.1.2).
    pub fn hindexed_block(blocklen: i32, displs_bytes: &[isize], old: &Datatype) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_create_hindexed_block";
        check_blocklen(blocklen, WHAT)?;
        let blocklens = vec![blocklen; displs_bytes.len()];
        let b = Self::indexed_bytes(&blocklens, displs_bytes, old, WHAT)?;
        let ints: Vec<i64> = vec![displs_bytes.len() as i64, blocklen.into()];
        Ok(b.finish(None, recipe(Combiner::HindexedBlock, ints, displs_bytes.to_vec(), vec![old.clone()])))
    }

    fn indexed_bytes(blocklens: &[i32], displs: &[isize], old: &Datatype, what: &str) -> MpiResult<Builder> {
        check_slice_count(blocklens.len(), what)?;
        let mut b = Builder::new();
        let ext = old.extent();
        for (&bl, &d) in blocklens.iter().zip(displs) {
            let n = check_blocklen(bl, what)?;
            b.add(old, n, d, ext, what)?;
        }
        Ok(b)
    }

    /// `MPI_Type_create_struct` (MPI-3.1 §4.1.2); the extent is rounded up to the
    /// alignment of the most aligned member unless an upper-bound marker is inherited
    /// (§4.1.6), as Open MPI 4.1 does.
    pub fn create_struct(blocklens: &[i32], displs_bytes: &[isize], types: &[&Datatype]) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_create_struct";
        check_same_len(blocklens.len(), displs_bytes.len(), WHAT)?;
        if types.len() != blocklens.len() {
            return err(
                ErrorClass::Arg,
                format!("{WHAT}: {} block lengths but {} types", blocklens.len(), types.len()),
            );
        }
        check_slice_count(blocklens.len(), WHAT)?;
        let mut b = Builder::new();
        for ((&bl, &d), t) in blocklens.iter().zip(displs_bytes).zip(types) {
            let n = check_blocklen(bl, WHAT)?;
            b.add(t, n, d, t.extent(), WHAT)?;
        }
        let mut ints: Vec<i64> = vec![blocklens.len() as i64];
        ints.extend(blocklens.iter().map(|&v| i64::from(v)));
        let r = recipe(Combiner::Struct, ints, displs_bytes.to_vec(), types.iter().map(|&t| t.clone()).collect());
        Ok(b.finish(None, r))
    }

    /// `MPI_Type_create_subarray` (MPI-3.1 §4.1.3). The result has lb 0 and extent
    /// `prod(sizes) * extent(old)` as explicit markers; its data starts at the element
    /// `starts`. Like Open MPI 4.1, a zero subsize is refused (MPI_ERR_ARG).
    pub fn create_subarray(
        ndims: i32,
        sizes: &[i32],
        subsizes: &[i32],
        starts: &[i32],
        order: Order,
        old: &Datatype,
    ) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_create_subarray";
        if ndims < 1 || ndims as usize > MAX_SUBARRAY_DIMS {
            return err(ErrorClass::Arg, format!("{WHAT}: ndims {ndims} is not in 1..={MAX_SUBARRAY_DIMS}"));
        }
        let nd = ndims as usize;
        if sizes.len() != nd || subsizes.len() != nd || starts.len() != nd {
            return err(
                ErrorClass::Arg,
                format!(
                    "{WHAT}: ndims {nd} but {} sizes, {} subsizes, {} starts",
                    sizes.len(),
                    subsizes.len(),
                    starts.len()
                ),
            );
        }
        for i in 0..nd {
            let (size, sub, start) = (sizes[i], subsizes[i], starts[i]);
            if size < 1 || sub < 1 || sub > size || start < 0 || start > size - sub {
                return err(
                    ErrorClass::Arg,
                    format!("{WHAT}: dimension {i}: size {size}, subsize {sub}, start {start} do not satisfy 1 <= subsize <= size and 0 <= start <= size - subsize"),
                );
            }
        }
        // Dimensions from the fastest varying to the slowest.
        let dims: Vec<usize> = match order {
            Order::C => (0..nd).rev().collect(),
            Order::Fortran => (0..nd).collect(),
        };
        let ext = old.extent();
        let first = dims[0];
        let mut t = Self::contiguous(subsizes[first], old)?;
        let mut stride_bytes = mul(sizes[first] as isize, ext, WHAT)?;
        let mut start_bytes = mul(starts[first] as isize, ext, WHAT)?;
        for &d in &dims[1..] {
            t = Self::hvector(subsizes[d], 1, stride_bytes, &t)?;
            start_bytes = add(start_bytes, mul(starts[d] as isize, stride_bytes, WHAT)?, WHAT)?;
            stride_bytes = mul(stride_bytes, sizes[d] as isize, WHAT)?;
        }
        let mut placed = Builder::new();
        placed.add(&t, 1, start_bytes, t.extent(), WHAT)?;
        let placed = placed.finish(None, None);
        let resized = Self::resize(&placed, 0, stride_bytes);
        let mut ints: Vec<i64> = vec![ndims.into()];
        for v in [sizes, subsizes, starts] {
            ints.extend(v.iter().map(|&x| i64::from(x)));
        }
        ints.push(match order {
            Order::C => 0,
            Order::Fortran => 1,
        });
        Ok(resized.with_recipe(recipe(Combiner::Subarray, ints, vec![], vec![old.clone()])))
    }

    /// `MPI_Type_create_resized` (MPI-3.1 §4.1.7): sets explicit lb and ub markers; the
    /// type map and true bounds are unchanged.
    pub fn create_resized(old: &Datatype, lb: isize, extent: isize) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_create_resized";
        add(lb, extent, WHAT)?;
        let r = recipe(Combiner::Resized, vec![], vec![lb, extent], vec![old.clone()]);
        Ok(Self::resize(old, lb, extent).with_recipe(r))
    }

    fn resize(old: &Datatype, lb: isize, extent: isize) -> Datatype {
        let o = &old.inner;
        let ub = lb + extent;
        let contiguous = o.contiguous && lb == 0 && extent == o.size as isize;
        Datatype {
            inner: Arc::new(Inner {
                blocks: o.blocks.clone(),
                packed_start: o.packed_start.clone(),
                size: o.size,
                elements: o.elements,
                lb,
                ub,
                true_lb: o.true_lb,
                true_ub: o.true_ub,
                user_lb: true,
                user_ub: true,
                align: o.align,
                contiguous,
                homogeneous: o.homogeneous,
                name: None,
                recipe: None,
            }),
            committed: false,
        }
    }

    fn with_recipe(self, recipe: Option<Recipe>) -> Datatype {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.recipe = recipe;
                Datatype { inner: Arc::new(inner), committed: self.committed }
            }
            // Only called on freshly built types, which nobody else holds yet.
            Err(_) => unreachable!("with_recipe on a shared datatype"),
        }
    }

    /// The type `MPI_Type_create_f90_*` returns (§17.1.9): the type map of the predefined
    /// `base`, committed, remembered with the parameters it was asked for.
    pub fn f90(base: &Datatype, combiner: Combiner, integers: Vec<i64>) -> MpiResult<Datatype> {
        debug_assert!(matches!(combiner, Combiner::F90Integer | Combiner::F90Real | Combiner::F90Complex));
        let mut d = Datatype::dup(base)?.with_recipe(recipe(combiner, integers, vec![], vec![]));
        d.commit();
        Ok(d)
    }

    /// Made by `MPI_Type_create_f90_*`: predefined, so it may not be freed.
    pub fn is_f90(&self) -> bool {
        self.recipe()
            .is_some_and(|r| matches!(r.combiner, Combiner::F90Integer | Combiner::F90Real | Combiner::F90Complex))
    }

    /// `MPI_Type_create_darray` (MPI-3.1 §4.1.4): the part of a `gsizes` array of `old`
    /// that process `rank` of a row-major `psizes` grid of `size` processes owns under the
    /// distributions `distribs` (block sizes `dargs`, `None` for the default), in the
    /// array's `order`. `contents` are the call's arguments as `MPI_Type_get_contents` returns
    /// them.
    ///
    /// Built one dimension at a time from the fastest varying: each level is this process's
    /// elements of that dimension (repeating the level below), placed at their offset inside
    /// a whole slab of the dimension and resized to the slab, so the levels compose without a
    /// separate sum of offsets.
    #[allow(clippy::too_many_arguments)]
    pub fn create_darray(
        size: i32,
        rank: i32,
        gsizes: &[i32],
        distribs: &[Distribution],
        dargs: &[Option<i32>],
        psizes: &[i32],
        order: Order,
        old: &Datatype,
        contents: Vec<i64>,
    ) -> MpiResult<Datatype> {
        const WHAT: &str = "MPI_Type_create_darray";
        let nd = gsizes.len();
        if !(1..=MAX_SUBARRAY_DIMS).contains(&nd) || distribs.len() != nd || dargs.len() != nd || psizes.len() != nd {
            return err(ErrorClass::Arg, format!("{WHAT}: {nd} dimensions, or arrays of different lengths"));
        }
        if gsizes.iter().chain(psizes).any(|&x| x < 1) {
            return err(
                ErrorClass::Arg,
                format!("{WHAT}: sizes {gsizes:?} and process counts {psizes:?} must be positive"),
            );
        }
        let procs: i64 = psizes.iter().map(|&p| i64::from(p)).product();
        if procs != i64::from(size) || rank < 0 || rank >= size {
            return err(
                ErrorClass::Arg,
                format!("{WHAT}: a grid of {psizes:?} processes is not {size}, or rank {rank} is outside it"),
            );
        }
        // This process's coordinates in the row-major process grid.
        let mut coords = vec![0i32; nd];
        let (mut rest, mut below) = (rank, size);
        for i in 0..nd {
            below /= psizes[i];
            coords[i] = rest / below;
            rest %= below;
        }
        let dims: Vec<usize> = match order {
            Order::C => (0..nd).rev().collect(),
            Order::Fortran => (0..nd).collect(),
        };
        let mut t = old.clone();
        for &d in &dims {
            let (g, p, r) = (gsizes[d], psizes[d], coords[d]);
            let unit = t.extent();
            let (local, offset) = match distribs[d] {
                Distribution::None if p != 1 => {
                    return err(
                        ErrorClass::Arg,
                        format!("{WHAT}: dimension {d} is not distributed but has {p} processes"),
                    );
                }
                Distribution::None => (Self::contiguous(g, &t)?, 0),
                Distribution::Block => {
                    let blk = dargs[d].unwrap_or((g + p - 1) / p);
                    if blk < 1 || i64::from(blk) * i64::from(p) < i64::from(g) {
                        return err(
                            ErrorClass::Arg,
                            format!("{WHAT}: dimension {d}: blocks of {blk} on {p} processes do not cover {g}"),
                        );
                    }
                    let mine = (g - blk * r).clamp(0, blk);
                    (Self::contiguous(mine, &t)?, if mine == 0 { 0 } else { blk * r })
                }
                Distribution::Cyclic => {
                    let blk = dargs[d].unwrap_or(1);
                    if blk < 1 {
                        return err(
                            ErrorClass::Arg,
                            format!("{WHAT}: dimension {d}: cyclic block {blk} is not positive"),
                        );
                    }
                    let first = r * blk;
                    let span = (g - first).max(0);
                    let mine = span / (p * blk) * blk + (span % (p * blk)).min(blk);
                    let stride = mul((p * blk) as isize, unit, WHAT)?;
                    let full = Self::hvector(mine / blk, blk, stride, &t)?;
                    let tail = mine % blk;
                    let local = if tail == 0 {
                        full
                    } else {
                        let at = mul((mine / blk) as isize, stride, WHAT)?;
                        Self::create_struct(&[1, tail], &[0, at], &[&full, &t])?
                    };
                    (local, if mine == 0 { 0 } else { first })
                }
            };
            let mut placed = Builder::new();
            placed.add(&local, 1, mul(offset as isize, unit, WHAT)?, local.extent(), WHAT)?;
            t = Self::resize(&placed.finish(None, None), 0, mul(g as isize, unit, WHAT)?);
        }
        Ok(t.with_recipe(recipe(Combiner::Darray, contents, vec![], vec![old.clone()])))
    }

    /// `MPI_Type_dup` (MPI-3.1 §4.1.10): same type map, a new handle, committed if the
    /// original was.
    pub fn dup(old: &Datatype) -> MpiResult<Datatype> {
        let o = &old.inner;
        let inner = Inner {
            blocks: o.blocks.clone(),
            packed_start: o.packed_start.clone(),
            size: o.size,
            elements: o.elements,
            lb: o.lb,
            ub: o.ub,
            true_lb: o.true_lb,
            true_ub: o.true_ub,
            user_lb: o.user_lb,
            user_ub: o.user_ub,
            align: o.align,
            contiguous: o.contiguous,
            homogeneous: o.homogeneous,
            name: None,
            recipe: recipe(Combiner::Dup, vec![], vec![], vec![old.clone()]),
        };
        Ok(Datatype { inner: Arc::new(inner), committed: old.committed })
    }

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
        self.inner.size
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
        self.inner.homogeneous
    }

    /// The flattened type map of one element.
    pub fn blocks(&self) -> &[Block] {
        &self.inner.blocks
    }

    /// Basic elements in one element, as `MPI_Get_elements` counts them (§4.1.11).
    pub fn elements_per_type(&self) -> usize {
        self.inner.elements
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
        if count == 0 || self.inner.size == 0 {
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

    /// Checks that `base`, with the buffer address at `origin`, covers what `count`
    /// elements touch. An O(1) check done once per call, so the copy loops can index.
    fn assert_covers(&self, base_len: usize, origin: usize, count: usize) {
        let (lo, hi) = self.span(count);
        let origin = origin as isize;
        assert!(
            lo == hi || (origin + lo >= 0 && origin + hi <= base_len as isize),
            "buffer of {base_len} bytes with origin {origin} does not cover the span [{lo}, {hi}) of {count} elements"
        );
    }

    /// Appends the packed form of `count` elements (`count * size()` bytes) read from
    /// `base`, the buffer address being at index `origin` (MPI-3.1 §4.2 `MPI_Pack`).
    ///
    /// # Panics
    /// When `base` does not cover [`span`](Self::span)`(count)` around `origin`.
    pub fn pack(&self, base: &[u8], origin: usize, count: usize, out: &mut Vec<u8>) {
        let total = count * self.inner.size;
        self.pack_range(base, origin, count, 0, total, out);
    }

    /// Appends the window `[byte_offset, byte_offset + max_len)` of the packed stream of
    /// `count` elements, clipped to its end; returns the bytes appended. Windows that tile
    /// the stream concatenate to [`pack`](Self::pack)'s output, at any byte boundary.
    ///
    /// # Panics
    /// When `base` does not cover [`span`](Self::span)`(count)` around `origin`.
    pub fn pack_range(
        &self,
        base: &[u8],
        origin: usize,
        count: usize,
        byte_offset: usize,
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        self.assert_covers(base.len(), origin, count);
        let total = count * self.inner.size;
        let end = total.min(byte_offset.saturating_add(max_len));
        if byte_offset >= end {
            return 0;
        }
        let len = end - byte_offset;
        out.reserve(len);
        if self.inner.contiguous {
            // The packed stream is the buffer itself: one copy.
            out.extend_from_slice(&base[origin + byte_offset..origin + end]);
            return len;
        }
        self.walk(origin, byte_offset, end, |mem, _packed, n| {
            out.extend_from_slice(&base[mem..mem + n]);
        });
        len
    }

    /// Writes `count` elements from their packed form (MPI-3.1 §4.2 `MPI_Unpack`). When
    /// `packed` is shorter than `count * size()`, the whole primitives that fit are
    /// written and the rest of the buffer is untouched (a receive of fewer elements than
    /// posted, §3.2.4). When it is longer, what fits is written and the result is an
    /// `ErrorClass::Truncate` error (§3.2.2).
    ///
    /// # Panics
    /// When `base` does not cover [`span`](Self::span)`(count)` around `origin`.
    pub fn unpack(&self, packed: &[u8], base: &mut [u8], origin: usize, count: usize) -> MpiResult<()> {
        let total = count * self.inner.size;
        let fit = packed.len().min(total);
        let usable = self.whole_primitive_prefix(fit);
        self.unpack_range(&packed[..usable], base, origin, count, 0)?;
        if packed.len() > total {
            return err(
                ErrorClass::Truncate,
                format!("{} bytes arrived for a buffer of {count} elements of {} bytes", packed.len(), self.inner.size),
            );
        }
        Ok(())
    }

    /// Writes `chunk`, the window of the packed stream of `count` elements that starts at
    /// `byte_offset`, into the buffer. Chunks may cut a primitive anywhere: the bytes are
    /// placed where the whole stream would put them. A chunk reaching past the end of the
    /// stream writes nothing and is an `ErrorClass::Truncate` error.
    ///
    /// # Panics
    /// When `base` does not cover [`span`](Self::span)`(count)` around `origin`.
    pub fn unpack_range(
        &self,
        chunk: &[u8],
        base: &mut [u8],
        origin: usize,
        count: usize,
        byte_offset: usize,
    ) -> MpiResult<()> {
        let total = count * self.inner.size;
        let end = match byte_offset.checked_add(chunk.len()) {
            Some(e) if e <= total => e,
            _ => {
                return err(
                    ErrorClass::Truncate,
                    format!(
                        "packed window [{byte_offset}, +{}) exceeds the {total} bytes of {count} elements",
                        chunk.len()
                    ),
                )
            }
        };
        if chunk.is_empty() {
            return Ok(());
        }
        self.assert_covers(base.len(), origin, count);
        if self.inner.contiguous {
            base[origin + byte_offset..origin + end].copy_from_slice(chunk);
            return Ok(());
        }
        self.walk(origin, byte_offset, end, |mem, packed, n| {
            let from = packed - byte_offset;
            base[mem..mem + n].copy_from_slice(&chunk[from..from + n]);
        });
        Ok(())
    }

    /// Largest prefix of `nbytes` packed bytes that ends on a primitive boundary.
    fn whole_primitive_prefix(&self, nbytes: usize) -> usize {
        let size = self.inner.size;
        if size == 0 || nbytes.is_multiple_of(size) {
            return nbytes;
        }
        let whole = nbytes - nbytes % size;
        let rem = nbytes % size;
        let i = self.inner.packed_start.partition_point(|&s| s <= rem) - 1;
        let ps = self.inner.blocks[i].prim.packed_size();
        let in_block = rem - self.inner.packed_start[i];
        whole + self.inner.packed_start[i] + in_block - in_block % ps
    }

    /// Calls `f(mem_index, packed_offset, len)` for each maximal run of bytes of the
    /// packed window `[start, end)` that is also contiguous in memory, in stream order.
    /// `mem_index` is an index into the caller's `base` (origin applied).
    fn walk(&self, origin: usize, start: usize, end: usize, mut f: impl FnMut(usize, usize, usize)) {
        let inner = &*self.inner;
        let size = inner.size;
        debug_assert!(size > 0 && start < end);
        let extent = self.extent();
        let mut pos = start;
        let mut elem = pos / size;
        let mut in_elem = pos % size;
        let mut i = inner.packed_start.partition_point(|&s| s <= in_elem) - 1;
        while pos < end {
            let elem_base = origin as isize + elem as isize * extent;
            while i < inner.blocks.len() && pos < end {
                let b = inner.blocks[i];
                let block_packed = b.packed_len();
                let off = in_elem - inner.packed_start[i];
                let block_mem = elem_base + b.disp;
                let take = (block_packed - off).min(end - pos);
                if b.prim.is_dense() {
                    f((block_mem + off as isize) as usize, pos, take);
                } else {
                    Self::walk_segments(b.prim, block_mem, off, take, pos, &mut f);
                }
                pos += take;
                in_elem += take;
                if off + take == block_packed {
                    i += 1;
                }
            }
            if i == inner.blocks.len() {
                elem += 1;
                in_elem = 0;
                i = 0;
            }
        }
    }

    /// The part of [`walk`](Self::walk) for a run of pair primitives whose packed bytes
    /// are not their memory bytes: `take` packed bytes from packed offset `off` in the
    /// block starting in memory at `block_mem`.
    fn walk_segments(
        prim: Primitive,
        block_mem: isize,
        off: usize,
        take: usize,
        mut pos: usize,
        f: &mut impl FnMut(usize, usize, usize),
    ) {
        let ps = prim.packed_size();
        let ms = prim.size() as isize;
        let end = off + take;
        let mut cur = off;
        while cur < end {
            let k = cur / ps;
            let mut in_prim = cur % ps;
            let prim_mem = block_mem + k as isize * ms;
            let mut seg_packed = 0;
            for &(seg_off, seg_len) in prim.segments() {
                if cur >= end {
                    break;
                }
                if in_prim < seg_packed + seg_len {
                    let skip = in_prim - seg_packed;
                    let n = (seg_len - skip).min(end - cur);
                    f((prim_mem + (seg_off + skip) as isize) as usize, pos, n);
                    pos += n;
                    cur += n;
                    in_prim += n;
                }
                seg_packed += seg_len;
            }
        }
    }

    /// `MPI_Get_elements` (MPI-3.1 §4.1.11): basic elements in `nbytes` of packed data,
    /// `None` (MPI_UNDEFINED) when the bytes end inside a basic element.
    pub fn elements_in(&self, nbytes: usize) -> Option<usize> {
        let inner = &*self.inner;
        if inner.size == 0 {
            return if nbytes == 0 { Some(0) } else { None };
        }
        let mut n = (nbytes / inner.size).checked_mul(inner.elements)?;
        let rem = nbytes % inner.size;
        if rem == 0 {
            return Some(n);
        }
        let i = inner.packed_start.partition_point(|&s| s <= rem) - 1;
        for b in &inner.blocks[..i] {
            n += b.count * b.prim.members().len();
        }
        let b = inner.blocks[i];
        let in_block = rem - inner.packed_start[i];
        let ps = b.prim.packed_size();
        n += (in_block / ps) * b.prim.members().len();
        let mut left = in_block % ps;
        for &m in b.prim.members() {
            if left == 0 {
                break;
            }
            if left < m {
                return None;
            }
            left -= m;
            n += 1;
        }
        Some(n)
    }

    /// `MPI_Get_count` (MPI-3.1 §3.2.5): whole elements in `nbytes` of packed data, `None`
    /// (MPI_UNDEFINED) when that is not a whole number. A type of size zero counts 0.
    pub fn count_in(&self, nbytes: usize) -> Option<usize> {
        let size = self.inner.size;
        if size == 0 {
            return if nbytes == 0 { Some(0) } else { None };
        }
        if nbytes.is_multiple_of(size) {
            Some(nbytes / size)
        } else {
            None
        }
    }
}
