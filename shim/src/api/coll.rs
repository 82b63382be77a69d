//! Collective operations (MPI-3.1 chapter 5): arguments in, packed bytes to the runtime's
//! algorithms, results unpacked back. Contiguous buffers go to the algorithms as they are.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use kawarimi_runtime::coll::{self, Reducer};
use kawarimi_runtime::comm::Comm;
use kawarimi_runtime::datatype::{Datatype, Primitive};
use kawarimi_runtime::error::{ErrorClass, MpiError, MpiResult};
use kawarimi_runtime::op;

use crate::abi::{self, MPI_Comm, MPI_Datatype, MPI_Op};
use crate::api::p2p::{check_buffer, comm_of};
use crate::export::call;
use crate::mem::{c_array, out, user_bytes, user_bytes_mut};
use crate::state::{encode, fail, Kind, OpEntry, Res, State, UserOp};

/// `count` elements of a datatype at an address: one argument triple of a collective.
struct Typed {
    addr: usize,
    count: usize,
    dt: Arc<Datatype>,
}

impl Typed {
    fn new(s: &mut State, buf: *const c_void, count: c_int, dt: MPI_Datatype) -> Res<Typed> {
        let dt = check_buffer(s, count, dt)?;
        Ok(Typed { addr: buf as usize, count: count as usize, dt })
    }

    fn packed_len(&self) -> usize {
        self.count * self.dt.size()
    }

    /// The same triple `k` blocks of `count` elements further on.
    fn block(&self, k: usize) -> Typed {
        self.at(k as isize * self.count as isize * self.dt.extent(), self.count)
    }

    /// `count` elements at a displacement of `disp_bytes`.
    fn at(&self, disp_bytes: isize, count: usize) -> Typed {
        Typed { addr: self.addr.wrapping_add_signed(disp_bytes), count, dt: self.dt.clone() }
    }

    /// The bytes of a contiguous layout, in place.
    ///
    /// # Safety
    /// The memory must be the application's, valid for the collective call.
    unsafe fn contiguous_mut(&self) -> Res<Option<&'static mut [u8]>> {
        if !self.dt.is_contiguous() {
            return Ok(None);
        }
        // SAFETY: per the contract.
        Ok(Some(unsafe { user_bytes_mut(self.addr as *mut c_void, 0, self.packed_len() as isize)? }))
    }

    /// A packed copy.
    ///
    /// # Safety
    /// As for [`Typed::contiguous_mut`].
    unsafe fn pack(&self) -> Res<Vec<u8>> {
        let (lo, hi) = self.dt.span(self.count);
        // SAFETY: per the contract; the span covers every byte of the type map.
        let base = unsafe { user_bytes(self.addr as *const c_void, lo, hi)? };
        let mut v = Vec::with_capacity(self.packed_len());
        self.dt.pack(base, (-lo) as usize, self.count, &mut v);
        Ok(v)
    }

    /// Writes packed bytes into the buffer.
    ///
    /// # Safety
    /// As for [`Typed::contiguous_mut`].
    unsafe fn unpack(&self, packed: &[u8]) -> Res<()> {
        let (lo, hi) = self.dt.span(self.count);
        // SAFETY: per the contract.
        let base = unsafe { user_bytes_mut(self.addr as *mut c_void, lo, hi)? };
        self.dt.unpack(packed, base, (-lo) as usize, self.count)?;
        Ok(())
    }
}

fn in_place(p: *const c_void) -> bool {
    p as usize == abi::MPI_IN_PLACE
}

fn check_root(comm: &Comm, root: c_int) -> Res<()> {
    if (0..comm.size()).contains(&root) {
        Ok(())
    } else {
        fail(ErrorClass::Root, format!("root {root} is not in a communicator of {}", comm.size()))
    }
}

/// Applies an MPI op to packed elements of one datatype.
struct ShimReducer {
    op: OpEntry,
    /// The primitive of a predefined op's operands.
    prim: Primitive,
    dt: Arc<Datatype>,
    dt_handle: MPI_Datatype,
}

