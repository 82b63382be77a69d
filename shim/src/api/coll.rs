//! Collective operations (MPI-3.1 chapter 5): arguments in, packed bytes to the runtime's
//! algorithms, results unpacked back. Contiguous buffers go to the algorithms as they are.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use kawarimi_runtime::coll::{self, Reducer};
use kawarimi_runtime::comm::Comm;
use kawarimi_runtime::core::{RecvBuf, SendData};
use kawarimi_runtime::datatype::Datatype;
use kawarimi_runtime::engine::Engine;
use kawarimi_runtime::error::{ErrorClass, MpiResult};
use kawarimi_runtime::intercoll::{self, InterRoot};
use kawarimi_runtime::sched::{kind, Outside, Schedule, Slot};
use kawarimi_runtime::slotcoll;

use crate::abi::{self, MPI_Comm, MPI_Datatype, MPI_Op, MPI_Request};
use crate::api::op::ShimReducer;
use crate::api::p2p::{check_buffer, comm_of, send_bytes};
use crate::export::call;
use crate::mem::{c_array, out, user_bytes_mut};
use crate::state::{fail, RequestEntry, Res, State};

/// `count` elements of a datatype at an address: one argument triple of a collective.
#[derive(Clone)]
pub(super) struct Typed {
    addr: usize,
    count: usize,
    dt: Arc<Datatype>,
}

impl Typed {
    pub(super) fn new(s: &mut State, buf: *const c_void, count: c_int, dt: MPI_Datatype) -> Res<Typed> {
        let dt = check_buffer(s, count, dt)?;
        Ok(Typed { addr: buf as usize, count: count as usize, dt })
    }

    pub(super) fn packed_len(&self) -> usize {
        self.count * self.dt.size()
    }

    /// The same triple `k` blocks of `count` elements further on.
    pub(super) fn block(&self, k: usize) -> Typed {
        self.at(k as isize * self.count as isize * self.dt.extent(), self.count)
    }

    /// `count` elements at a displacement of `disp_bytes`.
    pub(super) fn at(&self, disp_bytes: isize, count: usize) -> Typed {
        Typed { addr: self.addr.wrapping_add_signed(disp_bytes), count, dt: self.dt.clone() }
    }

    /// Part `i` of a `v` argument: `counts[i]` elements `displs[i]` extents on.
    pub(super) fn part(&self, counts: &[usize], displs: &[isize], i: usize) -> Typed {
        self.at(displs[i] * self.dt.extent(), counts[i])
    }

    /// The memory the triple's elements occupy, as pieces `(address, bytes)` in type-map
    /// order (see [`Datatype::memory_pieces`]).
    pub(super) fn memory_pieces(&self, max_pieces: usize) -> Option<Vec<(usize, usize)>> {
        self.dt.memory_pieces(self.addr, self.count, max_pieces)
    }

    /// What a send of the triple sends: the buffer itself when the layout is contiguous, else
    /// a packed copy.
    ///
    /// # Safety
    /// The triple must describe memory of the application's, left unmodified until the send
    /// completes.
    pub(super) unsafe fn sent(&self) -> Res<SendData> {
        // SAFETY: per the contract.
        unsafe { send_bytes(self.addr as *const c_void, self.count, &self.dt) }
    }

    /// A packed copy.
    ///
    /// # Safety
    /// The triple must describe memory of the application's that is readable over the type
    /// map's whole span for the duration of the call.
    pub(super) unsafe fn pack(&self) -> Res<Vec<u8>> {
        // SAFETY: per the contract (read during the call only: the bytes are copied).
        Ok(unsafe { self.sent()? }.into_vec())
    }

    /// Where a receive of this triple lands: in the application's buffer itself when the
    /// layout is contiguous (`false`), else in a staging buffer to unpack afterwards (`true`).
    ///
    /// # Safety
    /// The triple must describe the application's receive buffer, which it leaves alone
    /// until the receive completes.
    pub(super) unsafe fn landing(&self) -> Res<(RecvBuf, bool)> {
        // SAFETY: per the contract.
        Ok(match unsafe { self.contiguous_mut()? } {
            Some(buf) => (RecvBuf::Static(buf), false),
            None => (RecvBuf::Owned(vec![0; self.packed_len()]), true),
        })
    }

    /// Where a receive of this triple lands and what its completion still has to do, for a
    /// request that completes it (see [`crate::api::p2p::recv_target`]).
    ///
    /// # Safety
    /// As [`Typed::landing`], until the request completes.
    pub(super) unsafe fn recv_target(
        &self,
    ) -> Res<(RecvBuf, kawarimi_runtime::request::Finish<crate::state::CollFinish>)> {
        // SAFETY: per the contract.
        unsafe { crate::api::p2p::recv_target(self.addr as *mut c_void, self.count, &self.dt) }
    }

    /// The application's buffer itself when the layout is contiguous.
    ///
    /// # Safety
    /// As [`Typed::landing`].
    unsafe fn contiguous_mut(&self) -> Res<Option<&'static mut [u8]>> {
        if !self.dt.is_contiguous() {
            return Ok(None);
        }
        // SAFETY: per the contract: the application leaves it alone until completion.
        Ok(Some(unsafe { user_bytes_mut(self.addr as *mut c_void, 0, self.packed_len() as isize)? }))
    }

    /// Writes packed bytes into the buffer.
    ///
    /// # Safety
    /// The triple must describe memory of the application's that is writable over the type
    /// map's whole span, and that nothing else uses during the call.
    pub(super) unsafe fn unpack(&self, packed: &[u8]) -> Res<()> {
        let (lo, hi) = self.dt.span(self.count);
        // SAFETY: per the contract.
        let base = unsafe { user_bytes_mut(self.addr as *mut c_void, lo, hi)? };
        self.dt.unpack(packed, base, (-lo) as usize, self.count)?;
        Ok(())
    }
}

pub(super) fn in_place(p: *const c_void) -> bool {
    p as usize == abi::MPI_IN_PLACE
}

/// Whether this process is the root of a rooted collective: on an inter-communicator the
/// root passes `MPI_ROOT` (§5.2.2).
fn is_root(comm: &Comm, root: c_int) -> bool {
    if comm.is_inter() {
        root == abi::MPI_ROOT
    } else {
        comm.rank == root
    }
}

/// This process's part in a rooted collective on an inter-communicator (§5.2.2).
fn inter_root(comm: &Comm, root: c_int) -> Res<InterRoot> {
    match root {
        abi::MPI_ROOT => Ok(InterRoot::Here),
        abi::MPI_PROC_NULL => Ok(InterRoot::Idle),
        q if (0..comm.p2p_size()).contains(&q) => Ok(InterRoot::Remote(q)),
        _ => fail(
            ErrorClass::Root,
            format!(
                "root {root} is neither MPI_ROOT, MPI_PROC_NULL nor a rank of the remote group of {}",
                comm.p2p_size()
            ),
        ),
    }
}

/// `MPI_IN_PLACE` has no meaning on an inter-communicator (§5.2.2).
fn check_not_in_place(comm: &Comm, bufs: &[*const c_void]) -> Res<()> {
    if comm.is_inter() && bufs.iter().any(|&b| in_place(b)) {
        return fail(ErrorClass::Arg, "MPI_IN_PLACE cannot be used on an inter-communicator");
    }
    Ok(())
}

fn check_root(comm: &Comm, root: c_int) -> Res<()> {
    if (0..comm.size()).contains(&root) {
        Ok(())
    } else {
        fail(ErrorClass::Root, format!("root {root} is not in a communicator of {}", comm.size()))
    }
}

/// A collective ready to run: its schedule, and what to do with the schedule's buffers when
/// it has finished (unpack them into the application's buffers). A blocking call runs it at
/// once ([`execute`]); a nonblocking one leaves it to the engine behind a request ([`start`]).
pub(super) struct Plan {
    schedule: Schedule<'static>,
    finish: Box<dyn FnOnce(Vec<Vec<u8>>) -> Res<()> + Send>,
}

