//! LU, the "lower-upper" SSOR pseudo-application (NPB reports RNR-94-007, section 3, and
//! NAS-95-020; NPB 3.x MPI version).
//!
//! Solves the steady 3-D compressible Navier-Stokes equations on the unit cube, discretized on
//! an `n x n x n` grid, for a manufactured solution ([`super::cfd`]): the forcing term is the
//! discrete operator applied to the exact solution, the initial guess interpolates the boundary
//! values (which stay fixed), and `itmax` pseudo-time steps of symmetric successive
//! over-relaxation (SSOR, `omega = 1.2`) drive the residual down. The operator is, along each
//! axis, central differences of the inviscid and viscous fluxes, a second difference (artificial
//! diffusion) and a fourth-difference dissipation that turns one-sided next to the boundary.
//!
//! Each SSOR step approximately factors the implicit operator as `(D + wL) D^-1 (D + wU)` with
//! 5x5 blocks, linearized about the current solution: a forward sweep (`blts`) solves the lower
//! factor point by point in increasing `k`, `j`, `i` order, a backward sweep (`buts`) the upper
//! one in decreasing order; then `u += rsd / (w (2 - w))` and the residual is recomputed.
//!
//! Verified, to 1e-8 against the published values: the RMS norms of the final residual and of
//! the error against the exact solution (five each) and a surface integral of the pressure.
//!
//! Decomposition and messages, as in the reference MPI code:
//!
//! - The x-y plane is split over an `xdim x ydim` grid of ranks (a power of two, `xdim = ydim`
//!   or `2 ydim`); every rank owns whole columns in z. Rank `r` sits at row `r % xdim`
//!   (x, "north" = smaller x) and column `r / xdim` (y, "west" = smaller y).
//! - The sweeps are pipelined wavefronts: for each k-plane a rank receives the plane's edge
//!   row from its north and edge column from its west neighbour (blocking receives), sweeps
//!   its part of the plane, and sends its last row south and last column east (blocking sends,
//!   one message per plane and neighbour), so the ranks work on successive planes along the
//!   diagonal; the backward sweep runs the other way (reference `exchange_1`).
//! - Before each evaluation of the operator, two ghost layers of the field go to and come from
//!   the x neighbours, then the y neighbours (`Irecv`, `Send`, `Wait`; reference `exchange_3`).
//! - Norms and the three parts of the surface integral are `MPI_Allreduce` sums; before the
//!   integral the integrand's edge lines are passed to the lower neighbours point to point
//!   (reference `exchange_4/5/6`; here all the planes one exchange needs travel in one message).
//!
//! Supported: a power-of-two number of ranks for which every rank gets at least 3x3 points of
//! the plane (class S: up to 16 ranks).

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::cfd::{
    add_scaled, exact_solution, flux_jacobian, inviscid_flux, viscous_jacobian, Mat5, Vec5, C1C5, C2, C3C4, CON43,
    DIFFUSION, DSSP, EPSILON,
};
use super::{rel_ok, wtime, Class, Outcome};

mod params;
mod verify;

use params::params;

/// SSOR over-relaxation factor.
const OMEGA: f64 = 1.2;
/// The iteration stops early once every residual norm is below this (never, for the classes).
const TOL_RSD: f64 = 1.0e-8;
/// Ghost layers on each side in x and y (the dissipation stencil reaches two points out).
const HALO: usize = 2;

/// Message tags, named as in the reference by where the data comes from: a `FROM_NORTH`
/// message travels towards larger x, a `FROM_WEST` one towards larger y.
const FROM_SOUTH: i32 = 1;
const FROM_NORTH: i32 = 2;
const FROM_EAST: i32 = 3;
const FROM_WEST: i32 = 4;

/// Tag of a message travelling along block axis `axis` (0 = x, 1 = y) towards the larger
/// (`upward`) or the smaller index.
fn tag(axis: usize, upward: bool) -> i32 {
    match (axis, upward) {
        (0, true) => FROM_NORTH,
        (0, false) => FROM_SOUTH,
        (_, true) => FROM_WEST,
        (_, false) => FROM_EAST,
    }
}