impl ShimReducer {
    fn new(s: &mut State, op_h: MPI_Op, dt_h: MPI_Datatype) -> Res<ShimReducer> {
        let op = s.op(op_h)?;
        let dt = s.datatype(dt_h)?;
        let prim = dt.primitives().unwrap_or(Primitive::Byte);
        if let OpEntry::Predefined(p) = op {
            if dt.primitives().is_none() {
                return fail(ErrorClass::Op, format!("{} needs a datatype of one predefined type", p.name()));
            }
            op::check(p, prim)?;
        }
        Ok(ShimReducer { op, prim, dt, dt_handle: dt_h })
    }
}

impl Reducer for ShimReducer {
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
        match self.op {
            OpEntry::Predefined(p) => op::apply(p, self.prim, input, inout),
            OpEntry::User(u) => call_user_op(u, &self.dt, self.dt_handle, input, inout),
        }
    }
    fn commutative(&self) -> bool {
        match self.op {
            OpEntry::Predefined(p) => p.is_commutative(),
            OpEntry::User(u) => u.commutative,
        }
    }
}

/// Runs a user function (§5.9.5) on packed operands: they are laid out in the datatype's
/// memory form first, since that is what the function reads.
fn call_user_op(u: UserOp, dt: &Datatype, dt_handle: MPI_Datatype, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
    let size = dt.size();
    if size == 0 {
        return Ok(());
    }
    let count = input.len() / size;
    let mut len = count as c_int;
    let mut h = dt_handle;
    if dt.is_contiguous() {
        // SAFETY: the user function reads `len` elements of `dt` at `input` and updates as
        // many at `inout`; both slices hold exactly that many packed (= memory-form) elements.
        unsafe { (u.function)(input.as_ptr() as *mut c_void, inout.as_mut_ptr() as *mut c_void, &mut len, &mut h) };
        return Ok(());
    }
    let (lo, hi) = dt.span(count);
    let origin = (-lo) as usize;
    let mut a = vec![0u8; (hi - lo) as usize];
    let mut b = vec![0u8; (hi - lo) as usize];
    dt.unpack(input, &mut a, origin, count)?;
    dt.unpack(inout, &mut b, origin, count)?;
    // SAFETY: `a` and `b` each hold `count` elements of `dt` in memory form, addressed from
    // `origin`, as the function expects.
    unsafe {
        (u.function)(
            a.as_mut_ptr().add(origin) as *mut c_void,
            b.as_mut_ptr().add(origin) as *mut c_void,
            &mut len,
            &mut h,
        )
    };
    let mut packed = Vec::with_capacity(inout.len());
    dt.pack(&b, origin, count, &mut packed);
    inout.copy_from_slice(&packed);
    Ok(())
}

fn to_fail(e: MpiError) -> crate::state::Fail {
    e.into()
}

/// Runs a reduction-shaped collective on the packed contents of `recv` (after `send` has been
/// copied there unless in place), then writes the result back.
///
/// # Safety
/// Application buffers valid for the call.
unsafe fn reduce_into(
    s: &mut State,
    sendbuf: *const c_void,
    recv: &Typed,
    run: impl FnOnce(&mut State, &mut [u8]) -> MpiResult<()>,
) -> Res<()> {
    // SAFETY: per the contract.
    match unsafe { recv.contiguous_mut()? } {
        Some(bytes) => {
            if !in_place(sendbuf) {
                // SAFETY: the send buffer holds the same count of the same type.
                let src = unsafe { user_bytes(sendbuf, 0, bytes.len() as isize)? };
                bytes.copy_from_slice(src);
            }
            run(s, bytes).map_err(to_fail)
        }
        None => {
            let source = if in_place(sendbuf) {
                Typed { addr: recv.addr, count: recv.count, dt: recv.dt.clone() }
            } else {
                recv.at(sendbuf as isize - recv.addr as isize, recv.count)
            };
            // SAFETY: per the contract.
            let mut packed = unsafe { source.pack()? };
            run(s, &mut packed).map_err(to_fail)?;
            // SAFETY: per the contract.
            unsafe { recv.unpack(&packed) }
        }
    }
}

/// The counts and displacements that make the fixed-size collectives (`Gather`, `Scatter`,
/// `Allgather`) their `v` forms: `count` elements per rank, back to back.
fn uniform(ranks: c_int, count: c_int) -> (Vec<usize>, Vec<isize>) {
    let count = count.max(0) as usize;
    let n = ranks.max(0) as usize;
    (vec![count; n], (0..n).map(|i| (i * count) as isize).collect())
}