impl Plan {
    pub(super) fn new(
        schedule: Schedule<'static>,
        finish: impl FnOnce(Vec<Vec<u8>>) -> Res<()> + Send + 'static,
    ) -> Plan {
        Plan { schedule, finish: Box::new(finish) }
    }

    fn nothing_after(schedule: Schedule<'static>) -> Plan {
        Plan::new(schedule, |_| Ok(()))
    }
}

fn execute(s: &mut State, plan: Plan) -> Res<()> {
    let slots = coll::run(&mut s.world()?.engine, plan.schedule)?;
    (plan.finish)(slots)
}

/// Starts `plan` as a nonblocking collective and returns its request in `request`.
fn start(s: &mut State, comm: MPI_Comm, plan: Plan, request: *mut MPI_Request) -> Res<()> {
    if request.is_null() {
        return fail(ErrorClass::Arg, "NULL request pointer");
    }
    let (c, handler) = comm_of(s, comm)?;
    let entry = started(s, c, handler, plan, true)?;
    let h = s.new_request(entry)?;
    // SAFETY: non-null output argument.
    unsafe { out(request, h) }
}

/// `plan` started in the engine, behind the request that completes it; in the tag space of the
/// nonblocking collectives or of the blocking ones.
fn started(
    s: &mut State,
    c: Arc<Comm>,
    handler: crate::state::Handler,
    plan: Plan,
    nonblocking: bool,
) -> Res<RequestEntry> {
    let id = s.world()?.engine.start_schedule_as(plan.schedule, nonblocking)?;
    Ok(RequestEntry::collective(id, c, handler, Box::new(move |_, bufs| (plan.finish)(bufs))))
}

/// A persistent collective (MPI-4.0 §6.12, Open MPI 4.1's `MPIX_*_init`): what its init call
/// was given, planned anew at every `MPI_Start` (the send buffers are read then, as a
/// nonblocking collective started there would read them), and the private handles standing in
/// for the program's user datatypes and ops, which it may free after the init call.
#[derive(Clone)]
pub struct PersistentColl {
    plan: Arc<PlanFn>,
    /// Private datatype and op handles, released with the request.
    held: Vec<usize>,
}

type PlanFn = dyn Fn(&mut State, &Arc<Comm>) -> Res<Plan>;

impl std::fmt::Debug for PersistentColl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentColl").field("held", &self.held).finish()
    }
}

// SAFETY: the plan closure holds the program's buffer addresses and handles as the init call
// gave them: plain values, read only inside MPI calls, with the state locked, on whichever
// thread makes the call (as every MPI call's arguments are).
unsafe impl Send for PersistentColl {}
// SAFETY: as above: the closure is only called with the state locked.
unsafe impl Sync for PersistentColl {}

/// `MPIX_*_init`: checks the arguments by planning the collective once (nothing runs, and the
/// call is collective, so every member takes the same steps), keeps `plan` to plan it again at
/// every start, and returns an inactive persistent request in `request`. `held` are the
/// private handles [`keep`] made; they go with the request, or now if the call fails.
pub(super) fn persistent_call(
    s: &mut State,
    comm: MPI_Comm,
    request: *mut MPI_Request,
    held: Vec<usize>,
    plan: impl Fn(&mut State, &Arc<Comm>) -> Res<Plan> + 'static,
) -> Res<()> {
    let pc = PersistentColl { plan: Arc::new(plan), held };
    let made = (|| {
        if request.is_null() {
            return fail(ErrorClass::Arg, "NULL request pointer");
        }
        let (c, handler) = comm_of(s, comm)?;
        (pc.plan)(s, &c)?;
        let req = crate::state::Request::persistent(c, false, crate::state::Persistent::Collective(pc.clone()));
        s.new_request(RequestEntry { req, handler })
    })();
    match made {
        // SAFETY: non-null output argument.
        Ok(h) => unsafe { out(request, h) },
        Err(e) => {
            release_persistent(s, &pc);
            Err(e)
        }
    }
}

/// Starts the persistent collective `pc` on `comm`: its plan made now, behind a fresh request
/// the persistent one takes over.
pub(crate) fn start_persistent(
    s: &mut State,
    pc: &PersistentColl,
    comm: Arc<Comm>,
    handler: crate::state::Handler,
) -> Res<RequestEntry> {
    let plan = (pc.plan)(s, &comm)?;
    started(s, comm, handler, plan, true)
}

/// Releases the private handles of a persistent collective whose request is freed.
pub(crate) fn release_persistent(s: &mut State, pc: &PersistentColl) {
    release_held(s, &pc.held);
}

/// Releases private handles [`keep`] made.
pub(super) fn release_held(s: &mut State, held: &[usize]) {
    for &h in held {
        if let Some(i) = crate::state::decode(h, crate::state::Kind::Datatype) {
            s.datatypes.remove(i);
        } else if let Some(i) = crate::state::decode(h, crate::state::Kind::Op) {
            s.ops.remove(i);
        }
    }
}

/// A datatype or op handle argument of a persistent collective, as its plan reads it at every
/// start: a user one is replaced by a private handle to the same object (recorded in `held`),
/// a predefined one stays.
pub(super) fn keep(s: &mut State, h: *mut c_void, held: &mut Vec<usize>) -> Res<*mut c_void> {
    use crate::state::{decode, encode, table_full, Kind};
    let addr = h as usize;
    let private = if decode(addr, Kind::Datatype).is_some() {
        let dt = s.datatype(h)?;
        encode(Kind::Datatype, s.datatypes.insert(dt).ok_or_else(|| table_full("datatypes"))?)
    } else if decode(addr, Kind::Op).is_some() {
        let op = s.op(h)?;
        encode(Kind::Op, s.ops.insert(op).ok_or_else(|| table_full("ops"))?)
    } else {
        return Ok(h);
    };
    held.push(private);
    Ok(private as *mut c_void)
}

/// Runs a collective call: a blocking one first tries `direct` (the shared-memory slots, which
/// says whether it ran the collective); otherwise `make` checks the arguments and plans the
/// collective, which then runs at once (`request` is `None`) or is started behind a request.
pub(super) fn coll_call(
    name: &'static str,
    comm: MPI_Comm,
    request: Option<*mut MPI_Request>,
    direct: impl FnOnce(&mut State, &Arc<Comm>) -> Res<bool>,
    make: impl FnOnce(&mut State, &Arc<Comm>) -> Res<Plan>,
) -> c_int {
    if request.is_none() && crate::export::thread_multiple() {
        // At MPI_THREAD_MULTIPLE a blocking collective runs as its nonblocking form, waited for
        // without holding the state (the shared-memory slots wait holding it: not used).
        let post = |s: &mut State| {
            let (c, handler) = comm_of(s, comm)?;
            let plan = make(s, &c)?;
            Ok([started(s, c, handler, plan, false)?])
        };
        return crate::api::p2p::blocking(name, Some(comm), post, |_, [(_, error)]| error.map_or(Ok(()), Err));
    }
    call(name, Some(comm), |s| {
        let (c, _) = comm_of(s, comm)?;
        if request.is_none() && direct(s, &c)? {
            return Ok(());
        }
        let plan = make(s, &c)?;
        match request {
            None => execute(s, plan),
            Some(r) => start(s, comm, plan, r),
        }
    })
}

/// The packed input of a reduction into `recv`: the send buffer, or with `MPI_IN_PLACE` the
/// receive buffer itself (the same count of the same type).
///
/// # Safety
/// Application buffers valid until the collective completes.
unsafe fn reduction_input(sendbuf: *const c_void, recv: &Typed) -> Res<Vec<u8>> {
    let source =
        if in_place(sendbuf) { recv.clone() } else { recv.at(sendbuf as isize - recv.addr as isize, recv.count) };
    // SAFETY: per the contract.
    unsafe { source.pack() }
}

