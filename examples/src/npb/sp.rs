//! SP, the "scalar pentadiagonal" pseudo-application (NPB reports RNR-94-007, section 3, and
//! NAS-95-020; NPB 3.x MPI version).
//!
//! Time-steps the 3-D compressible Navier-Stokes equations on the unit cube towards the
//! manufactured steady solution of [`super::cfd`], like BT, but with the diagonalized
//! approximate factorization of Pulliam and Chaussee: the flux Jacobian along each axis is
//! `A_a = T_a Lambda_a T_a^-1` with the eigenvalues `Lambda_a = (v_a, v_a, v_a, v_a + c, v_a - c)`
//! (`v_a` the velocity along the axis, `c` the speed of sound), and each implicit factor
//! `I + dt (d/dx_a) A_a - dt (viscous and dissipative terms)` is replaced by
//! `T_a (I + dt (d/dx_a) Lambda_a - ...) T_a^-1`. With the eigenvector matrices outside, a factor
//! is three independent *scalar* systems per grid line (one for the eigenvalue `v_a`, shared by
//! the first three components, one for `v_a + c`, one for `v_a - c`), each pentadiagonal because
//! the fourth-difference dissipation is treated implicitly too. A step computes `rhs = dt R(u)`
//! (the shared parts, [`super::adi`]) and then
//!
//! `du = T_z P_z^-1 (T_z^-1 T_y) P_y^-1 (T_y^-1 T_x) P_x^-1 T_x^-1 rhs`
//!
//! (`txinvr`, x solve, `ninvr`, y solve, `pinvr`, z solve, `tzetar` in the reference), then
//! `u += du`. The pentadiagonal systems are solved by Gaussian elimination without pivoting
//! (they are diagonally dominant): forward, each row is divided by its pivot after the two
//! rows above have been subtracted; backward, `x_i = r'_i - d'_i x_{i+1} - e'_i x_{i+2}`.
//!
//! Verified, to 1e-8 against the published values: the RMS norms of the final residual
//! (divided by `dt`) and of the error against the exact solution, five each, and `dt` itself.
//!
//! Decomposition and messages, as in the reference MPI code: the multi-partition of
//! [`super::adi`] on a square number of ranks (`sqrt(ranks)` cells per rank, one in every slab
//! of every axis), the cell faces exchanged with the six neighbours by `Irecv`/`Isend`/`Waitall`
//! before each right-hand side. A grid line crosses `sqrt(ranks)` cells, each on another rank:
//! the solve along an axis runs stage by stage through the slabs, every rank eliminating in its
//! cell of the current slab and sending the last two eliminated rows of each line (22 values:
//! two upper coefficients per system and the five right-hand sides, per row) to the successor on
//! the axis, then back-substitutes in the opposite order, sending the first two solution rows of
//! each line (10 values) to the predecessor. The norms are `MPI_Allreduce` sums; the timing is
//! the maximum over the ranks by `MPI_Reduce`.

use mpi::topology::SimpleCommunicator;

use super::adi::{outcome, Adi, Aux, Cell, CellFields, Lines, Params, TimeReduction};
use super::cfd::{Vec5, C1, C1C5, C2, C3C4, CON43, DIFFUSION, DSSP};
use super::{Class, Outcome};

/// `sqrt(1/2)`, the scaling of the eigenvector matrices (the reference's `bt`).
const SQRT_HALF: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// `1 / C2` (the reference's `c2iv`).
const C2_INV: f64 = 2.5;

/// The scalar system each component goes through after the diagonalization: the first three
/// see the eigenvalue `v_a` (system 0), the fourth `v_a + c` (system 1), the fifth `v_a - c`
/// (system 2).
const SYSTEM: [usize; 5] = [0, 0, 0, 1, 2];

/// One row of a pentadiagonal system: the coefficients of columns `i-2, i-1, i, i+1, i+2`.
type Penta = [f64; 5];

/// What forward elimination leaves of one row's coefficients, per system: the two upper
/// coefficients divided by the pivot, `[d', e']`.
type Upper = [[f64; 2]; 3];

