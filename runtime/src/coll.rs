//! Collectives (MPI-3.1 chapter 5) as algorithms over the runtime's point-to-point, each
//! written once as a [`Schedule`] builder: the nonblocking call (`MPI_Ibcast`, …) starts the
//! schedule in the engine, the blocking one runs the same schedule to completion ([`run`]).
//!
//! On an inter-communicator the unrooted collectives (barrier, allreduce, allgather,
//! all-to-all) dispatch to [`crate::intercoll`]; the rooted ones, whose root argument means
//! something else there, are called from it directly.
//!
//! Every buffer here is *packed* bytes: the caller packs derived datatypes before and unpacks
//! after, so the algorithms never see a type map.

use crate::comm::Comm;
use crate::core::{RecvBuf, SendData};
use crate::engine::Engine;
use crate::error::{err, ErrorClass, MpiError, MpiResult};
use crate::intercoll;
pub use crate::sched::Reducer;
use crate::sched::{bcast_steps, kind, reduce_steps, Outside, Schedule, Slot};

/// Runs a schedule to completion (a blocking collective); returns its buffers.
pub fn run(e: &mut Engine, mut s: Schedule<'_>) -> MpiResult<Vec<Vec<u8>>> {
    s.start(false);
    let mut failure = None;
    e.block_until(|core| match s.advance(core) {
        Ok(done) => done,
        Err(x) => {
            failure = Some(x);
            true
        }
    })?;
    match failure {
        Some(x) => Err(x),
        None => Ok(s.into_slots()),
    }
}

/// Takes the buffers at `slots` out of a finished schedule's buffers.
pub fn take(slots_out: &mut [Vec<u8>], slots: &[Slot]) -> Vec<Vec<u8>> {
    slots.iter().map(|&i| std::mem::take(&mut slots_out[i])).collect()
}

/// §5.3 `MPI_Barrier`: dissemination, ⌈log2 n⌉ rounds.
pub fn barrier_schedule<'a>(comm: &Comm) -> Schedule<'a> {
    if comm.is_inter() {
        return intercoll::barrier_schedule(comm);
    }
    let mut s = Schedule::new(comm, kind::BARRIER);
    let (n, r) = (comm.size(), comm.rank);
    let empty = s.slot(Vec::new());
    let mut k = 1;
    while k < n {
        let sink = s.slot(Vec::new());
        s.recv((r - k + n) % n, sink, 0);
        s.send((r + k) % n, empty);
        s.wait();
        k *= 2;
    }
    s
}

/// §5.4 `MPI_Bcast`: binomial tree rooted at `root`. `buf` is what the root sends
/// ([`Outside::Send`]) or where every other rank receives ([`Outside::Recv`]); a staged
/// receive's bytes are in the returned slot.
pub fn bcast_schedule<'a>(comm: &Comm, root: i32, buf: Outside) -> (Schedule<'a>, Slot) {
    let mut s = Schedule::new(comm, kind::BCAST);
    let len = buf.len();
    let data = s.slot_outside(buf);
    bcast_steps(&mut s, comm.size(), comm.rank, root, data, len);
    (s, data)
}

/// §5.9.1 `MPI_Reduce`: binomial tree. A non-commutative op is reduced towards rank 0, where
/// every subtree covers a contiguous rank range, and then moved to `root`. The result (at
/// `root`) is in the returned slot.
pub fn reduce_schedule<'a>(comm: &Comm, root: i32, input: Vec<u8>, op: Box<dyn Reducer + 'a>) -> (Schedule<'a>, Slot) {
    let mut s = Schedule::new(comm, kind::REDUCE);
    let commutative = op.commutative();
    s.set_op(op);
    let len = input.len();
    let tree_root = if commutative { root } else { 0 };
    let acc = s.slot(input);
    reduce_steps(&mut s, comm.size(), comm.rank, tree_root, acc, len);
    if tree_root != root {
        if comm.rank == tree_root {
            s.send(root, acc);
        } else if comm.rank == root {
            s.recv(tree_root, acc, len);
        }
    }
    (s, acc)
}

