//! NPB FT: a 3-D partial differential equation solved with forward and inverse 3-D FFTs
//! (NAS report RNR-94-007, "FT"; NPB 3.x class sizes and verification checksums).
//!
//! The problem: a complex array of `nx × ny × nz` pseudo-random numbers (the NPB generator,
//! seed 314159265, real and imaginary parts interleaved, x fastest) is transformed forward;
//! each of `niter` steps multiplies the transform by `exp(-4 α π² (i² + j² + k²))` (frequencies
//! centred, α = 10⁻⁶), transforms the product back and takes a checksum of 1024 fixed
//! elements, divided by the element count and summed over the ranks. The forward transform
//! uses `exp(+2πi jk/n)`, the inverse `exp(-2πi jk/n)`, neither normalised (as NPB's).
//!
//! Decomposition and communication as the reference's 1-D layout: each rank holds `nz/np`
//! whole z-planes; x and y are transformed in place, then one `MPI_Alltoall` moves the array
//! to `ny/np` whole y-slabs with z contiguous for the z transform (and back for the inverse).

use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use super::{pow46, randlc, vranlc, wtime, Class, Outcome, A};

const SEED: f64 = 314_159_265.0;
const ALPHA: f64 = 1.0e-6;
/// NPB's verification tolerance on each checksum (relative).
const EPSILON: f64 = 1.0e-12;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct C64 {
    re: f64,
    im: f64,
}

impl C64 {
    fn mul(self, o: C64) -> C64 {
        C64 { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }
    fn add(self, o: C64) -> C64 {
        C64 { re: self.re + o.re, im: self.im + o.im }
    }
    fn sub(self, o: C64) -> C64 {
        C64 { re: self.re - o.re, im: self.im - o.im }
    }
    fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
}

/// Class sizes and the official checksums (NPB 3.x `verify`), one per iteration.
fn params(class: Class) -> Result<([usize; 3], Vec<C64>), String> {
    let c = |re, im| C64 { re, im };
    Ok(match class {
        Class::S => (
            [64, 64, 64],
            vec![
                c(554.6087004964, 484.5363331978),
                c(554.6385409189, 486.5304269511),
                c(554.6148406171, 488.3910722336),
                c(554.5423607415, 490.1273169046),
                c(554.4255039624, 491.7475857993),
                c(554.2683411902, 493.2597244941),
            ],
        ),
        Class::W => (
            [128, 128, 32],
            vec![
                c(567.3612178944, 529.3246849175),
                c(563.1436885271, 528.2149986629),
                c(559.4024089970, 527.0996558037),
                c(556.0698047020, 526.0027904925),
                c(553.0898991250, 524.9400845633),
                c(550.4159734538, 523.9212247086),
            ],
        ),
        Class::A => (
            [256, 256, 128],
            vec![
                c(504.6735008193, 511.4047905510),
                c(505.9412319734, 509.8809666433),
                c(506.9376896287, 509.8144042213),
                c(507.7892868474, 510.1336130759),
                c(508.5233095391, 510.4914655194),
                c(509.1487099959, 510.7917842803),
            ],
        ),
        other => return Err(format!("FT class {} is not carried here (S, W and A are)", other.letter())),
    })
}

/// An in-place radix-2 FFT of one length, `exp(sign · 2πi jk/n)`, unnormalised.
struct Fft {
    n: usize,
    /// `roots[k] = exp(sign · 2πi k/n)`, k < n/2.
    roots: Vec<C64>,
}

impl Fft {
    fn new(n: usize, sign: f64) -> Fft {
        assert!(n.is_power_of_two());
        let roots = (0..n / 2)
            .map(|k| {
                let t = sign * 2.0 * std::f64::consts::PI * k as f64 / n as f64;
                C64 { re: t.cos(), im: t.sin() }
            })
            .collect();
        Fft { n, roots }
    }