/// Values per line in a forward message: the last two eliminated rows.
const FORWARD_PER_LINE: usize = 2 * Eliminated::PACKED_LEN;
/// Values per line in a backward message: the first two solution rows.
const BACKWARD_PER_LINE: usize = 10;

// The reference values are kept digit for digit as published (some carry more digits than an
// `f64` holds), so they can be checked against the NPB sources by eye.
#[allow(clippy::excessive_precision)]
fn params(class: Class) -> Params {
    match class {
        Class::S => Params {
            n: 12,
            niter: 100,
            dt: 0.015,
            dt_ref: 1.5e-2,
            xcr: [
                2.7470315451339479e-02,
                1.0360746705285417e-02,
                1.6235745065095532e-02,
                1.5840557224455615e-02,
                3.4849040609362460e-02,
            ],
            xce: [
                2.7289258557377227e-05,
                1.0364446640837285e-05,
                1.6154798287166471e-05,
                1.5750704994480102e-05,
                3.4177666183390531e-05,
            ],
        },
        Class::W => Params {
            n: 36,
            niter: 400,
            dt: 0.0015,
            dt_ref: 1.5e-3,
            xcr: [
                0.1893253733584e-02,
                0.1717075447775e-03,
                0.2778153350936e-03,
                0.2887475409984e-03,
                0.3143611161242e-02,
            ],
            xce: [
                0.7542088599534e-04,
                0.6512852253086e-05,
                0.1049092285688e-04,
                0.1128838671535e-04,
                0.1212845639773e-03,
            ],
        },
        Class::A => Params {
            n: 64,
            niter: 400,
            dt: 0.0015,
            dt_ref: 1.5e-3,
            xcr: [
                2.4799822399300195e+00,
                1.1276337964368832e+00,
                1.5028977888770491e+00,
                1.4217816211695179e+00,
                2.1292113035138280e+00,
            ],
            xce: [
                1.0900140297820550e-04,
                3.7343951769282091e-05,
                5.0092785406541633e-05,
                4.7671093939528255e-05,
                1.3621613399213001e-04,
            ],
        },
        Class::B => Params {
            n: 102,
            niter: 400,
            dt: 0.001,
            dt_ref: 1.0e-3,
            xcr: [
                0.6903293579998e+02,
                0.3095134488084e+02,
                0.4103336647017e+02,
                0.3864769009604e+02,
                0.5643482272596e+02,
            ],
            xce: [
                0.9810006190188e-02,
                0.1022827905670e-02,
                0.1720597911692e-02,
                0.1694479428231e-02,
                0.1847456263981e-01,
            ],
        },
        Class::C => Params {
            n: 162,
            niter: 400,
            dt: 0.00067,
            dt_ref: 0.67e-3,
            xcr: [
                0.5881691581829e+03,
                0.2454417603569e+03,
                0.3293829191851e+03,
                0.3081924971891e+03,
                0.4597223799176e+03,
            ],
            xce: [
                0.2598120500183e+00,
                0.2590888922315e-01,
                0.5132886416320e-01,
                0.4806073419454e-01,
                0.5483377491301e+00,
            ],
        },
    }
}

/// One row after forward elimination: the upper coefficients and right-hand side divided by
/// the pivot. The rows of a line's first cell are preceded by two zero rows (the default).
#[derive(Clone, Copy, Default)]
struct Eliminated {
    upper: Upper,
    rhs: Vec5,
}

impl Eliminated {
    const PACKED_LEN: usize = 11;

    fn pack(&self, out: &mut Vec<f64>) {
        for de in &self.upper {
            out.extend_from_slice(de);
        }
        out.extend_from_slice(&self.rhs);
    }

    /// The row packed by [`Self::pack`] at the start of `v` (`PACKED_LEN` values).
    fn unpack(v: &[f64]) -> Eliminated {
        let mut row = Eliminated::default();
        for (q, de) in row.upper.iter_mut().enumerate() {
            de.copy_from_slice(&v[2 * q..2 * q + 2]);
        }
        row.rhs.copy_from_slice(&v[6..11]);
        row
    }
}

