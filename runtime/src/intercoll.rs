//! Collectives on inter-communicators (MPI-3.1 §5.2.2), as [`Schedule`] builders like the
//! intra-communicator ones in [`crate::coll`].
//!
//! An inter-communicator joins a local and a remote group. A schedule on one names the local
//! ranks `0..L` by index and remote rank `q` as index `L + q` ([`Schedule::new`]), so one
//! schedule holds both the local tree steps and the messages that cross between the groups.
//! Local and crossing messages share the collective's context and tag and are told apart by
//! their sources, which belong to disjoint groups. Both groups start an inter-communicator's
//! collectives in the same order (§5.12), so their instance numbers agree.
//!
//! The reductions and the barrier reduce within each group towards its rank 0 (the
//! *leader*), the two leaders swap results, and each leader broadcasts within its group;
//! the gathers, scatters and all-to-alls exchange directly between the processes concerned.

use crate::comm::Comm;
use crate::core::{RecvBuf, SendData};
use crate::sched::{bcast_steps, kind, reduce_steps, Outside, Reducer, Schedule, Slot};

/// A process's part in a rooted collective on an inter-communicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterRoot {
    /// This process is the root (`MPI_ROOT`).
    Here,
    /// Another process of this group is the root (`MPI_PROC_NULL`): nothing to do.
    Idle,
    /// The root is this rank of the remote group.
    Remote(i32),
}

/// The schedule of a process that takes no part in a rooted collective (`MPI_PROC_NULL`):
/// it only takes the collective's instance number, as every process of the communicator
/// does.
pub fn idle_schedule<'a>(comm: &Comm, kind: i32) -> Schedule<'a> {
    Schedule::new(comm, kind)
}

/// Schedule index of remote rank `q`.
fn remote(comm: &Comm, q: i32) -> i32 {
    comm.size() + q
}

fn remote_size(comm: &Comm) -> i32 {
    comm.p2p_size()
}

/// Leaders swap `mine` for the other leader's `theirs` (`len` bytes): the step between a
/// group's reduction towards its leader and its broadcast from there.
fn leaders_swap(s: &mut Schedule<'_>, comm: &Comm, mine: Slot, theirs: Slot, len: usize) {
    if comm.rank == 0 {
        s.recv(remote(comm, 0), theirs, len);
        s.send(remote(comm, 0), mine);
        s.wait();
    }
}

/// `MPI_Barrier`: every process of each group has entered once the leaders have swapped a
/// token gathered from their groups; the leaders then release their groups.
pub fn barrier_schedule<'a>(comm: &Comm) -> Schedule<'a> {
    let mut s = Schedule::new(comm, kind::BARRIER);
    let (n, r) = (comm.size(), comm.rank);
    let token = s.slot(Vec::new());
    let sink = s.slot(Vec::new());
    if r == 0 {
        for src in 1..n {
            s.recv(src, sink, 0);
        }
        s.wait();
    } else {
        s.send(0, token);
        s.wait();
    }
    leaders_swap(&mut s, comm, token, sink, 0);
    bcast_steps(&mut s, n, r, 0, token, 0);
    s
}

/// `MPI_Allreduce`: each group gets the reduction of the *other* group's inputs, in rank
/// order (so non-commutative ops keep theirs). The result is in the returned slot.
pub fn allreduce_schedule<'a>(comm: &Comm, buf: Vec<u8>, op: Box<dyn Reducer + 'a>) -> (Schedule<'a>, Slot) {
    allreduce_across(comm, buf, op, false)
}

/// Every process of *both* groups gets the reduction of every input (a commutative `op`):
/// how the two groups agree on the context id of a communicator made from theirs. The result
/// is in the returned slot.
pub fn allreduce_both_schedule<'a>(comm: &Comm, buf: Vec<u8>, op: Box<dyn Reducer + 'a>) -> (Schedule<'a>, Slot) {
    allreduce_across(comm, buf, op, true)
}

/// Each group reduces towards its leader, the leaders swap, and each broadcasts the other
/// group's result, or with `both` that combined with its own.
fn allreduce_across<'a>(comm: &Comm, buf: Vec<u8>, op: Box<dyn Reducer + 'a>, both: bool) -> (Schedule<'a>, Slot) {
    let mut s = Schedule::new(comm, kind::ALLREDUCE);
    s.set_op(op);
    let (n, r) = (comm.size(), comm.rank);
    let len = buf.len();
    let acc = s.slot(buf);
    let result = s.slot(vec![0; len]);
    reduce_steps(&mut s, n, r, 0, acc, len);
    leaders_swap(&mut s, comm, acc, result, len);
    if both && r == 0 {
        s.reduce(acc, result);
    }
    bcast_steps(&mut s, n, r, 0, result, len);
    (s, result)
}

/// `MPI_Bcast`: the root sends to the remote leader, which broadcasts in its group. The
/// result (in the receiving group) is in the returned slot.
pub fn bcast_schedule<'a>(comm: &Comm, root: InterRoot, buf: Vec<u8>) -> (Schedule<'a>, Slot) {
    let mut s = Schedule::new(comm, kind::BCAST);
    let len = buf.len();
    let data = s.slot(buf);
    match root {
        InterRoot::Here => s.send(remote(comm, 0), data),
        InterRoot::Idle => {}
        InterRoot::Remote(q) => {
            if comm.rank == 0 {
                s.recv(remote(comm, q), data, len);
                s.wait();
            }
            bcast_steps(&mut s, comm.size(), comm.rank, 0, data, len);
        }
    }
    (s, data)
}