fn counts(p: *const c_int, n: usize) -> Res<Vec<usize>> {
    // SAFETY: MPI's array arguments have one entry per rank.
    let v = unsafe { c_array(p, n)? };
    v.iter()
        .map(|&c| if c < 0 { fail(ErrorClass::Count, format!("count {c} is negative")) } else { Ok(c as usize) })
        .collect()
}

fn displs(p: *const c_int, n: usize) -> Res<Vec<isize>> {
    // SAFETY: MPI's array arguments have one entry per rank.
    Ok(unsafe { c_array(p, n)? }.iter().map(|&d| d as isize).collect())
}

mpi_fn! {
    fn Barrier(comm: MPI_Comm) -> c_int {
        call("MPI_Barrier", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            Ok(coll::barrier(&mut s.world()?.engine, &c)?)
        })
    }

    fn Bcast(buffer: *mut c_void, count: c_int, datatype: MPI_Datatype, root: c_int, comm: MPI_Comm) -> c_int {
        call("MPI_Bcast", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let t = Typed::new(s, buffer, count, datatype)?;
            check_root(&c, root)?;
            // SAFETY: the application's buffer for the duration of the call.
            match unsafe { t.contiguous_mut()? } {
                Some(bytes) => Ok(coll::bcast(&mut s.world()?.engine, &c, root, bytes)?),
                None => {
                    // SAFETY: as above.
                    let mut packed = if c.rank == root { unsafe { t.pack()? } } else { vec![0; t.packed_len()] };
                    coll::bcast(&mut s.world()?.engine, &c, root, &mut packed)?;
                    // SAFETY: as above.
                    if c.rank != root { unsafe { t.unpack(&packed)? } }
                    Ok(())
                }
            }
        })
    }

    fn Reduce(sendbuf: *const c_void, recvbuf: *mut c_void, count: c_int, datatype: MPI_Datatype, op: MPI_Op, root: c_int, comm: MPI_Comm) -> c_int {
        call("MPI_Reduce", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            check_root(&c, root)?;
            let reducer = ShimReducer::new(s, op, datatype)?;
            let is_root = c.rank == root;
            let src = if is_root && in_place(sendbuf) { recvbuf as *const c_void } else { sendbuf };
            let input = Typed::new(s, src, count, datatype)?;
            // SAFETY: the application's buffers for the duration of the call.
            let packed_in = unsafe { input.pack()? };
            let mut result = if is_root { vec![0u8; packed_in.len()] } else { Vec::new() };
            coll::reduce(&mut s.world()?.engine, &c, root, &packed_in, is_root.then_some(&mut result[..]), &reducer)?;
            if is_root {
                let r = Typed::new(s, recvbuf, count, datatype)?;
                // SAFETY: as above.
                unsafe { r.unpack(&result)? };
            }
            Ok(())
        })
    }

    fn Allreduce(sendbuf: *const c_void, recvbuf: *mut c_void, count: c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) -> c_int {
        call("MPI_Allreduce", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let reducer = ShimReducer::new(s, op, datatype)?;
            let r = Typed::new(s, recvbuf, count, datatype)?;
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { reduce_into(s, sendbuf, &r, |s, b| coll::allreduce(&mut s.world.as_mut().expect("initialized").engine, &c, b, &reducer)) }
        })
    }

    fn Reduce_local(inbuf: *const c_void, inoutbuf: *mut c_void, count: c_int, datatype: MPI_Datatype, op: MPI_Op) -> c_int {
        call("MPI_Reduce_local", None, |s| {
            let reducer = ShimReducer::new(s, op, datatype)?;
            let a = Typed::new(s, inbuf, count, datatype)?;
            let b = Typed::new(s, inoutbuf, count, datatype)?;
            // SAFETY: the application's buffers for the duration of the call.
            let (pa, mut pb) = unsafe { (a.pack()?, b.pack()?) };
            reducer.reduce(&pa, &mut pb)?;
            // SAFETY: as above.
            unsafe { b.unpack(&pb) }
        })
    }

    fn Scan(sendbuf: *const c_void, recvbuf: *mut c_void, count: c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) -> c_int {
        // SAFETY: MPI_Scan's buffers, for the duration of the call.
        unsafe { scan("MPI_Scan", sendbuf, recvbuf, count, datatype, op, comm, false) }
    }

    fn Exscan(sendbuf: *const c_void, recvbuf: *mut c_void, count: c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) -> c_int {
        // Rank 0's receive buffer is undefined after Exscan (§5.11.2): kawarimi leaves it
        // holding the input, as Open MPI does.
        // SAFETY: MPI_Exscan's buffers, for the duration of the call.
        unsafe { scan("MPI_Exscan", sendbuf, recvbuf, count, datatype, op, comm, true) }
    }

    fn Reduce_scatter_block(sendbuf: *const c_void, recvbuf: *mut c_void, recvcount: c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) -> c_int {
        call("MPI_Reduce_scatter_block", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let n = c.size() as usize;
            let counts = vec![recvcount.max(0) as usize; n];
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { reduce_scatter(s, &c, sendbuf, recvbuf, recvcount, &counts, datatype, op) }
        })
    }

    fn Reduce_scatter(sendbuf: *const c_void, recvbuf: *mut c_void, recvcounts: *const c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) -> c_int {
        call("MPI_Reduce_scatter", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let counts = counts(recvcounts, c.size() as usize)?;
            let mine = counts[c.rank as usize] as c_int;
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { reduce_scatter(s, &c, sendbuf, recvbuf, mine, &counts, datatype, op) }
        })
    }

    fn Gather(sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, root: c_int, comm: MPI_Comm) -> c_int {
        call("MPI_Gather", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            check_root(&c, root)?;
            let (cnts, dsp) = if c.rank == root { uniform(c.size(), recvcount) } else { (Vec::new(), Vec::new()) };
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { gatherv(s, &c, sendbuf, sendcount, sendtype, recvbuf, &cnts, &dsp, recvtype, root) }
        })
    }

    fn Gatherv(sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, displs_: *const c_int, recvtype: MPI_Datatype, root: c_int, comm: MPI_Comm) -> c_int {
        call("MPI_Gatherv", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            check_root(&c, root)?;
            let n = c.size() as usize;
            let (cnts, dsp) = if c.rank == root { (counts(recvcounts, n)?, displs(displs_, n)?) } else { (Vec::new(), Vec::new()) };
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { gatherv(s, &c, sendbuf, sendcount, sendtype, recvbuf, &cnts, &dsp, recvtype, root) }
        })
    }

    fn Scatter(sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, root: c_int, comm: MPI_Comm) -> c_int {
        call("MPI_Scatter", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            check_root(&c, root)?;
            let (cnts, dsp) = if c.rank == root { uniform(c.size(), sendcount) } else { (Vec::new(), Vec::new()) };
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { scatterv(s, &c, sendbuf, &cnts, &dsp, sendtype, recvbuf, recvcount, recvtype, root) }
        })
    }

    fn Scatterv(sendbuf: *const c_void, sendcounts: *const c_int, displs_: *const c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, root: c_int, comm: MPI_Comm) -> c_int {
        call("MPI_Scatterv", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            check_root(&c, root)?;
            let n = c.size() as usize;
            let (cnts, dsp) = if c.rank == root { (counts(sendcounts, n)?, displs(displs_, n)?) } else { (Vec::new(), Vec::new()) };
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { scatterv(s, &c, sendbuf, &cnts, &dsp, sendtype, recvbuf, recvcount, recvtype, root) }
        })
    }

    fn Allgather(sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, comm: MPI_Comm) -> c_int {
        call("MPI_Allgather", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let (cnts, dsp) = uniform(c.size(), recvcount);
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { allgatherv(s, &c, sendbuf, sendcount, sendtype, recvbuf, &cnts, &dsp, recvtype) }
        })
    }

    fn Allgatherv(sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, displs_: *const c_int, recvtype: MPI_Datatype, comm: MPI_Comm) -> c_int {
        call("MPI_Allgatherv", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let n = c.size() as usize;
            let (cnts, dsp) = (counts(recvcounts, n)?, displs(displs_, n)?);
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { allgatherv(s, &c, sendbuf, sendcount, sendtype, recvbuf, &cnts, &dsp, recvtype) }
        })
    }

    fn Alltoall(sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, comm: MPI_Comm) -> c_int {
        call("MPI_Alltoall", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let n = c.size() as usize;
            let st = if in_place(sendbuf) { recvtype } else { sendtype };
            let sc = if in_place(sendbuf) { recvcount } else { sendcount };
            let send = Typed::new(s, if in_place(sendbuf) { recvbuf } else { sendbuf }, sc, st)?;
            let recv = Typed::new(s, recvbuf, recvcount, recvtype)?;
            let send_parts: Vec<Typed> = (0..n).map(|i| send.block(i)).collect();
            let recv_parts: Vec<Typed> = (0..n).map(|i| recv.block(i)).collect();
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { alltoallw(s, &c, &send_parts, &recv_parts) }
        })
    }

    fn Alltoallv(sendbuf: *const c_void, sendcounts: *const c_int, sdispls: *const c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, rdispls: *const c_int, recvtype: MPI_Datatype, comm: MPI_Comm) -> c_int {
        call("MPI_Alltoallv", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let n = c.size() as usize;
            let (rc, rd) = (counts(recvcounts, n)?, displs(rdispls, n)?);
            let recv = Typed::new(s, recvbuf, 0, recvtype)?;
            let recv_parts: Vec<Typed> = (0..n).map(|i| recv.at(rd[i] * recv.dt.extent(), rc[i])).collect();
            let send_parts: Vec<Typed> = if in_place(sendbuf) {
                recv_parts.iter().map(|t| t.at(0, t.count)).collect()
            } else {
                let (sc, sd) = (counts(sendcounts, n)?, displs(sdispls, n)?);
                let send = Typed::new(s, sendbuf, 0, sendtype)?;
                (0..n).map(|i| send.at(sd[i] * send.dt.extent(), sc[i])).collect()
            };
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { alltoallw(s, &c, &send_parts, &recv_parts) }
        })
    }

    fn Alltoallw(sendbuf: *const c_void, sendcounts: *const c_int, sdispls: *const c_int, sendtypes: *const MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, rdispls: *const c_int, recvtypes: *const MPI_Datatype, comm: MPI_Comm) -> c_int {
        call("MPI_Alltoallw", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            let n = c.size() as usize;
            let (rc, rd) = (counts(recvcounts, n)?, displs(rdispls, n)?);
            // SAFETY: one datatype per rank (§5.8).
            let rt = unsafe { c_array(recvtypes, n)? };
            let mut recv_parts = Vec::with_capacity(n);
            for i in 0..n {
                recv_parts.push(Typed::new(s, recvbuf, rc[i] as c_int, rt[i])?.at(rd[i], rc[i]));
            }
            let send_parts: Vec<Typed> = if in_place(sendbuf) {
                recv_parts.iter().map(|t| t.at(0, t.count)).collect()
            } else {
                let (sc, sd) = (counts(sendcounts, n)?, displs(sdispls, n)?);
                // SAFETY: one datatype per rank (§5.8).
                let stypes = unsafe { c_array(sendtypes, n)? };
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(Typed::new(s, sendbuf, sc[i] as c_int, stypes[i])?.at(sd[i], sc[i]));
                }
                v
            };
            // SAFETY: the application's buffers for the duration of the call.
            unsafe { alltoallw(s, &c, &send_parts, &recv_parts) }
        })
    }

    fn Op_create(function: Option<abi::MPI_User_function>, commute: c_int, op: *mut MPI_Op) -> c_int {
        call("MPI_Op_create", None, |s| {
            let Some(function) = function else { return fail(ErrorClass::Arg, "NULL user function") };
            let i = s.ops.insert(OpEntry::User(UserOp { function, commutative: commute != 0 })).ok_or_else(|| crate::state::table_full("ops"))?;
            // SAFETY: caller's output argument.
            unsafe { out(op, encode(Kind::Op, i) as MPI_Op) }
        })
    }

    fn Op_free(op: *mut MPI_Op) -> c_int {
        call("MPI_Op_free", None, |s| {
            if op.is_null() {
                return fail(ErrorClass::Arg, "NULL op pointer");
            }
            // SAFETY: non-null in/out argument.
            let h = unsafe { *op } as usize;
            match crate::state::decode(h, Kind::Op) {
                Some(i) if s.ops.remove(i).is_some() => {
                    // SAFETY: as above.
                    unsafe { *op = abi::predefined().op_handle(abi::PredefOp::OpNull) as MPI_Op };
                    Ok(())
                }
                _ => fail(ErrorClass::Op, "only user-defined ops can be freed"),
            }
        })
    }

    fn Op_commutative(op: MPI_Op, commute: *mut c_int) -> c_int {
        call("MPI_Op_commutative", None, |s| {
            let c = match s.op(op)? {
                OpEntry::Predefined(p) => p.is_commutative(),
                OpEntry::User(u) => u.commutative,
            };
            // SAFETY: caller's output argument.
            unsafe { out(commute, c as c_int) }
        })
    }
}