/// Forward elimination of `len` consecutive rows of the three pentadiagonal systems of one line,
/// row `t` stored at index `p0 + t stride` of `rhs` (replaced by the scaled right-hand side) and
/// `upper`. `carry` holds the two rows before the first, already eliminated; `coefficients(t)`
/// gives row `t` of the three systems. Returns the last two eliminated rows (for the next cell).
fn eliminate_rows(
    carry: [Eliminated; 2],
    len: usize,
    p0: usize,
    stride: usize,
    rhs: &mut [Vec5],
    upper: &mut [Upper],
    mut coefficients: impl FnMut(usize) -> [Penta; 3],
) -> [Eliminated; 2] {
    let [mut two_back, mut one_back] = carry;
    for t in 0..len {
        let p = p0 + t * stride;
        let mut row = Eliminated { upper: [[0.0; 2]; 3], rhs: rhs[p] };
        // Per system, the multipliers of the rows two back (`a`) and one back (`b`, once
        // updated by the row two back) and the inverse pivot.
        let mut multipliers = [[0.0; 3]; 3];
        for (q, [a, b, c, d, e]) in coefficients(t).into_iter().enumerate() {
            let b = b - a * two_back.upper[q][0];
            let c = c - a * two_back.upper[q][1];
            let c = c - b * one_back.upper[q][0];
            let d = d - b * one_back.upper[q][1];
            let pivot_inv = 1.0 / c;
            row.upper[q] = [pivot_inv * d, pivot_inv * e];
            multipliers[q] = [a, b, pivot_inv];
        }
        for (m, r) in row.rhs.iter_mut().enumerate() {
            let [a, b, pivot_inv] = multipliers[SYSTEM[m]];
            let reduced = *r - a * two_back.rhs[m];
            *r = pivot_inv * (reduced - b * one_back.rhs[m]);
        }
        rhs[p] = row.rhs;
        upper[p] = row.upper;
        two_back = one_back;
        one_back = row;
    }
    [two_back, one_back]
}

/// Back substitution over the same rows as [`eliminate_rows`], last to first: `x_t = r'_t -
/// d'_t x_{t+1} - e'_t x_{t+2}` in place in `rhs`. `carry` holds `x` of the two rows after the
/// last (zero at the end of the line); returns `x` of the first two rows (for the previous cell).
fn substitute_rows(
    carry: [Vec5; 2],
    len: usize,
    p0: usize,
    stride: usize,
    rhs: &mut [Vec5],
    upper: &[Upper],
) -> [Vec5; 2] {
    let [mut next, mut after] = carry;
    for t in (0..len).rev() {
        let p = p0 + t * stride;
        let up = &upper[p];
        let mut x = rhs[p];
        for (m, xm) in x.iter_mut().enumerate() {
            let [d, e] = up[SYSTEM[m]];
            *xm = *xm - d * next[m] - e * after[m];
        }
        rhs[p] = x;
        after = next;
        next = x;
    }
    [next, after]
}

/// The fourth-difference dissipation row at global index `g` of a line of `n` points (the
/// stencil `1, -4, 6, -4, 1`, cut one-sided next to the boundary as in the right-hand side).
fn dissipation_row(g: usize, n: usize) -> Penta {
    match g {
        1 => [0.0, 0.0, 5.0, -4.0, 1.0],
        2 => [0.0, -4.0, 6.0, -4.0, 1.0],
        _ if g + 3 == n => [1.0, -4.0, 6.0, -4.0, 0.0],
        _ if g + 2 == n => [1.0, -4.0, 5.0, 0.0, 0.0],
        _ => [1.0, -4.0, 6.0, -4.0, 1.0],
    }
}

/// `r <- T_x^-1 r` at one point (reference `txinvr`), given `1/rho`, the velocity, `qs` and
/// the speed of sound there.
fn txinvr(r: Vec5, rho_i: f64, vel: [f64; 3], qs: f64, speed: f64) -> Vec5 {
    let [uu, vv, ww] = vel;
    let ainv = 1.0 / speed;
    let ac2inv = ainv * ainv;
    let [r1, r2, r3, r4, r5] = r;
    let t1 = C2 * ac2inv * (qs * r1 - uu * r2 - vv * r3 - ww * r4 + r5);
    let t2 = SQRT_HALF * rho_i * (uu * r1 - r2);
    let t3 = (SQRT_HALF * rho_i * speed) * t1;
    [r1 - t1, -rho_i * (ww * r1 - r4), rho_i * (vv * r1 - r3), -t2 + t3, t2 + t3]
}