    fn run(&self, x: &mut [C64]) {
        let n = self.n;
        // Bit-reversal permutation, then butterflies of growing span.
        let bits = n.trailing_zeros();
        for i in 0..n {
            let j = i.reverse_bits() >> (usize::BITS - bits);
            if bits > 0 && j > i {
                x.swap(i, j);
            }
        }
        let mut len = 2;
        while len <= n {
            let step = n / len;
            for start in (0..n).step_by(len) {
                for k in 0..len / 2 {
                    let w = self.roots[k * step];
                    let a = x[start + k];
                    let b = x[start + k + len / 2].mul(w);
                    x[start + k] = a.add(b);
                    x[start + k + len / 2] = a.sub(b);
                }
            }
            len <<= 1;
        }
    }

    /// Transforms `count` lines of `n` elements at `stride` apart, line `l` starting at
    /// `first(l)`, through a contiguous scratch line.
    fn lines(
        &self,
        data: &mut [C64],
        count: usize,
        first: impl Fn(usize) -> usize,
        stride: usize,
        scratch: &mut Vec<C64>,
    ) {
        scratch.resize(self.n, C64::default());
        for l in 0..count {
            let base = first(l);
            for (t, s) in scratch.iter_mut().enumerate() {
                *s = data[base + t * stride];
            }
            self.run(scratch);
            for (t, s) in scratch.iter().enumerate() {
                data[base + t * stride] = *s;
            }
        }
    }
}

/// One rank's share and the transforms between its two layouts.
struct Ft<'a> {
    world: &'a SimpleCommunicator,
    n: [usize; 3],
    np: usize,
    rank: usize,
    /// z-planes (layout A) and y-slabs (layout B) per rank.
    nz_l: usize,
    ny_l: usize,
    fwd: [Fft; 3],
    inv: [Fft; 3],
    scratch: Vec<C64>,
    send: Vec<f64>,
    recv: Vec<f64>,
}

impl Ft<'_> {
    /// Layout A: `a[(kl·ny + j)·nx + i]` for this rank's planes `k = rank·nz_l + kl`.
    /// x then y, in place.
    fn xy(&mut self, a: &mut [C64], forward: bool) {
        let [nx, ny, _] = self.n;
        let f = if forward { &self.fwd } else { &self.inv };
        f[0].lines(a, self.nz_l * ny, |l| l * nx, 1, &mut self.scratch);
        f[1].lines(a, self.nz_l * nx, |l| (l / nx) * nx * ny + l % nx, nx, &mut self.scratch);
    }

    /// Layout B: `b[(jl·nx + i)·nz + k]` for this rank's `j = rank·ny_l + jl`; z in place.
    fn z(&mut self, b: &mut [C64], forward: bool) {
        let nz = self.n[2];
        let f = if forward { &self.fwd[2] } else { &self.inv[2] };
        f.lines(b, self.ny_l * self.n[0], |l| l * nz, 1, &mut self.scratch);
    }

    /// Every pair's block holds (kl, jl, i) in that order: planes of the z-owner, y of the
    /// y-owner, all of x.
    fn block_len(&self) -> usize {
        self.nz_l * self.ny_l * self.n[0]
    }

    /// Position in layout A of element (kl, jj, i) of the block for (or from) y-owner `q`.
    fn index_a(&self, q: usize, kl: usize, jj: usize, i: usize) -> usize {
        (kl * self.n[1] + q * self.ny_l + jj) * self.n[0] + i
    }

    /// Position in layout B of element (kl, jj, i) of the block for (or from) z-owner `p`.
    fn index_b(&self, p: usize, kl: usize, jj: usize, i: usize) -> usize {
        (jj * self.n[0] + i) * self.n[2] + p * self.nz_l + kl
    }

    /// One all-to-all: block `q` of the send buffer is `src` at `from(q, ..)`, block `p` of
    /// what arrives goes to `dst` at `to(p, ..)`; every block holds (kl, jl, i) in that order.
    fn transpose(
        &mut self,
        src: &[C64],
        from: fn(&Self, usize, usize, usize, usize) -> usize,
        dst: &mut [C64],
        to: fn(&Self, usize, usize, usize, usize) -> usize,
    ) {
        let (nx, nz_l, ny_l) = (self.n[0], self.nz_l, self.ny_l);
        let mut o = 0;
        for q in 0..self.np {
            for kl in 0..nz_l {
                for jj in 0..ny_l {
                    for i in 0..nx {
                        let v = src[from(self, q, kl, jj, i)];
                        (self.send[o], self.send[o + 1]) = (v.re, v.im);
                        o += 2;
                    }
                }
            }
        }
        debug_assert_eq!(o, 2 * self.np * self.block_len());
        self.world.all_to_all_into(&self.send[..], &mut self.recv[..]);
        let mut o = 0;
        for p in 0..self.np {
            for kl in 0..nz_l {
                for jj in 0..ny_l {
                    for i in 0..nx {
                        dst[to(self, p, kl, jj, i)] = C64 { re: self.recv[o], im: self.recv[o + 1] };
                        o += 2;
                    }
                }
            }
        }
    }

    /// Layout A to layout B.
    fn a_to_b(&mut self, a: &[C64], b: &mut [C64]) {
        self.transpose(a, Self::index_a, b, Self::index_b);
    }

    /// Layout B back to layout A.
    fn b_to_a(&mut self, b: &[C64], a: &mut [C64]) {
        self.transpose(b, Self::index_b, a, Self::index_a);
    }
}