/// Class parameters and published verification values.
struct Params {
    /// Grid points per axis.
    n: usize,
    itmax: usize,
    /// Pseudo-time step.
    dt: f64,
    /// RMS norms of the final residual.
    xcr: Vec5,
    /// RMS norms of the final error.
    xce: Vec5,
    /// Surface integral.
    xci: f64,
}

/// `count` points split into `parts` nearly equal runs: the size and first index of run `idx`
/// (the first `count % parts` runs get one point more).
fn split(count: usize, parts: usize, idx: usize) -> (usize, usize) {
    let base = count / parts;
    let extra = count % parts;
    if idx < extra {
        (base + 1, idx * (base + 1))
    } else {
        (base, idx * base + extra)
    }
}

/// A half-open box of array coordinates, `[(start, end); 3]` for x, y, z.
type Box3 = [(usize, usize); 3];

/// The pressure `(gamma - 1) (rho e - |rho V|^2 / (2 rho))`, integrand of the surface integral.
fn pressure(w: &Vec5) -> f64 {
    C2 * (w[4] - 0.5 * (w[1] * w[1] + w[2] * w[2] + w[3] * w[3]) / w[0])
}

/// The viscous flux along `axis` across the face between `wm` (behind) and `w`, `t3` being
/// one over the grid spacing; component 0 (mass) has none.
fn viscous_flux(axis: usize, w: &Vec5, wm: &Vec5, t3: f64) -> Vec5 {
    let n = axis + 1;
    let r = 1.0 / w[0];
    let rm = 1.0 / wm[0];
    let v = [0.0, r * w[1], r * w[2], r * w[3], r * w[4]];
    let vm = [0.0, rm * wm[1], rm * wm[2], rm * wm[3], rm * wm[4]];
    let mut f = [0.0; 5];
    for m in 1..4 {
        f[m] = if m == n { CON43 * t3 * (v[m] - vm[m]) } else { t3 * (v[m] - vm[m]) };
    }
    f[4] = 0.5
        * (1.0 - C1C5)
        * t3
        * ((v[1] * v[1] + v[2] * v[2] + v[3] * v[3]) - (vm[1] * vm[1] + vm[2] * vm[2] + vm[3] * vm[3]))
        + (1.0 / 6.0) * t3 * (v[n] * v[n] - vm[n] * vm[n])
        + C1C5 * t3 * (v[4] - vm[4]);
    f
}

fn mat_vec(a: &Mat5, x: &Vec5) -> Vec5 {
    a.map(|row| row[0] * x[0] + row[1] * x[1] + row[2] * x[2] + row[3] * x[3] + row[4] * x[4])
}

/// Solves `a x = b` by Gaussian elimination without pivoting (the blocks are diagonally
/// dominant), in the reference's order of operations.
fn solve5(mut a: Mat5, mut b: Vec5) -> Vec5 {
    for p in 0..5 {
        let inv = 1.0 / a[p][p];
        let pivot_row = a[p];
        for q in p + 1..5 {
            let f = inv * a[q][p];
            for (x, &y) in a[q][p + 1..].iter_mut().zip(&pivot_row[p + 1..]) {
                *x -= f * y;
            }
            b[q] -= b[p] * f;
        }
    }
    for p in (0..5).rev() {
        for c in p + 1..5 {
            b[p] -= a[p][c] * b[c];
        }
        b[p] /= a[p][p];
    }
    b
}

/// One rank's block and the global problem constants.
struct Block<'a> {
    world: &'a SimpleCommunicator,
    /// Ranks along x and y.
    pgrid: [usize; 2],
    /// Global points per axis.
    n0: [usize; 3],
    /// Points this rank owns per axis (all of z).
    n: [usize; 3],
    /// Global index of the first owned point per axis.
    off: [usize; 3],
    /// Ghost layers before the first owned point, per axis (none in z).
    pad: [usize; 3],
    /// Array extents per axis, ghosts included.
    ext: [usize; 3],
    /// Index distance between neighbours along each axis.
    stride: [usize; 3],
    /// Points the solver updates (owned, not on the global boundary), array coordinates.
    interior: Box3,
    /// `[axis][0]` = north/west (smaller index), `[axis][1]` = south/east, for x and y.
    nbr: [[Option<i32>; 2]; 2],
    dt: f64,
    itmax: usize,
    /// Grid spacing per axis and the derived `1/h^2`, `1/(2h)`, `1/h`.
    h: [f64; 3],
    t1: [f64; 3],
    t2: [f64; 3],
    t3: [f64; 3],
}

