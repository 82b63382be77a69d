//! Moving data by a datatype: pack and unpack, whole or by windows of the packed stream, and
//! counting the elements in a number of packed bytes (`MPI_Get_elements`).

use super::*;

impl Datatype {
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
        let total = count * self.size();
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
        let total = count * self.size();
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
        let total = count * self.size();
        let fit = packed.len().min(total);
        let usable = self.whole_primitive_prefix(fit);
        self.unpack_range(&packed[..usable], base, origin, count, 0)?;
        if packed.len() > total {
            return err(
                ErrorClass::Truncate,
                format!("{} bytes arrived for a buffer of {count} elements of {} bytes", packed.len(), self.size()),
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
        let total = count * self.size();
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
        let size = self.size();
        if size == 0 || nbytes.is_multiple_of(size) {
            return nbytes;
        }
        nbytes - nbytes % size + self.inner.map.whole_primitive_prefix(nbytes % size)
    }

    /// Calls `f(mem_index, packed_offset, len)` for each maximal run of bytes of the
    /// packed window `[start, end)` that is also contiguous in memory, in stream order.
    /// `mem_index` is an index into the caller's `base` (origin applied).
    fn walk(&self, origin: usize, start: usize, end: usize, mut f: impl FnMut(usize, usize, usize)) {
        let map = &*self.inner.map;
        let size = map.size;
        debug_assert!(size > 0 && start < end);
        let extent = self.extent();
        let mut pos = start;
        let mut elem = pos / size;
        let mut in_elem = pos % size;
        while pos < end {
            let take = (size - in_elem).min(end - pos);
            let elem_base = origin as isize + elem as isize * extent;
            match map.dense {
                Some((disp, _)) => f((elem_base + disp) as usize + in_elem, pos, take),
                None => map.walk(elem_base, in_elem, in_elem + take, pos, &mut f),
            }
            pos += take;
            elem += 1;
            in_elem = 0;
        }
    }

    /// `MPI_Get_elements` (MPI-3.1 §4.1.11): basic elements in `nbytes` of packed data,
    /// `None` (MPI_UNDEFINED) when the bytes end inside a basic element.
    pub fn elements_in(&self, nbytes: usize) -> Option<usize> {
        let map = &*self.inner.map;
        if map.size == 0 {
            return if nbytes == 0 { Some(0) } else { None };
        }
        let whole = (nbytes / map.size).checked_mul(map.elements)?;
        let rem = nbytes % map.size;
        if rem == 0 {
            return Some(whole);
        }
        whole.checked_add(map.elements_in(rem)?)
    }

    /// The packed bytes of the first `count` basic elements of a run of this type: what
    /// `MPI_Status_set_elements` records, so that `MPI_Get_elements` gives `count` back and
    /// `MPI_Get_count` the whole copies in it. `None` when that overflows.
    pub fn bytes_of_elements(&self, count: usize) -> Option<usize> {
        let map = &*self.inner.map;
        if map.elements == 0 {
            return if count == 0 { Some(0) } else { None };
        }
        let whole = (count / map.elements).checked_mul(map.size)?;
        whole.checked_add(map.bytes_of_first(count % map.elements))
    }

    /// Turns packed elements of this type into the external32 representation (§13.5.2), or
    /// back (the same swap): every number big-endian. `packed` holds whole elements.
    pub fn swap_external32(&self, packed: &mut [u8]) {
        let size = self.size();
        if size == 0 {
            return;
        }
        debug_assert!(packed.len().is_multiple_of(size));
        // One element's numbers as runs of (bytes, how many in a row).
        let mut parts: Vec<(usize, usize)> = Vec::new();
        let mut push = |n: usize, k: usize| match parts.last_mut() {
            Some((m, run)) if *m == n => *run += k,
            _ => parts.push((n, k)),
        };
        self.for_each_block(|b| match b.prim.external_parts() {
            &[n] => push(n, b.count),
            several => (0..b.count).for_each(|_| several.iter().for_each(|&n| push(n, 1))),
        });
        for element in packed.chunks_exact_mut(size) {
            let mut at = 0;
            for &(n, k) in &parts {
                if n > 1 {
                    for number in element[at..at + n * k].chunks_exact_mut(n) {
                        number.reverse();
                    }
                }
                at += n * k;
            }
        }
    }

    /// `MPI_Get_count` (MPI-3.1 §3.2.5): whole elements in `nbytes` of packed data, `None`
    /// (MPI_UNDEFINED) when that is not a whole number. A type of size zero counts 0.
    pub fn count_in(&self, nbytes: usize) -> Option<usize> {
        let size = self.size();
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

impl Map {
    /// The walk of [`Datatype::walk`] inside one copy of the map whose displacements are
    /// relative to `base`: the packed window `[start, end)` of the copy (`start < end <=
    /// size`), whose first byte is at `pos` in the whole stream.
    fn walk(&self, base: isize, start: usize, end: usize, mut pos: usize, f: &mut impl FnMut(usize, usize, usize)) {
        let mut at = start;
        let mut i = if start == 0 { 0 } else { self.item_at(start) };
        while at < end {
            let item_start = self.packed_start[i];
            let off = at - item_start;
            match &self.items[i] {
                Item::Run(b) => {
                    let take = (b.packed_len() - off).min(end - at);
                    let block_mem = base + b.disp;
                    if b.prim.is_dense() {
                        f((block_mem + off as isize) as usize, pos, take);
                    } else {
                        walk_segments(b.prim, block_mem, off, take, pos, f);
                    }
                    at += take;
                    pos += take;
                }
                Item::Repeat(r) => {
                    let body = &*r.body;
                    let stop = (r.count * body.size).min(end - item_start);
                    let (mut k, mut in_copy, mut o) = (off / body.size, off % body.size, off);
                    while o < stop {
                        let take = (body.size - in_copy).min(stop - o);
                        let copy_base = base + r.disp + k as isize * r.stride;
                        match body.dense {
                            // The strided vector: one copy is one memory run.
                            Some((disp, _)) => f((copy_base + disp) as usize + in_copy, pos, take),
                            None => body.walk(copy_base, in_copy, in_copy + take, pos, f),
                        }
                        o += take;
                        pos += take;
                        k += 1;
                        in_copy = 0;
                    }
                    at = item_start + stop;
                }
            }
            i += 1;
        }
    }

    /// Largest prefix of `rem` (`< size`) packed bytes of one copy that ends on a
    /// primitive boundary.
    fn whole_primitive_prefix(&self, rem: usize) -> usize {
        let i = self.item_at(rem);
        let off = rem - self.packed_start[i];
        self.packed_start[i]
            + match &self.items[i] {
                Item::Run(b) => off - off % b.prim.packed_size(),
                Item::Repeat(r) => {
                    let in_copy = off % r.body.size;
                    off - in_copy + if in_copy == 0 { 0 } else { r.body.whole_primitive_prefix(in_copy) }
                }
            }
    }

    /// The packed bytes of the first `k` (`< elements`) basic elements of one copy.
    fn bytes_of_first(&self, mut k: usize) -> usize {
        let mut bytes = 0;
        for item in &self.items {
            if k == 0 {
                break;
            }
            let n = item.elements();
            if k >= n {
                bytes += item.packed_len();
                k -= n;
                continue;
            }
            bytes += match item {
                Item::Run(b) => {
                    let members = b.prim.members();
                    let whole = k / members.len() * b.prim.packed_size();
                    whole + members[..k % members.len()].iter().sum::<usize>()
                }
                Item::Repeat(r) => k / r.body.elements * r.body.size + r.body.bytes_of_first(k % r.body.elements),
            };
            k = 0;
        }
        bytes
    }

    /// Basic elements in the first `rem` (`< size`) packed bytes of one copy, `None` when
    /// they end inside a basic element.
    fn elements_in(&self, rem: usize) -> Option<usize> {
        let i = self.item_at(rem);
        let before = self.items[..i].iter().fold(0usize, |n, item| n.saturating_add(item.elements()));
        let off = rem - self.packed_start[i];
        let within = match &self.items[i] {
            Item::Run(b) => {
                let ps = b.prim.packed_size();
                let mut n = (off / ps) * b.prim.members().len();
                let mut left = off % ps;
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
                n
            }
            Item::Repeat(r) => {
                let whole = (off / r.body.size).saturating_mul(r.body.elements);
                let in_copy = off % r.body.size;
                whole.saturating_add(if in_copy == 0 { 0 } else { r.body.elements_in(in_copy)? })
            }
        };
        Some(before.saturating_add(within))
    }
}

/// The part of [`Map::walk`] for a run of pair primitives whose packed bytes
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
