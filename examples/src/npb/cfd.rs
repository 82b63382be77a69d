//! What the three NPB pseudo-applications (LU, SP, BT) share: the manufactured exact solution
//! of the 3-D compressible Navier-Stokes equations on the unit cube (NPB report RNR-94-007,
//! section 3, and the NPB 3.x `setcoeff`/`set_constants` tables).
//!
//! Each of the five conserved quantities `u = (rho, rho u, rho v, rho w, rho e)` is a quartic
//! polynomial in each coordinate, without cross terms:
//!
//! `u_m(xi, eta, zeta) = CE[m][0]
//!     + CE[m][1] xi   + CE[m][4] xi^2   + CE[m][7] xi^3   + CE[m][10] xi^4
//!     + CE[m][2] eta  + CE[m][5] eta^2  + CE[m][8] eta^3  + CE[m][11] eta^4
//!     + CE[m][3] zeta + CE[m][6] zeta^2 + CE[m][9] zeta^3 + CE[m][12] zeta^4`
//!
//! The benchmarks use it for the boundary values, for the forcing term (the residual of the
//! exact solution under the discrete operator) and for the error norms that are verified.
//!
//! They also share the equations' constants, the inviscid flux and the two Jacobians their
//! implicit operators are built from: LU's SSOR blocks and BT's block-tridiagonal systems.

/// The five conserved quantities at one point: `rho, rho u, rho v, rho w, rho e`.
pub type Vec5 = [f64; 5];
/// A 5x5 block, `[row][column]`.
pub type Mat5 = [[f64; 5]; 5];

/// Gas constants of the spec: `gamma` and `gamma - 1`, then the viscous-term factors.
pub const C1: f64 = 1.4;
pub const C2: f64 = 0.4;
/// `C3 C4` (`C3 = 0.1`, `C4 = 1`) and `C1 C5` (`C5 = 1.4`).
pub const C3C4: f64 = 0.1;
pub const C1C5: f64 = C1 * 1.4;
/// `C1 C3 C4 C5`.
pub const C1345: f64 = C1C5 * C3C4;
/// `4/3`, the factor of the normal viscous stress.
pub const CON43: f64 = 4.0 / 3.0;
/// Second-difference (artificial diffusion) coefficient along x, y, z, the same for all five
/// equations (the reference's `dx1..dx5`, `dy1..dy5`, `dz1..dz5`).
pub const DIFFUSION: [f64; 3] = [0.75, 0.75, 1.0];
/// Fourth-difference dissipation coefficient, `max(DIFFUSION) / 4`.
pub const DSSP: f64 = 0.25;
/// Verification tolerance (relative).
pub const EPSILON: f64 = 1.0e-8;

/// Coefficients of the exact solution, `CE[m][n]` with `m` the component (0..5, in the order
/// `rho, rho u, rho v, rho w, rho e`) and `n` the term (0..13): `0` constant; `1, 2, 3` linear in
/// `xi, eta, zeta`; `4, 5, 6` quadratic; `7, 8, 9` cubic; `10, 11, 12` quartic. (The Fortran
/// reference's `ce(m+1, n+1)`.)
pub const CE: [[f64; 13]; 5] = [
    [2.0, 0.0, 0.0, 4.0, 5.0, 3.0, 0.5, 0.02, 0.01, 0.03, 0.5, 0.4, 0.3],
    [1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.01, 0.03, 0.02, 0.4, 0.3, 0.5],
    [2.0, 2.0, 0.0, 0.0, 0.0, 2.0, 3.0, 0.04, 0.03, 0.05, 0.3, 0.5, 0.4],
    [2.0, 2.0, 0.0, 0.0, 0.0, 2.0, 3.0, 0.03, 0.05, 0.04, 0.2, 0.1, 0.3],
    [5.0, 4.0, 3.0, 2.0, 0.1, 0.4, 0.3, 0.05, 0.04, 0.03, 0.1, 0.3, 0.2],
];

/// The exact solution at the point `(xi, eta, zeta)` of the unit cube (see the module
/// documentation), evaluated per coordinate in Horner form as the SP and BT references do.
/// (LU's reference sums the monomials instead; the two differ only by rounding, far below
/// the 1e-8 verification tolerance.)
pub fn exact_solution(xi: f64, eta: f64, zeta: f64) -> [f64; 5] {
    let mut u = [0.0; 5];
    for (um, c) in u.iter_mut().zip(CE.iter()) {
        *um = c[0]
            + xi * (c[1] + xi * (c[4] + xi * (c[7] + xi * c[10])))
            + eta * (c[2] + eta * (c[5] + eta * (c[8] + eta * c[11])))
            + zeta * (c[3] + zeta * (c[6] + zeta * (c[9] + zeta * c[12])));
    }
    u
}

