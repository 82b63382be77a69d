//! What the two ADI pseudo-applications, SP and BT, share (NPB reports RNR-94-007 and
//! NAS-95-020; NPB 3.x MPI versions): the multi-partition decomposition, the cell fields with
//! two ghost layers, the ghost-face exchange, the initial guess, the forcing term, the explicit
//! right-hand side, the update and the two verified norms. Only the implicit line solves (SP:
//! scalar pentadiagonal after diagonalization; BT: 5x5 block tridiagonal) differ.
//!
//! Both solve the 3-D compressible Navier-Stokes equations on the unit cube for the
//! manufactured solution of [`super::cfd`], by time stepping `u += L^-1 (dt R(u))` where
//! `R` is the steady residual and `L` the approximately factored implicit operator
//! `Lx Ly Lz`, each factor a set of independent line systems along one axis.
//!
//! # Multi-partition
//!
//! With `P = p^2` ranks the grid is cut into `p x p x p` cells; rank `(i, j)` (`rank = i + p j`)
//! owns the `p` cells `(i + c, j - c, c) mod p`, `c = 0..p`: one in every slab along each axis.
//! So a line solve along any axis visits the `p` slabs in turn ("stages") and at every stage
//! every rank has a cell to work on; the partial results go to the rank holding the next cell
//! of the line, always the same neighbour ([`Adi::successor`], and [`Adi::predecessor`] back).
//! The faces of the cells go to those six neighbours too: one message per direction carries
//! the two boundary layers of every cell that has a neighbour there ([`Adi::copy_faces`]:
//! `Irecv` x6, `Isend` x6, `Waitall`). Norms are `MPI_Allreduce` sums.
//!
//! As in the reference, the face exchange and the line solves use two duplicates of the
//! communicator (`comm_rhs`, `comm_solve`).
//!
//! # Use
//!
//! [`Adi::new`] (an `Err` unless the rank count is a square leaving cells of 3 points or more),
//! [`Adi::new_fields`], [`Adi::initialize`], [`Adi::exact_rhs`]; a time step is
//! [`Adi::copy_faces`], [`Adi::compute_rhs`] (which also refreshes [`Aux`], the derived
//! quantities the implicit factors are built from), the benchmark's solves along x, y, z,
//! typically one [`Adi::pipeline`] pass up and one down per axis over [`Cell::lines`], then
//! [`Adi::add`]. Verification: [`Adi::error_norm`], then `copy_faces` + `compute_rhs` and
//! [`Adi::rhs_norm`] (divided by `dt`), checked by [`outcome`]. (SP's speed of sound,
//! `sqrt(C1 C2 (u[4] - square) / rho)`, is not in [`Aux`]: BT does not need it.)

use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use super::cfd::{exact_solution, Vec5, C1, C1C5, C2, C3C4, CON43, DIFFUSION, DSSP};
use super::{wtime, Class};

mod verify;
pub use verify::{outcome, Params};

/// A half-open box of array coordinates, `[(start, end); 3]` for x, y, z.
pub type Box3 = [(usize, usize); 3];

/// Ghost layers on each side of a cell (the dissipation stencil reaches two points out).
pub const GHOST: usize = 2;

/// Tags of the line-solve messages on `comm_solve`, per axis, forward and backward; plus the
/// cell's position on the other two axes.
const SOLVE_TAG: [[i32; 2]; 3] = [[3000, 2000], [5000, 4000], [7000, 6000]];

/// Tags of the face messages on `comm_rhs`: data travelling up (to the successor) or down
/// along each axis.
const FACE_TAG: [[i32; 2]; 3] = [[2000, 3000], [4000, 5000], [6000, 7000]];

/// One cell of the multi-partition, with its storage geometry.
pub struct Cell {
    /// Position in the `p x p x p` grid of cells.
    pub coord: [usize; 3],
    /// Points per axis.
    pub size: [usize; 3],
    /// Global index of the first point per axis.
    pub low: [usize; 3],
    /// 1 where the cell's first (`start`) or last (`end`) point on an axis lies on the global
    /// boundary, whose values stay fixed; 0 otherwise.
    pub start: [usize; 3],
    pub end: [usize; 3],
    /// Array extents (points plus ghosts) and index distance between neighbours, per axis.
    pub ext: [usize; 3],
    pub stride: [usize; 3],
}