/// `MPI_Reduce` of `input` towards `root`, whose result lands in `out` (the application's
/// contiguous receive buffer of as many bytes, at the root; `None` elsewhere). A large
/// commutative reduction sends its first blocks from `input` as it is and the root receives
/// each finished block straight into `out` ([`large_reduce_steps`]); any other runs as
/// [`reduce_schedule`] and lands its result in `out` at the end.
pub fn reduce_into_schedule<'a>(
    comm: &Comm,
    root: i32,
    input: SendData,
    out: Option<&'static mut [u8]>,
    op: Box<dyn Reducer + 'a>,
) -> MpiResult<Schedule<'a>> {
    match &out {
        Some(out) if comm.rank == root && input.len() == out.len() => {}
        None if comm.rank != root => {}
        _ => return err(ErrorClass::Intern, "a reduce with a receive buffer of another size, or one not at the root"),
    }
    if is_large_allreduce(&*op, input.len(), comm.size()) {
        let elem = op.elem_bytes();
        let mut s = Schedule::new(comm, kind::REDUCE);
        s.set_op(op);
        let out = out.map(|o| Outside::Recv(RecvBuf::Static(o)));
        large_reduce_steps(&mut s, comm.size(), comm.rank, root, Outside::Send(input), out, elem);
        return Ok(s);
    }
    let (mut s, acc) = reduce_schedule(comm, root, input.into_vec(), op);
    if let Some(out) = out {
        land_result(&mut s, acc, out);
    }
    Ok(s)
}

/// §5.9.6 `MPI_Allreduce`: the ranks beyond the largest power of two fold their input into
/// a neighbour first; among the others, recursive doubling (order-preserving, so it serves
/// non-commutative ops too), or from `LARGE_ALLREDUCE_BYTES` for a commutative op that can
/// be cut into blocks, reduce-scatter and allgather. The result is in the returned slot.
pub fn allreduce_schedule<'a>(comm: &Comm, buf: Vec<u8>, op: Box<dyn Reducer + 'a>) -> (Schedule<'a>, Slot) {
    if comm.is_inter() {
        return intercoll::allreduce_schedule(comm, buf, op);
    }
    let elem = op.elem_bytes();
    let large = is_large_allreduce(&*op, buf.len(), comm.size());
    let mut s = Schedule::new(comm, kind::ALLREDUCE);
    s.set_op(op);
    let (n, r) = (comm.size(), comm.rank);
    let len = buf.len();
    if large {
        let blocks = large_allreduce_steps(
            &mut s,
            n,
            r,
            Outside::Send(SendData::Owned(buf)),
            Outside::Recv(RecvBuf::Owned(Vec::new())),
            elem,
        );
        let acc = s.slot(Vec::new());
        s.wait();
        s.join(blocks, Folded::of(n, r).pof2 as usize, acc);
        return (s, acc);
    }
    let acc = s.slot(buf);
    let fold = fold_in(&mut s, n, r, acc, len);
    if fold.newrank >= 0 {
        recursive_doubling_steps(&mut s, &fold, r, acc, len);
    }
    fold_out(&mut s, r, fold.rem, acc, len);
    (s, acc)
}

/// `MPI_Allreduce` of `input` into `out`, the application's contiguous receive buffer of as
/// many bytes. A large commutative reduction sends its first blocks from `input` as it is,
/// lands each finished block straight in `out` and sends it on from there, so no byte is
/// staged or unpacked; any other reduction runs as [`allreduce_schedule`] and lands its
/// result in `out` at the end.
pub fn allreduce_into_schedule<'a>(
    comm: &Comm,
    input: SendData,
    out: &'static mut [u8],
    op: Box<dyn Reducer + 'a>,
) -> MpiResult<Schedule<'a>> {
    if input.len() != out.len() {
        return err(
            ErrorClass::Intern,
            format!("an allreduce of {} bytes into a buffer of {}", input.len(), out.len()),
        );
    }
    if !comm.is_inter() && is_large_allreduce(&*op, input.len(), comm.size()) {
        let elem = op.elem_bytes();
        let mut s = Schedule::new(comm, kind::ALLREDUCE);
        s.set_op(op);
        large_allreduce_steps(
            &mut s,
            comm.size(),
            comm.rank,
            Outside::Send(input),
            Outside::Recv(RecvBuf::Static(out)),
            elem,
        );
        return Ok(s);
    }
    let (mut s, acc) = allreduce_schedule(comm, input.into_vec(), op);
    land_result(&mut s, acc, out);
    Ok(s)
}