/// `r <- T_y^-1 T_x r` (reference `ninvr`): independent of the state.
fn ninvr(r: Vec5) -> Vec5 {
    let [r1, r2, r3, r4, r5] = r;
    let t1 = SQRT_HALF * r3;
    let t2 = 0.5 * (r4 + r5);
    [-r2, r1, SQRT_HALF * (r4 - r5), -t1 + t2, t1 + t2]
}

/// `r <- T_z^-1 T_y r` (reference `pinvr`): independent of the state.
fn pinvr(r: Vec5) -> Vec5 {
    let [r1, r2, r3, r4, r5] = r;
    let t1 = SQRT_HALF * r1;
    let t2 = 0.5 * (r4 + r5);
    [SQRT_HALF * (r4 - r5), -r3, r2, -t1 + t2, t1 + t2]
}

/// `r <- T_z r` at one point (reference `tzetar`), given `rho`, the velocity, `qs` and the
/// speed of sound there.
fn tzetar(r: Vec5, rho: f64, vel: [f64; 3], qs: f64, speed: f64) -> Vec5 {
    let [xvel, yvel, zvel] = vel;
    let [r1, r2, r3, r4, r5] = r;
    let btuz = SQRT_HALF * rho;
    let t1 = btuz * (1.0 / speed) * (r4 + r5);
    let t2 = r3 + t1;
    let t3 = btuz * (r4 - r5);
    [
        t2,
        -rho * r2 + xvel * t2,
        rho * r1 + yvel * t2,
        zvel * t2 + t3,
        rho * (-xvel * r2 + yvel * r1) + qs * t2 + C2_INV * (speed * speed) * t1 + zvel * t3,
    ]
}

/// The quantities at one point that the scalar systems along an axis are built from.
#[derive(Clone, Copy)]
struct Wave {
    /// Velocity along the axis.
    velocity: f64,
    /// The largest second-difference coefficient of the five equations there (artificial
    /// diffusion plus viscosity: `rho_n` / `rho_q` / `rho_s` in the reference).
    diffusion: f64,
    /// Speed of sound.
    speed: f64,
}

/// One rank's part of SP.
struct Sp {
    adi: Adi,
    niter: usize,
}

/// The solver's storage besides the fields, per cell: the speed of sound and the eliminated
/// upper coefficients (per array point); plus one outgoing buffer per stage (a send may still
/// be in flight when the next stage packs).
struct Work {
    speed: Vec<Vec<f64>>,
    upper: Vec<Vec<Upper>>,
    outboxes: Vec<Vec<f64>>,
}

impl Sp {
    /// The speed of sound `sqrt(C1 C2 (rho e - square) / rho)` wherever [`Aux`] is computed (the
    /// owned points and the first ghost layer). Where that layer holds no data (beyond the grid's
    /// boundary, and on the ghost edges) `u` is the placeholder 1 and this gives NaN; the solves
    /// never read those points (nor does the reference, which computes the same there).
    fn sound_speed(&self, fields: &[CellFields], work: &mut Work) {
        for ((cell, f), speed) in self.adi.cells.iter().zip(fields).zip(work.speed.iter_mut()) {
            let mut b = cell.whole();
            for r in b.iter_mut() {
                *r = (r.0 + 1, r.1 - 1);
            }
            cell.for_box(b, |p, _| {
                speed[p] = (C1 * C2 * f.aux.rho_i[p] * (f.u[p][4] - f.aux.square[p])).sqrt();
            });
        }
    }

    /// `rhs <- T_x^-1 rhs` at the interior points of every cell.
    fn txinvr(&self, fields: &mut [CellFields], work: &Work) {
        for ((cell, f), speed) in self.adi.cells.iter().zip(fields.iter_mut()).zip(&work.speed) {
            let Aux { rho_i, vel, qs, .. } = &f.aux;
            let rhs = &mut f.rhs;
            cell.for_box(cell.interior(), |p, _| rhs[p] = txinvr(rhs[p], rho_i[p], vel[p], qs[p], speed[p]));
        }
    }

