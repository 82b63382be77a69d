//! CG, "Conjugate Gradient" (NPB report RNR-94-007, section 2.3; NPB 2/3 MPI version).
//!
//! Estimates the smallest eigenvalue of a large random sparse symmetric positive definite
//! matrix by the inverse power method: each of `niter` outer iterations solves `A z = x`
//! with 25 unpreconditioned conjugate-gradient steps, sets `zeta = shift + 1 / (x . z)` and
//! `x = z / ||z||`. The matrix is the spec's `makea`: `na` outer products of random sparse
//! vectors with `nonzer` nonzeros (from the NPB generator, seed 314159265, multiplier 5^13),
//! scaled geometrically so the condition number is about `1 / rcond`, plus
//! `(rcond - shift) I`. The final `zeta` is checked against the published value to 1e-10.
//!
//! Decomposition, as in the reference MPI code: the ranks (a power of two) form a 2-D grid of
//! `nprows x npcols` (`npcols = nprows` or `2 nprows`); rank `(i, j)` holds the block of
//! rows `R_i` and columns `C_j` of the matrix and the column segment `C_j` of every vector.
//! A matrix-vector product is the local block product, a row-wise sum across the process row
//! by pairwise `MPI_Irecv`/`MPI_Send`/`MPI_Wait` exchanges (recursive doubling; when the grid
//! is not square the first step is a halving so each rank ends with half of the rows), then
//! one exchange with the "transpose" rank that turns the row segment into a column segment.
//! Dot products are summed the same way, with scalar exchanges across the process row.

use std::ops::Range;

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{randlc, rel_ok, wtime, Class, Outcome, A};

/// Conjugate-gradient steps per outer iteration.
const CGITMAX: usize = 25;
/// Condition-number parameter of `makea`.
const RCOND: f64 = 0.1;
/// Seed of the matrix generator.
const TRAN: f64 = 314_159_265.0;
/// Verification tolerance (relative).
const EPSILON: f64 = 1.0e-10;

/// Class parameters.
struct Params {
    na: usize,
    nonzer: usize,
    niter: usize,
    shift: f64,
    zeta_ref: f64,
}

fn params(class: Class) -> Params {
    let (na, nonzer, niter, shift, zeta_ref) = match class {
        Class::S => (1400, 7, 15, 10.0, 8.597_177_507_864_8),
        Class::W => (7000, 8, 15, 12.0, 10.362_595_087_124),
        Class::A => (14000, 11, 15, 20.0, 17.130_235_054_029),
        Class::B => (75000, 13, 75, 60.0, 22.712_745_482_631),
        Class::C => (150_000, 15, 75, 110.0, 28.973_605_592_845),
    };
    Params { na, nonzer, niter, shift, zeta_ref }
}

/// `n` split into `parts` nearly equal blocks (the first `n % parts` one longer): block `k`.
fn block(n: usize, parts: usize, k: usize) -> Range<usize> {
    let base = n / parts;
    let extra = n % parts;
    let start = k * base + k.min(extra);
    start..start + base + usize::from(k < extra)
}

/// Exchanges `send` for `recv` with `partner`: post the receive, send, wait (the pattern of
/// the reference code). `partner` may be this rank.
pub(super) fn exchange(world: &SimpleCommunicator, partner: i32, tag: i32, send: &[f64], recv: &mut [f64]) {
    let peer = world.process_at_rank(partner);
    mpi::request::scope(|scope| {
        let req = peer.immediate_receive_into_with_tag(scope, recv, tag);
        peer.send_with_tag(send, tag);
        req.wait();
    });
}

/// This rank's place in the 2-D process grid and what it exchanges with whom.
struct Grid {
    npcols: usize,
    proc_row: usize,
    proc_col: usize,
    /// Global rows of the local block.
    rows: Range<usize>,
    /// Global columns of the local block (the local vector segment).
    cols: Range<usize>,
    /// Local row indices this rank sums and sends on in the transpose step.
    seg: Range<usize>,
    /// Rank that receives `seg` (and sends this rank its column segment).
    exch_proc: i32,
    /// `npcols == nprows` (otherwise `npcols == 2 nprows`).
    square: bool,
}