/// Ends a schedule whose result is in `acc` by landing it in `out`, once everything posted
/// has completed.
fn land_result(s: &mut Schedule<'_>, acc: Slot, out: &'static mut [u8]) {
    let to = s.slot_outside(Outside::Recv(RecvBuf::Static(out)));
    s.wait();
    s.land(acc, to);
}

/// Whether [`reduce_scatter_block_schedule`] serves a reduce-scatter of `len` bytes in all
/// among the ranks of `comm`, each rank's part the same size: on an intra-communicator of a
/// power of two of ranks, for a large commutative reduction cut at whole elements (the
/// blocks of Rabenseifner's reduce-scatter are then exactly the ranks' parts).
pub fn reduce_scatter_blocks_fit(comm: &Comm, len: usize, op: &dyn Reducer) -> bool {
    let n = comm.size();
    let elem = op.elem_bytes();
    !comm.is_inter()
        && n.count_ones() == 1
        && is_large_allreduce(op, len, n)
        && len.is_multiple_of(n as usize)
        && (len / n as usize).is_multiple_of(elem)
}

/// `MPI_Reduce_scatter_block` of `input` (this rank's contribution to every part, end to
/// end) by Rabenseifner's reduce-scatter alone: rank i reduces part i, which lands in `out`
/// (a staged receive's bytes in the returned slot). Only where
/// [`reduce_scatter_blocks_fit`]; the general case is an allreduce of everything.
pub fn reduce_scatter_block_schedule<'a>(
    comm: &Comm,
    input: SendData,
    out: RecvBuf,
    op: Box<dyn Reducer + 'a>,
) -> MpiResult<(Schedule<'a>, Slot)> {
    if !reduce_scatter_blocks_fit(comm, input.len(), &*op) {
        return err(ErrorClass::Intern, "a reduce-scatter by blocks where the blocks are not the ranks' parts");
    }
    let elem = op.elem_bytes();
    let mut s = Schedule::new(comm, kind::ALLREDUCE);
    s.set_op(op);
    let fold = Folded::of(comm.size(), comm.rank);
    let to = s.slot_outside(Outside::Recv(out));
    if let Some(mine) = reduce_scatter_steps(&mut s, &fold, comm.rank, Outside::Send(input), elem) {
        s.land(mine, to);
    }
    Ok((s, to))
}

/// Recursive doubling among the power of two of ranks (`fold.newrank` >= 0): log2(p)
/// exchanges of the whole buffer, reduced in rank order, so non-commutative ops keep theirs.
fn recursive_doubling_steps(s: &mut Schedule<'_>, fold: &Folded, r: i32, acc: Slot, len: usize) {
    let theirs = s.slot(Vec::new());
    let mut mask = 1;
    while mask < fold.pof2 {
        let dst = fold.rank_of(fold.newrank ^ mask);
        s.recv(dst, theirs, len);
        s.send(dst, acc);
        s.wait();
        if dst < r {
            s.reduce(theirs, acc);
        } else {
            s.reduce(acc, theirs);
            s.swap(theirs, acc);
        }
        mask <<= 1;
    }
}

/// Where a rank stands in an allreduce among the largest power of two of ranks, `pof2`:
/// the first `2 * rem` ranks pair up, the even one of each pair folding its input into the
/// odd one and sitting out (`newrank` -1); the others take part as `newrank`.
struct Folded {
    pof2: i32,
    rem: i32,
    newrank: i32,
}

impl Folded {
    /// Rank `r`'s place among `n`.
    fn of(n: i32, r: i32) -> Folded {
        let mut pof2 = 1;
        while pof2 * 2 <= n {
            pof2 *= 2;
        }
        let rem = n - pof2;
        let newrank = if r < 2 * rem {
            if r % 2 == 0 {
                -1
            } else {
                r / 2
            }
        } else {
            r - rem
        };
        Folded { pof2, rem, newrank }
    }

