//! Blocking collectives (MPI-3.1 chapter 5) as algorithms over the runtime's point-to-point.
//!
//! Every buffer here is *packed* bytes: the caller packs derived datatypes before and unpacks
//! after, so the algorithms never see a type map. Collective traffic travels in the
//! communicator's collective context (`ctx + 1`), so it never matches an application receive,
//! and per-pair FIFO order keeps successive collectives apart without sequence tags.

use crate::comm::Comm;
use crate::core::{RecvBuf, ReqId, SendData};
use crate::engine::Engine;
use crate::error::{err, ErrorClass, MpiResult};

/// A reduction: predefined or user-defined, applied to packed elements.
pub trait Reducer {
    /// `inout[i] = input[i] op inout[i]` (MPI-3.1 §5.9.5 argument order).
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()>;
    fn commutative(&self) -> bool;
}

const TAG_BARRIER: i32 = 1;
const TAG_BCAST: i32 = 2;
const TAG_REDUCE: i32 = 3;
const TAG_ALLREDUCE: i32 = 4;
const TAG_GATHER: i32 = 5;
const TAG_SCATTER: i32 = 6;
const TAG_ALLGATHER: i32 = 7;
const TAG_ALLTOALL: i32 = 8;
const TAG_SCAN: i32 = 9;

fn isend(e: &mut Engine, comm: &Comm, to: i32, tag: i32, bytes: Vec<u8>) -> MpiResult<ReqId> {
    let peer = comm.peer(to)? as i32;
    e.core.isend(peer, comm.coll_ctx(), comm.coll_tag_base.wrapping_add(tag), SendData::Owned(bytes), false)
}

fn irecv(e: &mut Engine, comm: &Comm, from: i32, tag: i32, len: usize) -> MpiResult<ReqId> {
    let peer = comm.peer(from)? as i32;
    e.core.irecv(peer, comm.coll_ctx(), comm.coll_tag_base.wrapping_add(tag), RecvBuf::Owned(vec![0; len]))
}

/// Waits for a collective receive and checks that exactly the expected bytes arrived: a
/// mismatch means the ranks passed inconsistent counts or types.
fn wait_recv(e: &mut Engine, id: ReqId, expected: usize) -> MpiResult<Vec<u8>> {
    e.wait(id)?;
    let c = e.core.take_completion(id).expect("completed request");
    if c.status.error.is_some() || c.status.len != expected {
        return err(
            ErrorClass::Truncate,
            format!("collective expected {expected} bytes from rank {} but the message was longer", c.status.source),
        );
    }
    match c.recv_buf {
        Some(RecvBuf::Owned(mut v)) => {
            v.truncate(expected);
            Ok(v)
        }
        _ => err(ErrorClass::Intern, "collective receive lost its buffer"),
    }
}

fn wait_all(e: &mut Engine, ids: &[ReqId]) -> MpiResult<()> {
    for &id in ids {
        e.wait(id)?;
        e.core.take_completion(id);
    }
    Ok(())
}

fn send(e: &mut Engine, comm: &Comm, to: i32, tag: i32, bytes: Vec<u8>) -> MpiResult<()> {
    let id = isend(e, comm, to, tag, bytes)?;
    wait_all(e, &[id])
}

fn recv(e: &mut Engine, comm: &Comm, from: i32, tag: i32, len: usize) -> MpiResult<Vec<u8>> {
    let id = irecv(e, comm, from, tag, len)?;
    wait_recv(e, id, len)
}

fn sendrecv(
    e: &mut Engine,
    comm: &Comm,
    to: i32,
    send: Vec<u8>,
    from: i32,
    len: usize,
    tag: i32,
) -> MpiResult<Vec<u8>> {
    let r = irecv(e, comm, from, tag, len)?;
    let s = isend(e, comm, to, tag, send)?;
    let got = wait_recv(e, r, len)?;
    wait_all(e, &[s])?;
    Ok(got)
}

/// §5.3 `MPI_Barrier`: dissemination, ⌈log2 n⌉ rounds.
pub fn barrier(e: &mut Engine, comm: &Comm) -> MpiResult<()> {
    let n = comm.size();
    let r = comm.rank;
    let mut k = 1;
    while k < n {
        sendrecv(e, comm, (r + k) % n, Vec::new(), (r - k + n) % n, 0, TAG_BARRIER)?;
        k *= 2;
    }
    Ok(())
}

/// §5.4 `MPI_Bcast`: binomial tree rooted at `root`.
pub fn bcast(e: &mut Engine, comm: &Comm, root: i32, buf: &mut [u8]) -> MpiResult<()> {
    let n = comm.size();
    let rel = (comm.rank - root + n) % n;
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            let src = (rel - mask + root) % n;
            let got = recv(e, comm, src, TAG_BCAST, buf.len())?;
            buf.copy_from_slice(&got);
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    let mut sends = Vec::new();
    while mask > 0 {
        if rel + mask < n {
            sends.push(isend(e, comm, (rel + mask + root) % n, TAG_BCAST, buf.to_vec())?);
        }
        mask >>= 1;
    }
    wait_all(e, &sends)
}