    /// The change of eigenvector basis after the solve along `axis`, on `cell`'s interior.
    fn after_solve(&self, axis: usize, cell: &Cell, f: &mut CellFields, speed: &[f64]) {
        let Aux { vel, qs, .. } = &f.aux;
        let (u, rhs) = (&f.u, &mut f.rhs);
        cell.for_box(cell.interior(), |p, _| {
            rhs[p] = match axis {
                0 => ninvr(rhs[p]),
                1 => pinvr(rhs[p]),
                _ => tzetar(rhs[p], u[p][0], vel[p], qs[p], speed[p]),
            }
        });
    }

    fn wave(&self, axis: usize, aux: &Aux, speed: &[f64], p: usize) -> Wave {
        let ru1 = C3C4 * aux.rho_i[p];
        let d = DIFFUSION[axis];
        Wave {
            velocity: aux.vel[p][axis],
            diffusion: (d + CON43 * ru1).max(d + C1C5 * ru1).max(d + ru1).max(d),
            speed: speed[p],
        }
    }

    /// Row `g` (global index) of the three scalar systems along `axis`, from the point behind,
    /// the point itself and the point ahead: central differences of the convection `dt v` (`v`,
    /// `v + c`, `v - c`), the second difference `dt rho_n`, and the implicit dissipation.
    fn coefficients(&self, axis: usize, g: usize, behind: &Wave, here: &Wave, ahead: &Wave) -> [Penta; 3] {
        let dtt1 = self.adi.dt * self.adi.t1[axis];
        let dtt2 = self.adi.dt * self.adi.t2[axis];
        let dtdssp = self.adi.dt * DSSP;
        let mut base = [
            0.0,
            -dtt2 * behind.velocity - dtt1 * behind.diffusion,
            1.0 + 2.0 * dtt1 * here.diffusion,
            dtt2 * ahead.velocity - dtt1 * ahead.diffusion,
            0.0,
        ];
        for (x, w) in base.iter_mut().zip(dissipation_row(g, self.adi.grid[axis])) {
            *x += w * dtdssp;
        }
        let mut plus = base;
        plus[1] -= dtt2 * behind.speed;
        plus[3] += dtt2 * ahead.speed;
        let mut minus = base;
        minus[1] += dtt2 * behind.speed;
        minus[3] -= dtt2 * ahead.speed;
        [base, plus, minus]
    }

    /// Forward elimination along `axis` on every line of `cell`. `inbox` holds, per line, the
    /// previous cell's last two eliminated rows; `outbox`, if given, receives this cell's.
    #[allow(clippy::too_many_arguments)]
    fn eliminate(
        &self,
        axis: usize,
        cell: &Cell,
        f: &mut CellFields,
        speed: &[f64],
        upper: &mut [Upper],
        inbox: Option<&[f64]>,
        mut outbox: Option<&mut Vec<f64>>,
    ) {
        let Lines { firsts, len, stride: s } = cell.lines(axis);
        let g0 = cell.global(axis, cell.interior()[axis].0);
        let (aux, rhs) = (&f.aux, &mut f.rhs);
        for (line, &p0) in firsts.iter().enumerate() {
            let carry = inbox.map_or([Eliminated::default(); 2], |buf| {
                let v = &buf[FORWARD_PER_LINE * line..FORWARD_PER_LINE * (line + 1)];
                [Eliminated::unpack(v), Eliminated::unpack(&v[Eliminated::PACKED_LEN..])]
            });
            let mut behind = self.wave(axis, aux, speed, p0 - s);
            let mut here = self.wave(axis, aux, speed, p0);
            let last = eliminate_rows(carry, len, p0, s, rhs, upper, |t| {
                let ahead = self.wave(axis, aux, speed, p0 + (t + 1) * s);
                let rows = self.coefficients(axis, g0 + t, &behind, &here, &ahead);
                behind = here;
                here = ahead;
                rows
            });
            if let Some(out) = outbox.as_deref_mut() {
                last[0].pack(out);
                last[1].pack(out);
            }
        }
    }