    /// Whether rank `r` takes part for itself and the neighbour below it.
    fn takes_in(&self, r: i32) -> bool {
        r < 2 * self.rem && self.newrank >= 0
    }

    /// The communicator rank that takes part as `newrank`.
    fn rank_of(&self, newrank: i32) -> i32 {
        if newrank < self.rem {
            newrank * 2 + 1
        } else {
            newrank + self.rem
        }
    }
}

/// The fold before an allreduce among a power of two of ranks (see [`Folded`]): rank `r` of
/// `n` sends or takes and reduces `acc` (`len` bytes).
fn fold_in(s: &mut Schedule<'_>, n: i32, r: i32, acc: Slot, len: usize) -> Folded {
    let fold = Folded::of(n, r);
    if fold.newrank < 0 {
        s.send_last(r + 1, acc);
        s.wait();
    } else if fold.takes_in(r) {
        let theirs = s.slot(Vec::new());
        s.recv(r - 1, theirs, len);
        s.wait();
        s.reduce(theirs, acc);
    }
    fold
}

/// The result back to the ranks that sat out (see [`fold_in`]).
fn fold_out(s: &mut Schedule<'_>, r: i32, rem: i32, acc: Slot, len: usize) {
    if r < 2 * rem {
        if r % 2 == 1 {
            s.send(r - 1, acc);
        } else {
            s.recv(r + 1, acc, len);
        }
    }
}

/// From this size a commutative allreduce moves each byte about twice rather than log2(n)
/// times (Rabenseifner's reduce-scatter and allgather).
const LARGE_ALLREDUCE_BYTES: usize = 64 << 10;

/// Whether an allreduce of `len` bytes among `n` ranks goes by [`large_allreduce_steps`]:
/// large, commutative, and cut into blocks of at least one whole element each.
fn is_large_allreduce(op: &dyn Reducer, len: usize, n: i32) -> bool {
    let elem = op.elem_bytes();
    op.commutative() && elem > 0 && len >= LARGE_ALLREDUCE_BYTES && len / elem >= n as usize
}

/// A large commutative `MPI_Allreduce` (Rabenseifner) of `input` into `out` among `n` ranks,
/// as rank `r`: [`reduce_scatter_steps`], the block this rank reduced lands in `out`, and an
/// allgather by recursive doubling brings every rank every block straight into `out` (the
/// ranks beyond the power of two take them from the neighbour they gave their input to). Each
/// rank sends and receives about twice the buffer in all, where recursive doubling sends all
/// of it log2(p) times. Returns the slot of `out`'s first block (see
/// [`Schedule::slots_outside_cut`]).
fn large_allreduce_steps(s: &mut Schedule<'_>, n: i32, r: i32, input: Outside, out: Outside, elem: usize) -> Slot {
    let fold = Folded::of(n, r);
    let p = fold.pof2 as usize;
    let len = input.len();
    let block_len = |k: usize| crate::sched::block_range(len, elem, p, k).len();
    let outb = s.slots_outside_cut(out, p, elem);
    let Some(mine) = reduce_scatter_steps(s, &fold, r, input, elem) else {
        for k in 0..p {
            s.recv(r + 1, outb + k, block_len(k));
        }
        return outb;
    };
    // This rank reduced block `newrank`.
    let (mut lo, mut size) = (fold.newrank as usize, 1);
    s.land(mine, outb + lo);
    // Allgather: this rank holds blocks [lo, lo + size) and gets the partner's as many.
    let mut mask = 1;
    while mask < p {
        let dst = fold.rank_of((fold.newrank as usize ^ mask) as i32);
        let theirs_lo = lo ^ mask;
        for k in theirs_lo..theirs_lo + size {
            s.recv(dst, outb + k, block_len(k));
        }
        for k in lo..lo + size {
            s.send(dst, outb + k);
        }
        s.wait();
        lo = lo.min(theirs_lo);
        size *= 2;
        mask *= 2;
    }
    if fold.takes_in(r) {
        for k in 0..p {
            s.send(r - 1, outb + k);
        }
    }
    outb
}

