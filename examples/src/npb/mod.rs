//! The NAS Parallel Benchmarks (NPB), written for this project from the published
//! specification (NAS reports RNR-94-007 and NAS-95-020, and the NPB 3.x class tables and
//! verification values), in Rust on rsmpi, with the same decomposition and communication
//! pattern as the reference MPI codes.
//!
//! # Shared API (stable; used by every `npb::*` benchmark)
//!
//! - [`randlc`] / [`vranlc`]: the NPB pseudo-random generator, `x_{k+1} = a * x_k mod 2^46`,
//!   computed in double precision with the 2^23 split, returning `x_{k+1} * 2^-46` in (0, 1).
//!   [`A`] is the usual multiplier 5^13. [`pow46`] gives `a^n mod 2^46` (for skip-ahead:
//!   the seed of element `n` of a stream started at `s` is `randlc(&mut s, pow46(a, n))`).
//! - [`Class`]: `S`, `W`, `A`, `B`, `C`; [`Class::parse`] reads "S"/"w"/...;
//!   [`Class::letter`] gives the letter back.
//! - [`wtime`]: `MPI_Wtime` in seconds; [`Timer`] accumulates start/stop intervals.
//! - [`Outcome`]: what a benchmark's run function returns (verdict, time, Mop/s, detail
//!   lines). [`run_main`] is a whole program `main`: it initializes MPI, reads the class from
//!   `argv[1]`, calls the run function on every rank, makes the verdict collective (a rank
//!   that failed fails the run), and on rank 0 prints the detail lines, then exactly one line
//!   `VERIFICATION SUCCESSFUL` or `VERIFICATION FAILED`, then the summary line
//!   `npb=<name> class=<C> ranks=<n> time_s=<t> mops=<m>`. It finalizes MPI and exits with
//!   code 0, or 1 on failure (also when the class argument is bad or the run function
//!   returns `Err`).
//! - [`rel_ok`]: relative-error test used by the verifications.
//!
//! A benchmark module provides `pub fn run(world: &SimpleCommunicator, class: Class) ->
//! Result<Outcome, String>` and its binary is `fn main() { npb::run_main("EP", npb::ep::run) }`.

// Benchmarks. CG and MG (written alongside) add `pub mod cg;` / `pub mod mg;` here.
pub mod adi;
pub mod bt;
pub mod cfd;
pub mod cg;
pub mod ep;
pub mod ft;
pub mod is;
pub mod lu;
pub mod mg;
pub mod sp;

use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

/// The NPB multiplier 5^13.
pub const A: f64 = 1_220_703_125.0;

const R23: f64 = 1.0 / 8_388_608.0; // 2^-23
const T23: f64 = 8_388_608.0; // 2^23
const R46: f64 = R23 * R23; // 2^-46
const T46: f64 = T23 * T23; // 2^46

/// Integer part of a non-negative `v < 2^63` (a single truncating conversion; `f64::trunc`
/// may be a library call on baseline x86-64).
#[inline(always)]
fn trunc(v: f64) -> f64 {
    v as i64 as f64
}

/// One step of the NPB generator: `x <- a * x mod 2^46`, returns the new `x * 2^-46`.
/// `x` and `a` must be integers in (0, 2^46) held exactly in an `f64`.
#[inline]
pub fn randlc(x: &mut f64, a: f64) -> f64 {
    // Split a = 2^23 a1 + a2 and x = 2^23 x1 + x2; every partial product stays below 2^52
    // so each step is exact in double precision.
    let a1 = trunc(R23 * a);
    let a2 = a - T23 * a1;
    let x1 = trunc(R23 * *x);
    let x2 = *x - T23 * x1;
    let t1 = a1 * x2 + a2 * x1;
    let t2 = trunc(R23 * t1);
    let z = t1 - T23 * t2;
    let t3 = T23 * z + a2 * x2;
    let t4 = trunc(R46 * t3);
    *x = t3 - T46 * t4;
    R46 * *x
}

/// Fills `y` with the next `y.len()` numbers of the stream `x` (multiplier `a`), advancing `x`.
pub fn vranlc(x: &mut f64, a: f64, y: &mut [f64]) {
    let a1 = trunc(R23 * a);
    let a2 = a - T23 * a1;
    let mut xv = *x;
    for out in y.iter_mut() {
        let x1 = trunc(R23 * xv);
        let x2 = xv - T23 * x1;
        let t1 = a1 * x2 + a2 * x1;
        let t2 = trunc(R23 * t1);
        let z = t1 - T23 * t2;
        let t3 = T23 * z + a2 * x2;
        let t4 = trunc(R46 * t3);
        xv = t3 - T46 * t4;
        *out = R46 * xv;
    }
    *x = xv;
}

/// `a^n mod 2^46` (as an exact integer in an `f64`), by binary powering with [`randlc`].
pub fn pow46(a: f64, mut n: u64) -> f64 {
    let mut result = 1.0;
    let mut base = a;
    while n > 0 {
        if n & 1 == 1 {
            randlc(&mut result, base);
        }
        let b = base;
        randlc(&mut base, b);
        n >>= 1;
    }
    result
}

/// Problem class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    S,
    W,
    A,
    B,
    C,
}

