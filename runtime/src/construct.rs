//! Communicator constructors (MPI-3.1 §6.4.2, §6.6.2, §7.5.4), written once for both ways of
//! waiting. Each is a sequence of collective steps over its parent and of short updates of
//! the process state between them, and reaches both through [`Steps`]:
//!
//! - a program with one thread in MPI runs them holding the state: [`World`] is itself the
//!   [`Steps`], and each collective is run to completion inside the call;
//! - at `MPI_THREAD_MULTIPLE` the shim gives them steps that take the state's lock for each
//!   update and let it go while a collective waits, so two threads that create communicators
//!   over different parents at once cannot block each other (each waits for peers whose
//!   thread may first need the lock).
//!
//! The new communicator's context id is agreed by [`agree_ctx`], which stays correct when
//! several agreements run at once in one process (see there).

use std::sync::Arc;

use crate::coll::{self, Reducer};
use crate::comm::{Comm, DistGraph, Group};
use crate::core::{RecvBuf, SendData};
use crate::ctxids::{Agreement, Decision};
use crate::error::{err, ErrorClass, MpiError, MpiResult};
use crate::intercoll;
use crate::sched::{Schedule, Slot};
use crate::world::{World, UNDEFINED_COLOR};

/// How a constructor reaches the process state and waits for its collectives.
pub trait Steps {
    /// Runs `f` on the process state (see [`with`] for the typed form).
    fn update(&mut self, f: &mut dyn FnMut(&mut World) -> MpiResult<()>) -> MpiResult<()>;
    /// Runs the collective `s` to completion, in the tag space of the blocking collectives (it
    /// pairs with the other members' blocking calls); returns its buffers.
    fn run(&mut self, s: Schedule<'static>) -> MpiResult<Vec<Vec<u8>>>;
}

/// Holding the state throughout: the collectives run inside the call.
impl Steps for World {
    fn update(&mut self, f: &mut dyn FnMut(&mut World) -> MpiResult<()>) -> MpiResult<()> {
        f(self)
    }

    fn run(&mut self, s: Schedule<'static>) -> MpiResult<Vec<Vec<u8>>> {
        coll::run(&mut self.engine, s)
    }
}

/// Runs `f` on the process state through `st` and returns what it gives.
pub fn with<R>(st: &mut dyn Steps, f: impl FnOnce(&mut World) -> MpiResult<R>) -> MpiResult<R> {
    let mut f = Some(f);
    let mut got = None;
    st.update(&mut |w| {
        let f = f.take().expect("a state update runs once");
        got = Some(f(w)?);
        Ok(())
    })?;
    got.ok_or_else(|| MpiError::new(ErrorClass::Intern, "a state update did not run"))
}

/// The element-wise maximum of little-endian `u32`s.
pub(crate) struct MaxU32;

impl Reducer for MaxU32 {
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
        for (i, o) in input.chunks_exact(4).zip(inout.chunks_exact_mut(4)) {
            let a = u32::from_le_bytes(i.try_into().expect("4 bytes"));
            let b = u32::from_le_bytes((&*o).try_into().expect("4 bytes"));
            o.copy_from_slice(&a.max(b).to_le_bytes());
        }
        Ok(())
    }
    fn commutative(&self) -> bool {
        true
    }
    fn elem_bytes(&self) -> usize {
        4
    }
}

/// The element-wise maximum of `mine` over every member of `comm` (of both groups of an
/// inter-communicator).
fn max_over<const N: usize>(st: &mut dyn Steps, comm: &Comm, mine: [u32; N]) -> MpiResult<[u32; N]> {
    let (s, slot) = max_schedule(comm, mine);
    let bufs = st.run(s)?;
    words(&bufs[slot])
}

