//! The process-wide MPI state: the engine, the predefined communicators and the creation of
//! new ones. The shim holds one [`World`] behind a lock and calls into it.

use std::sync::Arc;
use std::time::Duration;

use kawarimi_transports::Transport;

use crate::coll::{self, Reducer};
use crate::comm::{Comm, DistGraph, Group, CTX_STRIDE};
use crate::core::{Core, CoreConfig, ReqId};
use crate::engine::Engine;
use crate::error::{err, ErrorClass, MpiError, MpiResult};
use crate::intercoll;
use crate::launch::{self, ProcInfo};
use crate::sched::{Schedule, Slot};

/// How long the start-up wire-up may take before it fails naming what it waited for.
pub const WIREUP_TIMEOUT: Duration = Duration::from_secs(60);

/// `MPI_UNDEFINED` as a split colour, as the runtime sees it.
pub const UNDEFINED_COLOR: i32 = -32766;

/// The state of an initialised MPI process.
pub struct World {
    pub engine: Engine,
    pub proc: ProcInfo,
    pub hostname: String,
    pub world: Arc<Comm>,
    pub self_comm: Arc<Comm>,
    /// The wire-up service, the control connection and a hosted coordinator.
    pub control: Option<crate::wireup::ControlPlane>,
    /// The lowest context id this process has not used; new communicators agree on the
    /// maximum over their members (see [`World::alloc_ctx`]).
    next_ctx: u32,
    /// `MPI_Comm_idup`s started and not yet finished here.
    idups_pending: u32,
    /// Context ids this process took while an idup was pending: the idup's own id, agreed
    /// later, must not be one of them (see [`World::comm_idup_finish`]).
    taken_during_idup: std::collections::BTreeSet<u32>,
}

/// The first context ids belong to `MPI_COMM_WORLD`, the next to `MPI_COMM_SELF`.
const FIRST_FREE_CTX: u32 = 2 * CTX_STRIDE;

struct MaxU32;

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
}

impl World {
    /// Builds the world of a process whose transport is already connected (or `None` for a
    /// job of one).
    pub fn new(proc: ProcInfo, transport: Option<Box<dyn Transport>>, config: CoreConfig) -> MpiResult<World> {
        let core = Core::new(proc.rank, proc.size, config);
        let mut engine = Engine::new(core, transport);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        engine.wait_policy = crate::engine::WaitPolicy::for_host(proc.local_size, cores);
        let world = Comm::new(0, Arc::new(Group::new((0..proc.size).collect())?), proc.rank as i32);
        let self_comm = Comm::new(CTX_STRIDE, Arc::new(Group::new(vec![proc.rank])?), 0);
        Ok(World {
            engine,
            proc,
            hostname: crate::launch::hostname(),
            world: Arc::new(world),
            self_comm: Arc::new(self_comm),
            control: None,
            next_ctx: FIRST_FREE_CTX,
            idups_pending: 0,
            taken_during_idup: Default::default(),
        })
    }

    /// `MPI_Finalize`: ends the data path politely (every peer says goodbye), then lets go
    /// of the control plane; dropping the PMIx client tells the launcher this rank ended
    /// cleanly, and a hosted coordinator stops last.
    pub fn finalize(&mut self) -> MpiResult<()> {
        if std::env::var("KAWARIMI_REPORT").is_ok_and(|v| v != "0") {
            // One write of the whole line: the ranks' stderr meet in the launcher's, and a line
            // written in pieces (as `eprintln!` may) gets interleaved with the others'.
            let line = format!("kawarimi: rank {}: {}\n", self.engine.core.rank(), self.engine.transport_report());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        }
        self.engine.finalize()?;
        // Drop order is teardown order: the wire-up service first (dropping the PMIx client
        // tells the launcher this rank ended cleanly), then the control thread (which says
        // goodbye), then the relay this rank leads (once its group has said goodbye), then a
        // coordinator this rank hosts.
        if let Some(sw) = self.engine.switch.take() {
            sw.shared.shut_down();
        }
        if let Some(cp) = self.control.take() {
            let crate::wireup::ControlPlane { relay, hosted, .. } = cp;
            drop(relay);
            drop(hosted);
        }
        Ok(())
    }

    /// Reads this process's place from the launcher's environment.
    pub fn detect() -> MpiResult<ProcInfo> {
        launch::detect().map_err(|e| MpiError::new(ErrorClass::Other, format!("launcher environment: {e}")))
    }