/// The fields: solution, residual (also the SSOR correction), forcing term and flux scratch.
struct State {
    u: Vec<Vec5>,
    rsd: Vec<Vec5>,
    frct: Vec<Vec5>,
    flux: Vec<Vec5>,
}

impl<'a> Block<'a> {
    fn new(world: &'a SimpleCommunicator, prm: &Params) -> Result<Block<'a>, String> {
        let size = world.size() as usize;
        let rank = world.rank() as usize;
        if !size.is_power_of_two() {
            return Err(format!("LU needs a power-of-two number of ranks, not {size}"));
        }
        // xdim = 2^ceil(log2(size) / 2): 1x1, 2x1, 2x2, 4x2, 4x4, ...
        let xdim = 1usize << size.trailing_zeros().div_ceil(2);
        let ydim = size / xdim;
        let (row, col) = (rank % xdim, rank / xdim);
        let n0 = [prm.n; 3];
        let (nx, ipt) = split(n0[0], xdim, row);
        let (ny, jpt) = split(n0[1], ydim, col);
        if nx.min(ny) < 3 {
            return Err(format!(
                "LU on {size} ranks ({xdim}x{ydim}): the {}x{} plane leaves fewer than 3x3 points per rank",
                n0[0], n0[1]
            ));
        }
        let n = [nx, ny, n0[2]];
        let off = [ipt, jpt, 0];
        let pad = [HALO, HALO, 0];
        let ext = [nx + 2 * HALO, ny + 2 * HALO, n0[2]];
        let mut interior = [(0, 0); 3];
        for (a, r) in interior.iter_mut().enumerate() {
            let starts_at_boundary = off[a] == 0;
            let ends_at_boundary = off[a] + n[a] == n0[a];
            *r = (pad[a] + usize::from(starts_at_boundary), pad[a] + n[a] - usize::from(ends_at_boundary));
        }
        let rank_i = |r: usize| Some(r as i32);
        let nbr = [
            [(row > 0).then(|| rank - 1), (row + 1 < xdim).then(|| rank + 1)].map(|r| r.and_then(rank_i)),
            [(col > 0).then(|| rank - xdim), (col + 1 < ydim).then(|| rank + xdim)].map(|r| r.and_then(rank_i)),
        ];
        let h = n0.map(|g| 1.0 / (g - 1) as f64);
        Ok(Block {
            world,
            pgrid: [xdim, ydim],
            n0,
            n,
            off,
            pad,
            ext,
            stride: [1, ext[0], ext[0] * ext[1]],
            interior,
            nbr,
            dt: prm.dt,
            itmax: prm.itmax,
            h,
            t1: h.map(|d| 1.0 / (d * d)),
            t2: h.map(|d| 1.0 / (2.0 * d)),
            t3: h.map(|d| 1.0 / d),
        })
    }

    fn len(&self) -> usize {
        self.ext[0] * self.ext[1] * self.ext[2]
    }

    fn at(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.ext[0] * (j + self.ext[1] * k)
    }

    /// Global index of array coordinate `c` along `axis`.
    fn global(&self, axis: usize, c: usize) -> usize {
        self.off[axis] + c - self.pad[axis]
    }

    /// The owned points, array coordinates.
    fn owned(&self) -> Box3 {
        [0, 1, 2].map(|a| (self.pad[a], self.pad[a] + self.n[a]))
    }

    /// Calls `f(index, [i, j, k])` for every point of `b`, `i` fastest.
    fn for_box(&self, b: Box3, mut f: impl FnMut(usize, [usize; 3])) {
        for k in b[2].0..b[2].1 {
            for j in b[1].0..b[1].1 {
                let row = self.at(0, j, k);
                for i in b[0].0..b[0].1 {
                    f(row + i, [i, j, k]);
                }
            }
        }
    }

    /// The exact solution at the point with global indices `g`.
    fn exact_at(&self, g: [usize; 3]) -> Vec5 {
        let x = [0, 1, 2].map(|a| g[a] as f64 * self.h[a]);
        exact_solution(x[0], x[1], x[2])
    }

    /// The exact solution at array coordinates `c`.
    fn exact(&self, c: [usize; 3]) -> Vec5 {
        self.exact_at([0, 1, 2].map(|a| self.global(a, c[a])))
    }

    // ----- communication -----

    /// Indices of the points of the two-dimensional slab at coordinate `c` on block axis
    /// `axis`: all of z (outer) times the owned points of the other block axis.
    fn slab(&self, axis: usize, c: usize) -> impl Iterator<Item = usize> + '_ {
        let other = 1 - axis;
        (0..self.n[2]).flat_map(move |k| {
            (self.pad[other]..self.pad[other] + self.n[other]).map(move |t| {
                if axis == 0 {
                    self.at(c, t, k)
                } else {
                    self.at(t, c, k)
                }
            })
        })
    }

