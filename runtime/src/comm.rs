//! Groups and communicators (MPI-3.1 chapter 6) and Cartesian topologies (§7.5).

use rustc_hash::FxHashMap;
use std::sync::Arc;

use crate::error::{err, ErrorClass, MpiResult};

/// An ordered set of processes, named by their world ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    members: Vec<u32>,
    index: FxHashMap<u32, i32>,
}

/// `MPI_IDENT`, `MPI_CONGRUENT`, `MPI_SIMILAR`, `MPI_UNEQUAL` (§6.3.1, §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Ident,
    Congruent,
    Similar,
    Unequal,
}

impl Group {
    pub fn new(members: Vec<u32>) -> MpiResult<Group> {
        let mut index = FxHashMap::with_capacity_and_hasher(members.len(), Default::default());
        for (i, &m) in members.iter().enumerate() {
            if index.insert(m, i as i32).is_some() {
                return err(ErrorClass::Group, format!("process {m} appears twice in a group"));
            }
        }
        Ok(Group { members, index })
    }

    pub fn empty() -> Group {
        Group { members: Vec::new(), index: FxHashMap::default() }
    }

    pub fn size(&self) -> i32 {
        self.members.len() as i32
    }

    pub fn members(&self) -> &[u32] {
        &self.members
    }

    /// World rank of group rank `r`.
    pub fn world_rank(&self, r: i32) -> Option<u32> {
        usize::try_from(r).ok().and_then(|i| self.members.get(i).copied())
    }

    /// Group rank of world rank `w`.
    pub fn rank_of(&self, w: u32) -> Option<i32> {
        // The world and its duplicates hold every rank at its own place: no lookup (this runs
        // for every message received). Members are unique, so a match there is the answer.
        if self.members.get(w as usize) == Some(&w) {
            return Some(w as i32);
        }
        self.index.get(&w).copied()
    }

    /// §6.3.1: same members in the same order → Ident; same members → Similar.
    pub fn compare(&self, other: &Group) -> Comparison {
        if self.members == other.members {
            Comparison::Ident
        } else if self.members.len() == other.members.len() && self.members.iter().all(|m| other.index.contains_key(m))
        {
            Comparison::Similar
        } else {
            Comparison::Unequal
        }
    }

    fn check_ranks(&self, ranks: &[i32]) -> MpiResult<()> {
        let mut seen = vec![false; self.members.len()];
        for &r in ranks {
            let Some(i) = usize::try_from(r).ok().filter(|&i| i < seen.len()) else {
                return err(ErrorClass::Rank, format!("rank {r} is not in a group of {}", self.members.len()));
            };
            if std::mem::replace(&mut seen[i], true) {
                return err(ErrorClass::Rank, format!("rank {r} listed twice"));
            }
        }
        Ok(())
    }

    /// §6.3.2 `MPI_Group_incl`.
    pub fn incl(&self, ranks: &[i32]) -> MpiResult<Group> {
        self.check_ranks(ranks)?;
        Group::new(ranks.iter().map(|&r| self.members[r as usize]).collect())
    }

    /// §6.3.2 `MPI_Group_excl`.
    pub fn excl(&self, ranks: &[i32]) -> MpiResult<Group> {
        self.check_ranks(ranks)?;
        let drop: std::collections::HashSet<i32> = ranks.iter().copied().collect();
        Group::new(
            self.members.iter().enumerate().filter(|(i, _)| !drop.contains(&(*i as i32))).map(|(_, &m)| m).collect(),
        )
    }

    /// Expands `(first, last, stride)` triplets of §6.3.2 `MPI_Group_range_incl`.
    pub fn expand_ranges(&self, ranges: &[[i32; 3]]) -> MpiResult<Vec<i32>> {
        let mut out = Vec::new();
        for &[first, last, stride] in ranges {
            if stride == 0 {
                return err(ErrorClass::Arg, "range stride is 0");
            }
            let n = self.members.len() as i32;
            for r in [first, last] {
                if r < 0 || r >= n {
                    return err(ErrorClass::Rank, format!("rank {r} in a range is not in a group of {n}"));
                }
            }
            let mut r = first;
            while (stride > 0 && r <= last) || (stride < 0 && r >= last) {
                out.push(r);
                if out.len() > self.members.len() {
                    return err(ErrorClass::Rank, "ranges name a rank twice");
                }
                r += stride;
            }
        }
        Ok(out)
    }