/// `MPI_Scan` (inclusive) or `MPI_Exscan`.
///
/// # Safety
/// Application buffers valid for the call.
#[allow(clippy::too_many_arguments)]
unsafe fn scan(
    name: &'static str,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: c_int,
    datatype: MPI_Datatype,
    op: MPI_Op,
    comm: MPI_Comm,
    exclusive: bool,
) -> c_int {
    call(name, Some(comm), |s| {
        let (c, _) = comm_of(s, comm)?;
        let reducer = ShimReducer::new(s, op, datatype)?;
        let r = Typed::new(s, recvbuf, count, datatype)?;
        // SAFETY: per this function's contract.
        unsafe {
            reduce_into(s, sendbuf, &r, |s, b| {
                coll::scan(&mut s.world.as_mut().expect("initialized").engine, &c, b, &reducer, exclusive)
            })
        }
    })
}

/// # Safety
/// Application buffers valid for the call.
#[allow(clippy::too_many_arguments)]
unsafe fn reduce_scatter(
    s: &mut State,
    c: &Arc<Comm>,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    mine: c_int,
    counts: &[usize],
    datatype: MPI_Datatype,
    op: MPI_Op,
) -> Res<()> {
    let reducer = ShimReducer::new(s, op, datatype)?;
    let total: usize = counts.iter().sum();
    // With MPI_IN_PLACE the input is in the receive buffer, `total` elements long (§5.10.1).
    let src = if in_place(sendbuf) { recvbuf as *const c_void } else { sendbuf };
    let input = Typed::new(s, src, total as c_int, datatype)?;
    // SAFETY: per the contract.
    let mut all = unsafe { input.pack()? };
    coll::allreduce(&mut s.world()?.engine, c, &mut all, &reducer)?;
    let size = input.dt.size();
    let start: usize = counts[..c.rank as usize].iter().sum::<usize>() * size;
    let out = Typed::new(s, recvbuf, mine, datatype)?;
    // SAFETY: per the contract.
    unsafe { out.unpack(&all[start..start + mine as usize * size]) }
}

