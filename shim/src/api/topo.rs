//! Virtual topologies (MPI-3.1 §7.5): Cartesian, graph and distributed graph.

use std::ffi::c_int;
use std::sync::Arc;

use kawarimi_runtime::comm::{dims_create, Cartesian, Comm, DistGraph, Graph, Topology};
use kawarimi_runtime::construct::{self, Steps};
use kawarimi_runtime::error::{ErrorClass, MpiResult};
use kawarimi_runtime::world::UNDEFINED_COLOR;

use crate::abi::{self, MPI_Comm, MPI_Info};
use crate::api::comm::new_comm_out;
use crate::api::p2p::comm_of;
use crate::export::{call, call_constructing};
use crate::mem::{c_array, c_array_mut, out};
use crate::state::{fail, Res, State};

/// The communicator of a topology constructor: `parent` split by `color` (`UNDEFINED_COLOR`
/// for the processes left out), every process keeping its order (reorder is allowed, not
/// required), with topology `topo`.
fn split_with_topology(
    st: &mut dyn Steps,
    (parent, color, topo): (Arc<Comm>, i32, Topology),
) -> MpiResult<Option<Comm>> {
    Ok(construct::comm_split(st, &parent, color, parent.rank)?.map(|n| Comm { topo: Some(topo), ..n }))
}

/// A duplicate of `parent` with the distributed graph `graph`: every process keeps its rank
/// (reorder is allowed, not required).
fn dup_with_graph(st: &mut dyn Steps, parent: &Comm, graph: DistGraph) -> MpiResult<Comm> {
    Ok(Comm { topo: Some(Topology::DistGraph(graph)), ..construct::comm_dup(st, parent)? })
}

fn cart_of(s: &State, comm: MPI_Comm) -> Res<(std::sync::Arc<Comm>, Cartesian)> {
    let (c, _) = comm_of(s, comm)?;
    match c.cart() {
        Some(cart) => {
            let cart = cart.clone();
            Ok((c, cart))
        }
        None => fail(ErrorClass::Topology, "communicator has no Cartesian topology"),
    }
}

fn graph_of(s: &State, comm: MPI_Comm) -> Res<Graph> {
    match &comm_of(s, comm)?.0.topo {
        Some(Topology::Graph(g)) => Ok(g.clone()),
        _ => fail(ErrorClass::Topology, "communicator has no graph topology"),
    }
}

/// The neighbours of node `rank` of `comm`'s graph.
fn graph_neighbors(s: &State, comm: MPI_Comm, rank: c_int) -> Res<Vec<i32>> {
    match graph_of(s, comm)?.neighbors(rank) {
        Some(n) => Ok(n.to_vec()),
        None => fail(ErrorClass::Rank, format!("rank {rank} is not a node of the graph")),
    }
}

fn dist_graph_of(s: &State, comm: MPI_Comm) -> Res<DistGraph> {
    match &comm_of(s, comm)?.0.topo {
        Some(Topology::DistGraph(g)) => Ok(g.clone()),
        _ => fail(ErrorClass::Topology, "communicator has no distributed graph topology"),
    }
}

/// `n` neighbour ranks at `ranks` (and their weights at `weights` unless MPI_UNWEIGHTED or
/// MPI_WEIGHTS_EMPTY), each a rank of a communicator of `size`.
///
/// # Safety
/// `ranks` and a real `weights` must hold `n` entries.
unsafe fn neighbour_list(
    n: c_int,
    ranks: *const c_int,
    weights: *const c_int,
    size: i32,
) -> Res<(Vec<i32>, Option<Vec<i32>>)> {
    let n = usize::try_from(n).or_else(|_| fail(ErrorClass::Arg, format!("degree {n} is negative")))?;
    // SAFETY: per the contract.
    let r = if n == 0 { Vec::new() } else { unsafe { c_array(ranks, n)? }.to_vec() };
    if let Some(&bad) = r.iter().find(|&&x| !(0..size).contains(&x)) {
        return fail(ErrorClass::Rank, format!("neighbour {bad} is not a rank of a communicator of {size}"));
    }
    let unweighted = weights as usize == abi::MPI_UNWEIGHTED;
    let empty = weights as usize == abi::MPI_WEIGHTS_EMPTY;
    // MPI_WEIGHTS_EMPTY: weighted, with no neighbours here (the graph is still weighted).
    let w = if unweighted {
        None
    } else if empty && n > 0 {
        return fail(ErrorClass::Arg, "MPI_WEIGHTS_EMPTY for a process that has neighbours");
    } else if n == 0 {
        Some(Vec::new())
    } else {
        // SAFETY: per the contract.
        Some(unsafe { c_array(weights, n)? }.to_vec())
    };
    Ok((r, w))
}