/// The input of a reduction into `recv` as it is sent: the send buffer read where it is,
/// unless it is the receive buffer itself (`MPI_IN_PLACE`) or overlaps it; then a packed
/// copy, made before the receive buffer is lent out to be written.
///
/// # Safety
/// Application buffers valid, the send buffer unmodified, until the collective completes.
unsafe fn reduction_send(sendbuf: *const c_void, recv: &Typed) -> Res<SendData> {
    let (lo, hi) = recv.dt.span(recv.count);
    let (send_at, recv_at) = (sendbuf as isize, recv.addr as isize);
    let overlaps = send_at < recv_at + hi && recv_at + lo < send_at + hi;
    if in_place(sendbuf) || overlaps {
        // SAFETY: per the contract.
        return Ok(SendData::Owned(unsafe { reduction_input(sendbuf, recv)? }));
    }
    // SAFETY: per the contract.
    unsafe { recv.at(sendbuf as isize - recv.addr as isize, recv.count).sent() }
}

/// Unpacks slot `slot` of a finished schedule into `t`.
fn unpack_slot(t: Typed, slot: Slot) -> impl FnOnce(Vec<Vec<u8>>) -> Res<()> + Send {
    // SAFETY: the application's buffer, valid until the collective completes (§5.12).
    move |slots| unsafe { t.unpack(&slots[slot]) }
}

/// The counts and displacements that make the fixed-size collectives (`Gather`, `Scatter`,
/// `Allgather`) their `v` forms: `count` elements per rank, back to back.
fn uniform(ranks: c_int, count: c_int) -> (Vec<usize>, Vec<isize>) {
    let count = count.max(0) as usize;
    let n = ranks.max(0) as usize;
    (vec![count; n], (0..n).map(|i| (i * count) as isize).collect())
}

pub(super) fn counts(p: *const c_int, n: usize) -> Res<Vec<usize>> {
    // SAFETY: MPI's array arguments have one entry per rank.
    let v = unsafe { c_array(p, n)? };
    v.iter()
        .map(|&c| if c < 0 { fail(ErrorClass::Count, format!("count {c} is negative")) } else { Ok(c as usize) })
        .collect()
}

pub(super) fn displs(p: *const c_int, n: usize) -> Res<Vec<isize>> {
    // SAFETY: MPI's array arguments have one entry per rank.
    Ok(unsafe { c_array(p, n)? }.iter().map(|&d| d as isize).collect())
}

// Plans, one per algorithm family. Each is `unsafe` for the same reason: the buffers are the
// application's and must stay valid until the collective completes (at once for a blocking
// call, at its Wait/Test for a nonblocking one).

/// `MPI_Bcast` through the shared-memory slots ([`slotcoll`]), where they apply: the
/// application's buffer itself when contiguous, else packed and unpacked.
///
/// # Safety
/// The application's buffer, valid for the call.
unsafe fn bcast_in_slots(
    s: &mut State,
    c: &Comm,
    buffer: *mut c_void,
    count: c_int,
    dt: MPI_Datatype,
    root: c_int,
) -> Res<bool> {
    if c.is_inter() {
        return Ok(false);
    }
    let t = Typed::new(s, buffer, count, dt)?;
    check_root(c, root)?;
    if t.packed_len() > slotcoll::MAX_BYTES {
        return Ok(false);
    }
    let engine = &mut s.world()?.engine;
    if c.rank == root {
        // SAFETY: per the contract.
        let data = unsafe { t.sent()? };
        return Ok(slotcoll::bcast_from_root(engine, c, data.as_slice())?);
    }
    // SAFETY: per the contract.
    unsafe { into_recv(&t, engine, |buf, e| slotcoll::bcast(e, c, root, buf)) }
}

/// Runs `run` with the receive buffer `recv` as bytes: the application's buffer itself when
/// contiguous, else a staging buffer unpacked into it once `run` says it ran.
///
/// # Safety
/// `recv` describes the application's buffer, valid for the call.
unsafe fn into_recv(
    recv: &Typed,
    engine: &mut Engine,
    run: impl FnOnce(&mut [u8], &mut Engine) -> MpiResult<bool>,
) -> Res<bool> {
    // SAFETY: per the contract.
    if let Some(out) = unsafe { recv.contiguous_mut()? } {
        return Ok(run(out, engine)?);
    }
    let mut packed = vec![0; recv.packed_len()];
    if !run(&mut packed, engine)? {
        return Ok(false);
    }
    // SAFETY: per the contract.
    unsafe { recv.unpack(&packed)? };
    Ok(true)
}

/// Which collective of blocks (one per member) runs through the slots.
#[derive(Clone, Copy)]
enum Blocks {
    Allgather,
    Alltoall,
    Gather(c_int),
    Scatter(c_int),
}

/// `MPI_Allgather`, `MPI_Alltoall`, `MPI_Gather` or `MPI_Scatter` through the shared-memory
/// slots ([`slotcoll`]), where they apply: the buffers as they are when contiguous, else packed
/// and unpacked.
///
/// # Safety
/// The application's buffers, valid for the call.
#[allow(clippy::too_many_arguments)]
unsafe fn blocks_in_slots(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    sendcount: c_int,
    sendtype: MPI_Datatype,
    recvbuf: *mut c_void,
    recvcount: c_int,
    recvtype: MPI_Datatype,
    how: Blocks,
) -> Res<bool> {
    if c.is_inter() {
        return Ok(false);
    }
    let n = c.size();
    let root = match how {
        Blocks::Gather(root) | Blocks::Scatter(root) => {
            check_root(c, root)?;
            Some(root)
        }
        Blocks::Allgather | Blocks::Alltoall => None,
    };
    let at_root = root == Some(c.rank);
    // The elements each buffer holds: a block, or a block for every member.
    let (send_count, recv_count) = match how {
        Blocks::Allgather => (Some(sendcount), recvcount.checked_mul(n)),
        Blocks::Alltoall => (sendcount.checked_mul(n), recvcount.checked_mul(n)),
        Blocks::Gather(_) => (Some(sendcount), if at_root { recvcount.checked_mul(n) } else { Some(recvcount) }),
        Blocks::Scatter(_) => (if at_root { sendcount.checked_mul(n) } else { Some(sendcount) }, Some(recvcount)),
    };
    let (Some(send_count), Some(recv_count)) = (send_count, recv_count) else { return Ok(false) };
    // The receive arguments, where they are significant (not at a gather's non-roots, nor at
    // a scatter's root with MPI_IN_PLACE).
    let recv = match how {
        Blocks::Gather(_) if !at_root => None,
        Blocks::Scatter(_) if at_root && in_place(recvbuf) => None,
        _ => Some(Typed::new(s, recvbuf, recv_count, recvtype)?),
    };
    // What this rank publishes, and the largest part a member publishes (the same number at
    // every member: it decides for all of them whether the slots apply).
    let (mine, largest) = match how {
        Blocks::Allgather | Blocks::Alltoall if in_place(sendbuf) => return Ok(false),
        Blocks::Scatter(_) if !at_root => {
            (SendData::Owned(Vec::new()), recv.as_ref().map_or(0, Typed::packed_len) * n as usize)
        }
        Blocks::Gather(root) if at_root && in_place(sendbuf) => {
            // The root's own block is in the receive buffer already: a copy, as the buffer is
            // written whole.
            let recv = recv.as_ref().expect("significant at the root");
            let own = recv.at(root as isize * recvcount as isize * recv.dt.extent(), recvcount as usize);
            // SAFETY: per the contract.
            let own = SendData::Owned(unsafe { own.pack()? });
            let len = own.len();
            (own, len)
        }
        _ => {
            // SAFETY: per the contract.
            let mine = unsafe { Typed::new(s, sendbuf, send_count, sendtype)?.sent()? };
            let len = mine.len();
            (mine, len)
        }
    };
    if largest > slotcoll::MAX_BYTES {
        return Ok(false);
    }
    let engine = &mut s.world()?.engine;
    let mine = mine.as_slice();
    let Some(recv) = recv else {
        return Ok(match how {
            Blocks::Gather(_) => slotcoll::gather(engine, c, mine, None)?,
            _ => slotcoll::scatter_from_root(engine, c, mine, None)?,
        });
    };
    let run = |out: &mut [u8], e: &mut Engine| match how {
        Blocks::Gather(_) => slotcoll::gather(e, c, mine, Some(out)),
        Blocks::Scatter(_) if at_root => slotcoll::scatter_from_root(e, c, mine, Some(out)),
        Blocks::Scatter(root) => slotcoll::scatter(e, c, root, out),
        Blocks::Allgather => slotcoll::allgather(e, c, mine, out),
        Blocks::Alltoall => slotcoll::alltoall(e, c, mine, out),
    };
    // SAFETY: per the contract.
    unsafe { into_recv(&recv, engine, run) }
}

