//! BT, the "block tridiagonal" pseudo-application (NPB reports RNR-94-007, section 3, and
//! NAS-95-020; NPB 3.x MPI version).
//!
//! Time-steps the 3-D compressible Navier-Stokes equations on the unit cube towards the
//! manufactured steady solution of [`super::cfd`] with the Beam-Warming approximate
//! factorization: each step computes `dt R(u)` (the shared parts, [`super::adi`]) and solves
//! `Lx Ly Lz du = dt R(u)`, each factor `I + dt (d/dx_a) J_a(u)` linearized about the current
//! solution. Along each axis that is, on every grid line, a tridiagonal system whose entries
//! are 5x5 blocks built from the Jacobians of the inviscid flux (`fjac`) and of the viscous
//! terms (`njac`) plus the artificial diffusion; it is solved by block Gaussian elimination
//! (forward: `B'_i = B_i - A_i C'_{i-1}`, `C'_i = B'_i^-1 C_i`, `r'_i = B'_i^-1 (r_i - A_i
//! r'_{i-1}`); backward: `x_i = r'_i - C'_i x_{i+1}`). Then `u += du`.
//!
//! Verified, to 1e-8 against the published values: the RMS norms of the final residual
//! (divided by `dt`) and of the error against the exact solution, five each.
//!
//! Decomposition and messages, as in the reference MPI code: the multi-partition of
//! [`super::adi`] (a square number of ranks). A line crosses the `p` cells of one row, each
//! on a different rank; the solve along an axis runs stage by stage through the slabs, every
//! rank eliminating in its cell of the current slab, then sending the last `C'` block and `r'`
//! vector of each of that cell's lines to the successor on the axis (`Isend`; blocking receive
//! at the next stage), and back-substitutes the same way in the opposite order, sending the
//! first solution vector of each line to the predecessor. So all ranks work at every stage.

use mpi::topology::SimpleCommunicator;

use super::adi::{outcome, Adi, Cell, CellFields, Lines, Params, TimeReduction};
use super::cfd::{flux_jacobian, viscous_jacobian, Mat5, Vec5, DIFFUSION};
use super::{Class, Outcome};

// The reference values are kept digit for digit as published (some carry more digits than an
// `f64` holds), so they can be checked against the NPB sources by eye.
#[allow(clippy::excessive_precision)]
fn params(class: Class) -> Params {
    match class {
        Class::S => Params {
            n: 12,
            niter: 60,
            dt: 1.0e-2,
            dt_ref: 1.0e-2,
            xcr: [
                1.7034283709541311e-01,
                1.2975252070034097e-02,
                3.2527926989486055e-02,
                2.6436421275166801e-02,
                1.9211784131744430e-01,
            ],
            xce: [
                4.9976913345811579e-04,
                4.5195666782961927e-05,
                7.3973765172921357e-05,
                7.3821238632439731e-05,
                8.9269630987491446e-04,
            ],
        },
        Class::W => Params {
            n: 24,
            niter: 200,
            dt: 0.8e-3,
            dt_ref: 0.8e-3,
            xcr: [
                0.1125590409344e+03,
                0.1180007595731e+02,
                0.2710329767846e+02,
                0.2469174937669e+02,
                0.2638427874317e+03,
            ],
            xce: [
                0.4419655736008e+01,
                0.4638531260002e+00,
                0.1011551749967e+01,
                0.9235878729944e+00,
                0.1018045837718e+02,
            ],
        },
        Class::A => Params {
            n: 64,
            niter: 200,
            dt: 0.8e-3,
            dt_ref: 0.8e-3,
            xcr: [
                1.0806346714637264e+02,
                1.1319730901220813e+01,
                2.5974354511582465e+01,
                2.3665622544678910e+01,
                2.5278963211748344e+02,
            ],
            xce: [
                4.2348416040525025e+00,
                4.4390282496995698e-01,
                9.6692480136345650e-01,
                8.8302063039765474e-01,
                9.7379901770829278e+00,
            ],
        },
        Class::B => Params {
            n: 102,
            niter: 200,
            dt: 3.0e-4,
            dt_ref: 3.0e-4,
            xcr: [
                1.4233597229287254e+03,
                9.9330522590150238e+01,
                3.5646025644535285e+02,
                3.2485447959084092e+02,
                3.2707541254659363e+03,
            ],
            xce: [
                5.2969847140936856e+01,
                4.4632896115670668e+00,
                1.3122573342210174e+01,
                1.2006925323559144e+01,
                1.2459576151035986e+02,
            ],
        },
        Class::C => Params {
            n: 162,
            niter: 200,
            dt: 1.0e-4,
            dt_ref: 1.0e-4,
            xcr: [
                0.62398116551764615e+04,
                0.50793239190423964e+03,
                0.15423530093013596e+04,
                0.13302387929291190e+04,
                0.11604087428436455e+05,
            ],
            xce: [
                0.16462008369091265e+03,
                0.11497107903824313e+02,
                0.41207446207461508e+02,
                0.37087651059694167e+02,
                0.36211053051841265e+03,
            ],
        },
    }
}

