//! The datatype constructors (MPI-3.1 §4.1): each is a sequence of adds to a [`Builder`],
//! which keeps Open MPI's bounds (see the module doc of [`super`]).

use std::cell::Cell;

use super::*;

thread_local! {
    /// Replaces [`FLATTEN_LIMIT`] on this thread while [`Datatype::with_flatten_limit`]
    /// runs: the property tests build every type both fully flattened and with as many
    /// repeats as possible, and check both against the standard's definitions.
    static FLATTEN_LIMIT_OVERRIDE: Cell<Option<usize>> = const { Cell::new(None) };
}

fn flatten_limit() -> usize {
    FLATTEN_LIMIT_OVERRIDE.with(|l| l.get()).unwrap_or(FLATTEN_LIMIT)
}

/// Accumulates a type map the way Open MPI's `opal_datatype_add` does (see module doc).
struct Builder {
    items: Vec<Item>,
    /// Packed bytes so far, kept here to check the sum for overflow as it grows.
    size: usize,
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
            items: Vec::new(),
            size: 0,
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

        if o.map.size == 0 {
            return Ok(());
        }
        // True bounds of the copies, ordered for negative strides.
        let tlb = add(lo, o.true_lb, what)?;
        let tub = add(hi, o.true_ub, what)?;
        self.true_bounds = Some(match self.true_bounds {
            None => (tlb, tub),
            Some((a, b)) => (a.min(tlb), b.max(tub)),
        });
        self.size = match count.checked_mul(o.map.size).and_then(|s| s.checked_add(self.size)) {
            Some(s) => s,
            None => return overflow(what),
        };
        self.push_copies(&o.map, count, disp, stride, what)
    }

    /// Appends the items of `count` copies of `old` (see [`add`](Self::add)): written out
    /// while small, one repeat beyond [`FLATTEN_LIMIT`] items.
    fn push_copies(&mut self, old: &Arc<Map>, count: usize, disp: isize, stride: isize, what: &str) -> MpiResult<()> {
        match &old.items[..] {
            // One run whose copies abut, as in contiguous(n, MPI_DOUBLE): one longer run.
            [Item::Run(b)] if stride == b.mem_len() => {
                let Some(total) = b.count.checked_mul(count) else { return overflow(what) };
                return self
                    .push(Item::Run(Block { disp: add(disp, b.disp, what)?, prim: b.prim, count: total }), what);
            }
            // One repeat whose copies continue its own stride, as in contiguous(n, vector):
            // one longer repeat.
            [Item::Repeat(r)] if (r.count as isize).checked_mul(r.stride) == Some(stride) => {
                let Some(total) = r.count.checked_mul(count) else { return overflow(what) };
                let disp = add(disp, r.disp, what)?;
                return self
                    .push(Item::Repeat(Repeat { disp, count: total, stride: r.stride, body: r.body.clone() }), what);
            }
            _ => {}
        }
        if count.saturating_mul(old.items.len()) > flatten_limit() {
            return self.push(Item::Repeat(Repeat { disp, count, stride, body: old.clone() }), what);
        }
        let mut base = disp;
        for copy in 0..count {
            if copy > 0 {
                base = add(base, stride, what)?;
            }
            for item in &old.items {
                let Some(shifted) = item.shifted(base) else { return overflow(what) };
                self.push(shifted, what)?;
            }
        }
        Ok(())
    }

    /// Appends one item, merging a run into the run before it when they abut.
    fn push(&mut self, item: Item, what: &str) -> MpiResult<()> {
        if let (Some(Item::Run(last)), Item::Run(b)) = (self.items.last_mut(), &item) {
            debug_assert!(b.count > 0);
            if last.prim == b.prim && last.disp.checked_add(last.mem_len()) == Some(b.disp) {
                last.count += b.count;
                return Ok(());
            }
        }
        if self.items.len() >= MAX_ITEMS {
            return err(ErrorClass::NoMem, format!("{what}: the type map would need more than {MAX_ITEMS} items"));
        }
        self.items.push(item);
        Ok(())
    }

    fn finish(self, name: Option<&'static str>, recipe: Option<Recipe>) -> Datatype {
        let (lb, ub) = self.bounds.unwrap_or((0, 0));
        let (true_lb, true_ub) = self.true_bounds.unwrap_or((0, 0));
        let map = Map::new(self.items);
        debug_assert_eq!(map.size, self.size);
        Datatype {
            inner: Arc::new(Inner {
                contiguous: is_contiguous(&map, lb, ub),
                map: Arc::new(map),
                lb,
                ub,
                true_lb,
                true_ub,
                user_lb: self.user_lb,
                user_ub: self.user_ub,
                align: self.align,
                name,
                recipe,
            }),
            committed: false,
        }
    }
}

