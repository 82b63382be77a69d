//! The end of a BT or SP run: the class's published values, and the verification against
//! them.

use super::super::cfd::{Vec5, EPSILON};
use super::super::{rel_ok, Outcome};
use super::TimedRun;

/// A class of BT or SP: its size, and the values published for it that a run is verified
/// against.
pub struct Params {
    /// Grid points per axis.
    pub n: usize,
    pub niter: usize,
    /// Time step of the run.
    pub dt: f64,
    /// Time step the reference values were computed with.
    pub dt_ref: f64,
    /// RMS norms of the final residual, over `dt`.
    pub xcr: Vec5,
    /// RMS norms of the final error.
    pub xce: Vec5,
}

/// The end of a BT or SP run: verified when the time step is the reference's and each of the
/// ten norms is within [`EPSILON`] of its published value (every comparison is reported in
/// the details); Mop/s from the benchmark's count of operations per step.
pub fn outcome(prm: &Params, run: TimedRun, work_per_step: f64) -> Outcome {
    let TimedRun { time_s, xcr, xce, mut details } = run;
    let dt_ok = (prm.dt - prm.dt_ref).abs() <= EPSILON;
    details.push(format!(
        "{:<22} {:22.15e}  reference {:22.15e}{}",
        "Time step dt",
        prm.dt,
        prm.dt_ref,
        if dt_ok { "" } else { "  FAILED" }
    ));
    let mut verified = dt_ok;
    let rows =
        xcr.iter().zip(&prm.xcr).map(|v| ("RMS residual", v)).chain(xce.iter().zip(&prm.xce).map(|v| ("RMS error", v)));
    for (k, (what, (&value, &reference))) in rows.enumerate() {
        let ok = rel_ok(value, reference, EPSILON);
        verified &= ok;
        let err = (value - reference).abs() / reference.abs();
        details.push(format!(
            "{:<22} {value:22.15e}  reference {reference:22.15e}  rel. error {err:.3e}{}",
            format!("{what}, pde {}", k % 5 + 1),
            if ok { "" } else { "  FAILED" }
        ));
    }
    let mops = if time_s > 0.0 { 1.0e-6 * prm.niter as f64 * work_per_step / time_s } else { 0.0 };
    Outcome { verified, time_s, mops, details }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run verifies only with the reference time step and all ten norms within EPSILON, and
    /// the details say which comparison failed.
    #[test]
    fn outcome_verifies_every_norm_and_the_time_step() {
        let run = |xcr: Vec5, dt: f64| {
            let prm = Params { n: 12, niter: 2, dt, dt_ref: 0.01, xcr: [1.0; 5], xce: [2.0; 5] };
            let run = TimedRun { time_s: 1.0, xcr, xce: [2.0; 5], details: Vec::new() };
            outcome(&prm, run, 1.0e6)
        };
        let good = run([1.0 + 1e-12; 5], 0.01);
        assert!(good.verified, "{:?}", good.details);
        assert_eq!(good.details.len(), 11);
        assert_eq!(good.mops, 2.0, "2 steps of 1e6 operations in 1 s");
        let bad = run([1.0, 1.0, 1.0 + 1e-6, 1.0, 1.0], 0.01);
        assert!(!bad.verified);
        assert_eq!(bad.details.iter().filter(|d| d.ends_with("FAILED")).count(), 1);
        assert!(bad.details.iter().any(|d| d.starts_with("RMS residual, pde 3") && d.ends_with("FAILED")));
        let wrong_dt = run([1.0; 5], 0.02);
        assert!(!wrong_dt.verified);
        assert!(wrong_dt.details[0].starts_with("Time step dt") && wrong_dt.details[0].ends_with("FAILED"));
    }
}
