//! Neighbourhood collectives (MPI-3.1 §7.6): each process sends to the destinations and
//! receives from the sources of the communicator's Cartesian, graph or distributed graph
//! topology ([`Topology::neighborhood`]), blocking and nonblocking from one definition each.
//! Buffers are handled as in the other collectives ([`super::coll`]): contiguous parts move
//! from and into the application's memory, the others are packed and unpacked.

use std::ffi::{c_int, c_void};

use kawarimi_runtime::coll;
use kawarimi_runtime::comm::{Comm, Neighbor, Topology};
use kawarimi_runtime::error::ErrorClass;
use kawarimi_runtime::sched::Slot;

use super::coll::{coll_twins, counts, displs, in_place, landings, Landings, Plan, Typed};
use crate::abi::{MPI_Aint, MPI_Comm, MPI_Datatype};
use crate::mem::c_array;
use crate::state::{fail, Res, State};

/// The sources and destinations of this process, in buffer order.
fn neighborhood(c: &Comm) -> Res<(Vec<Neighbor>, Vec<Neighbor>)> {
    match &c.topo {
        Some(t) => Ok(Topology::neighborhood(t, c.rank)?),
        None => fail(ErrorClass::Topology, "a neighbourhood collective needs a communicator with a topology"),
    }
}

/// §7.6 has no in-place form.
fn check_not_in_place(sendbuf: *const c_void) -> Res<()> {
    if in_place(sendbuf) {
        return fail(ErrorClass::Arg, "MPI_IN_PLACE is not allowed in a neighbourhood collective");
    }
    Ok(())
}

/// Part `i` of `send` goes to destination `i`, part `i` of `recv` comes from source `i`; an
/// `MPI_PROC_NULL` neighbour moves nothing and leaves its receive block alone.
///
/// # Safety
/// The triples must describe the application's buffers, valid (and the receive parts left
/// alone) until the collective completes.
unsafe fn neighbor_plan(
    c: &Comm,
    (sources, destinations): (Vec<Neighbor>, Vec<Neighbor>),
    send: Vec<Typed>,
    recv: Vec<Typed>,
) -> Res<Plan> {
    debug_assert!(send.len() == destinations.len() && recv.len() == sources.len());
    let mut out = Vec::with_capacity(send.len());
    for (n, t) in destinations.iter().zip(&send) {
        if let Some(rank) = n.rank {
            // SAFETY: per the contract: unmodified until the collective completes.
            out.push((rank, n.lane, unsafe { t.sent()? }));
        }
    }
    // SAFETY: per the contract.
    let l = unsafe { landings(sources.iter().zip(recv).map(|(n, t)| n.rank.map(|_| t)))? };
    let mut ins = Vec::with_capacity(sources.len());
    let mut position = Vec::with_capacity(sources.len());
    for (n, buf) in sources.iter().zip(l.bufs) {
        position.push(ins.len());
        if let (Some(rank), Some(buf)) = (n.rank, buf) {
            ins.push((rank, n.lane, buf));
        }
    }
    let (sched, slots) = coll::neighbor_schedule(c, out, ins);
    // Slot of each source's part; a staged part always has one.
    let part_slots: Vec<Slot> = position.iter().map(|&k| slots.get(k).copied().unwrap_or_default()).collect();
    Ok(Plan::new(sched, Landings::finish(l.staged, part_slots)))
}

/// `n` parts of a `w` argument: a datatype each, displacements in bytes.
///
/// # Safety
/// The arrays must hold `n` entries each (§7.6.2).
unsafe fn w_parts(
    s: &mut State,
    buf: *const c_void,
    cnts: *const c_int,
    dsp: *const MPI_Aint,
    types: *const MPI_Datatype,
    n: usize,
) -> Res<Vec<Typed>> {
    let cnts = counts(cnts, n)?;
    // SAFETY: per the contract.
    let (dsp, types) = unsafe { (c_array(dsp, n)?, c_array(types, n)?) };
    (0..n).map(|i| Ok(Typed::new(s, buf, cnts[i] as c_int, types[i])?.at(dsp[i], cnts[i]))).collect()
}