impl Grid {
    fn new(rank: usize, size: usize, na: usize) -> Result<Grid, String> {
        if !size.is_power_of_two() {
            return Err(format!("CG needs a power-of-two number of ranks, not {size}"));
        }
        let log_p = size.trailing_zeros() as usize;
        let nprows = 1usize << (log_p / 2);
        let npcols = size / nprows;
        if na < npcols * 2 {
            return Err(format!("{size} ranks are too many for na = {na}"));
        }
        let proc_row = rank / npcols;
        let proc_col = rank % npcols;
        let rows = block(na, nprows, proc_row);
        let square = npcols == nprows;
        let (cols, seg, exch) = if square {
            let cols = block(na, npcols, proc_col);
            (cols, 0..rows.len(), proc_col * npcols + proc_row)
        } else {
            // Column blocks are the halves of the row blocks.
            let parent = block(na, nprows, proc_col / 2);
            let half = parent.len().div_ceil(2);
            let cols = if proc_col.is_multiple_of(2) {
                parent.start..parent.start + half
            } else {
                parent.start + half..parent.end
            };
            let len = rows.len();
            let lh = len.div_ceil(2);
            let seg = if proc_col.is_multiple_of(2) { 0..lh } else { lh..len };
            (cols, seg, (proc_col / 2) * npcols + 2 * proc_row + proc_col % 2)
        };
        Ok(Grid { npcols, proc_row, proc_col, rows, cols, seg, exch_proc: exch as i32, square })
    }

    /// Rank of the partner `proc_col ^ d` in this process row.
    fn row_partner(&self, d: usize) -> i32 {
        (self.proc_row * self.npcols + (self.proc_col ^ d)) as i32
    }
}

/// The local block of the matrix in compressed-row form (local row and column indices).
struct Csr {
    rowstr: Vec<usize>,
    colidx: Vec<u32>,
    a: Vec<f64>,
}

/// The spec's `makea`: the whole sequence of outer products is generated on every rank and
/// each keeps the entries of its block; duplicates are summed row by row in generation order.
fn makea(na: usize, nonzer: usize, shift: f64, rows: &Range<usize>, cols: &Range<usize>) -> Csr {
    let mut tran = TRAN;
    // The reference draws one number (its initial zeta) before building the matrix.
    randlc(&mut tran, A);
    let nn1 = na.next_power_of_two() as f64;
    let ratio = RCOND.powf(1.0 / na as f64);
    let mut size = 1.0f64;
    let mut mark = vec![false; na];
    let mut v: Vec<f64> = Vec::with_capacity(nonzer + 1);
    let mut iv: Vec<usize> = Vec::with_capacity(nonzer + 1);
    // (local row, local column, value)
    let mut trip: Vec<(u32, u32, f64)> = Vec::new();
    for iouter in 0..na {
        // sprnvc: `nonzer` distinct random positions with random values.
        v.clear();
        iv.clear();
        while v.len() < nonzer {
            let vecelt = randlc(&mut tran, A);
            let vecloc = randlc(&mut tran, A);
            let i = (nn1 * vecloc) as usize;
            if i >= na || mark[i] {
                continue;
            }
            mark[i] = true;
            v.push(vecelt);
            iv.push(i);
        }
        for &i in &iv {
            mark[i] = false;
        }
        // vecset: element `iouter` is 0.5.
        match iv.iter().position(|&c| c == iouter) {
            Some(k) => v[k] = 0.5,
            None => {
                v.push(0.5);
                iv.push(iouter);
            }
        }
        for (&jcol, &vj) in iv.iter().zip(&v) {
            if !cols.contains(&jcol) {
                continue;
            }
            let scale = size * vj;
            for (&irow, &vi) in iv.iter().zip(&v) {
                if rows.contains(&irow) {
                    trip.push(((irow - rows.start) as u32, (jcol - cols.start) as u32, vi * scale));
                }
            }
        }
        size *= ratio;
    }
    for i in rows.clone() {
        if cols.contains(&i) {
            trip.push(((i - rows.start) as u32, (i - cols.start) as u32, RCOND - shift));
        }
    }
    sparse(rows.len(), cols.len(), &trip)
}