/// # Safety
/// Application buffers valid for the call.
#[allow(clippy::too_many_arguments)]
unsafe fn gatherv(
    s: &mut State,
    c: &Arc<Comm>,
    sendbuf: *const c_void,
    sendcount: c_int,
    sendtype: MPI_Datatype,
    recvbuf: *mut c_void,
    cnts: &[usize],
    dsp: &[isize],
    recvtype: MPI_Datatype,
    root: c_int,
) -> Res<()> {
    let is_root = c.rank == root;
    let recv = if is_root { Some(Typed::new(s, recvbuf, 0, recvtype)?) } else { None };
    let mine = match (&recv, in_place(sendbuf)) {
        (Some(r), true) => {
            let me = c.rank as usize;
            // SAFETY: per the contract.
            unsafe { r.at(dsp[me] * r.dt.extent(), cnts[me]).pack()? }
        }
        // SAFETY: per the contract.
        _ => unsafe { Typed::new(s, sendbuf, sendcount, sendtype)?.pack()? },
    };
    let lens: Vec<usize> = match &recv {
        Some(r) => cnts.iter().map(|&n| n * r.dt.size()).collect(),
        None => Vec::new(),
    };
    let pieces = coll::gatherv(&mut s.world()?.engine, c, root, &mine, &lens)?;
    if let Some(r) = recv {
        for (i, p) in pieces.iter().enumerate() {
            if i as c_int == root && in_place(sendbuf) {
                continue;
            }
            // SAFETY: per the contract.
            unsafe { r.at(dsp[i] * r.dt.extent(), cnts[i]).unpack(p)? };
        }
    }
    Ok(())
}