    /// Agrees on a context id for a new communicator over `parent`: the maximum of every
    /// member's next free id (of both groups of an inter-communicator). Collective over
    /// `parent`.
    pub fn alloc_ctx(&mut self, parent: &Comm) -> MpiResult<u32> {
        let mut buf = self.next_ctx.to_le_bytes();
        if parent.is_inter() {
            let sched = intercoll::allreduce_both_schedule(parent, buf.to_vec(), Box::new(MaxU32));
            let got = coll::run(&mut self.engine, sched.0)?;
            buf.copy_from_slice(&got[sched.1]);
        } else {
            coll::allreduce(&mut self.engine, parent, &mut buf, &MaxU32)?;
        }
        self.take_ctx(u32::from_le_bytes(buf))
    }

    /// Records that the agreed context id `ctx` (and its stride) is used from now on.
    fn take_ctx(&mut self, ctx: u32) -> MpiResult<u32> {
        if ctx > u32::MAX - 2 * CTX_STRIDE {
            return err(ErrorClass::Intern, "context ids exhausted");
        }
        self.next_ctx = self.next_ctx.max(ctx + CTX_STRIDE);
        if self.idups_pending > 0 {
            self.taken_during_idup.insert(ctx);
        }
        Ok(ctx)
    }

    /// Starts `MPI_Comm_idup` (§6.4.2) of `parent`: the context id is agreed by a nonblocking
    /// allreduce of every member's next free id, as [`World::alloc_ctx`] does. This process's
    /// candidate is reserved at once, so communicators it creates before the idup completes
    /// contribute higher ids. Returns the request and the slot [`World::comm_idup_finish`]
    /// reads.
    pub fn comm_idup_start(&mut self, parent: &Comm) -> MpiResult<(ReqId, Slot)> {
        let mine = self.next_ctx;
        if mine > u32::MAX - 2 * CTX_STRIDE {
            return err(ErrorClass::Intern, "context ids exhausted");
        }
        self.next_ctx = mine + CTX_STRIDE;
        let mine = mine.to_le_bytes().to_vec();
        let (sched, slot) = if parent.is_inter() {
            intercoll::allreduce_both_schedule(parent, mine, Box::new(MaxU32))
        } else {
            coll::allreduce_schedule(parent, mine, Box::new(MaxU32))
        };
        let id = self.engine.start_schedule(sched)?;
        self.idups_pending += 1;
        Ok((id, slot))
    }

    /// Makes the communicator of a completed `MPI_Comm_idup` from its schedule's buffers.
    ///
    /// Every member agreed on the id, but a member that created another communicator while
    /// the idup was pending may have been given the same id there by a group that does not
    /// include the idup's highest contributor. That is detected and reported, never used.
    pub fn comm_idup_finish(&mut self, parent: &Comm, bufs: &[Vec<u8>], slot: Slot) -> MpiResult<Comm> {
        self.idups_pending = self.idups_pending.saturating_sub(1);
        let raw: [u8; 4] = bufs
            .get(slot)
            .and_then(|b| b.as_slice().try_into().ok())
            .ok_or_else(|| MpiError::new(ErrorClass::Intern, "MPI_Comm_idup's context agreement lost its result"))?;
        let ctx = u32::from_le_bytes(raw);
        let clash = self.taken_during_idup.contains(&ctx);
        if self.idups_pending == 0 {
            self.taken_during_idup.clear();
        }
        if clash {
            return err(
                ErrorClass::Intern,
                format!(
                    "MPI_Comm_idup agreed on context {ctx}, which this process gave another communicator created \
                     while the idup was pending; complete the idup before creating communicators over other groups"
                ),
            );
        }
        self.next_ctx = self.next_ctx.max(ctx + CTX_STRIDE);
        Ok(Self::copy_of(parent, ctx))
    }

    /// A communicator over `parent`'s group(s) and topology in context `ctx`.
    fn copy_of(parent: &Comm, ctx: u32) -> Comm {
        match &parent.inter {
            None => Comm { topo: parent.topo.clone(), ..Comm::new(ctx, parent.group.clone(), parent.rank) },
            Some(inter) => Comm::new_inter(ctx, parent.group.clone(), parent.rank, inter.remote.clone()),
        }
    }

    /// `MPI_Comm_dup` (§6.4.2); of an inter-communicator, an inter-communicator between the
    /// same groups.
    pub fn comm_dup(&mut self, parent: &Comm) -> MpiResult<Comm> {
        let ctx = self.alloc_ctx(parent)?;
        Ok(Self::copy_of(parent, ctx))
    }