/// Builds the CSR block from triples, summing duplicates; within a row the entries keep the
/// order in which their columns first became nonzero.
fn sparse(nrows: usize, ncols: usize, trip: &[(u32, u32, f64)]) -> Csr {
    // Stable bucket sort on the row.
    let mut start = vec![0usize; nrows + 1];
    for &(r, _, _) in trip {
        start[r as usize + 1] += 1;
    }
    for j in 0..nrows {
        start[j + 1] += start[j];
    }
    let mut fill = start.clone();
    let mut order = vec![0usize; trip.len()];
    for (k, &(r, _, _)) in trip.iter().enumerate() {
        order[fill[r as usize]] = k;
        fill[r as usize] += 1;
    }
    let mut acc = vec![0.0f64; ncols];
    let mut mark = vec![false; ncols];
    let mut nzloc: Vec<usize> = Vec::new();
    let mut rowstr = Vec::with_capacity(nrows + 1);
    let mut colidx = Vec::new();
    let mut a = Vec::new();
    rowstr.push(0);
    for j in 0..nrows {
        nzloc.clear();
        for &k in &order[start[j]..start[j + 1]] {
            let (_, c, val) = trip[k];
            let c = c as usize;
            acc[c] += val;
            if !mark[c] && acc[c] != 0.0 {
                mark[c] = true;
                nzloc.push(c);
            }
        }
        for &c in &nzloc {
            mark[c] = false;
            let val = acc[c];
            acc[c] = 0.0;
            if val != 0.0 {
                a.push(val);
                colidx.push(c as u32);
            }
        }
        rowstr.push(a.len());
    }
    Csr { rowstr, colidx, a }
}

/// One rank's state.
struct Cg<'a> {
    world: &'a SimpleCommunicator,
    grid: Grid,
    mat: Csr,
    x: Vec<f64>,
    z: Vec<f64>,
    p: Vec<f64>,
    q: Vec<f64>,
    r: Vec<f64>,
    /// Row-block workspace.
    w: Vec<f64>,
    /// Receive buffer for the row-wise sums.
    tmp: Vec<f64>,
}

impl Cg<'_> {
    /// Sum of a local partial value over the process row (recursive doubling on scalars).
    fn row_sum<const N: usize>(&self, mut local: [f64; N]) -> [f64; N] {
        let mut d = self.grid.npcols / 2;
        let mut tag = 1;
        while d > 0 {
            let mut other = [0.0f64; N];
            exchange(self.world, self.grid.row_partner(d), tag, &local, &mut other);
            for (l, o) in local.iter_mut().zip(other) {
                *l += o;
            }
            d /= 2;
            tag += 1;
        }
        local
    }

    fn dot(&self, a: &[f64], b: &[f64]) -> f64 {
        let s: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        self.row_sum([s])[0]
    }

    /// `dst = A src` (column segments): local block product into `w`, row-wise sum across
    /// the process row, then the transpose exchange.
    fn matvec(&mut self, src_is_z: bool) -> Vec<f64> {
        let src = if src_is_z { &self.z } else { &self.p };
        let m = &self.mat;
        for (j, wj) in self.w.iter_mut().enumerate() {
            let (lo, hi) = (m.rowstr[j], m.rowstr[j + 1]);
            *wj = m.a[lo..hi].iter().zip(&m.colidx[lo..hi]).fold(0.0, |s, (a, &c)| s + a * src[c as usize]);
        }
        let g = &self.grid;
        let seg = g.seg.clone();
        let mut d = 1;
        let mut tag = 100;
        while d < g.npcols {
            let partner = g.row_partner(d);
            if d == 1 && !g.square {
                // Halving step: send the other half, receive the partner's share of ours.
                let nrows = g.rows.len();
                let other = if seg.start == 0 { seg.end..nrows } else { 0..seg.start };
                let recv = &mut self.tmp[..seg.len()];
                exchange(self.world, partner, tag, &self.w[other], recv);
            } else {
                let recv = &mut self.tmp[..seg.len()];
                exchange(self.world, partner, tag, &self.w[seg.clone()], recv);
            }
            for (wj, t) in self.w[seg.clone()].iter_mut().zip(&self.tmp) {
                *wj += t;
            }
            d *= 2;
            tag += 1;
        }
        let mut dst = vec![0.0f64; g.cols.len()];
        if g.npcols > 1 {
            exchange(self.world, g.exch_proc, 200, &self.w[seg], &mut dst);
        } else {
            dst.copy_from_slice(&self.w[..g.cols.len()]);
        }
        dst
    }

    /// 25 CG steps on `A z = x`; returns `||x - A z||`.
    fn conj_grad(&mut self) -> f64 {
        self.q.fill(0.0);
        self.z.fill(0.0);
        self.r.copy_from_slice(&self.x);
        self.p.copy_from_slice(&self.x);
        let mut rho = self.dot(&self.r, &self.r);
        for _ in 0..CGITMAX {
            self.q = self.matvec(false);
            let d = self.dot(&self.p, &self.q);
            let alpha = rho / d;
            let rho0 = rho;
            for j in 0..self.z.len() {
                self.z[j] += alpha * self.p[j];
                self.r[j] -= alpha * self.q[j];
            }
            rho = self.dot(&self.r, &self.r);
            let beta = rho / rho0;
            for j in 0..self.p.len() {
                self.p[j] = self.r[j] + beta * self.p[j];
            }
        }
        self.r = self.matvec(true);
        let s: f64 = self.x.iter().zip(&self.r).map(|(x, r)| (x - r) * (x - r)).sum();
        self.row_sum([s])[0].sqrt()
    }

    /// One outer iteration: CG solve, then `zeta` and the normalised new `x`.
    fn power_step(&mut self, shift: f64) -> (f64, f64) {
        let rnorm = self.conj_grad();
        let xz: f64 = self.x.iter().zip(&self.z).map(|(x, z)| x * z).sum();
        let zz: f64 = self.z.iter().map(|z| z * z).sum();
        let [xz, zz] = self.row_sum([xz, zz]);
        let zeta = shift + 1.0 / xz;
        let scale = 1.0 / zz.sqrt();
        for (x, z) in self.x.iter_mut().zip(&self.z) {
            *x = scale * z;
        }
        (rnorm, zeta)
    }
}