/// # Safety
/// Application buffers valid for the call.
#[allow(clippy::too_many_arguments)]
unsafe fn scatterv(
    s: &mut State,
    c: &Arc<Comm>,
    sendbuf: *const c_void,
    cnts: &[usize],
    dsp: &[isize],
    sendtype: MPI_Datatype,
    recvbuf: *mut c_void,
    recvcount: c_int,
    recvtype: MPI_Datatype,
    root: c_int,
) -> Res<()> {
    let is_root = c.rank == root;
    let keep_own = is_root && in_place(recvbuf);
    let mut pieces = Vec::new();
    if is_root {
        let send = Typed::new(s, sendbuf, 0, sendtype)?;
        for i in 0..cnts.len() {
            if keep_own && i as c_int == root {
                pieces.push(Vec::new());
                continue;
            }
            // SAFETY: per the contract.
            pieces.push(unsafe { send.at(dsp[i] * send.dt.extent(), cnts[i]).pack()? });
        }
    }
    if keep_own {
        coll::scatterv(&mut s.world()?.engine, c, root, pieces, 0)?;
        return Ok(());
    }
    let recv = Typed::new(s, recvbuf, recvcount, recvtype)?;
    let mine = coll::scatterv(&mut s.world()?.engine, c, root, pieces, recv.packed_len())?;
    // SAFETY: per the contract.
    unsafe { recv.unpack(&mine) }
}