/// `MPI_Reduce_scatter_block` through the shared-memory slots ([`slotcoll`]), where they
/// apply.
///
/// # Safety
/// The application's buffers, valid for the call.
unsafe fn reduce_scatter_block_in_slots(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    recvcount: c_int,
    dt: MPI_Datatype,
    op: MPI_Op,
) -> Res<bool> {
    let Some(total) = recvcount.checked_mul(c.size()) else { return Ok(false) };
    if c.is_inter() {
        return Ok(false);
    }
    let reducer = ShimReducer::new(s, op, dt)?;
    // With MPI_IN_PLACE every block is in the receive buffer, whose first block the result
    // overwrites: a copy.
    // SAFETY: per the contract.
    let input = unsafe { reduction_send(sendbuf, &Typed::new(s, recvbuf, total, dt)?)? };
    if input.len() > slotcoll::MAX_BYTES {
        return Ok(false);
    }
    let recv = Typed::new(s, recvbuf, recvcount, dt)?;
    let engine = &mut s.world()?.engine;
    let input = input.as_slice();
    // SAFETY: per the contract.
    unsafe { into_recv(&recv, engine, |out, e| slotcoll::reduce_scatter_block(e, c, input, out, &reducer)) }
}

/// What a reduction through the slots computes, and where.
#[derive(Clone, Copy)]
enum Reduction {
    /// `MPI_Reduce`: the result at this root.
    To(c_int),
    /// `MPI_Allreduce`.
    All,
    /// `MPI_Scan`.
    Scan,
}

/// `MPI_Reduce`, `MPI_Allreduce` or `MPI_Scan` through the shared-memory slots ([`slotcoll`]),
/// where they apply: the result lands in the receive buffer itself when it is contiguous,
/// else it is unpacked there.
///
/// # Safety
/// The application's buffers, valid for the call.
#[allow(clippy::too_many_arguments)]
unsafe fn reduce_in_slots(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: c_int,
    dt: MPI_Datatype,
    op: MPI_Op,
    what: Reduction,
) -> Res<bool> {
    if c.is_inter() {
        return Ok(false);
    }
    let root = match what {
        Reduction::To(root) => {
            check_root(c, root)?;
            Some(root)
        }
        Reduction::All | Reduction::Scan => None,
    };
    let reducer = ShimReducer::new(s, op, dt)?;
    let gets_result = root.is_none_or(|r| r == c.rank);
    let recv = if gets_result { Typed::new(s, recvbuf, count, dt)? } else { Typed::new(s, sendbuf, count, dt)? };
    if recv.packed_len() > slotcoll::MAX_BYTES {
        return Ok(false);
    }
    let engine = &mut s.world()?.engine;
    if !gets_result {
        // SAFETY: per the contract.
        let input = unsafe { recv.sent()? };
        return Ok(slotcoll::reduce(engine, c, input.as_slice(), None, &reducer)?);
    }
    // SAFETY: per the contract.
    let input = unsafe { reduction_send(sendbuf, &recv)? };
    let run = |out: &mut [u8], e: &mut Engine| match what {
        Reduction::To(_) => slotcoll::reduce(e, c, input.as_slice(), Some(out), &reducer),
        Reduction::All => slotcoll::allreduce(e, c, input.as_slice(), out, &reducer),
        Reduction::Scan => slotcoll::scan(e, c, input.as_slice(), out, &reducer),
    };
    // SAFETY: per the contract.
    unsafe { into_recv(&recv, engine, run) }
}

/// A blocking barrier over `comm`, reported as the call `name` (`MPI_Comm_disconnect`'s).
pub(crate) fn barrier_call(name: &'static str, comm: MPI_Comm) -> c_int {
    coll_call(name, comm, None, |_, _| Ok(false), |_, c| Ok(barrier_plan(c)))
}

fn barrier_plan(c: &Comm) -> Plan {
    Plan::nothing_after(coll::barrier_schedule(c))
}

unsafe fn bcast_plan(
    s: &mut State,
    c: &Comm,
    buffer: *mut c_void,
    count: c_int,
    dt: MPI_Datatype,
    root: c_int,
) -> Res<Plan> {
    if c.is_inter() {
        let root = inter_root(c, root)?;
        if root == InterRoot::Idle {
            // The buffer arguments are not significant here (§5.4).
            return Ok(Plan::nothing_after(intercoll::idle_schedule(c, kind::BCAST)));
        }
        let t = Typed::new(s, buffer, count, dt)?;
        // SAFETY: per the contract.
        let packed = if root == InterRoot::Here { unsafe { t.pack()? } } else { vec![0; t.packed_len()] };
        let (sched, slot) = intercoll::bcast_schedule(c, root, packed);
        return Ok(match root {
            InterRoot::Remote(_) => Plan::new(sched, unpack_slot(t, slot)),
            _ => Plan::nothing_after(sched),
        });
    }
    let t = Typed::new(s, buffer, count, dt)?;
    check_root(c, root)?;
    if c.rank == root {
        // SAFETY: per the contract: unmodified until the collective completes. A contiguous
        // buffer is sent from where it is.
        let data = unsafe { t.sent()? };
        return Ok(Plan::nothing_after(coll::bcast_schedule(c, root, Outside::Send(data)).0));
    }
    // SAFETY: per the contract. A contiguous buffer takes the message itself, and this rank
    // forwards it to its subtree from there.
    let (buf, staged) = unsafe { t.landing()? };
    let (sched, slot) = coll::bcast_schedule(c, root, Outside::Recv(buf));
    if !staged {
        return Ok(Plan::nothing_after(sched));
    }
    Ok(Plan::new(sched, unpack_slot(t, slot)))
}