impl Cell {
    /// Number of array elements, ghosts included.
    pub fn array_len(&self) -> usize {
        self.ext[0] * self.ext[1] * self.ext[2]
    }

    /// Array index of array coordinates `c` (the owned points are `GHOST..GHOST + size`).
    pub fn at(&self, c: [usize; 3]) -> usize {
        c[0] + self.stride[1] * c[1] + self.stride[2] * c[2]
    }

    /// Global index of array coordinate `c` along `axis` (never called on a ghost beyond the
    /// grid's lower edge).
    pub fn global(&self, axis: usize, c: usize) -> usize {
        self.low[axis] + c - GHOST
    }

    /// The owned points, array coordinates.
    pub fn owned(&self) -> Box3 {
        [0, 1, 2].map(|a| (GHOST, GHOST + self.size[a]))
    }

    /// The points the scheme updates: owned and not on the global boundary.
    pub fn interior(&self) -> Box3 {
        [0, 1, 2].map(|a| (GHOST + self.start[a], GHOST + self.size[a] - self.end[a]))
    }

    /// Every array point, ghosts included.
    pub fn whole(&self) -> Box3 {
        self.ext.map(|e| (0, e))
    }

    /// Calls `f(index, [i, j, k])` for every point of `b`, `i` fastest.
    pub fn for_box(&self, b: Box3, mut f: impl FnMut(usize, [usize; 3])) {
        for k in b[2].0..b[2].1 {
            for j in b[1].0..b[1].1 {
                let row = self.at([0, j, k]);
                for i in b[0].0..b[0].1 {
                    f(row + i, [i, j, k]);
                }
            }
        }
    }

    /// The grid lines along `axis` that the solvers update (interior points only).
    pub fn lines(&self, axis: usize) -> Lines {
        let inner = self.interior();
        let mut across = inner;
        across[axis] = (inner[axis].0, inner[axis].0 + 1);
        let mut firsts = Vec::new();
        self.for_box(across, |p, _| firsts.push(p));
        Lines { firsts, len: inner[axis].1 - inner[axis].0, stride: self.stride[axis] }
    }

    /// The two layers of owned points next to the upper (`upper`) or lower face along `axis`,
    /// which go to the neighbouring cell, or the two ghost layers beyond that face (`ghosts`),
    /// which come from it.
    fn face_layers(&self, axis: usize, upper: bool, ghosts: bool) -> Box3 {
        let mut b = self.owned();
        let first = match (upper, ghosts) {
            (true, false) => GHOST + self.size[axis] - 2,
            (false, false) => GHOST,
            (true, true) => GHOST + self.size[axis],
            (false, true) => 0,
        };
        b[axis] = (first, first + 2);
        b
    }
}

/// The lines of a cell along one axis, in a fixed order (the same on the two cells at either
/// end of a message).
pub struct Lines {
    /// Array index of each line's first interior point.
    pub firsts: Vec<usize>,
    /// Interior points per line.
    pub len: usize,
    /// Index distance between neighbours along the line.
    pub stride: usize,
}

/// The derived quantities the right-hand side and the Jacobians use, per array point.
#[derive(Default)]
pub struct Aux {
    /// `1 / rho`.
    pub rho_i: Vec<f64>,
    /// The velocity `(u, v, w)`.
    pub vel: Vec<[f64; 3]>,
    /// `|rho V|^2 / (2 rho)`, the kinetic energy per volume.
    pub square: Vec<f64>,
    /// `square / rho`.
    pub qs: Vec<f64>,
}

/// The fields of one cell, ghosts included.
pub struct CellFields {
    /// Solution.
    pub u: Vec<Vec5>,
    /// Right-hand side, then (after the solves) the update.
    pub rhs: Vec<Vec5>,
    /// Forcing term (zero outside the interior).
    pub forcing: Vec<Vec5>,
    pub aux: Aux,
}