    /// Refreshes the two ghost layers of `f` on both sides along block axis `axis`: first the
    /// data travelling up (receive from the lower neighbour, send to the upper), then down.
    fn exchange_halo(&self, f: &mut [Vec5], axis: usize) {
        let (pad, n) = (self.pad[axis], self.n[axis]);
        let count = 2 * 5 * self.n[2] * self.n[1 - axis];
        for upward in [true, false] {
            let (from, to) =
                if upward { (self.nbr[axis][0], self.nbr[axis][1]) } else { (self.nbr[axis][1], self.nbr[axis][0]) };
            let (send_layers, recv_layers) = if upward {
                ([pad + n - 2, pad + n - 1], [pad - 2, pad - 1])
            } else {
                ([pad + 1, pad], [pad + n + 1, pad + n])
            };
            let outbox: Vec<f64> = match to {
                Some(_) => send_layers.iter().flat_map(|&c| self.slab(axis, c)).flat_map(|p| f[p]).collect(),
                None => Vec::new(),
            };
            let mut inbox = vec![0.0f64; if from.is_some() { count } else { 0 }];
            let t = tag(axis, upward);
            mpi::request::scope(|scope| {
                let req = from.map(|src| {
                    self.world.process_at_rank(src).immediate_receive_into_with_tag(scope, &mut inbox[..], t)
                });
                if let Some(dst) = to {
                    self.world.process_at_rank(dst).send_with_tag(&outbox[..], t);
                }
                if let Some(req) = req {
                    req.wait();
                }
            });
            if from.is_some() {
                for (p, v) in recv_layers.iter().flat_map(|&c| self.slab(axis, c)).zip(inbox.chunks_exact(5)) {
                    f[p].copy_from_slice(v);
                }
            }
        }
    }