/// `y -= a x`.
fn matvec_sub(a: &Mat5, x: &Vec5, y: &mut Vec5) {
    for (yr, row) in y.iter_mut().zip(a) {
        *yr -= row[0] * x[0] + row[1] * x[1] + row[2] * x[2] + row[3] * x[3] + row[4] * x[4];
    }
}

/// `c -= a b`.
fn matmul_sub(a: &Mat5, b: &Mat5, c: &mut Mat5) {
    for (crow, arow) in c.iter_mut().zip(a) {
        for (col, x) in crow.iter_mut().enumerate() {
            *x -= arow[0] * b[0][col]
                + arow[1] * b[1][col]
                + arow[2] * b[2][col]
                + arow[3] * b[3][col]
                + arow[4] * b[4][col];
        }
    }
}

/// `c <- b^-1 c`, `r <- b^-1 r` by Gauss-Jordan elimination without pivoting (the blocks are
/// diagonally dominant); `b` is destroyed (reference `binvcrhs`).
fn binvcrhs(b: &mut Mat5, c: &mut Mat5, r: &mut Vec5) {
    for p in 0..5 {
        let pivot = 1.0 / b[p][p];
        for x in &mut b[p][p + 1..] {
            *x *= pivot;
        }
        for x in &mut c[p] {
            *x *= pivot;
        }
        r[p] *= pivot;
        let (bp, cp, rp) = (b[p], c[p], r[p]);
        for q in (0..5).filter(|&q| q != p) {
            let coeff = b[q][p];
            for l in p + 1..5 {
                b[q][l] -= coeff * bp[l];
            }
            for (x, y) in c[q].iter_mut().zip(cp) {
                *x -= coeff * y;
            }
            r[q] -= coeff * rp;
        }
    }
}

/// The flux and viscous Jacobians at one point.
struct Jacobians {
    flux: Mat5,
    viscous: Mat5,
}

/// One rank's part of BT.
struct Bt {
    adi: Adi,
    niter: usize,
}

/// The solver's storage besides the fields: the eliminated upper blocks `C'` per cell (the
/// reference's `lhsc`), and one outgoing buffer per stage (a send may still be in flight when
/// the next stage packs).
struct Work {
    lhsc: Vec<Vec<Mat5>>,
    outboxes: Vec<Vec<f64>>,
}

impl Bt {
    fn jacobians(&self, axis: usize, f: &CellFields, p: usize) -> Jacobians {
        let rho_i = f.aux.rho_i[p];
        Jacobians {
            flux: flux_jacobian(axis, &f.u[p], rho_i, f.aux.qs[p]),
            viscous: viscous_jacobian(axis, &f.u[p], rho_i),
        }
    }