/// §5.9.1 `MPI_Reduce`: binomial tree. A non-commutative op is reduced towards rank 0, where
/// every subtree covers a contiguous rank range, and then moved to `root`.
pub fn reduce(
    e: &mut Engine,
    comm: &Comm,
    root: i32,
    input: &[u8],
    output: Option<&mut [u8]>,
    op: &dyn Reducer,
) -> MpiResult<()> {
    let n = comm.size();
    let tree_root = if op.commutative() { root } else { 0 };
    let rel = (comm.rank - tree_root + n) % n;
    let mut acc = input.to_vec();
    let mut mask = 1;
    let mut sent_up = false;
    while mask < n {
        if rel & mask == 0 {
            let src = rel | mask;
            if src < n {
                let mut theirs = recv(e, comm, (src + tree_root) % n, TAG_REDUCE, acc.len())?;
                // `theirs` covers higher ranks: acc = acc op theirs.
                op.reduce(&acc, &mut theirs)?;
                acc = theirs;
            }
        } else {
            let dst = ((rel & !mask) + tree_root) % n;
            send(e, comm, dst, TAG_REDUCE, std::mem::take(&mut acc))?;
            sent_up = true;
            break;
        }
        mask <<= 1;
    }
    if tree_root != root {
        if comm.rank == tree_root {
            send(e, comm, root, TAG_REDUCE, std::mem::take(&mut acc))?;
        } else if comm.rank == root {
            acc = recv(e, comm, tree_root, TAG_REDUCE, input.len())?;
        }
    }
    if comm.rank == root {
        debug_assert!(!sent_up || tree_root != root);
        let output =
            output.ok_or_else(|| crate::error::MpiError::new(ErrorClass::Buffer, "root has no receive buffer"))?;
        output.copy_from_slice(&acc);
    }
    Ok(())
}

/// §5.9.6 `MPI_Allreduce`: recursive doubling with the non-power-of-two ranks folded in first
/// (order-preserving, so it serves non-commutative ops too).
pub fn allreduce(e: &mut Engine, comm: &Comm, buf: &mut [u8], op: &dyn Reducer) -> MpiResult<()> {
    let n = comm.size();
    let r = comm.rank;
    let len = buf.len();
    let mut pof2 = 1;
    while pof2 * 2 <= n {
        pof2 *= 2;
    }
    let rem = n - pof2;
    let newrank = if r < 2 * rem {
        if r % 2 == 0 {
            send(e, comm, r + 1, TAG_ALLREDUCE, buf.to_vec())?;
            -1
        } else {
            let lower = recv(e, comm, r - 1, TAG_ALLREDUCE, len)?;
            op.reduce(&lower, buf)?;
            r / 2
        }
    } else {
        r - rem
    };
    if newrank >= 0 {
        let mut mask = 1;
        while mask < pof2 {
            let newdst = newrank ^ mask;
            let dst = if newdst < rem { newdst * 2 + 1 } else { newdst + rem };
            let mut theirs = sendrecv(e, comm, dst, buf.to_vec(), dst, len, TAG_ALLREDUCE)?;
            if dst < r {
                op.reduce(&theirs, buf)?;
            } else {
                op.reduce(buf, &mut theirs)?;
                buf.copy_from_slice(&theirs);
            }
            mask <<= 1;
        }
    }
    if r < 2 * rem {
        if r % 2 == 1 {
            send(e, comm, r - 1, TAG_ALLREDUCE, buf.to_vec())?;
        } else {
            let got = recv(e, comm, r + 1, TAG_ALLREDUCE, len)?;
            buf.copy_from_slice(&got);
        }
    }
    Ok(())
}

/// §5.5 `MPI_Gatherv`: every rank's packed piece reaches `root`, which gets them in rank
/// order. `lens` (significant at root) gives the expected length of each piece.
pub fn gatherv(e: &mut Engine, comm: &Comm, root: i32, mine: &[u8], lens: &[usize]) -> MpiResult<Vec<Vec<u8>>> {
    if comm.rank != root {
        send(e, comm, root, TAG_GATHER, mine.to_vec())?;
        return Ok(Vec::new());
    }
    let n = comm.size();
    let mut ids = Vec::with_capacity(n as usize);
    for src in 0..n {
        ids.push(if src == root { None } else { Some(irecv(e, comm, src, TAG_GATHER, lens[src as usize])?) });
    }
    let mut out = Vec::with_capacity(n as usize);
    for (src, id) in ids.into_iter().enumerate() {
        out.push(match id {
            None => {
                if mine.len() != lens[src] {
                    return err(
                        ErrorClass::Truncate,
                        format!("root contributes {} bytes, expects {}", mine.len(), lens[src]),
                    );
                }
                mine.to_vec()
            }
            Some(id) => wait_recv(e, id, lens[src])?,
        });
    }
    Ok(out)
}