    /// Indices of the edge line of plane `k` at coordinate `c` on block axis `axis`, over the
    /// interior of the other block axis (what the sweeps exchange).
    fn edge(&self, axis: usize, c: usize, k: usize) -> impl Iterator<Item = usize> + '_ {
        let other = 1 - axis;
        let (lo, hi) = self.interior[other];
        (lo..hi).map(move |t| if axis == 0 { self.at(c, t, k) } else { self.at(t, c, k) })
    }

    /// Receives, if that neighbour exists, the edge line of plane `k` from the neighbour on
    /// the `upper` (or lower) side along `axis` into the ghost line on that side.
    fn recv_edge(&self, v: &mut [Vec5], k: usize, axis: usize, upper: bool) {
        let Some(src) = self.nbr[axis][usize::from(upper)] else { return };
        let c = if upper { self.pad[axis] + self.n[axis] } else { self.pad[axis] - 1 };
        let (lo, hi) = self.interior[1 - axis];
        let mut buf = vec![0.0f64; 5 * (hi - lo)];
        self.world.process_at_rank(src).receive_into_with_tag(&mut buf[..], tag(axis, !upper));
        for (p, x) in self.edge(axis, c, k).zip(buf.chunks_exact(5)) {
            v[p].copy_from_slice(x);
        }
    }

    /// Sends, if that neighbour exists, this rank's outermost line of plane `k` on the `upper`
    /// (or lower) side along `axis` to the neighbour there.
    fn send_edge(&self, v: &[Vec5], k: usize, axis: usize, upper: bool) {
        let Some(dst) = self.nbr[axis][usize::from(upper)] else { return };
        let c = if upper { self.pad[axis] + self.n[axis] - 1 } else { self.pad[axis] };
        let buf: Vec<f64> = self.edge(axis, c, k).flat_map(|p| v[p]).collect();
        self.world.process_at_rank(dst).send_with_tag(&buf[..], tag(axis, upper));
    }

    /// Sums `local` over all ranks.
    fn sum_all<const N: usize>(&self, local: [f64; N]) -> [f64; N] {
        let mut global = [0.0; N];
        self.world.all_reduce_into(&local[..], &mut global[..], SystemOperation::sum());
        global
    }

    // ----- the discrete operator -----

    /// Adds the terms along `axis` of the discrete operator applied to `w` to `out`, at the
    /// interior points; the ghosts of `w` along `axis` must be current. `flux` is scratch.
    fn add_axis_terms(&self, axis: usize, w: &[Vec5], out: &mut [Vec5], flux: &mut [Vec5]) {
        let s = self.stride[axis];
        let (t1, t2, t3) = (self.t1[axis], self.t2[axis], self.t3[axis]);
        let dd = DIFFUSION[axis];
        let inner = self.interior;
        // Inviscid flux, one point beyond the interior on both sides, central differences.
        let mut wide = inner;
        wide[axis] = (inner[axis].0 - 1, inner[axis].1 + 1);
        self.for_box(wide, |p, _| flux[p] = inviscid_flux(axis, &w[p]));
        self.for_box(inner, |p, _| {
            for m in 0..5 {
                out[p][m] -= t2 * (flux[p + s][m] - flux[p - s][m]);
            }
        });
        // Viscous flux across the face behind each point, one face beyond the interior.
        let mut faces = inner;
        faces[axis].1 += 1;
        self.for_box(faces, |p, _| flux[p] = viscous_flux(axis, &w[p], &w[p - s], t3));
        self.for_box(inner, |p, _| {
            out[p][0] += dd * t1 * (w[p - s][0] - 2.0 * w[p][0] + w[p + s][0]);
            for m in 1..5 {
                out[p][m] +=
                    t3 * C3C4 * (flux[p + s][m] - flux[p][m]) + dd * t1 * (w[p - s][m] - 2.0 * w[p][m] + w[p + s][m]);
            }
        });
        // Fourth-difference dissipation, one-sided on the two points next to each boundary.
        let last = self.n0[axis] - 2;
        self.for_box(inner, |p, c| {
            let g = self.global(axis, c[axis]);
            for m in 0..5 {
                let d4 = if g == 1 {
                    5.0 * w[p][m] - 4.0 * w[p + s][m] + w[p + 2 * s][m]
                } else if g == 2 {
                    -4.0 * w[p - s][m] + 6.0 * w[p][m] - 4.0 * w[p + s][m] + w[p + 2 * s][m]
                } else if g == last - 1 {
                    w[p - 2 * s][m] - 4.0 * w[p - s][m] + 6.0 * w[p][m] - 4.0 * w[p + s][m]
                } else if g == last {
                    w[p - 2 * s][m] - 4.0 * w[p - s][m] + 5.0 * w[p][m]
                } else {
                    w[p - 2 * s][m] - 4.0 * w[p - s][m] + 6.0 * w[p][m] - 4.0 * w[p + s][m] + w[p + 2 * s][m]
                };
                out[p][m] -= DSSP * d4;
            }
        });
    }

    /// Adds the discrete operator applied to `w` to `out` (interior points), refreshing the x
    /// ghosts of `w` before the x terms and the y ghosts before the y terms.
    fn add_operator(&self, w: &mut [Vec5], out: &mut [Vec5], flux: &mut [Vec5]) {
        self.exchange_halo(w, 0);
        self.add_axis_terms(0, w, out, flux);
        self.exchange_halo(w, 1);
        self.add_axis_terms(1, w, out, flux);
        self.add_axis_terms(2, w, out, flux);
    }

    /// The steady-state residual: `rsd = operator(u) - frct` (zero on the boundary).
    fn rhs(&self, st: &mut State) {
        for (r, f) in st.rsd.iter_mut().zip(&st.frct) {
            *r = f.map(|x| -x);
        }
        self.add_operator(&mut st.u, &mut st.rsd, &mut st.flux);
    }

    /// The forcing term: the operator applied to the exact solution.
    fn set_forcing(&self, st: &mut State) {
        let mut exact = vec![[0.0; 5]; self.len()];
        self.for_box(self.owned(), |p, c| exact[p] = self.exact(c));
        st.frct.fill([0.0; 5]);
        self.add_operator(&mut exact, &mut st.frct, &mut st.flux);
    }

    /// Boundary values from the exact solution, and the initial guess inside: on each line
    /// through the point the linear interpolation `p_a` between the line's two boundary values,
    /// combined as `1 - (1 - p_x)(1 - p_y)(1 - p_z)` (transfinite interpolation).
    fn set_initial(&self, u: &mut [Vec5]) {
        let last = self.n0.map(|g| g - 1);
        self.for_box(self.owned(), |p, c| {
            let g = [0, 1, 2].map(|a| self.global(a, c[a]));
            if (0..3).any(|a| g[a] == 0 || g[a] == last[a]) {
                u[p] = self.exact_at(g);
                return;
            }
            // The two boundary points on the line through `g` along each axis.
            let ends = [0, 1, 2].map(|a| {
                let (mut lo, mut hi) = (g, g);
                lo[a] = 0;
                hi[a] = last[a];
                (self.exact_at(lo), self.exact_at(hi))
            });
            let frac = [0, 1, 2].map(|a| g[a] as f64 / last[a] as f64);
            for (m, x) in u[p].iter_mut().enumerate() {
                let [px, py, pz] = [0, 1, 2].map(|a| (1.0 - frac[a]) * ends[a].0[m] + frac[a] * ends[a].1[m]);
                *x = px + py + pz - px * py - py * pz - pz * px + px * py * pz;
            }
        });
    }

    // ----- SSOR -----

    /// The block coupling a point to its neighbour at `w` one step back (`sign = -1`) or
    /// forward (`+1`) along `axis`: `sign dt t2 A(w) - dt t1 (V(w) + d I)`.
    fn off_diagonal(&self, axis: usize, w: &Vec5, sign: f64) -> Mat5 {
        let mut b = [[0.0; 5]; 5];
        let rho_i = 1.0 / w[0];
        let qs = 0.5 * (w[1] * w[1] + w[2] * w[2] + w[3] * w[3]) * rho_i * rho_i;
        add_scaled(&mut b, &flux_jacobian(axis, w, rho_i, qs), sign * self.dt * self.t2[axis]);
        add_scaled(&mut b, &viscous_jacobian(axis, w, rho_i), -self.dt * self.t1[axis]);
        let diffusion = self.dt * self.t1[axis] * DIFFUSION[axis];
        for (m, row) in b.iter_mut().enumerate() {
            row[m] -= diffusion;
        }
        b
    }

    /// The diagonal block at `w`: `I + 2 dt sum_a t1_a (V_a(w) + d_a I)`.
    fn diagonal(&self, w: &Vec5) -> Mat5 {
        let mut b = [[0.0; 5]; 5];
        let mut diffusion = 1.0;
        for (a, d) in DIFFUSION.iter().enumerate() {
            add_scaled(&mut b, &viscous_jacobian(a, w, 1.0 / w[0]), 2.0 * self.dt * self.t1[a]);
            diffusion += 2.0 * self.dt * self.t1[a] * d;
        }
        for (m, row) in b.iter_mut().enumerate() {
            row[m] += diffusion;
        }
        b
    }

    /// Forward substitution on line `(j, k)`, increasing `i`: `v <- D^-1 (v - w L v)`, using
    /// the already updated points behind in x, y and z.
    fn blts_line(&self, j: usize, k: usize, u: &[Vec5], v: &mut [Vec5]) {
        let [sx, sy, sz] = self.stride;
        let (lo, hi) = self.interior[0];
        for i in lo..hi {
            let p = self.at(i, j, k);
            let mut r = v[p];
            let from_z = mat_vec(&self.off_diagonal(2, &u[p - sz], -1.0), &v[p - sz]);
            for m in 0..5 {
                r[m] -= OMEGA * from_z[m];
            }
            let from_y = mat_vec(&self.off_diagonal(1, &u[p - sy], -1.0), &v[p - sy]);
            let from_x = mat_vec(&self.off_diagonal(0, &u[p - sx], -1.0), &v[p - sx]);
            for m in 0..5 {
                r[m] -= OMEGA * (from_y[m] + from_x[m]);
            }
            v[p] = solve5(self.diagonal(&u[p]), r);
        }
    }

    /// Backward substitution on line `(j, k)`, decreasing `i`: `v <- v - D^-1 w U v`, using the
    /// already updated points ahead in x, y and z.
    fn buts_line(&self, j: usize, k: usize, u: &[Vec5], v: &mut [Vec5]) {
        let [sx, sy, sz] = self.stride;
        let (lo, hi) = self.interior[0];
        for i in (lo..hi).rev() {
            let p = self.at(i, j, k);
            let from_z = mat_vec(&self.off_diagonal(2, &u[p + sz], 1.0), &v[p + sz]);
            let from_y = mat_vec(&self.off_diagonal(1, &u[p + sy], 1.0), &v[p + sy]);
            let from_x = mat_vec(&self.off_diagonal(0, &u[p + sx], 1.0), &v[p + sx]);
            let mut t = [0.0; 5];
            for m in 0..5 {
                t[m] = OMEGA * from_z[m] + OMEGA * (from_y[m] + from_x[m]);
            }
            let t = solve5(self.diagonal(&u[p]), t);
            for (x, d) in v[p].iter_mut().zip(t) {
                *x -= d;
            }
        }
    }

    /// RMS norm over the interior points of each component of `value(index, coordinates, m)`.
    fn rms_norm(&self, mut value: impl FnMut(usize, [usize; 3], usize) -> f64) -> Vec5 {
        let mut local = [0.0; 5];
        self.for_box(self.interior, |p, c| {
            for (m, acc) in local.iter_mut().enumerate() {
                let x = value(p, c, m);
                *acc += x * x;
            }
        });
        let points = ((self.n0[0] - 2) * (self.n0[1] - 2) * (self.n0[2] - 2)) as f64;
        self.sum_all(local).map(|s| (s / points).sqrt())
    }

    /// RMS norm of the residual (or correction) `v`.
    fn l2norm(&self, v: &[Vec5]) -> Vec5 {
        self.rms_norm(|p, _, m| v[p][m])
    }

    /// `niter` SSOR steps from the current `u`; returns the slowest rank's time and the final
    /// residual norms.
    fn ssor(&self, st: &mut State, niter: usize) -> (f64, Vec5) {
        let relax = 1.0 / (OMEGA * (2.0 - OMEGA));
        let inner = self.interior;
        // The reference computes the norms every `inorm` steps; it is `itmax` for the classes.
        let inorm = self.itmax;
        self.rhs(st);
        let mut rsdnm = self.l2norm(&st.rsd);
        self.world.barrier();
        let t0 = wtime();
        for istep in 1..=niter {
            self.for_box(inner, |p, _| st.rsd[p] = st.rsd[p].map(|x| self.dt * x));
            // Lower sweep: planes upwards, each plane from the north-west corner.
            for k in inner[2].0..inner[2].1 {
                self.recv_edge(&mut st.rsd, k, 0, false);
                self.recv_edge(&mut st.rsd, k, 1, false);
                for j in inner[1].0..inner[1].1 {
                    self.blts_line(j, k, &st.u, &mut st.rsd);
                }
                self.send_edge(&st.rsd, k, 0, true);
                self.send_edge(&st.rsd, k, 1, true);
            }
            // Upper sweep: planes downwards, each plane from the south-east corner.
            for k in (inner[2].0..inner[2].1).rev() {
                self.recv_edge(&mut st.rsd, k, 0, true);
                self.recv_edge(&mut st.rsd, k, 1, true);
                for j in (inner[1].0..inner[1].1).rev() {
                    self.buts_line(j, k, &st.u, &mut st.rsd);
                }
                self.send_edge(&st.rsd, k, 0, false);
                self.send_edge(&st.rsd, k, 1, false);
            }
            self.for_box(inner, |p, _| {
                for m in 0..5 {
                    st.u[p][m] += relax * st.rsd[p][m];
                }
            });
            if istep % inorm == 0 {
                // The norm of the correction: computed (a collective, like the reference's) but
                // not verified.
                let _ = self.l2norm(&st.rsd);
            }
            self.rhs(st);
            if istep % inorm == 0 || istep == self.itmax {
                rsdnm = self.l2norm(&st.rsd);
            }
            if rsdnm.iter().all(|&r| r < TOL_RSD) {
                break;
            }
        }
        let t_local = wtime() - t0;
        let mut t = 0.0f64;
        self.world.all_reduce_into(&t_local, &mut t, SystemOperation::max());
        (t, rsdnm)
    }
}