    /// The three blocks of the line system along `axis` at a point, from the Jacobians at the
    /// point behind (`behind`), at the point and ahead: `A = -dt t2 F - dt t1 (N + d I)`,
    /// `B = I + 2 dt t1 (N + d I)`, `C = dt t2 F - dt t1 (N + d I)`.
    fn blocks(&self, axis: usize, behind: &Jacobians, here: &Jacobians, ahead: &Jacobians) -> [Mat5; 3] {
        let tmp1 = self.adi.dt * self.adi.t1[axis];
        let tmp2 = self.adi.dt * self.adi.t2[axis];
        let diffusion = tmp1 * DIFFUSION[axis];
        let mut a = [[0.0; 5]; 5];
        let mut b = [[0.0; 5]; 5];
        let mut c = [[0.0; 5]; 5];
        for m in 0..5 {
            for l in 0..5 {
                a[m][l] = -tmp2 * behind.flux[m][l] - tmp1 * behind.viscous[m][l];
                b[m][l] = tmp1 * 2.0 * here.viscous[m][l];
                c[m][l] = tmp2 * ahead.flux[m][l] - tmp1 * ahead.viscous[m][l];
            }
            a[m][m] -= diffusion;
            b[m][m] = 1.0 + b[m][m] + 2.0 * diffusion;
            c[m][m] -= diffusion;
        }
        [a, b, c]
    }

    /// Forward elimination along `axis` on every line of `cell`. `inbox` holds, per line, the
    /// previous cell's last `C'` (row-major) and `r'`; `outbox`, if given, receives this
    /// cell's.
    fn eliminate(
        &self,
        axis: usize,
        cell: &Cell,
        f: &mut CellFields,
        lhsc: &mut [Mat5],
        inbox: Option<&[f64]>,
        mut outbox: Option<&mut Vec<f64>>,
    ) {
        let Lines { firsts, len, stride: s } = cell.lines(axis);
        for (line, &p0) in firsts.iter().enumerate() {
            let mut prev: Option<(Mat5, Vec5)> = inbox.map(|buf| {
                let v = &buf[30 * line..30 * (line + 1)];
                let mut cp = [[0.0; 5]; 5];
                for (row, x) in cp.iter_mut().zip(v.chunks_exact(5)) {
                    row.copy_from_slice(x);
                }
                let mut rp = [0.0; 5];
                rp.copy_from_slice(&v[25..]);
                (cp, rp)
            });
            let mut behind = self.jacobians(axis, f, p0 - s);
            let mut here = self.jacobians(axis, f, p0);
            for t in 0..len {
                let p = p0 + t * s;
                let ahead = self.jacobians(axis, f, p + s);
                let [a, mut b, mut c] = self.blocks(axis, &behind, &here, &ahead);
                let mut r = f.rhs[p];
                if let Some((cp, rp)) = &prev {
                    matvec_sub(&a, rp, &mut r);
                    matmul_sub(&a, cp, &mut b);
                }
                binvcrhs(&mut b, &mut c, &mut r);
                lhsc[p] = c;
                f.rhs[p] = r;
                prev = Some((c, r));
                behind = here;
                here = ahead;
            }
            if let (Some(out), Some((cp, rp))) = (outbox.as_deref_mut(), prev) {
                for row in &cp {
                    out.extend_from_slice(row);
                }
                out.extend_from_slice(&rp);
            }
        }
    }

    /// Back substitution along `axis` on every line of `cell`. `inbox` holds, per line, the
    /// next cell's first solution vector; `outbox`, if given, receives this cell's.
    fn back_substitute(
        &self,
        axis: usize,
        cell: &Cell,
        f: &mut CellFields,
        lhsc: &[Mat5],
        inbox: Option<&[f64]>,
        mut outbox: Option<&mut Vec<f64>>,
    ) {
        let Lines { firsts, len, stride: s } = cell.lines(axis);
        for (line, &p0) in firsts.iter().enumerate() {
            let mut next: Option<Vec5> = inbox.map(|buf| {
                let mut x = [0.0; 5];
                x.copy_from_slice(&buf[5 * line..5 * (line + 1)]);
                x
            });
            for t in (0..len).rev() {
                let p = p0 + t * s;
                if let Some(x) = &next {
                    matvec_sub(&lhsc[p], x, &mut f.rhs[p]);
                }
                next = Some(f.rhs[p]);
            }
            if let Some(out) = outbox.as_deref_mut() {
                out.extend_from_slice(&f.rhs[p0]);
            }
        }
    }