/// True when elements of a type with this map and bounds are, back to back, their packed
/// form: one dense run from displacement 0 and an extent of exactly the size.
fn is_contiguous(map: &Map, lb: isize, ub: isize) -> bool {
    map.dense == Some((0, map.size)) && lb == 0 && ub == map.size as isize
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
    /// Runs `f` with [`FLATTEN_LIMIT`] replaced by `limit` on this thread: 0 keeps every
    /// copy that does not merge as a repeat, `usize::MAX` writes every copy out. For tests
    /// that check both descriptions against the standard's type maps.
    #[doc(hidden)]
    pub fn with_flatten_limit<T>(limit: usize, f: impl FnOnce() -> T) -> T {
        let before = FLATTEN_LIMIT_OVERRIDE.with(|l| l.replace(Some(limit)));
        let result = f();
        FLATTEN_LIMIT_OVERRIDE.with(|l| l.set(before));
        result
    }

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
        Datatype {
            inner: Arc::new(Inner {
                map: Arc::new(Map::new(vec![Item::Run(Block { disp: 0, prim, count: 1 })])),
                lb: 0,
                ub: prim.size() as isize,
                true_lb: 0,
                true_ub: prim.data_end() as isize,
                user_lb: false,
                user_ub: false,
                align: prim.align(),
                contiguous: prim.is_dense(),
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
        Datatype {
            inner: Arc::new(Inner {
                map: o.map.clone(),
                lb,
                ub,
                true_lb: o.true_lb,
                true_ub: o.true_ub,
                user_lb: true,
                user_ub: true,
                align: o.align,
                contiguous: is_contiguous(&o.map, lb, ub),
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

    /// A type whose map is `runs` (as [`Datatype::for_each_block`] lists them) with bounds
    /// `lb` and `lb + extent`: another process's datatype, sent as its runs (the target
    /// datatype of a one-sided operation, §11.3).
    pub fn from_runs(runs: &[Block], lb: isize, extent: isize) -> MpiResult<Datatype> {
        const WHAT: &str = "a datatype sent as its runs";
        let mut b = Builder::new();
        for r in runs {
            if r.count == 0 {
                return err(ErrorClass::Arg, format!("{WHAT}: a run of no elements"));
            }
            b.add(&Self::make_predefined(r.prim, None), r.count, r.disp, r.prim.size() as isize, WHAT)?;
        }
        let t = b.finish(None, None);
        add(lb, extent, WHAT)?;
        Ok(Self::resize(&t, lb, extent))
    }

    /// `MPI_Type_dup` (MPI-3.1 §4.1.10): same type map, a new handle, committed if the
    /// original was.
    pub fn dup(old: &Datatype) -> MpiResult<Datatype> {
        let o = &old.inner;
        let inner = Inner {
            map: o.map.clone(),
            lb: o.lb,
            ub: o.ub,
            true_lb: o.true_lb,
            true_ub: o.true_ub,
            user_lb: o.user_lb,
            user_ub: o.user_ub,
            align: o.align,
            contiguous: o.contiguous,
            name: None,
            recipe: recipe(Combiner::Dup, vec![], vec![], vec![old.clone()]),
        };
        Ok(Datatype { inner: Arc::new(inner), committed: old.committed })
    }
}