#[allow(clippy::too_many_arguments)]
unsafe fn reduce_plan(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: c_int,
    dt: MPI_Datatype,
    op: MPI_Op,
    root: c_int,
) -> Res<Plan> {
    if c.is_inter() {
        // The root receives the remote group's reduction.
        check_not_in_place(c, &[sendbuf, recvbuf])?;
        let root = inter_root(c, root)?;
        if root == InterRoot::Idle {
            // No argument but the root is significant here (§5.9.1).
            return Ok(Plan::nothing_after(intercoll::idle_schedule(c, kind::REDUCE)));
        }
        let reducer = Box::new(ShimReducer::new(s, op, dt)?);
        return Ok(match root {
            InterRoot::Here => {
                let recv = Typed::new(s, recvbuf, count, dt)?;
                let (sched, slot) = intercoll::reduce_schedule(c, root, vec![0; recv.packed_len()], reducer);
                Plan::new(sched, unpack_slot(recv, slot))
            }
            _ => {
                // SAFETY: per the contract.
                let input = unsafe { Typed::new(s, sendbuf, count, dt)?.pack()? };
                Plan::nothing_after(intercoll::reduce_schedule(c, root, input, reducer).0)
            }
        });
    }
    check_root(c, root)?;
    let reducer = Box::new(ShimReducer::new(s, op, dt)?);
    if c.rank != root {
        // SAFETY: per the contract: unmodified until the collective completes.
        let input = unsafe { Typed::new(s, sendbuf, count, dt)?.sent()? };
        return Ok(Plan::nothing_after(coll::reduce_into_schedule(c, root, input, None, reducer)?));
    }
    let recv = Typed::new(s, recvbuf, count, dt)?;
    if recv.dt.is_contiguous() {
        // SAFETY: per the contract.
        let input = unsafe { reduction_send(sendbuf, &recv)? };
        // SAFETY: per the contract.
        if let Some(out) = unsafe { recv.contiguous_mut()? } {
            return Ok(Plan::nothing_after(coll::reduce_into_schedule(c, root, input, Some(out), reducer)?));
        }
    }
    // SAFETY: per the contract.
    let input = unsafe { reduction_input(sendbuf, &recv)? };
    let (sched, slot) = coll::reduce_schedule(c, root, input, reducer);
    Ok(Plan::new(sched, unpack_slot(recv, slot)))
}

/// `Allreduce`, `Scan` (`Some(false)`) and `Exscan` (`Some(true)`).
#[allow(clippy::too_many_arguments)]
unsafe fn allreduce_plan(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: c_int,
    dt: MPI_Datatype,
    op: MPI_Op,
    scan: Option<bool>,
) -> Res<Plan> {
    if c.is_inter() && scan.is_some() {
        return fail(ErrorClass::Comm, "scans are not defined on an inter-communicator (MPI-3.1 §5.11)");
    }
    check_not_in_place(c, &[sendbuf])?;
    let reducer = Box::new(ShimReducer::new(s, op, dt)?);
    let recv = Typed::new(s, recvbuf, count, dt)?;
    if scan.is_none() && recv.dt.is_contiguous() {
        // The result goes straight into the receive buffer.
        // SAFETY: per the contract.
        let input = unsafe { reduction_send(sendbuf, &recv)? };
        // SAFETY: per the contract.
        if let Some(out) = unsafe { recv.contiguous_mut()? } {
            return Ok(Plan::nothing_after(coll::allreduce_into_schedule(c, input, out, reducer)?));
        }
    }
    // SAFETY: per the contract.
    let input = unsafe { reduction_input(sendbuf, &recv)? };
    let (sched, slot) = match scan {
        None => coll::allreduce_schedule(c, input, reducer),
        Some(exclusive) => match coll::scan_schedule(c, input, reducer, exclusive) {
            (sched, Some(slot)) => (sched, slot),
            // Exscan at rank 0: its receive buffer stays as it was.
            (sched, None) => return Ok(Plan::nothing_after(sched)),
        },
    };
    Ok(Plan::new(sched, unpack_slot(recv, slot)))
}

/// `Reduce_scatter(_block)`: with parts of one size on a power of two of ranks (large and
/// commutative), Rabenseifner's reduce-scatter, each rank's part landing in its receive
/// buffer; otherwise an allreduce of everything, of which this rank keeps its part.
#[allow(clippy::too_many_arguments)]
unsafe fn reduce_scatter_plan(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    mine: c_int,
    counts: &[usize],
    dt: MPI_Datatype,
    op: MPI_Op,
) -> Res<Plan> {
    check_not_in_place(c, &[sendbuf])?;
    let reducer = ShimReducer::new(s, op, dt)?;
    let total: usize = counts.iter().sum();
    // With MPI_IN_PLACE the input is in the receive buffer, `total` elements long (§5.10.1).
    let src = if in_place(sendbuf) { recvbuf as *const c_void } else { sendbuf };
    let input = Typed::new(s, src, total as c_int, dt)?;
    let same_parts = counts.iter().all(|&k| k == counts[0]);
    if same_parts && coll::reduce_scatter_blocks_fit(c, total * input.dt.size(), &reducer) {
        let data = if in_place(sendbuf) {
            // Packed before the receive buffer, where it is, is lent out to be written.
            // SAFETY: per the contract.
            SendData::Owned(unsafe { input.pack()? })
        } else {
            // SAFETY: per the contract: unmodified until the collective completes.
            unsafe { input.sent()? }
        };
        let out = Typed::new(s, recvbuf, mine, dt)?;
        // SAFETY: per the contract.
        let (buf, staged) = unsafe { out.landing()? };
        let (sched, slot) = coll::reduce_scatter_block_schedule(c, data, buf, Box::new(reducer))?;
        return Ok(Plan::new(sched, unpack_if(staged, out, slot)));
    }
    // SAFETY: per the contract.
    let all = unsafe { input.pack()? };
    let size = input.dt.size();
    let start: usize = counts[..c.rank as usize].iter().sum::<usize>() * size;
    let out = Typed::new(s, recvbuf, mine, dt)?;
    let (sched, slot) = coll::allreduce_schedule(c, all, Box::new(reducer));
    // SAFETY: the application's buffer, valid until the collective completes.
    Ok(Plan::new(sched, move |slots| unsafe { out.unpack(&slots[slot][start..start + mine as usize * size]) }))
}

#[allow(clippy::too_many_arguments)]
unsafe fn gatherv_plan(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    sendcount: c_int,
    sendtype: MPI_Datatype,
    recvbuf: *mut c_void,
    cnts: &[usize],
    dsp: &[isize],
    recvtype: MPI_Datatype,
    root: c_int,
) -> Res<Plan> {
    if c.is_inter() {
        check_not_in_place(c, &[sendbuf])?;
        return Ok(match inter_root(c, root)? {
            InterRoot::Here => {
                let r = Typed::new(s, recvbuf, 0, recvtype)?;
                // SAFETY: per the contract.
                let l = unsafe { landings(v_parts(&r, cnts, dsp, None))? };
                let recv = l.bufs.into_iter().flatten().collect();
                let (sched, slots) = intercoll::gatherv_schedule(c, InterRoot::Here, SendData::Owned(Vec::new()), recv);
                Plan::new(sched, Landings::finish(l.staged, slots))
            }
            InterRoot::Idle => Plan::nothing_after(intercoll::idle_schedule(c, kind::GATHER)),
            remote => {
                // SAFETY: per the contract: unmodified until the collective completes.
                let mine = unsafe { Typed::new(s, sendbuf, sendcount, sendtype)?.sent()? };
                Plan::nothing_after(intercoll::gatherv_schedule(c, remote, mine, Vec::new()).0)
            }
        });
    }
    check_root(c, root)?;
    if c.rank != root {
        // SAFETY: per the contract: unmodified until the collective completes.
        let mine = unsafe { Typed::new(s, sendbuf, sendcount, sendtype)?.sent()? };
        return Ok(Plan::nothing_after(coll::gatherv_schedule(c, root, mine, Vec::new())?.0));
    }
    let r = Typed::new(s, recvbuf, 0, recvtype)?;
    // With MPI_IN_PLACE the root's part is in place already and its send buffer is not read.
    let (mine, in_place_at) = if in_place(sendbuf) {
        (SendData::Owned(Vec::new()), Some(root as usize))
    } else {
        // SAFETY: per the contract: unmodified until the collective completes.
        (unsafe { Typed::new(s, sendbuf, sendcount, sendtype)?.sent()? }, None)
    };
    // SAFETY: per the contract.
    let l = unsafe { landings(v_parts(&r, cnts, dsp, in_place_at))? };
    let (sched, slots) = coll::gatherv_schedule(c, root, mine, l.bufs)?;
    Ok(Plan::new(sched, Landings::finish(l.staged, slots)))
}