/// The decomposition of an `n^3` grid over the ranks of `world`, and the discretization
/// constants.
pub struct Adi {
    /// For the face exchange and the norms.
    pub comm_rhs: SimpleCommunicator,
    /// For the line solves.
    pub comm_solve: SimpleCommunicator,
    /// Global points per axis.
    pub grid: [usize; 3],
    /// Cells per axis, `sqrt(ranks)`.
    pub ncells: usize,
    /// This rank's cells; `cells[c]` is in z-slab `c`.
    pub cells: Vec<Cell>,
    /// `slice[axis][stage]`: which of this rank's cells lies in slab `stage` along `axis`.
    pub slice: [Vec<usize>; 3],
    /// The rank holding the neighbours of all this rank's cells below (`predecessor`) and above
    /// (`successor`) along each axis (cyclically; unused at the grid's edges).
    pub predecessor: [i32; 3],
    pub successor: [i32; 3],
    /// Time step.
    pub dt: f64,
    /// Grid spacing per axis and the derived `1/h^2`, `1/(2h)`, `1/h`.
    pub h: [f64; 3],
    pub t1: [f64; 3],
    pub t2: [f64; 3],
    pub t3: [f64; 3],
}

/// How a benchmark reduces its ranks' times, as its reference does.
pub enum TimeReduction {
    /// Every rank gets the slowest rank's time (BT).
    AllRanks,
    /// Rank 0 gets the slowest rank's time, the others 0 (SP).
    RankZero,
}

/// What the timed part of an ADI benchmark ends with.
pub struct TimedRun {
    pub time_s: f64,
    /// Residual norms (divided by dt) and error norms after the last step.
    pub xcr: Vec5,
    pub xce: Vec5,
    /// The size and decomposition lines of the benchmark's report.
    pub details: Vec<String>,
}

/// Size and first global index of cell `c` of `p` along an axis of `n` points: the first
/// `n % p` cells get one point more than the others.
fn cell_extent(n: usize, p: usize, c: usize) -> (usize, usize) {
    let (base, extra) = (n / p, n % p);
    (base + usize::from(c < extra), c * base + c.min(extra))
}

/// Cell coordinates of the cells of rank `(i, j)` of a `p x p` rank grid: `(i + c, j - c, c)`.
fn cell_coords(p: usize, i: usize, j: usize) -> Vec<[usize; 3]> {
    (0..p).map(|c| [(i + c) % p, (j + p - c) % p, c]).collect()
}

/// The neighbour ranks of rank `(i, j)` below and above along each axis: the ranks whose cell
/// `c` (x, y) or `c -+ 1` (z) touches this rank's cell `c` there.
fn neighbours(p: usize, i: usize, j: usize) -> ([usize; 3], [usize; 3]) {
    let rank = |i: usize, j: usize| (i % p) + p * (j % p);
    let predecessor = [rank(i + p - 1, j), rank(i, j + p - 1), rank(i + 1, j + p - 1)];
    let successor = [rank(i + 1, j), rank(i, j + 1), rank(i + p - 1, j + 1)];
    (predecessor, successor)
}

impl Adi {
    /// The decomposition for `world` of an `n^3` grid; `name` is the benchmark's, for errors.
    pub fn new(world: &SimpleCommunicator, name: &str, n: usize, dt: f64) -> Result<Adi, String> {
        let size = world.size() as usize;
        let rank = world.rank() as usize;
        let p = (1..=size).find(|&q| q * q >= size).unwrap_or(1);
        if p * p != size {
            return Err(format!("{name} needs a square number of ranks (1, 4, 9, 16, ...), not {size}"));
        }
        let grid = [n; 3];
        if n / p < 3 {
            return Err(format!(
                "{name} on {size} ranks: {p} cells per axis leave cells of fewer than 3 points of the {n}^3 grid"
            ));
        }
        let (i, j) = (rank % p, rank / p);
        let cells: Vec<Cell> = cell_coords(p, i, j)
            .into_iter()
            .map(|coord| {
                let runs = [0, 1, 2].map(|a| cell_extent(grid[a], p, coord[a]));
                let size = runs.map(|(s, _)| s);
                let ext = size.map(|s| s + 2 * GHOST);
                Cell {
                    coord,
                    size,
                    low: runs.map(|(_, l)| l),
                    start: coord.map(|c| usize::from(c == 0)),
                    end: coord.map(|c| usize::from(c + 1 == p)),
                    ext,
                    stride: [1, ext[0], ext[0] * ext[1]],
                }
            })
            .collect();
        let mut slice = [vec![0; p], vec![0; p], vec![0; p]];
        for (c, cell) in cells.iter().enumerate() {
            for (a, s) in slice.iter_mut().enumerate() {
                s[cell.coord[a]] = c;
            }
        }
        let (pred, succ) = neighbours(p, i, j);
        let h = grid.map(|g| 1.0 / (g - 1) as f64);
        Ok(Adi {
            comm_rhs: world.duplicate(),
            comm_solve: world.duplicate(),
            grid,
            ncells: p,
            cells,
            slice,
            predecessor: pred.map(|r| r as i32),
            successor: succ.map(|r| r as i32),
            dt,
            h,
            t1: h.map(|d| 1.0 / (d * d)),
            t2: h.map(|d| 1.0 / (2.0 * d)),
            t3: h.map(|d| 1.0 / d),
        })
    }