/// A large commutative `MPI_Reduce` of `input` towards `root`, whose result lands in `out`
/// (significant at the root): [`reduce_scatter_steps`], then every rank that reduced a block
/// sends it to the root, which receives each straight into its place in `out`.
fn large_reduce_steps(
    s: &mut Schedule<'_>,
    n: i32,
    r: i32,
    root: i32,
    input: Outside,
    out: Option<Outside>,
    elem: usize,
) {
    let fold = Folded::of(n, r);
    let p = fold.pof2 as usize;
    let len = input.len();
    let mine = reduce_scatter_steps(s, &fold, r, input, elem);
    // (The caller gives `out` at the root only.)
    let Some(out) = out else {
        if let Some(mine) = mine {
            s.send_last(root, mine);
        }
        return;
    };
    let outb = s.slots_outside_cut(out, p, elem);
    for k in 0..p {
        // Block k was reduced by the rank taking part as k.
        match mine {
            Some(mine) if k == fold.newrank as usize => s.land(mine, outb + k),
            _ => s.recv(fold.rank_of(k as i32), outb + k, crate::sched::block_range(len, elem, p, k).len()),
        }
    }
}

/// The reduce-scatter of Rabenseifner's algorithms for a commutative op, of `input` among the
/// `n` ranks (`fold`: rank `r`'s place): `input` is cut into `p` blocks of whole `elem`-byte
/// elements, `p` the largest power of two of ranks, and every block travels as a message of
/// its own. A rank beyond the power of two gives its blocks to the neighbour above it, which
/// reduces them into its own, and is done (`None`). Among the others, recursive halving: each
/// step sends the half of its blocks the partner keeps and reduces the half it keeps into what
/// it receives, which leaves the rank taking part as `k` with block `k` fully reduced, in the
/// returned slot.
fn reduce_scatter_steps(s: &mut Schedule<'_>, fold: &Folded, r: i32, input: Outside, elem: usize) -> Option<Slot> {
    let p = fold.pof2 as usize;
    let len = input.len();
    let block_len = |k: usize| crate::sched::block_range(len, elem, p, k).len();
    let inp = s.slots_outside_cut(input, p, elem);
    if fold.newrank < 0 {
        for k in 0..p {
            s.send(r + 1, inp + k);
        }
        return None;
    }
    // The slot holding each block's partial reduction so far.
    let mut cur: Vec<Slot> = (inp..inp + p).collect();
    if fold.takes_in(r) {
        for (k, c) in cur.iter_mut().enumerate() {
            *c = s.slot(Vec::new());
            s.recv(r - 1, *c, block_len(k));
        }
        s.wait();
        for (k, &c) in cur.iter().enumerate() {
            s.reduce(inp + k, c);
        }
    }
    let newrank = fold.newrank as usize;
    // The blocks [lo, lo + size) are this rank's to reduce.
    let (mut lo, mut size) = (0usize, p);
    let mut mask = p / 2;
    while mask > 0 {
        let dst = fold.rank_of((newrank ^ mask) as i32);
        size /= 2;
        let (keep, give) = if newrank & mask == 0 { (lo, lo + size) } else { (lo + size, lo) };
        let theirs: Vec<Slot> = (keep..keep + size)
            .map(|k| {
                let t = s.slot(Vec::new());
                s.recv(dst, t, block_len(k));
                t
            })
            .collect();
        for &c in &cur[give..give + size] {
            s.send_last(dst, c);
        }
        s.wait();
        for (k, t) in (keep..keep + size).zip(theirs) {
            s.reduce(cur[k], t);
            cur[k] = t;
        }
        lo = keep;
        mask /= 2;
    }
    debug_assert_eq!(lo, newrank, "recursive halving leaves block newrank");
    Some(cur[lo])
}