/// §5.6 `MPI_Scatterv`: `pieces` (significant at root) go to each rank in order; returns this
/// rank's piece of `len` bytes.
pub fn scatterv(e: &mut Engine, comm: &Comm, root: i32, pieces: Vec<Vec<u8>>, len: usize) -> MpiResult<Vec<u8>> {
    if comm.rank != root {
        return recv(e, comm, root, TAG_SCATTER, len);
    }
    let mut mine = Vec::new();
    let mut ids = Vec::new();
    for (dst, piece) in pieces.into_iter().enumerate() {
        if dst as i32 == root {
            mine = piece;
        } else {
            ids.push(isend(e, comm, dst as i32, TAG_SCATTER, piece)?);
        }
    }
    wait_all(e, &ids)?;
    if mine.len() != len {
        return err(ErrorClass::Truncate, format!("root's own piece is {} bytes, its receive takes {len}", mine.len()));
    }
    Ok(mine)
}

/// §5.7 `MPI_Allgatherv`: ring, n-1 steps; `lens` gives every rank's piece length.
pub fn allgatherv(e: &mut Engine, comm: &Comm, mine: &[u8], lens: &[usize]) -> MpiResult<Vec<Vec<u8>>> {
    let n = comm.size();
    let r = comm.rank;
    if mine.len() != lens[r as usize] {
        return err(
            ErrorClass::Truncate,
            format!("rank {r} contributes {} bytes, expected {}", mine.len(), lens[r as usize]),
        );
    }
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); n as usize];
    out[r as usize] = mine.to_vec();
    let right = (r + 1) % n;
    let left = (r - 1 + n) % n;
    for step in 0..n - 1 {
        let send_idx = ((r - step + n) % n) as usize;
        let recv_idx = ((r - step - 1 + n) % n) as usize;
        let got = sendrecv(e, comm, right, out[send_idx].clone(), left, lens[recv_idx], TAG_ALLGATHER)?;
        out[recv_idx] = got;
    }
    Ok(out)
}

/// §5.8 `MPI_Alltoall(v,w)`: every pair exchanges directly; all receives are posted first.
/// `send[i]` goes to rank i; `recv_lens[i]` is expected from rank i.
pub fn alltoallv(e: &mut Engine, comm: &Comm, send: Vec<Vec<u8>>, recv_lens: &[usize]) -> MpiResult<Vec<Vec<u8>>> {
    let n = comm.size();
    let r = comm.rank;
    let mut recv_ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        // Start with the nearest ranks so that pairs proceed in step rather than all at rank 0.
        let src = (r - i + n) % n;
        recv_ids.push((src, irecv(e, comm, src, TAG_ALLTOALL, recv_lens[src as usize])?));
    }
    let mut send = send;
    let mut send_ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let dst = (r + i) % n;
        send_ids.push(isend(e, comm, dst, TAG_ALLTOALL, std::mem::take(&mut send[dst as usize]))?);
    }
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); n as usize];
    for (src, id) in recv_ids {
        out[src as usize] = wait_recv(e, id, recv_lens[src as usize])?;
    }
    wait_all(e, &send_ids)?;
    Ok(out)
}

/// §5.11.1 `MPI_Scan` (inclusive, `exclusive == false`) and §5.11.2 `MPI_Exscan`: a chain in
/// rank order, so non-commutative ops keep their order. For `Exscan` rank 0's result is
/// undefined by the standard and `buf` is left as it is.
pub fn scan(e: &mut Engine, comm: &Comm, buf: &mut [u8], op: &dyn Reducer, exclusive: bool) -> MpiResult<()> {
    let n = comm.size();
    let r = comm.rank;
    let len = buf.len();
    // `prefix` = x_0 op … op x_{r-1}, received from the left neighbour.
    let prefix = if r > 0 { Some(recv(e, comm, r - 1, TAG_SCAN, len)?) } else { None };
    let mut inclusive = buf.to_vec();
    if let Some(p) = &prefix {
        op.reduce(p, &mut inclusive)?;
    }
    if r + 1 < n {
        send(e, comm, r + 1, TAG_SCAN, inclusive.clone())?;
    }
    if exclusive {
        if let Some(p) = prefix {
            buf.copy_from_slice(&p);
        }
    } else {
        buf.copy_from_slice(&inclusive);
    }
    Ok(())
}