    /// The driver BT and SP share: initialize, one untimed `step` to touch everything,
    /// initialize again, `niter` timed steps, the error and residual norms, and the time of the
    /// slowest rank reduced as `time` says.
    pub fn timed_run<W>(
        &self,
        world: &SimpleCommunicator,
        class: Class,
        niter: usize,
        work: &mut W,
        step: impl Fn(&mut [CellFields], &mut W),
        time: TimeReduction,
    ) -> TimedRun {
        let mut fields = self.new_fields();
        self.initialize(&mut fields);
        self.exact_rhs(&mut fields);
        step(&mut fields, work);
        self.initialize(&mut fields);
        world.barrier();
        let t0 = wtime();
        for _ in 0..niter {
            step(&mut fields, work);
        }
        let t_local = wtime() - t0;
        let xce = self.error_norm(&fields);
        self.copy_faces(&mut fields);
        self.compute_rhs(&mut fields);
        let xcr = self.rhs_norm(&fields).map(|x| x / self.dt);
        let mut t = 0.0f64;
        match time {
            TimeReduction::AllRanks => world.all_reduce_into(&t_local, &mut t, SystemOperation::max()),
            TimeReduction::RankZero if world.rank() == 0 => {
                world.process_at_rank(0).reduce_into_root(&t_local, &mut t, SystemOperation::max())
            }
            TimeReduction::RankZero => world.process_at_rank(0).reduce_into(&t_local, SystemOperation::max()),
        }
        let (n, cell) = (self.grid[0], &self.cells[0]);
        let details = vec![
            format!("Size: {n}x{n}x{n} (class {}), iterations: {niter}, dt: {}", class.letter(), self.dt),
            format!(
                "Number of processes: {} ({p}x{p}x{p} cells, {p} per rank; rank 0's first cell {}x{}x{})",
                world.size(),
                cell.size[0],
                cell.size[1],
                cell.size[2],
                p = self.ncells
            ),
        ];
        TimedRun { time_s: t, xcr, xce, details }
    }

    /// Zeroed fields for every cell.
    pub fn new_fields(&self) -> Vec<CellFields> {
        self.cells
            .iter()
            .map(|cell| {
                let len = cell.array_len();
                CellFields {
                    u: vec![[0.0; 5]; len],
                    rhs: vec![[0.0; 5]; len],
                    forcing: vec![[0.0; 5]; len],
                    aux: Aux {
                        rho_i: vec![0.0; len],
                        vel: vec![[0.0; 3]; len],
                        square: vec![0.0; len],
                        qs: vec![0.0; len],
                    },
                }
            })
            .collect()
    }

    /// The exact solution at global indices `g`.
    pub fn exact_at(&self, g: [usize; 3]) -> Vec5 {
        exact_solution(g[0] as f64 * self.h[0], g[1] as f64 * self.h[1], g[2] as f64 * self.h[2])
    }

    /// Boundary values from the exact solution and, inside, the initial guess: on each line
    /// through the point the linear interpolation `p_a` between the line's two boundary values,
    /// combined as `1 - (1 - p_x)(1 - p_y)(1 - p_z)` (tri-linear transfinite interpolation).
    /// Ghost points start at 1 so that `1 / rho` stays finite on the never-filled ones.
    pub fn initialize(&self, fields: &mut [CellFields]) {
        let last = self.grid.map(|g| g - 1);
        for (cell, f) in self.cells.iter().zip(fields.iter_mut()) {
            f.u.fill([1.0; 5]);
            cell.for_box(cell.owned(), |p, c| {
                let g = [0, 1, 2].map(|a| cell.global(a, c[a]));
                if (0..3).any(|a| g[a] == 0 || g[a] == last[a]) {
                    f.u[p] = self.exact_at(g);
                    return;
                }
                let x = [0, 1, 2].map(|a| g[a] as f64 * self.h[a]);
                // The exact solution on the two faces normal to each axis, through the point.
                let face = |a: usize, side: f64| {
                    let mut y = x;
                    y[a] = side;
                    exact_solution(y[0], y[1], y[2])
                };
                let ends = [0, 1, 2].map(|a| (face(a, 0.0), face(a, 1.0)));
                for (m, v) in f.u[p].iter_mut().enumerate() {
                    let [px, py, pz] = [0, 1, 2].map(|a| x[a] * ends[a].1[m] + (1.0 - x[a]) * ends[a].0[m]);
                    *v = px + py + pz - px * py - px * pz - py * pz + px * py * pz;
                }
            });
        }
    }