/// Copies at most `max` of `values` to `to` (the caller's array of `max` entries).
///
/// # Safety
/// `to` must hold `max` writable entries (unless `max` is 0 or less).
unsafe fn write_list(values: &[i32], max: c_int, to: *mut c_int) -> Res<()> {
    let n = values.len().min(usize::try_from(max).unwrap_or(0));
    if n > 0 {
        // SAFETY: per the contract.
        unsafe { c_array_mut(to, n)? }.copy_from_slice(&values[..n]);
    }
    Ok(())
}

mpi_fn! {
    fn Graph_create(comm_old: MPI_Comm, nnodes: c_int, index: *const c_int, edges: *const c_int, _reorder: c_int, comm_graph: *mut MPI_Comm) -> c_int {
        call_constructing("MPI_Graph_create", Some(comm_old), |s| {
            let (c, _) = comm_of(s, comm_old)?;
            if c.is_inter() {
                return fail(ErrorClass::Comm, "MPI_Graph_create needs an intra-communicator");
            }
            if !(0..=c.size()).contains(&nnodes) {
                return fail(ErrorClass::Arg, format!("{nnodes} nodes for a communicator of {}", c.size()));
            }
            // SAFETY: `nnodes` entries (§7.5.3).
            let index = if nnodes == 0 { Vec::new() } else { unsafe { c_array(index, nnodes as usize)? }.to_vec() };
            if index.windows(2).any(|w| w[1] < w[0]) || index.first().is_some_and(|&i| i < 0) {
                return fail(ErrorClass::Arg, format!("index {index:?} is not non-decreasing from 0"));
            }
            let nedges = index.last().copied().unwrap_or(0) as usize;
            // SAFETY: `index[nnodes - 1]` entries (§7.5.3).
            let edges = if nedges == 0 { Vec::new() } else { unsafe { c_array(edges, nedges)? }.to_vec() };
            if let Some(&bad) = edges.iter().find(|&&e| !(0..nnodes).contains(&e)) {
                return fail(ErrorClass::Arg, format!("edge to {bad}, outside a graph of {nnodes} nodes"));
            }
            // Ranks are kept in order (reorder is allowed, not required); the ones beyond the
            // graph get MPI_COMM_NULL.
            let color = if c.rank < nnodes { 0 } else { UNDEFINED_COLOR };
            Ok((c, color, Topology::Graph(Graph { index, edges })))
        }, split_with_topology, |s, n| new_comm_out(s, comm_old, n, comm_graph))
    }

    fn Graphdims_get(comm: MPI_Comm, nnodes: *mut c_int, nedges: *mut c_int) -> c_int {
        call("MPI_Graphdims_get", Some(comm), |s| {
            let g = graph_of(s, comm)?;
            // SAFETY: caller's output arguments.
            unsafe { out(nnodes, g.index.len() as c_int)?; out(nedges, g.edges.len() as c_int) }
        })
    }

    fn Graph_get(comm: MPI_Comm, maxindex: c_int, maxedges: c_int, index: *mut c_int, edges: *mut c_int) -> c_int {
        call("MPI_Graph_get", Some(comm), |s| {
            let g = graph_of(s, comm)?;
            // SAFETY: arrays of `maxindex` and `maxedges` entries (§7.5.5).
            unsafe { write_list(&g.index, maxindex, index)?; write_list(&g.edges, maxedges, edges) }
        })
    }

    fn Graph_neighbors_count(comm: MPI_Comm, rank: c_int, nneighbors: *mut c_int) -> c_int {
        call("MPI_Graph_neighbors_count", Some(comm), |s| {
            let n = graph_neighbors(s, comm, rank)?;
            // SAFETY: caller's output argument.
            unsafe { out(nneighbors, n.len() as c_int) }
        })
    }

    fn Graph_neighbors(comm: MPI_Comm, rank: c_int, maxneighbors: c_int, neighbors: *mut c_int) -> c_int {
        call("MPI_Graph_neighbors", Some(comm), |s| {
            let n = graph_neighbors(s, comm, rank)?;
            // SAFETY: an array of `maxneighbors` entries (§7.5.5).
            unsafe { write_list(&n, maxneighbors, neighbors) }
        })
    }

    fn Graph_map(comm: MPI_Comm, nnodes: c_int, _index: *const c_int, _edges: *const c_int, newrank: *mut c_int) -> c_int {
        call("MPI_Graph_map", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            if !(0..=c.size()).contains(&nnodes) {
                return fail(ErrorClass::Arg, format!("{nnodes} nodes for a communicator of {}", c.size()));
            }
            // The identity placement, as MPI_Graph_create makes.
            let r = if c.rank < nnodes { c.rank } else { abi::MPI_UNDEFINED };
            // SAFETY: caller's output argument.
            unsafe { out(newrank, r) }
        })
    }

    fn Dist_graph_create_adjacent(comm_old: MPI_Comm, indegree: c_int, sources: *const c_int, sourceweights: *const c_int, outdegree: c_int, destinations: *const c_int, destweights: *const c_int, _info: MPI_Info, _reorder: c_int, comm_dist_graph: *mut MPI_Comm) -> c_int {
        call_constructing("MPI_Dist_graph_create_adjacent", Some(comm_old), |s| {
            let (c, _) = comm_of(s, comm_old)?;
            if c.is_inter() {
                return fail(ErrorClass::Comm, "MPI_Dist_graph_create_adjacent needs an intra-communicator");
            }
            // SAFETY: `indegree` and `outdegree` entries (§7.5.4).
            let (sources, sw) = unsafe { neighbour_list(indegree, sources, sourceweights, c.size())? };
            // SAFETY: as above.
            let (destinations, dw) = unsafe { neighbour_list(outdegree, destinations, destweights, c.size())? };
            let weighted = sw.is_some() || dw.is_some();
            let graph = DistGraph {
                sources,
                source_weights: sw.unwrap_or_default(),
                destinations,
                destination_weights: dw.unwrap_or_default(),
                weighted,
            };
            Ok((c, graph))
        }, |st, (c, graph)| dup_with_graph(st, &c, graph), |s, n| new_comm_out(s, comm_old, Some(n), comm_dist_graph))
    }

    fn Dist_graph_create(comm_old: MPI_Comm, n: c_int, sources: *const c_int, degrees: *const c_int, destinations: *const c_int, weights: *const c_int, _info: MPI_Info, _reorder: c_int, comm_dist_graph: *mut MPI_Comm) -> c_int {
        call_constructing("MPI_Dist_graph_create", Some(comm_old), |s| {
            let (c, _) = comm_of(s, comm_old)?;
            if c.is_inter() {
                return fail(ErrorClass::Comm, "MPI_Dist_graph_create needs an intra-communicator");
            }
            let n = usize::try_from(n).or_else(|_| fail(ErrorClass::Arg, format!("{n} source nodes is negative")))?;
            // SAFETY: `n` sources and degrees (§7.5.4).
            let (srcs, degs) = if n == 0 { (&[][..], &[][..]) } else { unsafe { (c_array(sources, n)?, c_array(degrees, n)?) } };
            let mut total = 0usize;
            for &d in degs {
                let Ok(d) = usize::try_from(d) else { return fail(ErrorClass::Arg, format!("degree {d} is negative")) };
                total += d;
            }
            // SAFETY: one destination (and weight) per edge, `total` of them.
            let (dsts, ws) = unsafe { neighbour_list(c_int::try_from(total).unwrap_or(c_int::MAX), destinations, weights, c.size())? };
            let mut edges = Vec::with_capacity(total);
            let mut next = 0;
            for (&src, &deg) in srcs.iter().zip(degs) {
                for _ in 0..deg {
                    edges.push((src, dsts[next], ws.as_ref().map_or(1, |w| w[next])));
                    next += 1;
                }
            }
            Ok((c, edges, ws.is_some()))
        }, |st, (c, edges, weighted)| {
            let graph = construct::dist_graph(st, &c, &edges, weighted)?;
            dup_with_graph(st, &c, graph)
        }, |s, n| new_comm_out(s, comm_old, Some(n), comm_dist_graph))
    }

    fn Dist_graph_neighbors_count(comm: MPI_Comm, indegree: *mut c_int, outdegree: *mut c_int, weighted: *mut c_int) -> c_int {
        call("MPI_Dist_graph_neighbors_count", Some(comm), |s| {
            let g = dist_graph_of(s, comm)?;
            // SAFETY: caller's output arguments.
            unsafe {
                out(indegree, g.sources.len() as c_int)?;
                out(outdegree, g.destinations.len() as c_int)?;
                out(weighted, g.weighted as c_int)
            }
        })
    }

    fn Dist_graph_neighbors(comm: MPI_Comm, maxindegree: c_int, sources: *mut c_int, sourceweights: *mut c_int, maxoutdegree: c_int, destinations: *mut c_int, destweights: *mut c_int) -> c_int {
        call("MPI_Dist_graph_neighbors", Some(comm), |s| {
            let g = dist_graph_of(s, comm)?;
            let real = |w: *mut c_int| w as usize != abi::MPI_UNWEIGHTED && w as usize != abi::MPI_WEIGHTS_EMPTY;
            // SAFETY: arrays of `maxindegree` and `maxoutdegree` entries (§7.5.5); weights
            // only when the caller passed arrays and the graph has them.
            unsafe {
                write_list(&g.sources, maxindegree, sources)?;
                write_list(&g.destinations, maxoutdegree, destinations)?;
                if g.weighted && real(sourceweights) {
                    write_list(&g.source_weights, maxindegree, sourceweights)?;
                }
                if g.weighted && real(destweights) {
                    write_list(&g.destination_weights, maxoutdegree, destweights)?;
                }
            }
            Ok(())
        })
    }

    fn Dims_create(nnodes: c_int, ndims: c_int, dims: *mut c_int) -> c_int {
        call("MPI_Dims_create", None, |_| {
            if ndims < 0 {
                return fail(ErrorClass::Dims, format!("ndims {ndims} is negative"));
            }
            // SAFETY: `ndims` entries (§7.5.2).
            let d = unsafe { c_array_mut(dims, ndims as usize)? };
            Ok(dims_create(nnodes, d)?)
        })
    }

    fn Cart_create(comm_old: MPI_Comm, ndims: c_int, dims: *const c_int, periods: *const c_int, _reorder: c_int, comm_cart: *mut MPI_Comm) -> c_int {
        call_constructing("MPI_Cart_create", Some(comm_old), |s| {
            let (c, _) = comm_of(s, comm_old)?;
            if c.is_inter() {
                return fail(ErrorClass::Comm, "MPI_Cart_create needs an intra-communicator");
            }
            if ndims < 0 {
                return fail(ErrorClass::Dims, format!("ndims {ndims} is negative"));
            }
            // SAFETY: `ndims` entries each (§7.5.1).
            let (d, p) = unsafe { (c_array(dims, ndims as usize)?, c_array(periods, ndims as usize)?) };
            if d.iter().any(|&x| x <= 0) {
                return fail(ErrorClass::Dims, format!("dimensions {d:?} must be positive"));
            }
            let nodes: i64 = d.iter().map(|&x| x as i64).product();
            if nodes > c.size() as i64 {
                return fail(ErrorClass::Dims, format!("grid of {nodes} processes is larger than the communicator ({})", c.size()));
            }
            // Ranks are kept in order (reorder is allowed, not required); the ones beyond the
            // grid get MPI_COMM_NULL.
            let color = if (c.rank as i64) < nodes { 0 } else { UNDEFINED_COLOR };
            let cart = Cartesian { dims: d.to_vec(), periods: p.iter().map(|&x| x != 0).collect() };
            Ok((c, color, Topology::Cart(cart)))
        }, split_with_topology, |s, n| new_comm_out(s, comm_old, n, comm_cart))
    }

    fn Cart_map(comm: MPI_Comm, ndims: c_int, dims: *const c_int, _periods: *const c_int, newrank: *mut c_int) -> c_int {
        call("MPI_Cart_map", Some(comm), |s| {
            let (c, _) = comm_of(s, comm)?;
            // SAFETY: `ndims` entries (§7.5.8).
            let d = unsafe { c_array(dims, ndims.max(0) as usize)? };
            let nodes: i64 = d.iter().map(|&x| x as i64).product();
            if d.iter().any(|&x| x <= 0) || nodes > c.size() as i64 {
                return fail(ErrorClass::Dims, format!("grid {d:?} does not fit a communicator of {}", c.size()));
            }
            // The identity mapping, as MPI_Cart_create with reorder = 0 uses.
            let r = if (c.rank as i64) < nodes { c.rank } else { abi::MPI_UNDEFINED };
            // SAFETY: caller's output argument.
            unsafe { out(newrank, r) }
        })
    }

    fn Cart_sub(comm: MPI_Comm, remain_dims: *const c_int, newcomm: *mut MPI_Comm) -> c_int {
        call_constructing("MPI_Cart_sub", Some(comm), |s| {
            let (c, cart) = cart_of(s, comm)?;
            // SAFETY: one flag per dimension (§7.5.7).
            let keep = unsafe { c_array(remain_dims, cart.dims.len())? };
            let coords = cart.coords(c.rank);
            // Processes that agree on every dropped coordinate share a sub-grid.
            let mut color = 0i32;
            for (i, &k) in keep.iter().enumerate() {
                if k == 0 {
                    color = color * cart.dims[i] + coords[i];
                }
            }
            let sub = Cartesian {
                dims: cart.dims.iter().zip(keep).filter(|(_, &k)| k != 0).map(|(&d, _)| d).collect(),
                periods: cart.periods.iter().zip(keep).filter(|(_, &k)| k != 0).map(|(&p, _)| p).collect(),
            };
            Ok((c, color, Topology::Cart(sub)))
        }, split_with_topology, |s, n| new_comm_out(s, comm, n, newcomm))
    }

    fn Cart_coords(comm: MPI_Comm, rank: c_int, maxdims: c_int, coords: *mut c_int) -> c_int {
        call("MPI_Cart_coords", Some(comm), |s| {
            let (c, cart) = cart_of(s, comm)?;
            if rank < 0 || rank >= c.size() {
                return fail(ErrorClass::Rank, format!("rank {rank} is not in the grid"));
            }
            if (maxdims as usize) < cart.dims.len() {
                return fail(ErrorClass::Arg, format!("maxdims {maxdims} < {} dimensions", cart.dims.len()));
            }
            // SAFETY: `maxdims` entries (§7.5.5).
            let o = unsafe { c_array_mut(coords, cart.dims.len())? };
            o.copy_from_slice(&cart.coords(rank));
            Ok(())
        })
    }

    fn Cart_rank(comm: MPI_Comm, coords: *const c_int, rank: *mut c_int) -> c_int {
        call("MPI_Cart_rank", Some(comm), |s| {
            let (_, cart) = cart_of(s, comm)?;
            // SAFETY: one coordinate per dimension (§7.5.5).
            let cs = unsafe { c_array(coords, cart.dims.len())? };
            let Some(r) = cart.rank(cs)? else {
                return fail(ErrorClass::Arg, format!("coordinates {cs:?} are outside the non-periodic grid"));
            };
            // SAFETY: caller's output argument.
            unsafe { out(rank, r) }
        })
    }

    fn Cart_shift(comm: MPI_Comm, direction: c_int, disp: c_int, rank_source: *mut c_int, rank_dest: *mut c_int) -> c_int {
        call("MPI_Cart_shift", Some(comm), |s| {
            let (c, cart) = cart_of(s, comm)?;
            let Ok(dir) = usize::try_from(direction) else {
                return fail(ErrorClass::Arg, format!("direction {direction} is not a dimension"));
            };
            let (src, dst) = cart.shift(c.rank, dir, disp)?;
            // SAFETY: caller's output arguments.
            unsafe { out(rank_source, src.unwrap_or(abi::MPI_PROC_NULL))?; out(rank_dest, dst.unwrap_or(abi::MPI_PROC_NULL)) }
        })
    }

    fn Cart_get(comm: MPI_Comm, maxdims: c_int, dims: *mut c_int, periods: *mut c_int, coords: *mut c_int) -> c_int {
        call("MPI_Cart_get", Some(comm), |s| {
            let (c, cart) = cart_of(s, comm)?;
            let n = cart.dims.len();
            if (maxdims as usize) < n {
                return fail(ErrorClass::Arg, format!("maxdims {maxdims} < {n} dimensions"));
            }
            // SAFETY: `maxdims` entries each (§7.5.5).
            let (d, p, x) = unsafe { (c_array_mut(dims, n)?, c_array_mut(periods, n)?, c_array_mut(coords, n)?) };
            d.copy_from_slice(&cart.dims);
            for (o, &b) in p.iter_mut().zip(&cart.periods) {
                *o = b as c_int;
            }
            x.copy_from_slice(&cart.coords(c.rank));
            Ok(())
        })
    }

    fn Cartdim_get(comm: MPI_Comm, ndims: *mut c_int) -> c_int {
        call("MPI_Cartdim_get", Some(comm), |s| {
            let (_, cart) = cart_of(s, comm)?;
            // SAFETY: caller's output argument.
            unsafe { out(ndims, cart.dims.len() as c_int) }
        })
    }

    fn Topo_test(comm: MPI_Comm, status: *mut c_int) -> c_int {
        call("MPI_Topo_test", Some(comm), |s| {
            let t = match s.comm_entry(comm)?.comm.topo {
                Some(Topology::Cart(_)) => abi::MPI_CART,
                Some(Topology::Graph(_)) => abi::MPI_GRAPH,
                Some(Topology::DistGraph(_)) => abi::MPI_DIST_GRAPH,
                None => abi::MPI_UNDEFINED,
            };
            // SAFETY: caller's output argument.
            unsafe { out(status, t) }
        })
    }
}