/// This rank's planes of the initial array (layout A), jumping the generator to its first
/// plane so that every decomposition sees the same numbers.
fn initial_conditions(n: [usize; 3], z0: usize, nz_l: usize) -> Vec<C64> {
    let [nx, ny, _] = n;
    let plane = nx * ny;
    let mut start = SEED;
    randlc(&mut start, pow46(A, (2 * plane * z0) as u64));
    let an = pow46(A, (2 * plane) as u64);
    let mut vals = vec![0.0; 2 * plane];
    let mut a = Vec::with_capacity(plane * nz_l);
    for _ in 0..nz_l {
        let mut x0 = start;
        vranlc(&mut x0, A, &mut vals);
        a.extend(vals.chunks_exact(2).map(|p| C64 { re: p[0], im: p[1] }));
        randlc(&mut start, an);
    }
    a
}

/// `exp(-4απ²(ī² + j̄² + k̄²))` for this rank's part of layout B, frequencies centred.
fn twiddle(n: [usize; 3], y0: usize, ny_l: usize) -> Vec<f64> {
    let [nx, ny, nz] = n;
    let ap = -4.0 * ALPHA * std::f64::consts::PI * std::f64::consts::PI;
    let centred = |g: usize, m: usize| ((g + m / 2) % m) as i64 - (m / 2) as i64;
    let mut t = Vec::with_capacity(ny_l * nx * nz);
    for jl in 0..ny_l {
        let jj = centred(y0 + jl, ny);
        for i in 0..nx {
            let ii = centred(i, nx);
            for k in 0..nz {
                let kk = centred(k, nz);
                t.push((ap * (ii * ii + jj * jj + kk * kk) as f64).exp());
            }
        }
    }
    t
}

/// NPB's checksum of layout A: elements (j mod nx, 3j mod ny, 5j mod nz), j = 1..=1024, those
/// this rank holds, over the element count; summed over the ranks.
fn checksum(world: &SimpleCommunicator, n: [usize; 3], a: &[C64], z0: usize, nz_l: usize) -> C64 {
    let [nx, ny, nz] = n;
    let mut local = [0.0f64; 2];
    for j in 1..=1024usize {
        let (q, r, s) = (j % nx, (3 * j) % ny, (5 * j) % nz);
        if (z0..z0 + nz_l).contains(&s) {
            let v = a[((s - z0) * ny + r) * nx + q];
            local[0] += v.re;
            local[1] += v.im;
        }
    }
    let total = (nx * ny * nz) as f64;
    let local = [local[0] / total, local[1] / total];
    let mut sum = [0.0f64; 2];
    world.all_reduce_into(&local[..], &mut sum[..], SystemOperation::sum());
    C64 { re: sum[0], im: sum[1] }
}