    pub fn union(&self, other: &Group) -> MpiResult<Group> {
        let mut m = self.members.clone();
        m.extend(other.members.iter().filter(|x| !self.index.contains_key(x)));
        Group::new(m)
    }

    pub fn intersection(&self, other: &Group) -> MpiResult<Group> {
        Group::new(self.members.iter().copied().filter(|x| other.index.contains_key(x)).collect())
    }

    pub fn difference(&self, other: &Group) -> MpiResult<Group> {
        Group::new(self.members.iter().copied().filter(|x| !other.index.contains_key(x)).collect())
    }

    /// §6.3.1 `MPI_Group_translate_ranks`: `None` where the process is not in `other`.
    pub fn translate(&self, ranks: &[i32], other: &Group) -> MpiResult<Vec<Option<i32>>> {
        ranks
            .iter()
            .map(|&r| {
                let w = self.world_rank(r).ok_or_else(|| {
                    crate::error::MpiError::new(ErrorClass::Rank, format!("rank {r} not in group of {}", self.size()))
                })?;
                Ok(other.rank_of(w))
            })
            .collect()
    }
}

/// The virtual topology attached to a communicator (§7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    Cart(Cartesian),
    Graph(Graph),
    DistGraph(DistGraph),
}

/// One neighbour in a neighbourhood collective (§7.6): a rank of the communicator (`None`
/// for `MPI_PROC_NULL`, off a non-periodic edge: nothing moves), and the lane its message
/// travels on. Messages between one pair of processes match in order within a lane; the
/// lanes keep apart what a Cartesian process sends in the -1 and the +1 direction of one
/// dimension, which go to the same process when the dimension has 2 (or 1) processes and
/// periodic ends, and must still land in the blocks §7.6 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    pub rank: Option<i32>,
    pub lane: u8,
}

impl Topology {
    /// The neighbourhood of process `rank` (§7.6): the sources it receives from and the
    /// destinations it sends to, each in the order of the collectives' buffer blocks.
    ///
    /// Cartesian: per dimension, the -1 then the +1 neighbour, both ways. What goes toward
    /// -1 travels on lane 0 and toward +1 on lane 1, so block `2d` (from the -1 neighbour,
    /// which sent it toward its +1) is received on lane 1 and block `2d + 1` on lane 0.
    /// Graph: the neighbours, both ways. Distributed graph: its sources and destinations.
    pub fn neighborhood(&self, rank: i32) -> MpiResult<(Vec<Neighbor>, Vec<Neighbor>)> {
        let plain = |v: &[i32]| v.iter().map(|&r| Neighbor { rank: Some(r), lane: 0 }).collect::<Vec<_>>();
        Ok(match self {
            Topology::Cart(cart) => {
                let (mut sources, mut destinations) = (Vec::new(), Vec::new());
                for dim in 0..cart.dims.len() {
                    let (minus, plus) = cart.shift(rank, dim, 1)?;
                    sources.extend([Neighbor { rank: minus, lane: 1 }, Neighbor { rank: plus, lane: 0 }]);
                    destinations.extend([Neighbor { rank: minus, lane: 0 }, Neighbor { rank: plus, lane: 1 }]);
                }
                (sources, destinations)
            }
            Topology::Graph(g) => {
                let Some(n) = g.neighbors(rank) else {
                    return err(ErrorClass::Rank, format!("rank {rank} is not a node of the graph"));
                };
                (plain(n), plain(n))
            }
            Topology::DistGraph(g) => (plain(&g.sources), plain(&g.destinations)),
        })
    }
}

/// A graph topology (§7.5.3), as `MPI_Graph_create` describes it: node `i`'s neighbours are
/// `edges[index[i - 1]..index[i]]` (from 0 for node 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub index: Vec<i32>,
    pub edges: Vec<i32>,
}

impl Graph {
    /// The neighbours of node `rank`, `None` outside the graph.
    pub fn neighbors(&self, rank: i32) -> Option<&[i32]> {
        let r = usize::try_from(rank).ok().filter(|&r| r < self.index.len())?;
        let start = if r == 0 { 0 } else { self.index[r - 1] as usize };
        self.edges.get(start..self.index[r] as usize)
    }
}

/// This process's part of a distributed graph topology (§7.5.4): the processes it receives
/// from and sends to, in order, with their weights (empty when unweighted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistGraph {
    pub sources: Vec<i32>,
    pub source_weights: Vec<i32>,
    pub destinations: Vec<i32>,
    pub destination_weights: Vec<i32>,
    pub weighted: bool,
}