coll_twins! {
    fn Neighbor_allgather / Ineighbor_allgather / MPIX_Neighbor_allgather_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, comm: MPI_Comm) |s, c| {
        check_not_in_place(sendbuf)?;
        let hood = neighborhood(c)?;
        let send = Typed::new(s, sendbuf, sendcount, sendtype)?;
        let recv = Typed::new(s, recvbuf, recvcount, recvtype)?;
        let (send, recv) = (vec![send; hood.1.len()], (0..hood.0.len()).map(|i| recv.block(i)).collect());
        // SAFETY: the application's buffers, valid until the collective completes (at once, or
        // at the Wait/Test of its request, §5.12).
        unsafe { neighbor_plan(c, hood, send, recv) }
    }

    fn Neighbor_allgatherv / Ineighbor_allgatherv / MPIX_Neighbor_allgatherv_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, displs_: *const c_int, recvtype: MPI_Datatype, comm: MPI_Comm) |s, c| {
        check_not_in_place(sendbuf)?;
        let hood = neighborhood(c)?;
        let n = hood.0.len();
        let (cnts, dsp) = (counts(recvcounts, n)?, displs(displs_, n)?);
        let send = Typed::new(s, sendbuf, sendcount, sendtype)?;
        let recv = Typed::new(s, recvbuf, 0, recvtype)?;
        let (send, recv) = (vec![send; hood.1.len()], (0..n).map(|i| recv.part(&cnts, &dsp, i)).collect());
        // SAFETY: as in Neighbor_allgather.
        unsafe { neighbor_plan(c, hood, send, recv) }
    }

    fn Neighbor_alltoall / Ineighbor_alltoall / MPIX_Neighbor_alltoall_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, comm: MPI_Comm) |s, c| {
        check_not_in_place(sendbuf)?;
        let hood = neighborhood(c)?;
        let send = Typed::new(s, sendbuf, sendcount, sendtype)?;
        let recv = Typed::new(s, recvbuf, recvcount, recvtype)?;
        let send = (0..hood.1.len()).map(|j| send.block(j)).collect();
        let recv = (0..hood.0.len()).map(|i| recv.block(i)).collect();
        // SAFETY: as in Neighbor_allgather.
        unsafe { neighbor_plan(c, hood, send, recv) }
    }

    fn Neighbor_alltoallv / Ineighbor_alltoallv / MPIX_Neighbor_alltoallv_init[sendtype, recvtype] [comm](sendbuf: *const c_void, sendcounts: *const c_int, sdispls: *const c_int, sendtype: MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, rdispls: *const c_int, recvtype: MPI_Datatype, comm: MPI_Comm) |s, c| {
        check_not_in_place(sendbuf)?;
        let hood = neighborhood(c)?;
        let (ins, outs) = (hood.0.len(), hood.1.len());
        let (sc, sd) = (counts(sendcounts, outs)?, displs(sdispls, outs)?);
        let (rc, rd) = (counts(recvcounts, ins)?, displs(rdispls, ins)?);
        let send = Typed::new(s, sendbuf, 0, sendtype)?;
        let recv = Typed::new(s, recvbuf, 0, recvtype)?;
        let send = (0..outs).map(|j| send.part(&sc, &sd, j)).collect();
        let recv = (0..ins).map(|i| recv.part(&rc, &rd, i)).collect();
        // SAFETY: as in Neighbor_allgather.
        unsafe { neighbor_plan(c, hood, send, recv) }
    }

    fn Neighbor_alltoallw / Ineighbor_alltoallw / MPIX_Neighbor_alltoallw_init[] [comm](sendbuf: *const c_void, sendcounts: *const c_int, sdispls: *const MPI_Aint, sendtypes: *const MPI_Datatype, recvbuf: *mut c_void, recvcounts: *const c_int, rdispls: *const MPI_Aint, recvtypes: *const MPI_Datatype, comm: MPI_Comm) |s, c| {
        check_not_in_place(sendbuf)?;
        let hood = neighborhood(c)?;
        // SAFETY: one entry per neighbour in each array (§7.6.2).
        let send = unsafe { w_parts(s, sendbuf, sendcounts, sdispls, sendtypes, hood.1.len())? };
        // SAFETY: as above.
        let recv = unsafe { w_parts(s, recvbuf, recvcounts, rdispls, recvtypes, hood.0.len())? };
        // SAFETY: as in Neighbor_allgather.
        unsafe { neighbor_plan(c, hood, send, recv) }
    }
}