/// The inviscid flux along `axis` at `w`: `(rho, rho V, rho e) v_n`, plus the pressure in the
/// normal momentum and `p v_n` in the energy.
pub fn inviscid_flux(axis: usize, w: &Vec5) -> Vec5 {
    let n = axis + 1;
    let vel = w[n] / w[0];
    let q = 0.5 * (w[1] * w[1] + w[2] * w[2] + w[3] * w[3]) / w[0];
    let mut f = [w[n], w[1] * vel, w[2] * vel, w[3] * vel, (C1 * w[4] - C2 * q) * vel];
    f[n] += C2 * (w[4] - q);
    f
}

/// The Jacobian of [`inviscid_flux`] along `axis` at `w` (the BT reference's `fjac`), given
/// `rho_i = 1/rho` and `qs = |rho V|^2 / (2 rho^2)`.
pub fn flux_jacobian(axis: usize, w: &Vec5, rho_i: f64, qs: f64) -> Mat5 {
    let n = axis + 1;
    let rho_i2 = rho_i * rho_i;
    let vn = w[n] * rho_i;
    let mut f = [[0.0; 5]; 5];
    f[0][n] = 1.0;
    for (m, row) in f.iter_mut().enumerate().take(4).skip(1) {
        if m == n {
            // The momentum along the axis also carries the pressure.
            row[0] = -(w[n] * rho_i2 * w[n]) + C2 * qs;
            for l in 1..4 {
                row[l] = -C2 * (w[l] * rho_i);
            }
            row[n] = (2.0 - C2) * vn;
            row[4] = C2;
        } else {
            row[0] = -(w[n] * w[m]) * rho_i2;
            row[m] = vn;
            row[n] = w[m] * rho_i;
        }
    }
    let energy = &mut f[4];
    energy[0] = (C2 * 2.0 * qs - C1 * (w[4] * rho_i)) * vn;
    for l in 1..4 {
        energy[l] = -C2 * (w[l] * w[n]) * rho_i2;
    }
    energy[n] = C1 * w[4] * rho_i - C2 * (w[n] * w[n] * rho_i2 + qs);
    energy[4] = C1 * vn;
    f
}

/// The spec's linearization of the viscous terms along `axis` at `w` (the BT reference's
/// `njac`, LU's viscous blocks), given `rho_i = 1/rho`. The mass equation has none.
pub fn viscous_jacobian(axis: usize, w: &Vec5, rho_i: f64) -> Mat5 {
    let n = axis + 1;
    let rho_i2 = rho_i * rho_i;
    let rho_i3 = rho_i2 * rho_i;
    // Viscosity factor of each velocity component: the normal stress carries 4/3.
    let nu = [1, 2, 3].map(|m| if m == n { CON43 * C3C4 } else { C3C4 });
    let mut v = [[0.0; 5]; 5];
    let mut energy_rho = 0.0;
    for (m, &c) in (1..4).zip(&nu) {
        v[m][0] = -c * rho_i2 * w[m];
        v[m][m] = c * rho_i;
        v[4][m] = (c - C1345) * rho_i2 * w[m];
        energy_rho -= (c - C1345) * rho_i3 * (w[m] * w[m]);
    }
    v[4][0] = energy_rho - C1345 * rho_i2 * w[4];
    v[4][4] = C1345 * rho_i;
    v
}

/// `to += s a`.
pub fn add_scaled(to: &mut Mat5, a: &Mat5, s: f64) {
    for (tr, ar) in to.iter_mut().zip(a) {
        for (t, x) in tr.iter_mut().zip(ar) {
            *t += s * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_solution_at_corners() {
        // At the origin only the constant terms remain.
        assert_eq!(exact_solution(0.0, 0.0, 0.0), [2.0, 1.0, 2.0, 2.0, 5.0]);
        // At (1, 1, 1) every coefficient counts once.
        let u = exact_solution(1.0, 1.0, 1.0);
        for (m, c) in CE.iter().enumerate() {
            let sum: f64 = c.iter().sum();
            assert!((u[m] - sum).abs() < 1e-12, "component {m}: {} vs {sum}", u[m]);
        }
    }

    #[test]
    fn flux_jacobian_matches_central_differences() {
        let w = [1.3, 0.2, -0.4, 0.7, 4.1];
        let rho_i = 1.0 / w[0];
        let qs = 0.5 * (w[1] * w[1] + w[2] * w[2] + w[3] * w[3]) * rho_i * rho_i;
        for axis in 0..3 {
            let jac = flux_jacobian(axis, &w, rho_i, qs);
            for c in 0..5 {
                let eps = 1e-6;
                let (mut wp, mut wm) = (w, w);
                wp[c] += eps;
                wm[c] -= eps;
                let (fp, fm) = (inviscid_flux(axis, &wp), inviscid_flux(axis, &wm));
                for r in 0..5 {
                    let fd = (fp[r] - fm[r]) / (2.0 * eps);
                    assert!((fd - jac[r][c]).abs() < 1e-7, "axis {axis} [{r}][{c}]: {fd} vs {}", jac[r][c]);
                }
            }
        }
    }
}