/// A Cartesian topology attached to a communicator (§7.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cartesian {
    pub dims: Vec<i32>,
    pub periods: Vec<bool>,
}

impl Cartesian {
    /// Row-major coordinates of `rank` (§7.5.5).
    pub fn coords(&self, rank: i32) -> Vec<i32> {
        let mut c = vec![0; self.dims.len()];
        let mut r = rank;
        for (i, &d) in self.dims.iter().enumerate().rev() {
            c[i] = r % d;
            r /= d;
        }
        c
    }

    /// Rank at `coords`, wrapping periodic dimensions; `None` when off a non-periodic edge.
    pub fn rank(&self, coords: &[i32]) -> MpiResult<Option<i32>> {
        if coords.len() != self.dims.len() {
            return err(ErrorClass::Dims, "wrong number of coordinates");
        }
        let mut r = 0;
        for ((&c, &d), &p) in coords.iter().zip(&self.dims).zip(&self.periods) {
            let c = if p {
                c.rem_euclid(d)
            } else if c < 0 || c >= d {
                return Ok(None);
            } else {
                c
            };
            r = r * d + c;
        }
        Ok(Some(r))
    }

    /// `MPI_Cart_shift` (§7.5.6) of process `rank`: the ranks `disp` steps back and forward
    /// along dimension `dim`, `None` off a non-periodic edge.
    pub fn shift(&self, rank: i32, dim: usize, disp: i32) -> MpiResult<(Option<i32>, Option<i32>)> {
        if dim >= self.dims.len() {
            return err(ErrorClass::Arg, format!("direction {dim} is not a dimension"));
        }
        let me = self.coords(rank);
        let at = |delta: i32| {
            let mut x = me.clone();
            x[dim] = x[dim].saturating_add(delta);
            self.rank(&x)
        };
        Ok((at(disp.saturating_neg())?, at(disp)?))
    }
}

/// `MPI_Dims_create` (§7.5.2): fills the zero entries of `dims` with a balanced factorisation
/// of `nnodes`, in non-increasing order.
pub fn dims_create(nnodes: i32, dims: &mut [i32]) -> MpiResult<()> {
    if nnodes < 1 {
        return err(ErrorClass::Arg, format!("nnodes {nnodes} < 1"));
    }
    let mut fixed = 1i64;
    let mut free = 0;
    for &d in dims.iter() {
        if d < 0 {
            return err(ErrorClass::Dims, format!("negative dimension {d}"));
        }
        if d > 0 {
            fixed *= d as i64;
        } else {
            free += 1;
        }
    }
    if nnodes as i64 % fixed != 0 {
        return err(ErrorClass::Dims, format!("{nnodes} nodes do not divide into the fixed dimensions"));
    }
    if free == 0 {
        return if fixed == nnodes as i64 {
            Ok(())
        } else {
            err(ErrorClass::Dims, format!("dimensions multiply to {fixed}, not {nnodes}"))
        };
    }
    // Prime factors, largest first, each given to the currently smallest free dimension.
    let mut rest = nnodes as i64 / fixed;
    let mut factors = Vec::new();
    let mut f = 2;
    while f * f <= rest {
        while rest % f == 0 {
            factors.push(f);
            rest /= f;
        }
        f += 1;
    }
    if rest > 1 {
        factors.push(rest);
    }
    factors.sort_unstable_by(|a, b| b.cmp(a));
    let mut free_dims = vec![1i64; free];
    for f in factors {
        let smallest = free_dims.iter_mut().min().expect("at least one free dimension");
        *smallest *= f;
    }
    free_dims.sort_unstable_by(|a, b| b.cmp(a));
    let mut it = free_dims.into_iter();
    for d in dims.iter_mut().filter(|d| **d == 0) {
        *d = it.next().expect("one value per free dimension") as i32;
    }
    Ok(())
}

/// Context ids each communicator reserves: `ctx` for point-to-point, `ctx + 1` for its
/// collectives, `ctx + 2` for `MPI_Comm_create_group` among a subset of its members.
pub const CTX_STRIDE: u32 = 3;