/// # Safety
/// Application buffers valid for the call.
#[allow(clippy::too_many_arguments)]
unsafe fn allgatherv(
    s: &mut State,
    c: &Arc<Comm>,
    sendbuf: *const c_void,
    sendcount: c_int,
    sendtype: MPI_Datatype,
    recvbuf: *mut c_void,
    cnts: &[usize],
    dsp: &[isize],
    recvtype: MPI_Datatype,
) -> Res<()> {
    let recv = Typed::new(s, recvbuf, 0, recvtype)?;
    let me = c.rank as usize;
    let mine = if in_place(sendbuf) {
        // SAFETY: per the contract.
        unsafe { recv.at(dsp[me] * recv.dt.extent(), cnts[me]).pack()? }
    } else {
        // SAFETY: per the contract.
        unsafe { Typed::new(s, sendbuf, sendcount, sendtype)?.pack()? }
    };
    let lens: Vec<usize> = cnts.iter().map(|&n| n * recv.dt.size()).collect();
    let pieces = coll::allgatherv(&mut s.world()?.engine, c, &mine, &lens)?;
    for (i, p) in pieces.iter().enumerate() {
        // SAFETY: per the contract.
        unsafe { recv.at(dsp[i] * recv.dt.extent(), cnts[i]).unpack(p)? };
    }
    Ok(())
}

/// The general all-to-all: part `i` of `send` goes to rank `i`, part `i` of `recv` comes
/// from rank `i`. With `MPI_IN_PLACE` the two lists describe the same memory, which is safe
/// because everything is packed before anything is unpacked.
///
/// # Safety
/// Application buffers valid for the call.
unsafe fn alltoallw(s: &mut State, c: &Arc<Comm>, send: &[Typed], recv: &[Typed]) -> Res<()> {
    let mut out_parts = Vec::with_capacity(send.len());
    for t in send {
        // SAFETY: per the contract.
        out_parts.push(unsafe { t.pack()? });
    }
    let lens: Vec<usize> = recv.iter().map(Typed::packed_len).collect();
    let got = coll::alltoallv(&mut s.world()?.engine, c, out_parts, &lens)?;
    for (t, p) in recv.iter().zip(&got) {
        // SAFETY: per the contract.
        unsafe { t.unpack(p)? };
    }
    Ok(())
}