    /// Back substitution along `axis` on every line of `cell`, then the change of basis for
    /// the next axis. `inbox` holds, per line, the next cell's first two solution rows;
    /// `outbox`, if given, receives this cell's.
    #[allow(clippy::too_many_arguments)]
    fn back_substitute(
        &self,
        axis: usize,
        cell: &Cell,
        f: &mut CellFields,
        speed: &[f64],
        upper: &[Upper],
        inbox: Option<&[f64]>,
        mut outbox: Option<&mut Vec<f64>>,
    ) {
        let Lines { firsts, len, stride: s } = cell.lines(axis);
        for (line, &p0) in firsts.iter().enumerate() {
            let carry = inbox.map_or([[0.0; 5]; 2], |buf| {
                let v = &buf[BACKWARD_PER_LINE * line..BACKWARD_PER_LINE * (line + 1)];
                let mut x = [[0.0; 5]; 2];
                x[0].copy_from_slice(&v[..5]);
                x[1].copy_from_slice(&v[5..]);
                x
            });
            let first = substitute_rows(carry, len, p0, s, &mut f.rhs, upper);
            if let Some(out) = outbox.as_deref_mut() {
                out.extend_from_slice(&first[0]);
                out.extend_from_slice(&first[1]);
            }
        }
        self.after_solve(axis, cell, f, speed);
    }

    /// Solves the scalar pentadiagonal systems along `axis`: elimination pipelined up the
    /// slabs, back substitution down.
    fn solve(&self, axis: usize, fields: &mut [CellFields], work: &mut Work) {
        let cells = &self.adi.cells;
        let Work { speed, upper, outboxes } = work;
        self.adi.pipeline(axis, true, FORWARD_PER_LINE, outboxes, |c, inbox, outbox| {
            self.eliminate(axis, &cells[c], &mut fields[c], &speed[c], &mut upper[c], inbox, outbox)
        });
        self.adi.pipeline(axis, false, BACKWARD_PER_LINE, outboxes, |c, inbox, outbox| {
            self.back_substitute(axis, &cells[c], &mut fields[c], &speed[c], &upper[c], inbox, outbox)
        });
    }

    /// One time step (reference `adi`): refresh the ghosts, `rhs = dt R(u)`, `T_x^-1`, the
    /// three line solves with the changes of basis between them, `u += rhs`.
    fn step(&self, fields: &mut [CellFields], work: &mut Work) {
        self.adi.copy_faces(fields);
        self.adi.compute_rhs(fields);
        self.sound_speed(fields, work);
        self.txinvr(fields, work);
        for axis in 0..3 {
            self.solve(axis, fields, work);
        }
        self.adi.add(fields);
    }
}