impl Class {
    /// Reads a class letter (case-insensitive).
    pub fn parse(s: &str) -> Result<Class, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "S" => Ok(Class::S),
            "W" => Ok(Class::W),
            "A" => Ok(Class::A),
            "B" => Ok(Class::B),
            "C" => Ok(Class::C),
            other => Err(format!("unknown class {other:?} (expected S, W, A, B or C)")),
        }
    }

    /// The class letter.
    pub fn letter(self) -> char {
        match self {
            Class::S => 'S',
            Class::W => 'W',
            Class::A => 'A',
            Class::B => 'B',
            Class::C => 'C',
        }
    }
}

/// `MPI_Wtime()`, seconds.
pub fn wtime() -> f64 {
    mpi::time()
}

/// An accumulating stopwatch on [`wtime`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Timer {
    total: f64,
    started: Option<f64>,
}

impl Timer {
    pub fn new() -> Timer {
        Timer::default()
    }
    pub fn start(&mut self) {
        self.started = Some(wtime());
    }
    pub fn stop(&mut self) {
        if let Some(t0) = self.started.take() {
            self.total += wtime() - t0;
        }
    }
    pub fn clear(&mut self) {
        *self = Timer::default();
    }
    /// Seconds accumulated over finished start/stop intervals.
    pub fn elapsed(&self) -> f64 {
        self.total
    }
}

/// `|value - reference| <= tol * |reference|`.
pub fn rel_ok(value: f64, reference: f64, tol: f64) -> bool {
    (value - reference).abs() <= tol * reference.abs()
}

/// The result of one benchmark run, as seen by one rank.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// This rank's verdict (made collective by [`run_main`]).
    pub verified: bool,
    /// Timed section, seconds (rank 0's value is printed).
    pub time_s: f64,
    /// Millions of operations per second, by the benchmark's NPB definition.
    pub mops: f64,
    /// Lines printed on rank 0 before the verdict (values, references, errors).
    pub details: Vec<String>,
}

/// A benchmark's run function.
pub type RunFn = fn(&SimpleCommunicator, Class) -> Result<Outcome, String>;

/// A whole benchmark program: see the module documentation. Never returns.
pub fn run_main(name: &str, run: RunFn) -> ! {
    let code = {
        let Some(universe) = mpi::initialize() else {
            eprintln!("npb {name}: MPI was already initialized");
            std::process::exit(1);
        };
        let world = universe.world();
        let rank = world.rank();
        let size = world.size();
        let arg = std::env::args().nth(1).unwrap_or_else(|| "S".to_string());
        let class = Class::parse(&arg);
        let class_letter = class.as_ref().map_or('?', |c| c.letter());
        let result = class.and_then(|class| run(&world, class).map(|o| (class, o)));
        let local_ok = i32::from(matches!(&result, Ok((_, o)) if o.verified));
        let mut all_ok = 0i32;
        world.all_reduce_into(&local_ok, &mut all_ok, SystemOperation::min());
        if rank == 0 {
            println!(" NAS Parallel Benchmarks (kawarimi, Rust on rsmpi) - {name} Benchmark");
            match &result {
                Ok((class, o)) => {
                    for line in &o.details {
                        println!(" {line}");
                    }
                    println!("{}", if all_ok == 1 { "VERIFICATION SUCCESSFUL" } else { "VERIFICATION FAILED" });
                    println!(
                        "npb={} class={} ranks={} time_s={:.6} mops={:.2}",
                        name.to_ascii_lowercase(),
                        class.letter(),
                        size,
                        o.time_s,
                        o.mops
                    );
                }
                Err(e) => {
                    eprintln!("npb {name}: {e}");
                    println!("VERIFICATION FAILED");
                    println!("npb={} class={class_letter} ranks={size} time_s=0 mops=0", name.to_ascii_lowercase());
                }
            }
        } else if let Err(e) = &result {
            eprintln!("npb {name} rank {rank}: {e}");
        }
        if all_ok == 1 {
            0
        } else {
            1
        }
        // `universe` drops here: MPI_Finalize before exiting.
    };
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a * x mod 2^46` in exact integer arithmetic.
    fn mulmod46(a: u64, x: u64) -> u64 {
        a.wrapping_mul(x) & ((1u64 << 46) - 1)
    }

    #[test]
    fn randlc_is_exact_lcg_mod_2_46() {
        let mut x = 314_159_265.0;
        let mut xi = 314_159_265u64;
        for _ in 0..10_000 {
            let r = randlc(&mut x, A);
            xi = mulmod46(A as u64, xi);
            assert_eq!(x as u64, xi);
            assert_eq!(r, xi as f64 / (1u64 << 46) as f64);
        }
    }

    #[test]
    fn vranlc_and_pow46_match_randlc() {
        let mut x = 271_828_183.0;
        let mut y = vec![0.0; 777];
        let mut x2 = x;
        vranlc(&mut x, A, &mut y);
        for v in &y {
            assert_eq!(*v, randlc(&mut x2, A));
        }
        assert_eq!(x, x2);
        let mut s = 271_828_183.0;
        randlc(&mut s, pow46(A, 777));
        assert_eq!(s, x);
        assert_eq!(pow46(A, 0), 1.0);
    }

    #[test]
    fn class_letters_round_trip() {
        for c in [Class::S, Class::W, Class::A, Class::B, Class::C] {
            assert_eq!(Class::parse(&c.letter().to_ascii_lowercase().to_string()), Ok(c));
        }
        assert!(Class::parse("Z").is_err());
    }
}