/// `MPI_Reduce`: the remote group reduces towards its leader (in rank order), which sends
/// the result to the root. `input` is this process's contribution, or at the root a buffer
/// of the result's length. The result (at the root) is in the returned slot.
pub fn reduce_schedule<'a>(
    comm: &Comm,
    root: InterRoot,
    input: Vec<u8>,
    op: Box<dyn Reducer + 'a>,
) -> (Schedule<'a>, Slot) {
    let mut s = Schedule::new(comm, kind::REDUCE);
    s.set_op(op);
    let len = input.len();
    let acc = s.slot(input);
    match root {
        InterRoot::Here => s.recv(remote(comm, 0), acc, len),
        InterRoot::Idle => {}
        InterRoot::Remote(q) => {
            reduce_steps(&mut s, comm.size(), comm.rank, 0, acc, len);
            if comm.rank == 0 {
                s.send_last(remote(comm, q), acc);
            }
        }
    }
    (s, acc)
}

/// `MPI_Gatherv`: a process of the root's group sends `mine` to the root, which receives
/// what remote rank `q` sends into `recv[q]` (a staged receive's bytes in returned slot `q`).
pub fn gatherv_schedule<'a>(
    comm: &Comm,
    root: InterRoot,
    mine: SendData,
    recv: Vec<RecvBuf>,
) -> (Schedule<'a>, Vec<Slot>) {
    let mut s = Schedule::new(comm, kind::GATHER);
    let mut slots = Vec::new();
    match root {
        InterRoot::Here => slots = recv_from_each_remote(&mut s, comm, recv),
        InterRoot::Idle => {}
        InterRoot::Remote(q) => {
            let m = s.slot_outside(Outside::Send(mine));
            s.send_last(remote(comm, q), m);
        }
    }
    (s, slots)
}

/// `MPI_Scatterv`: the root sends `pieces[q]` to remote rank `q`; a receiving process's
/// piece lands in `recv` (a staged receive's bytes in the returned slot).
pub fn scatterv_schedule<'a>(
    comm: &Comm,
    root: InterRoot,
    pieces: Vec<SendData>,
    recv: Option<RecvBuf>,
) -> (Schedule<'a>, Slot) {
    let mut s = Schedule::new(comm, kind::SCATTER);
    let len = recv.as_ref().map_or(0, RecvBuf::len);
    let mine = match recv {
        Some(buf) => s.slot_outside(Outside::Recv(buf)),
        None => s.slot(Vec::new()),
    };
    match root {
        InterRoot::Here => {
            for (q, piece) in pieces.into_iter().enumerate() {
                let slot = s.slot_outside(Outside::Send(piece));
                s.send_last(remote(comm, q as i32), slot);
            }
        }
        InterRoot::Idle => {}
        InterRoot::Remote(q) => s.recv(remote(comm, q), mine, len),
    }
    (s, mine)
}

/// Posts a receive from every remote rank `q` into `recv[q]`; returns their slots.
fn recv_from_each_remote(s: &mut Schedule<'_>, comm: &Comm, recv: Vec<RecvBuf>) -> Vec<Slot> {
    recv.into_iter()
        .enumerate()
        .map(|(q, buf)| {
            let len = buf.len();
            let slot = s.slot_outside(Outside::Recv(buf));
            s.recv(remote(comm, q as i32), slot, len);
            slot
        })
        .collect()
}

/// `MPI_Allgatherv`: every process sends its piece to every remote process and receives what
/// remote rank `q` sends into `recv[q]` (a staged receive's bytes in returned slot `q`).
pub fn allgatherv_schedule<'a>(comm: &Comm, mine: SendData, recv: Vec<RecvBuf>) -> (Schedule<'a>, Vec<Slot>) {
    let mut s = Schedule::new(comm, kind::ALLGATHER);
    let slots = recv_from_each_remote(&mut s, comm, recv);
    let own = s.slot_outside(Outside::Send(mine));
    for q in 0..remote_size(comm) {
        s.send(remote(comm, q), own);
    }
    (s, slots)
}

/// `MPI_Alltoall(v,w)`: `send[q]` goes to remote rank `q`; `recv[q]` takes what comes from it
/// (a staged receive's bytes in returned slot `q`).
pub fn alltoallv_schedule<'a>(comm: &Comm, send: Vec<SendData>, recv: Vec<RecvBuf>) -> (Schedule<'a>, Vec<Slot>) {
    let mut s = Schedule::new(comm, kind::ALLTOALL);
    let mut recv_slots = Vec::with_capacity(recv.len());
    for (q, buf) in recv.into_iter().enumerate() {
        let len = buf.len();
        let slot = s.slot_outside(Outside::Recv(buf));
        s.recv(remote(comm, q as i32), slot, len);
        recv_slots.push(slot);
    }
    for (q, part) in send.into_iter().enumerate() {
        let slot = s.slot_outside(Outside::Send(part));
        s.send_last(remote(comm, q as i32), slot);
    }
    (s, recv_slots)
}