    /// The forcing term: minus the discrete operator applied to the exact solution, which is
    /// known everywhere, ghosts included, so no communication is needed.
    pub fn exact_rhs(&self, fields: &mut [CellFields]) {
        for (cell, f) in self.cells.iter().zip(fields.iter_mut()) {
            let mut exact = vec![[0.0; 5]; cell.array_len()];
            // Ghosts beyond the grid's lower edge are never read; keep them at 1.
            exact.fill([1.0; 5]);
            cell.for_box(cell.whole(), |p, c| {
                if (0..3).all(|a| c[a] + cell.low[a] >= GHOST) {
                    exact[p] = self.exact_at([0, 1, 2].map(|a| cell.global(a, c[a])));
                }
            });
            compute_aux(cell, &exact, &mut f.aux);
            f.forcing.fill([0.0; 5]);
            self.add_operator(cell, &exact, &f.aux, &mut f.forcing);
            cell.for_box(cell.interior(), |p, _| f.forcing[p] = f.forcing[p].map(|x| -x));
        }
    }

    /// `rhs = dt (forcing + operator(u))` at the interior points (`rhs` keeps the forcing, zero,
    /// on the boundary). The ghosts of `u` must be current ([`Self::copy_faces`]); also refreshes
    /// the derived quantities the solvers use.
    pub fn compute_rhs(&self, fields: &mut [CellFields]) {
        for (cell, f) in self.cells.iter().zip(fields.iter_mut()) {
            compute_aux(cell, &f.u, &mut f.aux);
            f.rhs.copy_from_slice(&f.forcing);
            self.add_operator(cell, &f.u, &f.aux, &mut f.rhs);
            let dt = self.dt;
            cell.for_box(cell.interior(), |p, _| f.rhs[p] = f.rhs[p].map(|x| x * dt));
        }
    }

    /// Adds the discrete operator applied to `u` to `out` at the interior points of `cell`:
    /// along each axis, central differences of the inviscid and viscous fluxes, a second
    /// difference (artificial diffusion) and a fourth-difference dissipation that turns
    /// one-sided next to the boundary.
    fn add_operator(&self, cell: &Cell, u: &[Vec5], aux: &Aux, out: &mut [Vec5]) {
        for axis in 0..3 {
            self.add_fluxes(cell, axis, u, aux, out);
            self.add_dissipation(cell, axis, u, out);
        }
    }

    /// The flux and diffusion terms along `axis` (reference `compute_rhs`, one direction).
    fn add_fluxes(&self, cell: &Cell, axis: usize, u: &[Vec5], aux: &Aux, out: &mut [Vec5]) {
        let s = cell.stride[axis];
        let n = axis + 1;
        let (t2, t3) = (self.t2[axis], self.t3[axis]);
        let diffusion = DIFFUSION[axis] * self.t1[axis];
        let visc = C3C4 * t3 * t3;
        let (visc_qs, visc_v2, visc_e) = (visc * (1.0 - C1C5), visc / 6.0, visc * C1C5);
        let Aux { rho_i, vel, square, qs } = aux;
        cell.for_box(cell.interior(), |p, _| {
            let (um, up) = (&u[p - s], &u[p + s]);
            let (vm, vc, vp) = (vel[p - s][axis], vel[p][axis], vel[p + s][axis]);
            let o = &mut out[p];
            o[0] += diffusion * second_difference(|q| u[q][0], p, s) - t2 * (up[n] - um[n]);
            for m in 1..4 {
                let v = if m == n { visc * CON43 } else { visc };
                let mut flux = up[m] * vp - um[m] * vm;
                if m == n {
                    flux += (up[4] - square[p + s] - um[4] + square[p - s]) * C2;
                }
                o[m] += diffusion * second_difference(|q| u[q][m], p, s)
                    + v * second_difference(|q| vel[q][m - 1], p, s)
                    - t2 * flux;
            }
            o[4] += diffusion * second_difference(|q| u[q][4], p, s)
                + visc_qs * second_difference(|q| qs[q], p, s)
                + visc_v2 * (vp * vp - 2.0 * vc * vc + vm * vm)
                + visc_e * second_difference(|q| u[q][4] * rho_i[q], p, s)
                - t2 * ((C1 * up[4] - C2 * square[p + s]) * vp - (C1 * um[4] - C2 * square[p - s]) * vm);
        });
    }