/// A communicator: a group, this process's rank in it, and the context ids that keep its
/// traffic apart from every other communicator's. An intra-communicator's processes talk
/// among themselves; an inter-communicator (§6.6) joins two disjoint groups, and its
/// point-to-point ranks and rooted collectives name processes of the *remote* group.
#[derive(Debug)]
pub struct Comm {
    /// Context of point-to-point traffic; collectives use `ctx + 1`.
    pub ctx: u32,
    /// The local group (the only group of an intra-communicator).
    pub group: Arc<Group>,
    /// This process's rank in `group`.
    pub rank: i32,
    pub topo: Option<Topology>,
    /// Added to every collective tag; non-zero only for the transient communicator of an
    /// `MPI_Comm_create_group`, whose user tag keeps concurrent creations apart.
    pub coll_tag_base: i32,
    /// Collectives started on this communicator so far: each one's tag carries its number, so
    /// that several in progress at once (nonblocking collectives) keep their messages apart.
    pub coll_seq: Arc<CollSeq>,
    /// The other side of an inter-communicator; `None` for an intra-communicator.
    pub inter: Option<Inter>,
}

/// The instance counters of a communicator's collectives, one for blocking and one for
/// nonblocking ones. Every process starts a communicator's collectives in the same order
/// (§5.12), so counting gives each instance a tag all its members agree on. Counting the two
/// kinds apart, as Open MPI's separate blocking and nonblocking components do, also keeps
/// programs working that start a nonblocking collective and a blocking one in different
/// orders on different processes (mpi4py's `Iagree` test does).
#[derive(Debug, Default)]
pub struct CollSeq {
    blocking: std::sync::atomic::AtomicU32,
    nonblocking: std::sync::atomic::AtomicU32,
    /// Whether the blocking collectives go through the shared-memory slots, as the members
    /// agreed for one switch epoch ([`crate::slotcoll`]): `epoch + 1` in the high half (0:
    /// never agreed), the slot area in the low half ([`NO_SLOTS`]: point-to-point).
    slots: std::sync::atomic::AtomicU64,
    /// Collectives completed through the slots: the next one is instance `slot_seq + 1`.
    slot_seq: std::sync::atomic::AtomicU64,
    /// The instance number's bits in a tag beyond the widest (0: all 26); see
    /// [`CollSeq::narrow`].
    narrowed_bits: u32,
}

/// The bits a collective tag gives the instance number: above the kind (4 bits) and the
/// nonblocking flag, below the sign.
const INSTANCE_BITS: u32 = 26;

/// The instance bits of an `MPI_Comm_create_group` transient communicator's tags: its
/// context agreement takes two collectives a round, and a retry more; 256 instances wrap
/// long after any member can be a whole instance ahead of another.
pub const TRANSIENT_INSTANCE_BITS: u32 = 8;

const NO_SLOTS: u64 = 0xFFFF_FFFF;

impl CollSeq {
    /// The tag of the next collective of `kind` (1..16): `base + kind | nonblocking << 4 |
    /// instance << 5`.
    pub fn next_tag(&self, base: i32, kind: i32, nonblocking: bool) -> i32 {
        let counter = if nonblocking { &self.nonblocking } else { &self.blocking };
        let bits = INSTANCE_BITS - self.narrowed_bits;
        let seq = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & ((1 << bits) - 1);
        base.wrapping_add(kind | (i32::from(nonblocking) << 4) | (seq << 5) as i32)
    }

    /// Counters whose instance numbers take only `bits` bits of a tag, so that a base above
    /// them (a transient communicator's user tag, shifted past them) never meets them.
    pub fn narrow(bits: u32) -> CollSeq {
        CollSeq { narrowed_bits: INSTANCE_BITS - bits.min(INSTANCE_BITS), ..CollSeq::default() }
    }

    /// What the members agreed that holds in `epoch`: `Some(Some(area))` the slots' area (for
    /// that epoch only), `Some(None)` point-to-point (for good: see [`crate::slotcoll`]),
    /// `None` nothing yet.
    pub fn slots(&self, epoch: u32) -> Option<Option<usize>> {
        let v = self.slots.load(std::sync::atomic::Ordering::Relaxed);
        if v != 0 && v & NO_SLOTS == NO_SLOTS {
            return Some(None);
        }
        if v >> 32 != u64::from(epoch) + 1 {
            return None;
        }
        Some(Some((v & NO_SLOTS) as usize))
    }

    pub fn set_slots(&self, epoch: u32, area: Option<usize>) {
        let low = area.map_or(NO_SLOTS, |a| a as u64);
        self.slots.store((u64::from(epoch) + 1) << 32 | low, std::sync::atomic::Ordering::Relaxed);
    }