    /// The exchange of `MPI_Dist_graph_create` (§7.5.4), collective over the intra-communicator
    /// `parent`: each process gives any edges `(source, destination, weight)` of the graph, and
    /// learns its own sources and destinations. Edges travel to both their ends in one
    /// all-to-all (after one of counts); each process lists its sources and destinations in
    /// the order of the rank that gave the edge, then of its place in that rank's list. The
    /// graph is weighted if any process gave weights.
    pub fn dist_graph(&mut self, parent: &Comm, edges: &[(i32, i32, i32)], weighted: bool) -> MpiResult<DistGraph> {
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
        let counts = coll::alltoallv(&mut self.engine, parent, counts, &vec![8; n])?;
        let word = |b: &[u8], i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        let lens: Vec<usize> = counts.iter().map(|c| word(c, 0) as usize).collect();
        let weighted = counts.iter().any(|c| word(c, 1) != 0);
        let records = coll::alltoallv(&mut self.engine, parent, parts, &lens)?;
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

    /// `MPI_Comm_split` (§6.4.2): ranks with the same `color` form a communicator ordered by
    /// `(key, rank in parent)`; `UNDEFINED_COLOR` gets `None`. Split of an inter-communicator
    /// gives inter-communicators between the local and remote processes of each colour, and
    /// `None` where the remote group has none of it.
    pub fn comm_split(&mut self, parent: &Comm, color: i32, key: i32) -> MpiResult<Option<Comm>> {
        if color < 0 && color != UNDEFINED_COLOR {
            return err(ErrorClass::Arg, format!("split colour {color} is negative"));
        }
        let mut mine = color.to_le_bytes().to_vec();
        mine.extend_from_slice(&key.to_le_bytes());
        let local_comm = parent.inter.as_ref().map_or(parent, |i| &i.local);
        let local = coll::allgatherv(&mut self.engine, local_comm, &mine, &vec![8; parent.size() as usize])?;
        let remote = match &parent.inter {
            Some(_) => Some(coll::allgatherv(&mut self.engine, parent, &mine, &vec![8; parent.p2p_size() as usize])?),
            None => None,
        };
        let ctx = self.alloc_ctx(parent)?;
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

    /// `MPI_Intercomm_create` (§6.6.2): collective over `local` (an intra-communicator); its
    /// `local_leader` and the remote group's leader, rank `remote_leader` of `peer`, swap
    /// their groups and context-id maxima over `peer` with `tag`.
    pub fn intercomm_create(
        &mut self,
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
        let mut max = self.next_ctx.to_le_bytes();
        coll::allreduce(&mut self.engine, local, &mut max, &MaxU32)?;
        // What the leader learns and passes on: the agreed id and the remote group's size, then
        // the remote group's members.
        let mut header = [0u8; 8];
        let mut members = Vec::new();
        if local.rank == local_leader {
            if peer.is_inter() {
                return err(ErrorClass::Comm, "the peer communicator of MPI_Intercomm_create is an inter-communicator");
            }
            let other = peer.peer(remote_leader)?;
            let mine: Vec<u8> = local.group.members().iter().flat_map(|m| m.to_le_bytes()).collect();
            let mut hdr = max.to_vec();
            hdr.extend_from_slice(&(local.size() as u32).to_le_bytes());
            let theirs = self.swap_with(peer.ctx, tag, other, hdr, 8)?;
            let remote_size = u32::from_le_bytes(theirs[4..8].try_into().expect("4 bytes"));
            members = self.swap_with(peer.ctx, tag, other, mine, remote_size as usize * 4)?;
            MaxU32.reduce(&theirs[..4], &mut max)?;
            header[..4].copy_from_slice(&max);
            header[4..].copy_from_slice(&theirs[4..8]);
        }
        coll::bcast(&mut self.engine, local, local_leader, &mut header)?;
        let remote_size = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        if local.rank != local_leader {
            members = vec![0; remote_size * 4];
        }
        coll::bcast(&mut self.engine, local, local_leader, &mut members)?;
        let remote =
            Group::new(members.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())?;
        if let Some(&w) = remote.members().iter().find(|&&w| local.group.rank_of(w).is_some()) {
            return err(
                ErrorClass::Group,
                format!("world rank {w} is in both groups of MPI_Intercomm_create: the groups must be disjoint"),
            );
        }
        let ctx = self.take_ctx(u32::from_le_bytes(header[..4].try_into().expect("4 bytes")))?;
        Ok(Comm::new_inter(ctx, local.group.clone(), local.rank, Arc::new(remote)))
    }

    /// Sends `bytes` to world rank `other` in context `ctx` with `tag` and receives exactly
    /// `len` bytes from it: the leaders' exchange of `MPI_Intercomm_create`.
    fn swap_with(&mut self, ctx: u32, tag: i32, other: u32, bytes: Vec<u8>, len: usize) -> MpiResult<Vec<u8>> {
        let mut s = Schedule::between(ctx, tag, vec![other])?;
        let out = s.slot(bytes);
        let back = s.slot(Vec::new());
        s.recv(0, back, len);
        s.send_last(0, out);
        let mut slots = coll::run(&mut self.engine, s)?;
        Ok(std::mem::take(&mut slots[back]))
    }

    /// `MPI_Intercomm_merge` (§6.6.2): an intra-communicator of both groups, the group that
    /// passed `high == false` first; when both passed the same, the group whose leader has
    /// the lower world rank.
    pub fn intercomm_merge(&mut self, inter_comm: &Comm, high: bool) -> MpiResult<Comm> {
        let Some(inter) = &inter_comm.inter else {
            return err(ErrorClass::Comm, "MPI_Intercomm_merge needs an inter-communicator");
        };
        let ctx = self.alloc_ctx(inter_comm)?;
        let theirs =
            coll::allgatherv(&mut self.engine, inter_comm, &[u8::from(high)], &vec![1; inter.remote.size() as usize])?;
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

    /// `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)` (§6.4.2): one communicator per host.
    /// A process that passed `MPI_UNDEFINED` takes part with `participate == false` and gets
    /// `None`: every member must run the same collectives.
    pub fn comm_split_shared(&mut self, parent: &Comm, key: i32, participate: bool) -> MpiResult<Option<Comm>> {
        if parent.is_inter() {
            return err(ErrorClass::Comm, "MPI_Comm_split_type of an inter-communicator is not supported");
        }
        let color = self.host_colours(parent)?[parent.rank as usize];
        self.comm_split(parent, if participate { color } else { UNDEFINED_COLOR }, key)
    }

    /// For each member of the intra-communicator `parent` (collective), the rank of the first
    /// member on the same host: every member shares memory with those of its colour.
    pub fn host_colours(&mut self, parent: &Comm) -> MpiResult<Vec<i32>> {
        let n = parent.size() as usize;
        let mut name = [0u8; 256];
        let h = self.hostname.as_bytes();
        let len = h.len().min(name.len());
        name[..len].copy_from_slice(&h[..len]);
        let all = coll::allgatherv(&mut self.engine, parent, &name, &vec![name.len(); n])?;
        Ok(all.iter().map(|b| all.iter().position(|c| c == b).expect("own name is present") as i32).collect())
    }

    /// `MPI_Comm_create_group` (§6.4.2): collective over the members of `group` only, which
    /// agree on a context id among themselves, in `parent`'s group-creation context and
    /// tagged with `tag` so that concurrent creations with other tags stay apart.
    pub fn comm_create_group(&mut self, parent: &Comm, group: &Group, tag: i32) -> MpiResult<Comm> {
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
        // A transient communicator whose collective context is `parent.ctx + 2`.
        let transient =
            Comm { coll_tag_base: (tag & 0x07FF_FFFF) << 4, ..Comm::new(parent.ctx + 1, group.clone(), rank) };
        let ctx = self.alloc_ctx(&transient)?;
        Ok(Comm::new(ctx, group, rank))
    }

    /// `MPI_Comm_create` (§6.4.2): collective over `parent`; members of `group` get the new
    /// communicator, the others `None`. Of an inter-communicator, each side gives a group of
    /// its own processes, and the result is an inter-communicator between the two groups
    /// (`None` also where the other side's group is empty).
    pub fn comm_create(&mut self, parent: &Comm, group: &Group) -> MpiResult<Option<Comm>> {
        for &w in group.members() {
            if parent.group.rank_of(w).is_none() {
                return err(ErrorClass::Group, format!("process {w} of the group is not in the communicator"));
            }
        }
        let my_rank = group.rank_of(parent.me());
        let remote = match &parent.inter {
            None => None,
            Some(inter) => {
                // Each process tells the other side its rank in its side's group (-1: not in
                // it): the other side's group, in its order, is the processes that have one.
                let mine = my_rank.unwrap_or(-1).to_le_bytes();
                let theirs = coll::allgatherv(&mut self.engine, parent, &mine, &vec![4; inter.remote.size() as usize])?;
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
        let ctx = self.alloc_ctx(parent)?;
        let Some(rank) = my_rank else { return Ok(None) };
        let group = Arc::new(group.clone());
        Ok(match remote {
            None => Some(Comm::new(ctx, group, rank)),
            Some(remote) if remote.size() == 0 => None,
            Some(remote) => Some(Comm::new_inter(ctx, group, rank, Arc::new(remote))),
        })
    }
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