/// Where each part of a receive lands: the application's memory itself where the layout is
/// contiguous, else a staging buffer, which is listed (with its part, by index) for unpacking.
/// A part given as `None` gets no landing: it is this rank's own part, in place already.
///
/// # Safety
/// The parts must describe the application's receive buffer, left alone until the collective
/// completes.
pub(super) unsafe fn landings(parts: impl IntoIterator<Item = Option<Typed>>) -> Res<Landings> {
    let mut landing = Vec::new();
    let mut staged = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        let Some(part) = part else {
            landing.push(None);
            continue;
        };
        // SAFETY: per the contract.
        let (buf, is_staged) = unsafe { part.landing()? };
        landing.push(Some(buf));
        if is_staged {
            staged.push((i, part));
        }
    }
    Ok(Landings { bufs: landing, staged })
}

/// The parts of a `v` receive into `r` (see [`Typed::part`]), but none for part `skip`.
fn v_parts<'a>(
    r: &'a Typed,
    cnts: &'a [usize],
    dsp: &'a [isize],
    skip: Option<usize>,
) -> impl Iterator<Item = Option<Typed>> + 'a {
    (0..cnts.len()).map(move |i| (Some(i) != skip).then(|| r.part(cnts, dsp, i)))
}

/// See [`landings`].
pub(super) struct Landings {
    pub(super) bufs: Vec<Option<RecvBuf>>,
    /// The parts received into staging buffers, by index, to unpack.
    pub(super) staged: Vec<(usize, Typed)>,
}

impl Landings {
    /// What finishes the collective once part `i` is in slot `slots[i]`: the staged parts
    /// unpacked.
    pub(super) fn finish(staged: Vec<(usize, Typed)>, slots: Vec<Slot>) -> impl FnOnce(Vec<Vec<u8>>) -> Res<()> + Send {
        move |bufs| unpack_all(&bufs, staged.into_iter().map(|(i, t)| (slots[i], t)).collect())
    }
}