    /// The fourth-difference dissipation along `axis`: the stencil `(1, -4, 6, -4, 1)`, cut to
    /// `(5, -4, 1)` and `(-4, 6, -4, 1)` on the first two interior points and mirrored on the
    /// last two.
    fn add_dissipation(&self, cell: &Cell, axis: usize, u: &[Vec5], out: &mut [Vec5]) {
        let s = cell.stride[axis];
        let last = self.grid[axis] - 2;
        cell.for_box(cell.interior(), |p, c| {
            let g = cell.global(axis, c[axis]);
            let w: [f64; 5] = match g {
                1 => [0.0, 0.0, 5.0, -4.0, 1.0],
                2 => [0.0, -4.0, 6.0, -4.0, 1.0],
                _ if g == last - 1 => [1.0, -4.0, 6.0, -4.0, 0.0],
                _ if g == last => [1.0, -4.0, 5.0, 0.0, 0.0],
                _ => [1.0, -4.0, 6.0, -4.0, 1.0],
            };
            for m in 0..5 {
                let mut d4 = 0.0;
                for (o, &wo) in w.iter().enumerate() {
                    if wo != 0.0 {
                        d4 += wo * u[p + o * s - 2 * s][m];
                    }
                }
                out[p][m] -= DSSP * d4;
            }
        });
    }

    /// Fills the two ghost layers of `u` on every cell face that has a neighbouring cell: one
    /// message per direction and neighbour rank carries the layers of all this rank's cells
    /// that face it, all six sent and received at once (reference `copy_faces`).
    pub fn copy_faces(&self, fields: &mut [CellFields]) {
        if self.ncells == 1 {
            return;
        }
        let p = self.ncells;
        // dirs[d] = (axis, upward): upward data goes to the successor, from the cells not in the
        // top slab, into the lower ghosts of the cells not in the bottom slab.
        let dirs: Vec<(usize, bool)> = (0..3).flat_map(|a| [(a, true), (a, false)]).collect();
        let sends_from = |cell: &Cell, (axis, up): (usize, bool)| {
            if up {
                cell.coord[axis] + 1 < p
            } else {
                cell.coord[axis] > 0
            }
        };
        let outboxes: Vec<Vec<f64>> = dirs
            .iter()
            .map(|&dir| {
                let mut buf = Vec::new();
                for (cell, f) in self.cells.iter().zip(fields.iter()) {
                    if sends_from(cell, dir) {
                        cell.for_box(cell.face_layers(dir.0, dir.1, false), |q, _| buf.extend_from_slice(&f.u[q]));
                    }
                }
                buf
            })
            .collect();
        // What arrives travelling in direction `dir` fills the ghosts on the opposite face of
        // exactly the cells whose mirror image sends in that direction: same sizes.
        let receives_into = |cell: &Cell, (axis, up): (usize, bool)| sends_from(cell, (axis, !up));
        let mut inboxes: Vec<Vec<f64>> = dirs
            .iter()
            .map(|&dir| {
                let points: usize = self
                    .cells
                    .iter()
                    .filter(|cell| receives_into(cell, dir))
                    .map(|cell| 2 * cell.size.iter().product::<usize>() / cell.size[dir.0])
                    .sum();
                vec![0.0; 5 * points]
            })
            .collect();
        let comm = &self.comm_rhs;
        mpi::request::multiple_scope(12, |scope, requests| {
            for (&(axis, up), inbox) in dirs.iter().zip(inboxes.iter_mut()) {
                let from = if up { self.predecessor[axis] } else { self.successor[axis] };
                let tag = FACE_TAG[axis][usize::from(!up)];
                requests.add(comm.process_at_rank(from).immediate_receive_into_with_tag(scope, &mut inbox[..], tag));
            }
            for (&(axis, up), outbox) in dirs.iter().zip(outboxes.iter()) {
                let to = if up { self.successor[axis] } else { self.predecessor[axis] };
                let tag = FACE_TAG[axis][usize::from(!up)];
                requests.add(comm.process_at_rank(to).immediate_send_with_tag(scope, &outbox[..], tag));
            }
            let mut done = Vec::new();
            requests.wait_all(&mut done);
        });
        for (&(axis, up), inbox) in dirs.iter().zip(&inboxes) {
            let mut values = inbox.chunks_exact(5);
            for (cell, f) in self.cells.iter().zip(fields.iter_mut()) {
                if receives_into(cell, (axis, up)) {
                    cell.for_box(cell.face_layers(axis, !up, true), |q, _| {
                        if let Some(v) = values.next() {
                            f.u[q].copy_from_slice(v);
                        }
                    });
                }
            }
        }
    }

