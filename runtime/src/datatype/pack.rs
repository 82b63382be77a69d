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
