//! EP, "Embarrassingly Parallel" (NPB report RNR-94-007, section 2.2; NPB 2/3 MPI version).
//!
//! Generates `2^(M+1)` uniform numbers from the NPB generator (seed 271828183, multiplier
//! 5^13), forms pairs `x, y` in (-1, 1) and, for those with `t = x^2 + y^2 <= 1`, the Gaussian
//! deviates `X = x sqrt(-2 ln t / t)`, `Y = y sqrt(-2 ln t / t)` (Marsaglia's polar method).
//! It sums `X` and `Y` and counts the pairs in each square annulus
//! `l <= max(|X|, |Y|) < l + 1`, `l = 0..9`.
//!
//! The work is split, as in the reference MPI code, into batches of `2^16` pairs; rank `r`
//! takes a contiguous run of batches (the first `batches % ranks` ranks one more) and jumps
//! its stream straight to each batch's first number with `a^(2^17 k) mod 2^46`, so the
//! result does not depend on the rank count. One `MPI_Allreduce` each for `sx`, `sy` and the
//! counts combines the ranks; `sx` and `sy` are checked against the class's published values
//! to a relative 1e-8.

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{pow46, randlc, rel_ok, vranlc, wtime, Class, Outcome, A};

/// log2 of the pairs per batch.
const MK: u32 = 16;
/// Pairs per batch.
const NK: usize = 1 << MK;
/// Number of annuli.
const NQ: usize = 10;
/// Seed of the stream.
const SEED: f64 = 271_828_183.0;
/// Verification tolerance (relative).
const EPSILON: f64 = 1.0e-8;

/// `M` (log2 of the number of pairs) and the reference `sx`, `sy` for a class (the values
/// published with NPB 2/3; S's `sx` is -3.247834652034740e3).
fn params(class: Class) -> (u32, f64, f64) {
    match class {
        Class::S => (24, -3.247_834_652_034_74e3, -6.958_407_078_382_297e3),
        Class::W => (25, -2.863_319_731_645_753e3, -6.320_053_679_109_499e3),
        Class::A => (28, -4.295_875_165_629_892e3, -1.580_732_573_678_431e4),
        Class::B => (30, 4.033_815_542_441_498e4, -2.660_669_192_809_235e4),
        Class::C => (32, 4.764_367_927_995_374e4, -8.084_072_988_043_731e4),
    }
}

/// Local tallies of one rank.
struct Tally {
    sx: f64,
    sy: f64,
    q: [f64; NQ],
}

/// Processes batches `first .. first + count` (global batch numbers).
fn tally_batches(first: u64, count: u64) -> Tally {
    let mut t = Tally { sx: 0.0, sy: 0.0, q: [0.0; NQ] };
    let mut x = vec![0.0f64; 2 * NK];
    // a^(2 NK): the jump from one batch's seed to the next.
    let batch_jump = pow46(A, 2 * NK as u64);
    let mut seed = SEED;
    if first > 0 {
        let skip = pow46(batch_jump, first);
        randlc(&mut seed, skip);
    }
    for _ in 0..count {
        let mut stream = seed;
        vranlc(&mut stream, A, &mut x);
        for pair in x.chunks_exact(2) {
            let x1 = 2.0 * pair[0] - 1.0;
            let x2 = 2.0 * pair[1] - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 <= 1.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                let gx = x1 * f;
                let gy = x2 * f;
                let l = gx.abs().max(gy.abs()) as usize;
                t.q[l] += 1.0;
                t.sx += gx;
                t.sy += gy;
            }
        }
        randlc(&mut seed, batch_jump);
    }
    t
}

/// Runs EP on `world` (any number of ranks).
pub fn run(world: &SimpleCommunicator, class: Class) -> Result<Outcome, String> {
    let (m, sx_ref, sy_ref) = params(class);
    let rank = world.rank() as u64;
    let size = world.size() as u64;
    let batches = 1u64 << (m - MK);
    let base = batches / size;
    let large = batches % size;
    let count = base + u64::from(rank < large);
    let first = rank * base + rank.min(large);

    world.barrier();
    let t0 = wtime();
    let local = tally_batches(first, count);
    let mut sx = 0.0;
    let mut sy = 0.0;
    let mut q = [0.0f64; NQ];
    world.all_reduce_into(&local.sx, &mut sx, SystemOperation::sum());
    world.all_reduce_into(&local.sy, &mut sy, SystemOperation::sum());
    world.all_reduce_into(&local.q[..], &mut q[..], SystemOperation::sum());
    let elapsed = wtime() - t0;
    let mut time_s = 0.0;
    world.all_reduce_into(&elapsed, &mut time_s, SystemOperation::max());

    let gc: f64 = q.iter().sum();
    let verified = rel_ok(sx, sx_ref, EPSILON) && rel_ok(sy, sy_ref, EPSILON);
    let mops = 2f64.powi(m as i32 + 1) / time_s / 1.0e6;
    let mut details = vec![
        format!("Class {}: 2^{} pairs, {} ranks", class.letter(), m + 1, size),
        format!("Gaussian pairs = {gc:25.15e}"),
        format!("sx = {sx:25.15e}  reference {sx_ref:25.15e}  rel err {:.3e}", ((sx - sx_ref) / sx_ref).abs()),
        format!("sy = {sy:25.15e}  reference {sy_ref:25.15e}  rel err {:.3e}", ((sy - sy_ref) / sy_ref).abs()),
    ];
    for (l, c) in q.iter().enumerate() {
        details.push(format!("annulus {l}: {c:.0}"));
    }
    Ok(Outcome { verified, time_s, mops, details })
}