/// §5.5 `MPI_Gatherv`: every rank's piece `mine` reaches `root`, where `recv[i]` takes rank
/// i's, straight into the application's memory when given as such (no staging copy; a staged
/// receive's bytes are in returned slot i). The root's own piece is copied into `recv[root]`,
/// or with `None` there (`MPI_IN_PLACE`, `mine` then unused) is already in place. `recv` is
/// significant at the root only.
pub fn gatherv_schedule<'a>(
    comm: &Comm,
    root: i32,
    mine: SendData,
    recv: Vec<Option<RecvBuf>>,
) -> MpiResult<(Schedule<'a>, Vec<Slot>)> {
    let mut s = Schedule::new(comm, kind::GATHER);
    if comm.rank != root {
        let m = s.slot_outside(Outside::Send(mine));
        s.send_last(root, m);
        return Ok((s, Vec::new()));
    }
    if let Some(Some(own)) = recv.get(root as usize) {
        if own.len() != mine.len() {
            return err(ErrorClass::Truncate, format!("root contributes {} bytes, expects {}", mine.len(), own.len()));
        }
    }
    let mut mine = Some(mine);
    let mut slots = Vec::with_capacity(recv.len());
    for (src, buf) in recv.into_iter().enumerate() {
        let slot = match buf {
            Some(buf) => {
                let len = buf.len();
                let slot = s.slot_outside(Outside::Recv(buf));
                if src == root as usize {
                    let from = s.slot_outside(Outside::Send(mine.take().expect("the root's piece once")));
                    s.land(from, slot);
                } else {
                    s.recv(src as i32, slot, len);
                }
                slot
            }
            None if src == root as usize => s.slot(Vec::new()),
            None => return err(ErrorClass::Intern, "a gather without a receive buffer for a rank"),
        };
        slots.push(slot);
    }
    Ok((s, slots))
}

/// §5.6 `MPI_Scatterv`: at `root`, `pieces[i]` goes to rank i (straight from the
/// application's memory when given as such); every rank's piece lands in `recv`, the root's
/// copied there, or with `None` (`MPI_IN_PLACE` at the root) left where it is. A staged
/// receive's bytes are in the returned slot. `pieces` is significant at the root only.
pub fn scatterv_schedule<'a>(
    comm: &Comm,
    root: i32,
    pieces: Vec<SendData>,
    recv: Option<RecvBuf>,
) -> MpiResult<(Schedule<'a>, Slot)> {
    let mut s = Schedule::new(comm, kind::SCATTER);
    let len = recv.as_ref().map(RecvBuf::len);
    let mine = match recv {
        Some(buf) => s.slot_outside(Outside::Recv(buf)),
        None => s.slot(Vec::new()),
    };
    if comm.rank != root {
        let len = len.ok_or_else(|| MpiError::new(ErrorClass::Intern, "a scatter without a receive buffer"))?;
        s.recv(root, mine, len);
        return Ok((s, mine));
    }
    for (dst, piece) in pieces.into_iter().enumerate() {
        if dst as i32 != root {
            let slot = s.slot_outside(Outside::Send(piece));
            s.send_last(dst as i32, slot);
        } else if let Some(len) = len {
            if piece.len() != len {
                return err(
                    ErrorClass::Truncate,
                    format!("root's own piece is {} bytes, its receive takes {len}", piece.len()),
                );
            }
            let from = s.slot_outside(Outside::Send(piece));
            s.land(from, mine);
        }
    }
    Ok((s, mine))
}