    /// One pass of a pipelined line solve along `axis`: stage by stage through the slabs,
    /// upwards (`forward`) or downwards, calls `visit(cell index, inbox, outbox)` on this rank's
    /// cell of the slab. `inbox` is what the cell before it on its lines sent (none on the first
    /// stage), `per_line` values per line of [`Cell::lines`]; whatever `visit` puts in `outbox`
    /// (none on the last stage) goes to the cell after it, by `Isend` (received blocking at the
    /// next stage there). `outboxes` (one per stage, so a send may still be in flight while the
    /// next stage packs) are the send buffers.
    pub fn pipeline(
        &self,
        axis: usize,
        forward: bool,
        per_line: usize,
        outboxes: &mut [Vec<f64>],
        mut visit: impl FnMut(usize, Option<&[f64]>, Option<&mut Vec<f64>>),
    ) {
        let last = self.ncells - 1;
        let (from, to) = if forward {
            (self.predecessor[axis], self.successor[axis])
        } else {
            (self.successor[axis], self.predecessor[axis])
        };
        let comm = &self.comm_solve;
        let mut stages: Vec<(usize, &mut Vec<f64>)> = outboxes.iter_mut().enumerate().collect();
        if !forward {
            stages.reverse();
        }
        mpi::request::scope(|scope| {
            let mut sends = Vec::new();
            for (stage, outbox) in stages {
                let (receiving, sending) = if forward { (stage > 0, stage < last) } else { (stage < last, stage > 0) };
                let c = self.slice[axis][stage];
                let cell = &self.cells[c];
                let others: Vec<usize> = (0..3).filter(|&a| a != axis).map(|a| cell.coord[a]).collect();
                let tag = SOLVE_TAG[axis][usize::from(!forward)] + (others[0] + self.ncells * others[1]) as i32;
                let inbox = receiving.then(|| {
                    let mut buf = vec![0.0; per_line * cell.lines(axis).firsts.len()];
                    comm.process_at_rank(from).receive_into_with_tag(&mut buf[..], tag);
                    buf
                });
                outbox.clear();
                visit(c, inbox.as_deref(), sending.then_some(&mut *outbox));
                if sending {
                    let outbox: &Vec<f64> = outbox;
                    sends.push(comm.process_at_rank(to).immediate_send_with_tag(scope, &outbox[..], tag));
                }
            }
            for send in sends {
                send.wait();
            }
        });
    }

    /// `u += rhs` at the interior points.
    pub fn add(&self, fields: &mut [CellFields]) {
        for (cell, f) in self.cells.iter().zip(fields.iter_mut()) {
            cell.for_box(cell.interior(), |p, _| {
                for m in 0..5 {
                    f.u[p][m] += f.rhs[p][m];
                }
            });
        }
    }

    /// Sums the squares of `value(cell index, array index, coordinates)` over the points of
    /// `region(cell)` on all ranks, and returns the RMS per component with the spec's
    /// normalization by the interior point count (also for the error, summed over all points).
    fn rms(&self, region: impl Fn(&Cell) -> Box3, value: impl Fn(usize, usize, [usize; 3]) -> Vec5) -> Vec5 {
        let mut local = [0.0; 5];
        for (ci, cell) in self.cells.iter().enumerate() {
            cell.for_box(region(cell), |p, c| {
                for (acc, x) in local.iter_mut().zip(value(ci, p, c)) {
                    *acc += x * x;
                }
            });
        }
        let mut global = [0.0; 5];
        self.comm_rhs.all_reduce_into(&local[..], &mut global[..], SystemOperation::sum());
        let points: f64 = self.grid.iter().map(|&g| (g - 2) as f64).product();
        global.map(|s| (s / points).sqrt())
    }