    /// Solves the block-tridiagonal systems along `axis`: elimination pipelined up the slabs,
    /// back substitution down.
    fn solve(&self, axis: usize, fields: &mut [CellFields], work: &mut Work) {
        let cells = &self.adi.cells;
        let Work { lhsc, outboxes } = work;
        self.adi.pipeline(axis, true, 30, outboxes, |c, inbox, outbox| {
            self.eliminate(axis, &cells[c], &mut fields[c], &mut lhsc[c], inbox, outbox)
        });
        self.adi.pipeline(axis, false, 5, outboxes, |c, inbox, outbox| {
            self.back_substitute(axis, &cells[c], &mut fields[c], &lhsc[c], inbox, outbox)
        });
    }

    /// One time step: refresh the ghosts, `rhs = dt R(u)`, the three line solves, `u += rhs`
    /// (reference `adi`).
    fn step(&self, fields: &mut [CellFields], work: &mut Work) {
        self.adi.copy_faces(fields);
        self.adi.compute_rhs(fields);
        for axis in 0..3 {
            self.solve(axis, fields, work);
        }
        self.adi.add(fields);
    }
}

/// Runs BT for `class` on `world` (see the module documentation).
pub fn run(world: &SimpleCommunicator, class: Class) -> Result<Outcome, String> {
    let prm = params(class);
    let bt = Bt { adi: Adi::new(world, "BT", prm.n, prm.dt)?, niter: prm.niter };
    let adi = &bt.adi;
    let mut work = Work {
        lhsc: adi.cells.iter().map(|cell| vec![[[0.0; 5]; 5]; cell.array_len()]).collect(),
        outboxes: vec![Vec::new(); adi.ncells],
    };
    let step = |f: &mut [CellFields], w: &mut Work| bt.step(f, w);
    let run = adi.timed_run(world, class, bt.niter, &mut work, step, TimeReduction::AllRanks);
    let nf = prm.n as f64;
    Ok(outcome(&prm, run, 3478.8 * nf * nf * nf - 17655.7 * nf * nf + 28023.7 * nf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binvcrhs_solves_with_both_right_hand_sides() {
        let mut b = [[0.0; 5]; 5];
        for (r, row) in b.iter_mut().enumerate() {
            for (c, x) in row.iter_mut().enumerate() {
                *x = if r == c { 10.0 + r as f64 } else { 0.3 * (r as f64 - c as f64) + 0.1 };
            }
        }
        let x = [1.0, -2.0, 0.5, 3.0, -1.5];
        let xm: Mat5 = [0, 1, 2, 3, 4].map(|r| [0, 1, 2, 3, 4].map(|c| (r * 5 + c) as f64 * 0.1 - 1.0));
        // r = b x and c = b xm, built with the subtraction helpers from zero.
        let mut r = [0.0; 5];
        matvec_sub(&b, &x, &mut r);
        let mut c = [[0.0; 5]; 5];
        matmul_sub(&b, &xm, &mut c);
        let (mut r, mut c) = (r.map(|v| -v), c.map(|row| row.map(|v| -v)));
        binvcrhs(&mut b.clone(), &mut c, &mut r);
        for (u, v) in x.iter().zip(r) {
            assert!((u - v).abs() < 1e-13);
        }
        for (ur, vr) in xm.iter().zip(c) {
            for (u, v) in ur.iter().zip(vr) {
                assert!((u - v).abs() < 1e-13);
            }
        }
    }
}