/// §5.7 `MPI_Allgatherv`: ring, n-1 steps. `recv[i]` takes rank i's piece, straight into
/// the application's memory when given as such, from where it is sent on to the next rank (no
/// staging copy); this rank's own piece `mine` is copied into `recv[r]`, or with `None` there
/// (`MPI_IN_PLACE`: `mine` is already in place) sent from where it is. A staged receive's
/// bytes are in returned slot i.
pub fn allgatherv_schedule<'a>(
    comm: &Comm,
    mine: SendData,
    recv: Vec<Option<RecvBuf>>,
) -> MpiResult<(Schedule<'a>, Vec<Slot>)> {
    const MISSING: &str = "an allgather without a receive buffer for a peer";
    if comm.is_inter() {
        let recv = recv
            .into_iter()
            .map(|b| b.ok_or(()))
            .collect::<Result<Vec<_>, ()>>()
            .or_else(|()| err(ErrorClass::Intern, MISSING))?;
        return Ok(intercoll::allgatherv_schedule(comm, mine, recv));
    }
    let mut s = Schedule::new(comm, kind::ALLGATHER);
    let (n, r) = (comm.size(), comm.rank);
    let lens: Vec<usize> = recv.iter().map(|b| b.as_ref().map_or(mine.len(), RecvBuf::len)).collect();
    if mine.len() != lens[r as usize] {
        return err(
            ErrorClass::Truncate,
            format!("rank {r} contributes {} bytes, expected {}", mine.len(), lens[r as usize]),
        );
    }
    let mut mine = Some(mine);
    let mut slots = Vec::with_capacity(n as usize);
    for (i, buf) in recv.into_iter().enumerate() {
        let slot = match buf {
            Some(buf) => s.slot_outside(Outside::Recv(buf)),
            // In place: sent on from where it is.
            None if i == r as usize => s.slot_outside(Outside::Send(mine.take().expect("once"))),
            None => return err(ErrorClass::Intern, MISSING),
        };
        slots.push(slot);
    }
    if let Some(mine) = mine {
        let from = s.slot_outside(Outside::Send(mine));
        s.land(from, slots[r as usize]);
    }
    let right = (r + 1) % n;
    let left = (r - 1 + n) % n;
    for step in 0..n - 1 {
        let send_idx = ((r - step + n) % n) as usize;
        let recv_idx = ((r - step - 1 + n) % n) as usize;
        s.recv(left, slots[recv_idx], lens[recv_idx]);
        s.send(right, slots[send_idx]);
        s.wait();
    }
    Ok((s, slots))
}

/// §5.8 `MPI_Alltoall(v,w)`: every pair exchanges directly; all receives are posted first.
/// `send[i]` goes to rank i and `recv[i]` takes what rank i sends, each straight from or into
/// the application's memory when given as such (no staging copy); a staged receive's bytes
/// are in returned slot i.
pub fn alltoallv_schedule<'a>(comm: &Comm, send: Vec<SendData>, recv: Vec<RecvBuf>) -> (Schedule<'a>, Vec<Slot>) {
    if comm.is_inter() {
        return intercoll::alltoallv_schedule(comm, send, recv);
    }
    let mut s = Schedule::new(comm, kind::ALLTOALL);
    let (n, r) = (comm.size(), comm.rank);
    let lens: Vec<usize> = recv.iter().map(RecvBuf::len).collect();
    let recv_slots: Vec<Slot> = recv.into_iter().map(|b| s.slot_outside(Outside::Recv(b))).collect();
    let send_slots: Vec<Slot> = send.into_iter().map(|d| s.slot_outside(Outside::Send(d))).collect();
    // Start with the nearest ranks so that pairs proceed in step rather than all at rank 0;
    // this rank's own part is copied across, not sent to itself.
    for i in 1..n {
        let src = (r - i + n) % n;
        s.recv(src, recv_slots[src as usize], lens[src as usize]);
    }
    for i in 1..n {
        let dst = (r + i) % n;
        s.send_last(dst, send_slots[dst as usize]);
    }
    s.land(send_slots[r as usize], recv_slots[r as usize]);
    (s, recv_slots)
}

/// §7.6 neighbourhood collectives: `send[i]` goes to its destination and `recv[i]` takes
/// what its source sends, each on its lane (see [`crate::comm::Neighbor`]); every receive is
/// posted before any send. A part given as its application memory moves with no staging
/// copy; a staged receive's bytes are in returned slot i. A process may be its own
/// neighbour, through the transport's loopback like any message.
pub fn neighbor_schedule<'a>(
    comm: &Comm,
    send: Vec<(i32, u8, SendData)>,
    recv: Vec<(i32, u8, RecvBuf)>,
) -> (Schedule<'a>, Vec<Slot>) {
    let mut s = Schedule::new(comm, kind::NEIGHBOR);
    let mut recv_slots = Vec::with_capacity(recv.len());
    for (from, lane, buf) in recv {
        let len = buf.len();
        let slot = s.slot_outside(Outside::Recv(buf));
        s.recv_on(from, slot, len, lane);
        recv_slots.push(slot);
    }
    for (to, lane, data) in send {
        let slot = s.slot_outside(Outside::Send(data));
        s.send_last_on(to, slot, lane);
    }
    (s, recv_slots)
}