/// Runs LU for `class` on `world` (see the module documentation).
pub fn run(world: &SimpleCommunicator, class: Class) -> Result<Outcome, String> {
    let prm = params(class);
    let blk = Block::new(world, &prm)?;
    let len = blk.len();
    let mut st = State {
        u: vec![[0.0; 5]; len],
        rsd: vec![[0.0; 5]; len],
        frct: vec![[0.0; 5]; len],
        flux: vec![[0.0; 5]; len],
    };
    blk.set_initial(&mut st.u);
    blk.set_forcing(&mut st);
    // One untimed step to touch everything, then start again.
    blk.ssor(&mut st, 1);
    blk.set_initial(&mut st.u);
    let (t, rsdnm) = blk.ssor(&mut st, prm.itmax);
    let errnm = blk.error_norm(&st.u);
    let frc = blk.surface_integral(&st.u);

    let n = prm.n;
    let mut details = vec![
        format!("Size: {n}x{n}x{n} (class {}), iterations: {}, dt: {}", class.letter(), prm.itmax, prm.dt),
        format!(
            "Number of processes: {} ({}x{} grid; rank 0 holds {}x{}x{})",
            world.size(),
            blk.pgrid[0],
            blk.pgrid[1],
            blk.n[0],
            blk.n[1],
            blk.n[2]
        ),
    ];
    let mut verified = true;
    let mut check = |name: String, value: f64, reference: f64| {
        let ok = rel_ok(value, reference, EPSILON);
        verified &= ok;
        let err = (value - reference).abs() / reference.abs();
        details.push(format!(
            "{name:<22} {value:22.15e}  reference {reference:22.15e}  rel. error {err:.3e}{}",
            if ok { "" } else { "  FAILED" }
        ));
    };
    for (m, (&v, &r)) in rsdnm.iter().zip(&prm.xcr).enumerate() {
        check(format!("RMS residual, pde {}", m + 1), v, r);
    }
    for (m, (&v, &r)) in errnm.iter().zip(&prm.xce).enumerate() {
        check(format!("RMS error, pde {}", m + 1), v, r);
    }
    check("Surface integral".to_string(), frc, prm.xci);

    let nf = n as f64;
    let work_per_step = 1984.77 * nf * nf * nf - 10923.3 * nf * nf + 27770.9 * nf - 144010.0;
    let mops = if t > 0.0 { 1.0e-6 * prm.itmax as f64 * work_per_step / t } else { 0.0 };
    Ok(Outcome { verified, time_s: t, mops, details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_the_axis() {
        for parts in 1..6 {
            let mut next = 0;
            for idx in 0..parts {
                let (count, first) = split(33, parts, idx);
                assert_eq!(first, next);
                next += count;
            }
            assert_eq!(next, 33);
        }
    }

    #[test]
    fn solve5_inverts_a_dominant_block() {
        let mut a = [[0.0; 5]; 5];
        for (r, row) in a.iter_mut().enumerate() {
            for (c, x) in row.iter_mut().enumerate() {
                *x = if r == c { 10.0 + r as f64 } else { 0.3 * (r as f64 - c as f64) + 0.1 };
            }
        }
        let x = [1.0, -2.0, 0.5, 3.0, -1.5];
        let y = solve5(a, mat_vec(&a, &x));
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() < 1e-13);
        }
    }
}