/// The allreduce of [`max_over`]; its result is in the returned slot.
pub(crate) fn max_schedule<const N: usize>(comm: &Comm, mine: [u32; N]) -> (Schedule<'static>, Slot) {
    let bytes = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
    if comm.is_inter() {
        intercoll::allreduce_both_schedule(comm, bytes, Box::new(MaxU32))
    } else {
        coll::allreduce_schedule(comm, bytes, Box::new(MaxU32))
    }
}

/// `N` little-endian words.
pub(crate) fn words<const N: usize>(b: &[u8]) -> MpiResult<[u32; N]> {
    if b.len() != 4 * N {
        return err(ErrorClass::Intern, format!("an agreement carried {} bytes, expected {}", b.len(), 4 * N));
    }
    Ok(std::array::from_fn(|i| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"))))
}

/// Agrees with the other members on a context id for a new communicator, `max` being the
/// element-wise maximum over all of them (every member calls this with the same `max`): the
/// protocol of [`Agreement`], each maximum a blocking allreduce.
pub fn agree_ctx(
    st: &mut dyn Steps,
    mut max: impl FnMut(&mut dyn Steps, [u32; 2]) -> MpiResult<[u32; 2]>,
) -> MpiResult<u32> {
    let (mut agreement, mut words) = with(st, |w| Agreement::start(&mut w.engine.ctx_ids, w.proc.rank))?;
    loop {
        let m = match max(st, words) {
            Ok(m) => m,
            Err(e) => {
                with(st, |w| {
                    agreement.abandon(&mut w.engine.ctx_ids);
                    Ok(())
                })?;
                return Err(e);
            }
        };
        match with(st, |w| agreement.next(&mut w.engine.ctx_ids, m))? {
            Decision::Max(next) => words = next,
            Decision::Agreed(ctx) => return Ok(ctx),
        }
    }
}

/// [`agree_ctx`] over the members of `parent`.
pub fn alloc_ctx(st: &mut dyn Steps, parent: &Comm) -> MpiResult<u32> {
    agree_ctx(st, |st, v| max_over(st, parent, v))
}

/// Every member's `mine` (each `lens[i]` bytes long), over `comm` (of the remote group, for an
/// inter-communicator).
pub fn allgather(st: &mut dyn Steps, comm: &Comm, mine: &[u8], lens: &[usize]) -> MpiResult<Vec<Vec<u8>>> {
    let recv = lens.iter().map(|&len| Some(RecvBuf::Owned(vec![0; len]))).collect();
    let (s, slots) = coll::allgatherv_schedule(comm, SendData::Owned(mine.to_vec()), recv)?;
    let mut bufs = st.run(s)?;
    Ok(coll::take(&mut bufs, &slots))
}

/// `buf` from `root` to every member of the intra-communicator `comm`.
pub fn bcast(st: &mut dyn Steps, comm: &Comm, root: i32, buf: &mut [u8]) -> MpiResult<()> {
    let part = if comm.rank == root {
        crate::sched::Outside::Send(SendData::Owned(buf.to_vec()))
    } else {
        crate::sched::Outside::Recv(RecvBuf::Owned(vec![0; buf.len()]))
    };
    let (s, slot) = coll::bcast_schedule(comm, root, part);
    let bufs = st.run(s)?;
    if comm.rank != root {
        buf.copy_from_slice(&bufs[slot]);
    }
    Ok(())
}

/// A communicator over `parent`'s group(s) and topology in context `ctx`.
pub(crate) fn copy_of(parent: &Comm, ctx: u32) -> Comm {
    match &parent.inter {
        None => Comm { topo: parent.topo.clone(), ..Comm::new(ctx, parent.group.clone(), parent.rank) },
        Some(inter) => Comm::new_inter(ctx, parent.group.clone(), parent.rank, inter.remote.clone()),
    }
}

/// `MPI_Comm_dup` (§6.4.2); of an inter-communicator, an inter-communicator between the same
/// groups.
pub fn comm_dup(st: &mut dyn Steps, parent: &Comm) -> MpiResult<Comm> {
    let ctx = alloc_ctx(st, parent)?;
    Ok(copy_of(parent, ctx))
}

/// `MPI_Comm_split` (§6.4.2): ranks with the same `color` form a communicator ordered by
/// `(key, rank in parent)`; `UNDEFINED_COLOR` gets `None`. Split of an inter-communicator
/// gives inter-communicators between the local and remote processes of each colour, and
/// `None` where the remote group has none of it.
pub fn comm_split(st: &mut dyn Steps, parent: &Comm, color: i32, key: i32) -> MpiResult<Option<Comm>> {
    if color < 0 && color != UNDEFINED_COLOR {
        return err(ErrorClass::Arg, format!("split colour {color} is negative"));
    }
    let mut mine = color.to_le_bytes().to_vec();
    mine.extend_from_slice(&key.to_le_bytes());
    let local_comm = parent.inter.as_ref().map_or(parent, |i| &i.local);
    let local = allgather(st, local_comm, &mine, &vec![8; parent.size() as usize])?;
    let remote = match &parent.inter {
        Some(_) => Some(allgather(st, parent, &mine, &vec![8; parent.p2p_size() as usize])?),
        None => None,
    };
    let ctx = alloc_ctx(st, parent)?;
    if color == UNDEFINED_COLOR {
        return Ok(None);
    }
    let group = Group::new(members_of_colour(&local, color, &parent.group))?;
    let rank = group.rank_of(parent.me()).expect("this process has the colour");
    let (Some(remote), Some(inter)) = (remote, &parent.inter) else {
        return Ok(Some(Comm::new(ctx, Arc::new(group), rank)));
    };
    let remote_group = Group::new(members_of_colour(&remote, color, &inter.remote))?;
    if remote_group.size() == 0 {
        return Ok(None);
    }
    Ok(Some(Comm::new_inter(ctx, Arc::new(group), rank, Arc::new(remote_group))))
}

/// The world ranks of `group` whose entry in `all` (colour, key: two little-endian i32 per
/// rank) has `color`, ordered by key and then rank: the members of a split's new group.
fn members_of_colour(all: &[Vec<u8>], color: i32, group: &Group) -> Vec<u32> {
    let mut chosen: Vec<(i32, i32)> = all
        .iter()
        .enumerate()
        .filter_map(|(r, b)| {
            let c = i32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
            let k = i32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
            (c == color).then_some((k, r as i32))
        })
        .collect();
    chosen.sort_unstable();
    chosen.iter().map(|&(_, r)| group.world_rank(r).expect("rank of the group")).collect()
}

/// `MPI_Intercomm_create` (§6.6.2): collective over `local` (an intra-communicator); its
/// `local_leader` and the remote group's leader, rank `remote_leader` of `peer`, swap their
/// groups over `peer` with `tag`, and the context id is agreed over both groups (each group
/// reduces to its leader, the leaders swap with `tag`, each leader broadcasts).
pub fn intercomm_create(
    st: &mut dyn Steps,
    local: &Comm,
    local_leader: i32,
    peer: &Comm,
    remote_leader: i32,
    tag: i32,
) -> MpiResult<Comm> {
    if local.is_inter() {
        return err(ErrorClass::Comm, "the local communicator of MPI_Intercomm_create is an inter-communicator");
    }
    if !(0..local.size()).contains(&local_leader) {
        return err(
            ErrorClass::Rank,
            format!("local leader {local_leader} is not in a communicator of {}", local.size()),
        );
    }
    let leader = local.rank == local_leader;
    // The leader's partner: world rank `other` of `peer`.
    let other = if leader {
        if peer.is_inter() {
            return err(ErrorClass::Comm, "the peer communicator of MPI_Intercomm_create is an inter-communicator");
        }
        Some(peer.peer(remote_leader)?)
    } else {
        None
    };
    // The remote group's size, then its members, from the leader.
    let mut size = [0u8; 4];
    let mut members = Vec::new();
    if let Some(other) = other {
        let theirs = swap_with(st, peer.ctx, tag, other, (local.size() as u32).to_le_bytes().to_vec(), 4)?;
        size.copy_from_slice(&theirs);
        let mine: Vec<u8> = local.group.members().iter().flat_map(|m| m.to_le_bytes()).collect();
        members = swap_with(st, peer.ctx, tag, other, mine, u32::from_le_bytes(size) as usize * 4)?;
    }
    bcast(st, local, local_leader, &mut size)?;
    if !leader {
        members = vec![0; u32::from_le_bytes(size) as usize * 4];
    }
    bcast(st, local, local_leader, &mut members)?;
    let remote =
        Group::new(members.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())?;
    if let Some(&w) = remote.members().iter().find(|&&w| local.group.rank_of(w).is_some()) {
        return err(
            ErrorClass::Group,
            format!("world rank {w} is in both groups of MPI_Intercomm_create: the groups must be disjoint"),
        );
    }
    let ctx = agree_ctx(st, |st, v| {
        let mut v = max_over(st, local, v)?;
        let mut bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        if let Some(other) = other {
            let theirs: [u32; 2] = words(&swap_with(st, peer.ctx, tag, other, bytes.clone(), 8)?)?;
            v = [v[0].max(theirs[0]), v[1].max(theirs[1])];
            bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        }
        bcast(st, local, local_leader, &mut bytes)?;
        words(&bytes)
    })?;
    Ok(Comm::new_inter(ctx, local.group.clone(), local.rank, Arc::new(remote)))
}

/// Sends `bytes` to world rank `other` in context `ctx` with `tag` and receives exactly `len`
/// bytes from it: the leaders' exchanges of `MPI_Intercomm_create`.
fn swap_with(st: &mut dyn Steps, ctx: u32, tag: i32, other: u32, bytes: Vec<u8>, len: usize) -> MpiResult<Vec<u8>> {
    let mut s = Schedule::between(ctx, tag, vec![other])?;
    let out = s.slot(bytes);
    let back = s.slot(Vec::new());
    s.recv(0, back, len);
    s.send_last(0, out);
    let mut slots = st.run(s)?;
    Ok(std::mem::take(&mut slots[back]))
}

/// `MPI_Intercomm_merge` (§6.6.2): an intra-communicator of both groups, the group that passed
/// `high == false` first; when both passed the same, the group whose leader has the lower
/// world rank.
pub fn intercomm_merge(st: &mut dyn Steps, inter_comm: &Comm, high: bool) -> MpiResult<Comm> {
    let Some(inter) = &inter_comm.inter else {
        return err(ErrorClass::Comm, "MPI_Intercomm_merge needs an inter-communicator");
    };
    let ctx = alloc_ctx(st, inter_comm)?;
    let theirs = allgather(st, inter_comm, &[u8::from(high)], &vec![1; inter.remote.size() as usize])?;
    let their_high = theirs.first().is_some_and(|b| b == &[1]);
    let (local, remote) = (&inter_comm.group, &inter.remote);
    let local_first = if high == their_high { local.world_rank(0) < remote.world_rank(0) } else { !high };
    let (first, second) = if local_first { (local, remote) } else { (remote, local) };
    let mut members = first.members().to_vec();
    members.extend_from_slice(second.members());
    let group = Group::new(members)?;
    let rank = group.rank_of(inter_comm.me()).expect("this process is in its own group");
    Ok(Comm::new(ctx, Arc::new(group), rank))
}

/// `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)` (§6.4.2): one communicator per host. A process
/// that passed `MPI_UNDEFINED` takes part with `participate == false` and gets `None`: every
/// member must run the same collectives.
pub fn comm_split_shared(st: &mut dyn Steps, parent: &Comm, key: i32, participate: bool) -> MpiResult<Option<Comm>> {
    if parent.is_inter() {
        return err(ErrorClass::Comm, "MPI_Comm_split_type of an inter-communicator is not supported");
    }
    let color = host_colours(st, parent)?[parent.rank as usize];
    comm_split(st, parent, if participate { color } else { UNDEFINED_COLOR }, key)
}

/// For each member of the intra-communicator `parent` (collective), the rank of the first
/// member on the same host: every member shares memory with those of its colour.
pub fn host_colours(st: &mut dyn Steps, parent: &Comm) -> MpiResult<Vec<i32>> {
    let n = parent.size() as usize;
    let mut name = [0u8; 256];
    with(st, |w| {
        let h = w.hostname.as_bytes();
        let len = h.len().min(name.len());
        name[..len].copy_from_slice(&h[..len]);
        Ok(())
    })?;
    let all = allgather(st, parent, &name, &vec![name.len(); n])?;
    Ok(all.iter().map(|b| all.iter().position(|c| c == b).expect("own name is present") as i32).collect())
}

/// `MPI_Comm_create_group` (§6.4.2): collective over the members of `group` only, which agree
/// on a context id among themselves, in `parent`'s group-creation context and tagged with
/// `tag` so that concurrent creations with other tags stay apart.
pub fn comm_create_group(st: &mut dyn Steps, parent: &Comm, group: &Group, tag: i32) -> MpiResult<Comm> {
    if parent.is_inter() {
        return err(ErrorClass::Comm, "MPI_Comm_create_group needs an intra-communicator");
    }
    let Some(rank) = group.rank_of(parent.me()) else {
        return err(ErrorClass::Group, "the calling process is not in the group");
    };
    for &w in group.members() {
        if parent.group.rank_of(w).is_none() {
            return err(ErrorClass::Group, format!("process {w} of the group is not in the communicator"));
        }
    }
    let group = Arc::new(group.clone());
    // A transient communicator whose collective context is `parent.ctx + 2`: its collectives'
    // tags carry the user tag above their kind, flag and instance number (which the context
    // agreement's rounds advance), so that creations with other tags never meet; tags that
    // agree in their low 18 bits share a tag space.
    let shift = 5 + crate::comm::TRANSIENT_INSTANCE_BITS;
    let transient = Comm {
        coll_tag_base: (tag & ((1 << (31 - shift)) - 1)) << shift,
        coll_seq: Arc::new(crate::comm::CollSeq::narrow(crate::comm::TRANSIENT_INSTANCE_BITS)),
        ..Comm::new(parent.ctx + 1, group.clone(), rank)
    };
    let ctx = alloc_ctx(st, &transient)?;
    Ok(Comm::new(ctx, group, rank))
}

/// `MPI_Comm_create` (§6.4.2): collective over `parent`; members of `group` get the new
/// communicator, the others `None`. Of an inter-communicator, each side gives a group of its
/// own processes, and the result is an inter-communicator between the two groups (`None` also
/// where the other side's group is empty).
pub fn comm_create(st: &mut dyn Steps, parent: &Comm, group: &Group) -> MpiResult<Option<Comm>> {
    for &w in group.members() {
        if parent.group.rank_of(w).is_none() {
            return err(ErrorClass::Group, format!("process {w} of the group is not in the communicator"));
        }
    }
    let my_rank = group.rank_of(parent.me());
    let remote = match &parent.inter {
        None => None,
        Some(inter) => {
            // Each process tells the other side its rank in its side's group (-1: not in it):
            // the other side's group, in its order, is the processes that have one.
            let mine = my_rank.unwrap_or(-1).to_le_bytes();
            let theirs = allgather(st, parent, &mine, &vec![4; inter.remote.size() as usize])?;
            let mut ranked: Vec<(i32, u32)> = theirs
                .iter()
                .zip(inter.remote.members())
                .map(|(b, &w)| (i32::from_le_bytes(b[..4].try_into().expect("4 bytes")), w))
                .filter(|&(r, _)| r >= 0)
                .collect();
            ranked.sort_unstable();
            Some(Group::new(ranked.into_iter().map(|(_, w)| w).collect())?)
        }
    };
    let ctx = alloc_ctx(st, parent)?;
    let Some(rank) = my_rank else { return Ok(None) };
    let group = Arc::new(group.clone());
    Ok(match remote {
        None => Some(Comm::new(ctx, group, rank)),
        Some(remote) if remote.size() == 0 => None,
        Some(remote) => Some(Comm::new_inter(ctx, group, rank, Arc::new(remote))),
    })
}

/// The exchange of `MPI_Dist_graph_create` (§7.5.4), collective over the intra-communicator
/// `parent`: each process gives any edges `(source, destination, weight)` of the graph, and
/// learns its own sources and destinations. Edges travel to both their ends in one all-to-all
/// (after one of counts); each process lists its sources and destinations in the order of the
/// rank that gave the edge, then of its place in that rank's list. The graph is weighted if
/// any process gave weights.
pub fn dist_graph(
    st: &mut dyn Steps,
    parent: &Comm,
    edges: &[(i32, i32, i32)],
    weighted: bool,
) -> MpiResult<DistGraph> {
    const OUT: i32 = 0;
    const IN: i32 = 1;
    let n = parent.size() as usize;
    let mut parts = vec![Vec::new(); n];
    for &(src, dst, w) in edges {
        let (Some(s), Some(d)) =
            (usize::try_from(src).ok().filter(|&s| s < n), usize::try_from(dst).ok().filter(|&d| d < n))
        else {
            return err(
                ErrorClass::Rank,
                format!("edge {src} -> {dst} names a process outside the communicator of {n}"),
            );
        };
        for (to, record) in [(s, [OUT, dst, w]), (d, [IN, src, w])] {
            parts[to].extend(record.iter().flat_map(|v| v.to_le_bytes()));
        }
    }
    // Each process's byte count for each, and whether it gave weights.
    let counts: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| [p.len() as u32, u32::from(weighted)].iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let counts = alltoall(st, parent, counts, &vec![8; n])?;
    let word = |b: &[u8], i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let lens: Vec<usize> = counts.iter().map(|c| word(c, 0) as usize).collect();
    let weighted = counts.iter().any(|c| word(c, 1) != 0);
    let records = alltoall(st, parent, parts, &lens)?;
    let mut g = DistGraph {
        sources: Vec::new(),
        source_weights: Vec::new(),
        destinations: Vec::new(),
        destination_weights: Vec::new(),
        weighted,
    };
    for record in records.iter().flat_map(|r| r.chunks_exact(12)) {
        let [kind, peer, w] = [0, 1, 2].map(|i| word(record, i) as i32);
        let (peers, weights) = match kind {
            OUT => (&mut g.destinations, &mut g.destination_weights),
            _ => (&mut g.sources, &mut g.source_weights),
        };
        debug_assert!(kind == OUT || kind == IN);
        peers.push(peer);
        if weighted {
            weights.push(w);
        }
    }
    Ok(g)
}

/// `send[i]` to member i of `comm`, and from each member i the `recv_lens[i]` bytes it sends.
pub fn alltoall(st: &mut dyn Steps, comm: &Comm, send: Vec<Vec<u8>>, recv_lens: &[usize]) -> MpiResult<Vec<Vec<u8>>> {
    let send = send.into_iter().map(SendData::Owned).collect();
    let recv = recv_lens.iter().map(|&len| RecvBuf::Owned(vec![0; len])).collect();
    let (s, slots): (Schedule<'static>, Vec<Slot>) = coll::alltoallv_schedule(comm, send, recv);
    let mut bufs = st.run(s)?;
    Ok(coll::take(&mut bufs, &slots))
}