/// §5.11.1 `MPI_Scan` (inclusive, `exclusive == false`) and §5.11.2 `MPI_Exscan`: a chain in
/// rank order, so non-commutative ops keep their order. The result is in the returned slot;
/// `None` for `Exscan` at rank 0, whose receive buffer the standard leaves undefined: nothing
/// is written there (as Open MPI and MPICH leave it, and programs check that they do).
pub fn scan_schedule<'a>(
    comm: &Comm,
    buf: Vec<u8>,
    op: Box<dyn Reducer + 'a>,
    exclusive: bool,
) -> (Schedule<'a>, Option<Slot>) {
    let mut s = Schedule::new(comm, kind::SCAN);
    s.set_op(op);
    let (n, r) = (comm.size(), comm.rank);
    let len = buf.len();
    let inclusive = s.slot(buf);
    // `prefix` = x_0 op … op x_{r-1}, received from the left neighbour.
    let prefix = s.slot(Vec::new());
    if r > 0 {
        s.recv(r - 1, prefix, len);
        s.wait();
        s.reduce(prefix, inclusive);
    }
    if r + 1 < n {
        s.send(r + 1, inclusive);
    }
    let result = match (exclusive, r > 0) {
        (true, true) => Some(prefix),
        (true, false) => None,
        (false, _) => Some(inclusive),
    };
    (s, result)
}

/// Runs a schedule and returns the buffer at `slot`.
fn run_one(e: &mut Engine, (s, slot): (Schedule<'_>, Slot)) -> MpiResult<Vec<u8>> {
    let mut slots = run(e, s)?;
    Ok(std::mem::take(&mut slots[slot]))
}

/// Runs a schedule and returns the buffers at `slots`.
fn run_many(e: &mut Engine, (s, slots): (Schedule<'_>, Vec<Slot>)) -> MpiResult<Vec<Vec<u8>>> {
    let mut all = run(e, s)?;
    Ok(take(&mut all, &slots))
}

pub fn barrier(e: &mut Engine, comm: &Comm) -> MpiResult<()> {
    run(e, barrier_schedule(comm)).map(drop)
}

pub fn reduce(
    e: &mut Engine,
    comm: &Comm,
    root: i32,
    input: &[u8],
    output: Option<&mut [u8]>,
    op: &dyn Reducer,
) -> MpiResult<()> {
    let got = run_one(e, reduce_schedule(comm, root, input.to_vec(), Box::new(op)))?;
    if comm.rank == root {
        let output =
            output.ok_or_else(|| crate::error::MpiError::new(ErrorClass::Buffer, "root has no receive buffer"))?;
        output.copy_from_slice(&got);
    }
    Ok(())
}

pub fn allreduce(e: &mut Engine, comm: &Comm, buf: &mut [u8], op: &dyn Reducer) -> MpiResult<()> {
    let got = run_one(e, allreduce_schedule(comm, buf.to_vec(), Box::new(op)))?;
    buf.copy_from_slice(&got);
    Ok(())
}

pub fn gatherv(e: &mut Engine, comm: &Comm, root: i32, mine: &[u8], lens: &[usize]) -> MpiResult<Vec<Vec<u8>>> {
    let recv = lens.iter().map(|&len| Some(RecvBuf::Owned(vec![0; len]))).collect();
    run_many(e, gatherv_schedule(comm, root, SendData::Owned(mine.to_vec()), recv)?)
}

pub fn scatterv(e: &mut Engine, comm: &Comm, root: i32, pieces: Vec<Vec<u8>>, len: usize) -> MpiResult<Vec<u8>> {
    let pieces = pieces.into_iter().map(SendData::Owned).collect();
    run_one(e, scatterv_schedule(comm, root, pieces, Some(RecvBuf::Owned(vec![0; len])))?)
}

/// `MPI_Scan`, or `MPI_Exscan` when `exclusive` (which leaves rank 0's `buf` as it was).
pub fn scan(e: &mut Engine, comm: &Comm, buf: &mut [u8], op: &dyn Reducer, exclusive: bool) -> MpiResult<()> {
    let (s, slot) = scan_schedule(comm, buf.to_vec(), Box::new(op), exclusive);
    let slots = run(e, s)?;
    if let Some(slot) = slot {
        buf.copy_from_slice(&slots[slot]);
    }
    Ok(())
}