/// Runs CG for `class` on `world` (see the module documentation).
pub fn run(world: &SimpleCommunicator, class: Class) -> Result<Outcome, String> {
    let prm = params(class);
    let rank = world.rank() as usize;
    let size = world.size() as usize;
    let grid = Grid::new(rank, size, prm.na)?;
    let mat = makea(prm.na, prm.nonzer, prm.shift, &grid.rows, &grid.cols);
    let nc = grid.cols.len();
    let nr = grid.rows.len();
    let mut cg = Cg {
        world,
        mat,
        x: vec![1.0; nc],
        z: vec![0.0; nc],
        p: vec![0.0; nc],
        q: vec![0.0; nc],
        r: vec![0.0; nc],
        w: vec![0.0; nr],
        tmp: vec![0.0; nr],
        grid,
    };
    // One untimed iteration to touch everything, then start again from x = 1.
    cg.power_step(prm.shift);
    cg.x.fill(1.0);
    world.barrier();
    let t0 = wtime();
    let mut details = vec![
        format!("Size: {} (class {}), iterations: {}", prm.na, class.letter(), prm.niter),
        format!("Number of processes: {size}, nonzeroes per row: {}", prm.nonzer),
        "  iteration           ||r||                 zeta".to_string(),
    ];
    let mut zeta = 0.0;
    for it in 1..=prm.niter {
        let (rnorm, z) = cg.power_step(prm.shift);
        zeta = z;
        details.push(format!("    {it:5}      {rnorm:21.14e} {zeta:20.13}"));
    }
    let t_local = wtime() - t0;
    let mut t = 0.0f64;
    world.all_reduce_into(&t_local, &mut t, SystemOperation::max());
    let err = (zeta - prm.zeta_ref).abs() / prm.zeta_ref;
    let verified = rel_ok(zeta, prm.zeta_ref, EPSILON);
    details.push(format!("Zeta is     {zeta:.13e}"));
    details.push(format!("Reference   {:.13e}", prm.zeta_ref));
    details.push(format!("Error is    {err:.13e}"));
    let nz = prm.nonzer as f64;
    let mops = if t > 0.0 {
        1.0e-6 * 2.0 * prm.niter as f64 * prm.na as f64 * (3.0 + nz * (nz + 1.0) + 25.0 * (5.0 + nz * (nz + 1.0)) + 3.0)
            / t
    } else {
        0.0
    };
    Ok(Outcome { verified, time_s: t, mops, details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover() {
        for parts in [1, 2, 4, 8] {
            let mut next = 0;
            for k in 0..parts {
                let b = block(1401, parts, k);
                assert_eq!(b.start, next);
                next = b.end;
            }
            assert_eq!(next, 1401);
        }
    }

    #[test]
    fn grid_transpose_is_an_involution() {
        for size in [1usize, 2, 4, 8, 16, 32] {
            let grids: Vec<Grid> = (0..size).map(|r| Grid::new(r, size, 1400).unwrap()).collect();
            for (r, g) in grids.iter().enumerate() {
                let back = &grids[g.exch_proc as usize];
                assert_eq!(back.exch_proc as usize, r, "size {size}");
                // What r sends (its segment of rows) is what the partner holds as columns.
                let sent = g.rows.start + g.seg.start..g.rows.start + g.seg.end;
                assert_eq!(sent, back.cols, "size {size} rank {r}");
            }
        }
    }
}