pub fn run(world: &SimpleCommunicator, class: Class) -> Result<Outcome, String> {
    let (n, reference) = params(class)?;
    let [nx, ny, nz] = n;
    let np = world.size() as usize;
    let rank = world.rank() as usize;
    if nz % np != 0 || ny % np != 0 {
        return Err(format!("FT class {} needs a rank count dividing {ny} and {nz}, not {np}", class.letter()));
    }
    let (nz_l, ny_l) = (nz / np, ny / np);
    let block = nz_l * ny_l * nx;
    let mut ft = Ft {
        world,
        n,
        np,
        rank,
        nz_l,
        ny_l,
        fwd: [Fft::new(nx, 1.0), Fft::new(ny, 1.0), Fft::new(nz, 1.0)],
        inv: [Fft::new(nx, -1.0), Fft::new(ny, -1.0), Fft::new(nz, -1.0)],
        scratch: Vec::new(),
        send: vec![0.0; 2 * block * np],
        recv: vec![0.0; 2 * block * np],
    };
    let twiddle = twiddle(n, rank * ny_l, ny_l);

    world.barrier();
    let t0 = wtime();
    // Forward: x and y on the planes, transpose, z on the slabs.
    let mut a = initial_conditions(n, rank * nz_l, nz_l);
    let mut u0 = vec![C64::default(); ny_l * nx * nz];
    ft.xy(&mut a, true);
    ft.a_to_b(&a, &mut u0);
    ft.z(&mut u0, true);
    let mut sums = Vec::with_capacity(reference.len());
    let mut u1 = vec![C64::default(); u0.len()];
    for _ in 0..reference.len() {
        for (v, t) in u0.iter_mut().zip(&twiddle) {
            v.re *= t;
            v.im *= t;
        }
        u1.copy_from_slice(&u0);
        ft.z(&mut u1, false);
        ft.b_to_a(&u1, &mut a);
        ft.xy(&mut a, false);
        sums.push(checksum(world, n, &a, ft.rank * nz_l, nz_l));
    }
    let time_s = wtime() - t0;

    let mut verified = true;
    let mut details = vec![format!("Size {nx}x{ny}x{nz}, {} iterations, {np} ranks (1-D layout)", reference.len())];
    for (t, (s, r)) in sums.iter().zip(&reference).enumerate() {
        let err = s.sub(*r).abs() / r.abs();
        verified &= err <= EPSILON;
        details.push(format!("T = {:2}  checksum = {:.12e} {:.12e}  (relative error {err:.1e})", t + 1, s.re, s.im));
    }
    let total = (nx * ny * nz) as f64;
    let niter = reference.len() as f64;
    // NPB's operation count for FT.
    let mops = 1.0e-6 * total * (14.8157 + 7.19641 * total.ln() + (5.23518 + 7.21113 * total.ln()) * niter) / time_s;
    Ok(Outcome { verified, time_s, mops, details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_matches_a_direct_dft_and_inverts() {
        let n = 16;
        let x: Vec<C64> = (0..n).map(|i| C64 { re: (i as f64).sin(), im: (i * i % 7) as f64 }).collect();
        let mut y = x.clone();
        Fft::new(n, 1.0).run(&mut y);
        for (k, yk) in y.iter().enumerate() {
            let mut d = C64::default();
            for (j, xj) in x.iter().enumerate() {
                let t = 2.0 * std::f64::consts::PI * (j * k) as f64 / n as f64;
                d = d.add(xj.mul(C64 { re: t.cos(), im: t.sin() }));
            }
            assert!(d.sub(*yk).abs() < 1e-9, "bin {k}");
        }
        Fft::new(n, -1.0).run(&mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a.re - b.re / n as f64).abs() < 1e-12 && (a.im - b.im / n as f64).abs() < 1e-12);
        }
    }
}
