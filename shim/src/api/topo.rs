//! Cartesian topologies (MPI-3.1 §7.5).

use std::ffi::c_int;

use kawarimi_runtime::comm::{dims_create, Cartesian, Comm};
use kawarimi_runtime::error::ErrorClass;
use kawarimi_runtime::world::UNDEFINED_COLOR;

use crate::abi::{self, MPI_Comm};
use crate::api::comm::add_comm;
use crate::api::p2p::comm_of;
use crate::export::call;
use crate::mem::{c_array, c_array_mut, out};
use crate::state::{fail, Res, State};

fn cart_of(s: &State, comm: MPI_Comm) -> Res<(std::sync::Arc<Comm>, Cartesian)> {
    let (c, _) = comm_of(s, comm)?;
    match &c.cart {
        Some(cart) => {
            let cart = cart.clone();
            Ok((c, cart))
        }
        None => fail(ErrorClass::Topology, "communicator has no Cartesian topology"),
    }
}

mpi_fn! {
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
        call("MPI_Cart_create", Some(comm_old), |s| {
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
            let n = s.world()?.comm_split(&c, color, c.rank)?.map(|mut n| {
                n.cart = Some(Cartesian { dims: d.to_vec(), periods: p.iter().map(|&x| x != 0).collect() });
                n
            });
            let h = add_comm(s, comm_old, n)?;
            // SAFETY: caller's output argument.
            unsafe { out(comm_cart, h) }
        })
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
        call("MPI_Cart_sub", Some(comm), |s| {
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
            let n = s.world()?.comm_split(&c, color, c.rank)?.map(|mut n| {
                n.cart = Some(sub);
                n
            });
            let h = add_comm(s, comm, n)?;
            // SAFETY: caller's output argument.
            unsafe { out(newcomm, h) }
        })
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
            let dir = usize::try_from(direction).ok().filter(|&d| d < cart.dims.len());
            let Some(dir) = dir else { return fail(ErrorClass::Arg, format!("direction {direction} is not a dimension")) };
            let me = cart.coords(c.rank);
            let at = |delta: i32| -> Res<c_int> {
                let mut x = me.clone();
                x[dir] += delta;
                Ok(cart.rank(&x)?.unwrap_or(abi::MPI_PROC_NULL))
            };
            let (src, dst) = (at(-disp)?, at(disp)?);
            // SAFETY: caller's output arguments.
            unsafe { out(rank_source, src)?; out(rank_dest, dst) }
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
            let t = if s.comm_entry(comm)?.comm.cart.is_some() { abi::MPI_CART } else { abi::MPI_UNDEFINED };
            // SAFETY: caller's output argument.
            unsafe { out(status, t) }
        })
    }
}
