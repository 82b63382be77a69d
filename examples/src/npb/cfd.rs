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
}