/// Runs SP for `class` on `world` (see the module documentation).
pub fn run(world: &SimpleCommunicator, class: Class) -> Result<Outcome, String> {
    let prm = params(class);
    let sp = Sp { adi: Adi::new(world, "SP", prm.n, prm.dt)?, niter: prm.niter };
    let adi = &sp.adi;
    let mut work = Work {
        speed: adi.cells.iter().map(|cell| vec![0.0; cell.array_len()]).collect(),
        upper: adi.cells.iter().map(|cell| vec![[[0.0; 2]; 3]; cell.array_len()]).collect(),
        outboxes: vec![Vec::new(); adi.ncells],
    };
    // The slowest rank's time, on rank 0 (the others report 0 and print nothing).
    let step = |f: &mut [CellFields], w: &mut Work| sp.step(f, w);
    let run = adi.timed_run(world, class, sp.niter, &mut work, step, TimeReduction::RankZero);
    let nf = prm.n as f64;
    Ok(outcome(&prm, run, 881.174 * nf * nf * nf - 4683.91 * nf * nf + 11484.5 * nf - 19272.4))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A diagonally dominant pentadiagonal row of system `q` at row `t` of `n`, zero outside
    /// the matrix.
    fn test_row(q: usize, t: usize, n: usize) -> Penta {
        let mut row = [
            0.3 - 0.05 * q as f64,
            -1.1 + 0.1 * (t % 3) as f64,
            6.0 + 0.2 * t as f64 + q as f64,
            -0.9 - 0.07 * q as f64,
            0.25 + 0.01 * t as f64,
        ];
        for (k, x) in row.iter_mut().enumerate() {
            let col = t as isize + k as isize - 2;
            if col < 0 || col >= n as isize {
                *x = 0.0;
            }
        }
        row
    }

    /// Dense Gaussian elimination, for comparison.
    fn dense_solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for k in 0..n {
            let (top, bottom) = a.split_at_mut(k + 1);
            let pivot = &top[k];
            let bk = b[k];
            for (row, bi) in bottom.iter_mut().zip(&mut b[k + 1..]) {
                let f = row[k] / pivot[k];
                for (x, p) in row[k..].iter_mut().zip(&pivot[k..]) {
                    *x -= f * p;
                }
                *bi -= f * bk;
            }
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|j| a[i][j] * x[j]).sum();
            x[i] = (b[i] - s) / a[i][i];
        }
        x
    }

    /// A line of 11 rows solved in three segments (as three cells would) matches a dense solve
    /// of each of the three systems.
    #[test]
    fn segmented_pentadiagonal_solve_matches_dense() {
        let n = 11;
        let rhs0: Vec<Vec5> = (0..n).map(|t| [0, 1, 2, 3, 4].map(|m| ((t * 7 + m * 3) % 5) as f64 - 1.7)).collect();
        let mut rhs = rhs0.clone();
        let mut upper = vec![[[0.0; 2]; 3]; n];
        let segments = [(0, 4), (4, 3), (7, 4)];
        let mut carry = [Eliminated::default(); 2];
        for &(p0, len) in &segments {
            carry =
                eliminate_rows(carry, len, p0, 1, &mut rhs, &mut upper, |t| [0, 1, 2].map(|q| test_row(q, p0 + t, n)));
        }
        let mut back = [[0.0; 5]; 2];
        for &(p0, len) in segments.iter().rev() {
            back = substitute_rows(back, len, p0, 1, &mut rhs, &upper);
        }
        assert_eq!(back[0], rhs[0]);
        for m in 0..5 {
            let q = SYSTEM[m];
            let mut a = vec![vec![0.0; n]; n];
            for (t, row) in a.iter_mut().enumerate() {
                for (k, &x) in test_row(q, t, n).iter().enumerate() {
                    if let Some(col) = (t + k).checked_sub(2).filter(|&c| c < n) {
                        row[col] = x;
                    }
                }
            }
            let x = dense_solve(a, rhs0.iter().map(|r| r[m]).collect());
            for t in 0..n {
                assert!((x[t] - rhs[t][m]).abs() < 1e-13, "component {m} row {t}: {} vs {}", x[t], rhs[t][m]);
            }
        }
    }

    /// The changes of basis compose to the identity: `T_z (T_z^-1 T_y) (T_y^-1 T_x) T_x^-1 = I`.
    #[test]
    fn eigenvector_transforms_compose_to_identity() {
        let u = [1.3, 0.2, -0.4, 0.7, 4.1];
        let rho_i = 1.0 / u[0];
        let vel = [u[1] * rho_i, u[2] * rho_i, u[3] * rho_i];
        let square = 0.5 * (u[1] * u[1] + u[2] * u[2] + u[3] * u[3]) * rho_i;
        let qs = square * rho_i;
        let speed = (C1 * C2 * rho_i * (u[4] - square)).sqrt();
        let r = [0.3, -1.2, 0.8, 2.5, -0.6];
        let back = tzetar(pinvr(ninvr(txinvr(r, rho_i, vel, qs, speed))), u[0], vel, qs, speed);
        for (x, y) in r.iter().zip(back) {
            assert!((x - y).abs() < 1e-13, "{r:?} came back as {back:?}");
        }
    }

    #[test]
    fn dissipation_rows_match_the_interior_stencil_away_from_the_boundary() {
        let n = 12;
        assert_eq!(dissipation_row(1, n), [0.0, 0.0, 5.0, -4.0, 1.0]);
        assert_eq!(dissipation_row(5, n), [1.0, -4.0, 6.0, -4.0, 1.0]);
        assert_eq!(dissipation_row(9, n), [1.0, -4.0, 6.0, -4.0, 0.0]);
        assert_eq!(dissipation_row(10, n), [1.0, -4.0, 5.0, 0.0, 0.0]);
    }
}