    /// RMS norm of the error against the exact solution (reference `error_norm`).
    pub fn error_norm(&self, fields: &[CellFields]) -> Vec5 {
        self.rms(Cell::owned, |ci, p, c| {
            let cell = &self.cells[ci];
            let exact = self.exact_at([0, 1, 2].map(|a| cell.global(a, c[a])));
            [0, 1, 2, 3, 4].map(|m| fields[ci].u[p][m] - exact[m])
        })
    }

    /// RMS norm of the right-hand side at the interior points (reference `rhs_norm`).
    pub fn rhs_norm(&self, fields: &[CellFields]) -> Vec5 {
        self.rms(Cell::interior, |ci, p, _| fields[ci].rhs[p])
    }
}

/// `x(p + s) - 2 x(p) + x(p - s)`.
#[inline(always)]
fn second_difference(x: impl Fn(usize) -> f64, p: usize, s: usize) -> f64 {
    x(p + s) - 2.0 * x(p) + x(p - s)
}

/// `1/rho`, the velocity, `square` and `qs` of `u` on the array points one beyond the owned
/// ones (all the operator and the Jacobians read).
fn compute_aux(cell: &Cell, u: &[Vec5], aux: &mut Aux) {
    let mut b = cell.whole();
    for r in b.iter_mut() {
        *r = (r.0 + 1, r.1 - 1);
    }
    cell.for_box(b, |p, _| {
        let w = &u[p];
        let rho_inv = 1.0 / w[0];
        aux.rho_i[p] = rho_inv;
        aux.vel[p] = [w[1] * rho_inv, w[2] * rho_inv, w[3] * rho_inv];
        let square = 0.5 * (w[1] * w[1] + w[2] * w[2] + w[3] * w[3]) * rho_inv;
        aux.square[p] = square;
        aux.qs[p] = square * rho_inv;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cell of the `p^3` grid belongs to exactly one rank, each rank has one cell in every
    /// slab of every axis, and the neighbours are those holding the adjacent cells.
    #[test]
    fn multipartition_covers_the_cells_and_neighbours_match() {
        for p in 1..6 {
            let mut owner = vec![None; p * p * p];
            let at = |c: [usize; 3]| c[0] + p * (c[1] + p * c[2]);
            for rank in 0..p * p {
                let coords = cell_coords(p, rank % p, rank / p);
                for a in 0..3 {
                    let mut slabs: Vec<usize> = coords.iter().map(|c| c[a]).collect();
                    slabs.sort_unstable();
                    assert_eq!(slabs, (0..p).collect::<Vec<_>>());
                }
                for (c, coord) in coords.iter().enumerate() {
                    assert!(owner[at(*coord)].replace((rank, c)).is_none());
                }
            }
            for rank in 0..p * p {
                let (pred, succ) = neighbours(p, rank % p, rank / p);
                for (c, coord) in cell_coords(p, rank % p, rank / p).iter().enumerate() {
                    for a in 0..3 {
                        let mut up = *coord;
                        up[a] = (up[a] + 1) % p;
                        let mut down = *coord;
                        down[a] = (down[a] + p - 1) % p;
                        assert_eq!(owner[at(up)].map(|o| o.0), Some(succ[a]), "p {p} rank {rank} cell {c} axis {a}");
                        assert_eq!(owner[at(down)].map(|o| o.0), Some(pred[a]));
                    }
                }
            }
        }
    }

    #[test]
    fn cells_tile_the_axis() {
        for p in 1..6 {
            let extents: Vec<(usize, usize)> = (0..p).map(|c| cell_extent(24, p, c)).collect();
            assert_eq!(extents[0].1, 0);
            assert!(extents.windows(2).all(|w| w[0].1 + w[0].0 == w[1].1 && w[0].0 >= w[1].0));
            assert_eq!(extents.iter().map(|e| e.0).sum::<usize>(), 24);
        }
    }
}