    /// The instance number of the next collective through the slots.
    pub fn next_slot_seq(&self) -> u64 {
        self.slot_seq.load(std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Counts one collective completed through the slots.
    pub fn slot_done(&self) {
        self.slot_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What an inter-communicator has beyond its local group.
#[derive(Debug)]
pub struct Inter {
    /// The remote group: point-to-point ranks are ranks in it.
    pub remote: Arc<Group>,
    /// The local group as an intra-communicator of its own whose collectives travel in context
    /// `ctx + 2` (which an inter-communicator, having no `MPI_Comm_create_group`, leaves
    /// free): used to agree among the local group when communicators are made from this one.
    pub local: Arc<Comm>,
}

impl Comm {
    pub fn new(ctx: u32, group: Arc<Group>, rank: i32) -> Comm {
        debug_assert!(group.world_rank(rank).is_some());
        Comm { ctx, group, rank, topo: None, coll_tag_base: 0, coll_seq: Arc::default(), inter: None }
    }

    /// An inter-communicator between the local `group` (where this process has `rank`) and
    /// `remote`, in context `ctx`.
    pub fn new_inter(ctx: u32, group: Arc<Group>, rank: i32, remote: Arc<Group>) -> Comm {
        let local = Arc::new(Comm::new(ctx + 1, group.clone(), rank));
        Comm { inter: Some(Inter { remote, local }), ..Comm::new(ctx, group, rank) }
    }

    pub fn is_inter(&self) -> bool {
        self.inter.is_some()
    }

    /// Size of the local group.
    pub fn size(&self) -> i32 {
        self.group.size()
    }

    /// The group point-to-point ranks refer to: the remote group of an inter-communicator.
    pub fn p2p_group(&self) -> &Group {
        self.inter.as_ref().map_or(&self.group, |i| &i.remote)
    }

    /// How many ranks point-to-point calls may name (`MPI_Comm_remote_size` on an
    /// inter-communicator, `MPI_Comm_size` otherwise).
    pub fn p2p_size(&self) -> i32 {
        self.p2p_group().size()
    }

    pub fn coll_ctx(&self) -> u32 {
        self.ctx + 1
    }

    /// The context of its point-to-point traffic.
    pub fn p2p_ctx(&self) -> u32 {
        self.ctx
    }

    /// World rank of point-to-point rank `r` (in the remote group of an inter-communicator),
    /// checked.
    pub fn peer(&self, r: i32) -> MpiResult<u32> {
        self.p2p_group().world_rank(r).ok_or_else(|| {
            crate::error::MpiError::new(
                ErrorClass::Rank,
                format!(
                    "rank {r} is not in a {}group of {}",
                    if self.is_inter() { "remote " } else { "" },
                    self.p2p_size()
                ),
            )
        })
    }

    /// World rank of this process.
    pub fn me(&self) -> u32 {
        self.group.world_rank(self.rank).expect("own rank is in the group")
    }

    /// Its Cartesian topology, if it has one.
    pub fn cart(&self) -> Option<&Cartesian> {
        match &self.topo {
            Some(Topology::Cart(c)) => Some(c),
            _ => None,
        }
    }

    /// Point-to-point rank of world rank `w` (for status fields).
    pub fn rank_of_world(&self, w: u32) -> i32 {
        self.p2p_group().rank_of(w).unwrap_or(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(rank: Option<i32>, lane: u8) -> Neighbor {
        Neighbor { rank, lane }
    }

    #[test]
    fn cartesian_neighborhood_pairs_each_block_with_the_opposite_direction() {
        // 3 x 1 x 2: the first dimension not periodic, the second periodic with one process
        // (each its own -1 and +1 neighbour), the third periodic with two (one process both).
        let cart = Topology::Cart(Cartesian { dims: vec![3, 1, 2], periods: vec![false, true, true] });
        let (src, dst) = cart.neighborhood(0).unwrap();
        // Rank 0 is at (0, 0, 0): no -1 neighbour in the first dimension, rank 2 at +1.
        assert_eq!(src, [n(None, 1), n(Some(2), 0), n(Some(0), 1), n(Some(0), 0), n(Some(1), 1), n(Some(1), 0)]);
        assert_eq!(dst, [n(None, 0), n(Some(2), 1), n(Some(0), 0), n(Some(0), 1), n(Some(1), 0), n(Some(1), 1)]);
        // Every message finds its receive: what p sends toward +1 in a dimension (its block
        // 2d + 1) is what its +1 neighbour q receives as block 2d, on the same lane.
        for p in 0..6 {
            let (_, p_dst) = cart.neighborhood(p).unwrap();
            for (k, to) in p_dst.iter().enumerate() {
                let Some(q) = to.rank else { continue };
                let (q_src, _) = cart.neighborhood(q).unwrap();
                assert_eq!(q_src[k ^ 1], n(Some(p), to.lane), "block {k} from {p} to {q}");
            }
        }
    }

    #[test]
    fn graph_neighborhoods_are_the_neighbour_lists_both_ways() {
        let g = Topology::Graph(Graph { index: vec![2, 3, 4], edges: vec![1, 2, 0, 0] });
        let (src, dst) = g.neighborhood(0).unwrap();
        assert_eq!(src, [n(Some(1), 0), n(Some(2), 0)]);
        assert_eq!(src, dst);
        assert_eq!(g.neighborhood(3).unwrap_err().class, ErrorClass::Rank);
        let d = Topology::DistGraph(DistGraph {
            sources: vec![4],
            source_weights: vec![],
            destinations: vec![5, 6],
            destination_weights: vec![],
            weighted: false,
        });
        assert_eq!(d.neighborhood(0).unwrap(), (vec![n(Some(4), 0)], vec![n(Some(5), 0), n(Some(6), 0)]));
    }

    #[test]
    fn rank_of_finds_every_member_of_a_permuted_group_and_nobody_else() {
        // Ranks 1 and 4 sit at their own places, the others do not.
        let g = Group::new(vec![3, 1, 0, 2, 4]).unwrap();
        for (r, &w) in g.members().iter().enumerate() {
            assert_eq!(g.rank_of(w), Some(r as i32), "world rank {w}");
        }
        assert_eq!((g.rank_of(5), g.rank_of(u32::MAX)), (None, None));
        let sub = Group::new(vec![2, 5]).unwrap();
        assert_eq!((sub.rank_of(0), sub.rank_of(1), sub.rank_of(2), sub.rank_of(5)), (None, None, Some(0), Some(1)));
    }

    #[test]
    fn dims_create_matches_the_standard_examples() {
        // MPI-3.1 §7.5.2, Example 7.1.
        let mut d = [0, 0];
        dims_create(6, &mut d).unwrap();
        assert_eq!(d, [3, 2]);
        let mut d = [0, 0];
        dims_create(7, &mut d).unwrap();
        assert_eq!(d, [7, 1]);
        let mut d = [0, 3, 0];
        dims_create(6, &mut d).unwrap();
        assert_eq!(d, [2, 3, 1]);
        let mut d = [0, 3, 0];
        assert_eq!(dims_create(7, &mut d).unwrap_err().class, ErrorClass::Dims);
        let mut d = [0, 0, 0];
        dims_create(64, &mut d).unwrap();
        assert_eq!(d, [4, 4, 4]);
    }

    #[test]
    fn cartesian_round_trips_and_wraps() {
        let c = Cartesian { dims: vec![2, 3], periods: vec![true, false] };
        for r in 0..6 {
            assert_eq!(c.rank(&c.coords(r)).unwrap(), Some(r));
        }
        assert_eq!(c.rank(&[-1, 0]).unwrap(), Some(3));
        assert_eq!(c.rank(&[0, 3]).unwrap(), None);
    }

    #[test]
    fn group_operations() {
        let g = Group::new(vec![5, 3, 9, 1]).unwrap();
        assert_eq!(g.incl(&[2, 0]).unwrap().members(), &[9, 5]);
        assert_eq!(g.excl(&[1]).unwrap().members(), &[5, 9, 1]);
        assert_eq!(g.incl(&[4]).unwrap_err().class, ErrorClass::Rank);
        assert_eq!(g.expand_ranges(&[[3, 0, -2]]).unwrap(), vec![3, 1]);
        let h = Group::new(vec![1, 5, 7]).unwrap();
        assert_eq!(g.union(&h).unwrap().members(), &[5, 3, 9, 1, 7]);
        assert_eq!(g.intersection(&h).unwrap().members(), &[5, 1]);
        assert_eq!(g.difference(&h).unwrap().members(), &[3, 9]);
        assert_eq!(g.translate(&[0, 1], &h).unwrap(), vec![Some(1), None]);
        assert_eq!(g.compare(&Group::new(vec![1, 9, 3, 5]).unwrap()), Comparison::Similar);
    }
}