/// Unpacks each `(slot, target)` of a finished schedule.
fn unpack_all(bufs: &[Vec<u8>], targets: Vec<(Slot, Typed)>) -> Res<()> {
    for (slot, t) in targets {
        // SAFETY: the application's buffers, valid until the collective completes (§5.12).
        unsafe { t.unpack(&bufs[slot])? };
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
unsafe fn scatterv_plan(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    cnts: &[usize],
    dsp: &[isize],
    sendtype: MPI_Datatype,
    recvbuf: *mut c_void,
    recvcount: c_int,
    recvtype: MPI_Datatype,
    root: c_int,
) -> Res<Plan> {
    // The root's pieces, each sent from where it is when contiguous.
    let pieces = |s: &mut State, skip: Option<usize>| -> Res<Vec<SendData>> {
        let send = Typed::new(s, sendbuf, 0, sendtype)?;
        (0..cnts.len())
            .map(|i| {
                if Some(i) == skip {
                    return Ok(SendData::Owned(Vec::new()));
                }
                // SAFETY: per the contract: unmodified until the collective completes.
                unsafe { send.part(cnts, dsp, i).sent() }
            })
            .collect()
    };
    if c.is_inter() {
        check_not_in_place(c, &[recvbuf])?;
        return Ok(match inter_root(c, root)? {
            InterRoot::Here => {
                Plan::nothing_after(intercoll::scatterv_schedule(c, InterRoot::Here, pieces(s, None)?, None).0)
            }
            InterRoot::Idle => Plan::nothing_after(intercoll::idle_schedule(c, kind::SCATTER)),
            remote => {
                let recv = Typed::new(s, recvbuf, recvcount, recvtype)?;
                // SAFETY: per the contract.
                let (buf, staged) = unsafe { recv.landing()? };
                let (sched, slot) = intercoll::scatterv_schedule(c, remote, Vec::new(), Some(buf));
                Plan::new(sched, unpack_if(staged, recv, slot))
            }
        });
    }
    check_root(c, root)?;
    let is_root = c.rank == root;
    // With MPI_IN_PLACE at the root its own piece stays where it is.
    let keep_own = is_root && in_place(recvbuf);
    let pieces = if is_root { pieces(s, keep_own.then_some(root as usize))? } else { Vec::new() };
    if keep_own {
        return Ok(Plan::nothing_after(coll::scatterv_schedule(c, root, pieces, None)?.0));
    }
    let recv = Typed::new(s, recvbuf, recvcount, recvtype)?;
    // SAFETY: per the contract.
    let (buf, staged) = unsafe { recv.landing()? };
    let (sched, slot) = coll::scatterv_schedule(c, root, pieces, Some(buf))?;
    Ok(Plan::new(sched, unpack_if(staged, recv, slot)))
}

/// Unpacks slot `slot` into `t` if the receive was `staged` (else it landed in place).
fn unpack_if(staged: bool, t: Typed, slot: Slot) -> impl FnOnce(Vec<Vec<u8>>) -> Res<()> + Send {
    let unpack = unpack_slot(t, slot);
    move |slots| if staged { unpack(slots) } else { Ok(()) }
}

#[allow(clippy::too_many_arguments)]
unsafe fn allgatherv_plan(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    sendcount: c_int,
    sendtype: MPI_Datatype,
    recvbuf: *mut c_void,
    cnts: &[usize],
    dsp: &[isize],
    recvtype: MPI_Datatype,
) -> Res<Plan> {
    check_not_in_place(c, &[sendbuf])?;
    let recv = Typed::new(s, recvbuf, 0, recvtype)?;
    // On an inter-communicator every part comes from the remote group.
    let me = (!c.is_inter()).then_some(c.rank as usize);
    let mine = if in_place(sendbuf) {
        // SAFETY: per the contract: with MPI_IN_PLACE this rank's part of the receive buffer
        // is its input, not received into.
        unsafe { recv.part(cnts, dsp, me.unwrap_or_default()).sent()? }
    } else {
        // SAFETY: per the contract: unmodified until the collective completes.
        unsafe { Typed::new(s, sendbuf, sendcount, sendtype)?.sent()? }
    };
    // SAFETY: per the contract.
    let l = unsafe { landings(v_parts(&recv, cnts, dsp, me.filter(|_| in_place(sendbuf))))? };
    let (sched, slots) = coll::allgatherv_schedule(c, mine, l.bufs)?;
    Ok(Plan::new(sched, Landings::finish(l.staged, slots)))
}

/// The general all-to-all: part `i` of `send` goes to rank `i`, part `i` of `recv` comes
/// from rank `i`. A contiguous part goes straight from or into the application's buffer (the
/// transport may then copy it once, from the sender's buffer to the receiver's); the others
/// are packed and unpacked. With `MPI_IN_PLACE` (`in_place`) the two lists describe the same
/// memory, so every part to send is packed before anything is received.
///
/// # Safety
/// The triples must describe the application's buffers, valid (and the receive parts left
/// alone) until the collective completes.
unsafe fn alltoallw_plan(c: &Comm, send: Vec<Typed>, recv: Vec<Typed>, in_place: bool) -> Res<Plan> {
    let mut out_parts = Vec::with_capacity(send.len());
    for t in &send {
        out_parts.push(if in_place {
            // SAFETY: per the contract.
            SendData::Owned(unsafe { t.pack()? })
        } else {
            // SAFETY: per the contract: unmodified until the collective completes.
            unsafe { t.sent()? }
        });
    }
    // SAFETY: per the contract.
    let l = unsafe { landings(recv.into_iter().map(Some))? };
    let (sched, slots) = coll::alltoallv_schedule(c, out_parts, l.bufs.into_iter().flatten().collect());
    Ok(Plan::new(sched, Landings::finish(l.staged, slots)))
}

/// The parts of `MPI_Alltoall`: `count` elements per rank, back to back.
#[allow(clippy::too_many_arguments)]
fn alltoall_parts(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    sendcount: c_int,
    sendtype: MPI_Datatype,
    recvbuf: *mut c_void,
    recvcount: c_int,
    recvtype: MPI_Datatype,
) -> Res<(Vec<Typed>, Vec<Typed>)> {
    check_not_in_place(c, &[sendbuf])?;
    let n = c.p2p_size() as usize;
    let st = if in_place(sendbuf) { recvtype } else { sendtype };
    let sc = if in_place(sendbuf) { recvcount } else { sendcount };
    let send = Typed::new(s, if in_place(sendbuf) { recvbuf } else { sendbuf }, sc, st)?;
    let recv = Typed::new(s, recvbuf, recvcount, recvtype)?;
    Ok(((0..n).map(|i| send.block(i)).collect(), (0..n).map(|i| recv.block(i)).collect()))
}

/// The parts of `MPI_Alltoallv`: counts and displacements (in extents) per rank.
#[allow(clippy::too_many_arguments)]
fn alltoallv_parts(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    sendcounts: *const c_int,
    sdispls: *const c_int,
    sendtype: MPI_Datatype,
    recvbuf: *mut c_void,
    recvcounts: *const c_int,
    rdispls: *const c_int,
    recvtype: MPI_Datatype,
) -> Res<(Vec<Typed>, Vec<Typed>)> {
    check_not_in_place(c, &[sendbuf])?;
    let n = c.p2p_size() as usize;
    let (rc, rd) = (counts(recvcounts, n)?, displs(rdispls, n)?);
    let recv = Typed::new(s, recvbuf, 0, recvtype)?;
    let recv_parts: Vec<Typed> = (0..n).map(|i| recv.part(&rc, &rd, i)).collect();
    let send_parts: Vec<Typed> = if in_place(sendbuf) {
        recv_parts.clone()
    } else {
        let (sc, sd) = (counts(sendcounts, n)?, displs(sdispls, n)?);
        let send = Typed::new(s, sendbuf, 0, sendtype)?;
        (0..n).map(|i| send.part(&sc, &sd, i)).collect()
    };
    Ok((send_parts, recv_parts))
}

/// The parts of `MPI_Alltoallw`: a datatype per rank, displacements in bytes.
#[allow(clippy::too_many_arguments)]
fn alltoallw_parts(
    s: &mut State,
    c: &Comm,
    sendbuf: *const c_void,
    sendcounts: *const c_int,
    sdispls: *const c_int,
    sendtypes: *const MPI_Datatype,
    recvbuf: *mut c_void,
    recvcounts: *const c_int,
    rdispls: *const c_int,
    recvtypes: *const MPI_Datatype,
) -> Res<(Vec<Typed>, Vec<Typed>)> {
    check_not_in_place(c, &[sendbuf])?;
    let n = c.p2p_size() as usize;
    let (rc, rd) = (counts(recvcounts, n)?, displs(rdispls, n)?);
    // SAFETY: one datatype per rank (§5.8).
    let rt = unsafe { c_array(recvtypes, n)? };
    let mut recv_parts = Vec::with_capacity(n);
    for i in 0..n {
        recv_parts.push(Typed::new(s, recvbuf, rc[i] as c_int, rt[i])?.at(rd[i], rc[i]));
    }
    let send_parts: Vec<Typed> = if in_place(sendbuf) {
        recv_parts.clone()
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
    Ok((send_parts, recv_parts))
}

/// Each blocking collective and its nonblocking twin (§5.12) from one definition:
/// `fn Allreduce / Iallreduce[comm](ARGS) |s, c| BODY` defines `MPI_Allreduce(ARGS)` and
/// `MPI_Iallreduce(ARGS, request)`. Both build the same plan with `BODY` (`s` the state, `c`
/// the communicator named `comm` among the arguments): the first runs it at once, the second
/// starts it behind a request. A definition may add `slots |s, c| DIRECT`, which the blocking
/// call tries first ([`coll_call`]). `shim/build.rs` reads a `fn A / B[` line as implementing
/// both.
macro_rules! coll_twins {
    ($(
        fn $blocking:ident / $nonblocking:ident $(/ $persistent:ident[$($kept:ident),*])? [$comm:ident]($($arg:ident: $ty:ty),* $(,)?) |$s:ident, $c:ident| $body:block
        $(slots |$ds:ident, $dc:ident| $direct:block)?
    )*) => {
        mpi_fn! {$(
            fn $blocking($($arg: $ty),*) -> c_int {
                let direct = $crate::api::coll::direct_or_not!($(|$ds, $dc| $direct)?);
                $crate::api::coll::coll_call(concat!("MPI_", stringify!($blocking)), $comm, None, direct, |$s, $c| $body)
            }

            fn $nonblocking($($arg: $ty,)* request: *mut $crate::abi::MPI_Request) -> c_int {
                $crate::api::coll::coll_call(concat!("MPI_", stringify!($nonblocking)), $comm, Some(request), |_, _| Ok(false), |$s, $c| $body)
            }
        )*}
        $(
            $crate::api::coll::persistent_twin! {
                [$($persistent[$($kept),*])?] [$comm]($($arg: $ty),*) |$s, $c| $body
            }
        )*
    };
}

/// The persistent form a [`coll_twins`] definition names, if it names one: `MPIX_Name_init`
/// with the collective's arguments plus an info and the request, planning with the same body;
/// the listed datatype and op arguments are [`keep`]'s private handles.
macro_rules! persistent_twin {
    ([] $($rest:tt)*) => {};
    ([$persistent:ident[$($kept:ident),*]] [$comm:ident]($($arg:ident: $ty:ty),*) |$s:ident, $c:ident| $body:block) => {
        mpix_fn! {
            fn $persistent($($arg: $ty,)* info: $crate::abi::MPI_Info, request: *mut $crate::abi::MPI_Request) -> c_int {
                $crate::export::call(stringify!($persistent), Some($comm), |s| {
                    // No hint changes how kawarimi runs a collective.
                    let _ = info;
                    #[allow(unused_mut)] // nothing to keep for a barrier
                    let mut held = Vec::new();
                    $(let $kept = match $crate::api::coll::keep(s, $kept, &mut held) {
                        Ok(h) => h,
                        Err(e) => {
                            $crate::api::coll::release_held(s, &held);
                            return Err(e);
                        }
                    };)*
                    $crate::api::coll::persistent_call(s, $comm, request, held, move |$s, $c| $body)
                })
            }
        }
    };
}

/// The `direct` of [`coll_call`] a [`coll_twins`] definition gives, or one that never runs.
macro_rules! direct_or_not {
    () => {
        |_: &mut $crate::state::State, _: &std::sync::Arc<kawarimi_runtime::comm::Comm>| Ok(false)
    };
    (|$s:ident, $c:ident| $direct:block) => {
        |$s: &mut $crate::state::State, $c: &std::sync::Arc<kawarimi_runtime::comm::Comm>| -> $crate::state::Res<bool> {
            $direct
        }
    };
}

// The neighbourhood collectives (`neighbor.rs`) are defined the same way.
pub(super) use {coll_twins, direct_or_not, persistent_twin};

coll_twins! {
    fn Barrier / Ibarrier / MPIX_Barrier_init[] [comm](comm: MPI_Comm) |_s, c| {
        Ok(barrier_plan(c))
    } slots |s, c| {
        Ok(slotcoll::barrier(&mut s.world()?.engine, c)?)
    }

    fn Bcast / Ibcast / MPIX_Bcast_init[datatype] [comm](buffer: *mut c_void, count: c_int, datatype: MPI_Datatype, root: c_int, comm: MPI_Comm) |s, c| {
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { bcast_plan(s, c, buffer, count, datatype, root) }
    } slots |s, c| {
        // SAFETY: the application's buffer, valid for the call.
        unsafe { bcast_in_slots(s, c, buffer, count, datatype, root) }
    }

    fn Reduce / Ireduce / MPIX_Reduce_init[datatype, op] [comm](sendbuf: *const c_void, recvbuf: *mut c_void, count: c_int, datatype: MPI_Datatype, op: MPI_Op, root: c_int, comm: MPI_Comm) |s, c| {
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { reduce_plan(s, c, sendbuf, recvbuf, count, datatype, op, root) }
    } slots |s, c| {
        // SAFETY: the application's buffers, valid for the call.
        unsafe { reduce_in_slots(s, c, sendbuf, recvbuf, count, datatype, op, Reduction::To(root)) }
    }

    fn Allreduce / Iallreduce / MPIX_Allreduce_init[datatype, op] [comm](sendbuf: *const c_void, recvbuf: *mut c_void, count: c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) |s, c| {
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { allreduce_plan(s, c, sendbuf, recvbuf, count, datatype, op, None) }
    } slots |s, c| {
        // SAFETY: the application's buffers, valid for the call.
        unsafe { reduce_in_slots(s, c, sendbuf, recvbuf, count, datatype, op, Reduction::All) }
    }

    fn Scan / Iscan / MPIX_Scan_init[datatype, op] [comm](sendbuf: *const c_void, recvbuf: *mut c_void, count: c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) |s, c| {
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { allreduce_plan(s, c, sendbuf, recvbuf, count, datatype, op, Some(false)) }
    } slots |s, c| {
        // SAFETY: the application's buffers, valid for the call.
        unsafe { reduce_in_slots(s, c, sendbuf, recvbuf, count, datatype, op, Reduction::Scan) }
    }

    fn Exscan / Iexscan / MPIX_Exscan_init[datatype, op] [comm](sendbuf: *const c_void, recvbuf: *mut c_void, count: c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) |s, c| {
        // Rank 0's receive buffer is undefined after Exscan (§5.11.2): kawarimi does not
        // write it, as Open MPI and MPICH do not.
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { allreduce_plan(s, c, sendbuf, recvbuf, count, datatype, op, Some(true)) }
    }

    fn Reduce_scatter_block / Ireduce_scatter_block / MPIX_Reduce_scatter_block_init[datatype, op] [comm](sendbuf: *const c_void, recvbuf: *mut c_void, recvcount: c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) |s, c| {
        let counts = vec![recvcount.max(0) as usize; c.size() as usize];
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { reduce_scatter_plan(s, c, sendbuf, recvbuf, recvcount, &counts, datatype, op) }
    } slots |s, c| {
        // SAFETY: the application's buffers, valid for the call.
        unsafe { reduce_scatter_block_in_slots(s, c, sendbuf, recvbuf, recvcount, datatype, op) }
    }

    fn Reduce_scatter / Ireduce_scatter / MPIX_Reduce_scatter_init[datatype, op] [comm](sendbuf: *const c_void, recvbuf: *mut c_void, recvcounts: *const c_int, datatype: MPI_Datatype, op: MPI_Op, comm: MPI_Comm) |s, c| {
        let counts = counts(recvcounts, c.size() as usize)?;
        let mine = counts[c.rank as usize] as c_int;
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { reduce_scatter_plan(s, c, sendbuf, recvbuf, mine, &counts, datatype, op) }
    }

    fn Gather / Igather / MPIX_Gather_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, root: c_int, comm: MPI_Comm) |s, c| {
        let (cnts, dsp) = if is_root(c, root) { uniform(c.p2p_size(), recvcount) } else { (Vec::new(), Vec::new()) };
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { gatherv_plan(s, c, sendbuf, sendcount, sendtype, recvbuf, &cnts, &dsp, recvtype, root) }
    } slots |s, c| {
        // SAFETY: the application's buffers, valid for the call.
        unsafe { blocks_in_slots(s, c, sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, Blocks::Gather(root)) }
    }

    fn Gatherv / Igatherv / MPIX_Gatherv_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, displs_: *const c_int, recvtype: MPI_Datatype, root: c_int, comm: MPI_Comm) |s, c| {
        let n = c.p2p_size() as usize;
        let (cnts, dsp) = if is_root(c, root) { (counts(recvcounts, n)?, displs(displs_, n)?) } else { (Vec::new(), Vec::new()) };
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { gatherv_plan(s, c, sendbuf, sendcount, sendtype, recvbuf, &cnts, &dsp, recvtype, root) }
    }

    fn Scatter / Iscatter / MPIX_Scatter_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, root: c_int, comm: MPI_Comm) |s, c| {
        let (cnts, dsp) = if is_root(c, root) { uniform(c.p2p_size(), sendcount) } else { (Vec::new(), Vec::new()) };
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { scatterv_plan(s, c, sendbuf, &cnts, &dsp, sendtype, recvbuf, recvcount, recvtype, root) }
    } slots |s, c| {
        // SAFETY: the application's buffers, valid for the call.
        unsafe { blocks_in_slots(s, c, sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, Blocks::Scatter(root)) }
    }

    fn Scatterv / Iscatterv / MPIX_Scatterv_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcounts: *const c_int, displs_: *const c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, root: c_int, comm: MPI_Comm) |s, c| {
        let n = c.p2p_size() as usize;
        let (cnts, dsp) = if is_root(c, root) { (counts(sendcounts, n)?, displs(displs_, n)?) } else { (Vec::new(), Vec::new()) };
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { scatterv_plan(s, c, sendbuf, &cnts, &dsp, sendtype, recvbuf, recvcount, recvtype, root) }
    }

    fn Allgather / Iallgather / MPIX_Allgather_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, comm: MPI_Comm) |s, c| {
        let (cnts, dsp) = uniform(c.p2p_size(), recvcount);
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { allgatherv_plan(s, c, sendbuf, sendcount, sendtype, recvbuf, &cnts, &dsp, recvtype) }
    } slots |s, c| {
        // SAFETY: the application's buffers, valid for the call.
        unsafe { blocks_in_slots(s, c, sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, Blocks::Allgather) }
    }

    fn Allgatherv / Iallgatherv / MPIX_Allgatherv_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, displs_: *const c_int, recvtype: MPI_Datatype, comm: MPI_Comm) |s, c| {
        let n = c.p2p_size() as usize;
        let (cnts, dsp) = (counts(recvcounts, n)?, displs(displs_, n)?);
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { allgatherv_plan(s, c, sendbuf, sendcount, sendtype, recvbuf, &cnts, &dsp, recvtype) }
    }

    fn Alltoall / Ialltoall / MPIX_Alltoall_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, comm: MPI_Comm) |s, c| {
        let (send, recv) = alltoall_parts(s, c, sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype)?;
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { alltoallw_plan(c, send, recv, in_place(sendbuf)) }
    } slots |s, c| {
        // SAFETY: the application's buffers, valid for the call.
        unsafe { blocks_in_slots(s, c, sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, Blocks::Alltoall) }
    }

    fn Alltoallv / Ialltoallv / MPIX_Alltoallv_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcounts: *const c_int, sdispls: *const c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, rdispls: *const c_int, recvtype: MPI_Datatype, comm: MPI_Comm) |s, c| {
        let (send, recv) = alltoallv_parts(s, c, sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts, rdispls, recvtype)?;
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { alltoallw_plan(c, send, recv, in_place(sendbuf)) }
    }

    fn Alltoallw / Ialltoallw / MPIX_Alltoallw_init[] [comm](sendbuf: *const c_void, sendcounts: *const c_int, sdispls: *const c_int, sendtypes: *const MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, rdispls: *const c_int, recvtypes: *const MPI_Datatype, comm: MPI_Comm) |s, c| {
        let (send, recv) = alltoallw_parts(s, c, sendbuf, sendcounts, sdispls, sendtypes, recvbuf, recvcounts, rdispls, recvtypes)?;
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { alltoallw_plan(c, send, recv, in_place(sendbuf)) }
    }
}

mpi_fn! {
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
}
