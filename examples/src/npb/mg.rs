//! MG, "MultiGrid" (NPB report RNR-94-007, section 2.4; NPB 2/3 MPI version).
//!
//! Approximates the solution of the discrete Poisson problem `A u = v` on a periodic
//! `n x n x n` grid by `nit` V-cycles. `v` is zero except at twenty points: `+1` at the ten
//! points where the NPB generator (seed 314159265, multiplier 5^13, one number per grid point
//! in `x`-fastest order) gives its largest values and `-1` at the ten smallest. The
//! operators are the spec's 27-point stencils, each a weighted sum of the centre, the 6
//! faces, the 12 edges and the 8 corners:
//!
//! - residual `A`: `(-8/3, 0, 1/6, 1/12)`;
//! - smoother `S` (classes S, W, A): `(-3/8, 1/32, -1/64, 0)`, else `(-3/17, 1/33, -1/61, 0)`;
//! - restriction `P`: `(1/2, 1/4, 1/8, 1/16)`, coarse point `J` sitting on fine point `2J+1`;
//! - prolongation `Q`: trilinear interpolation (the adjoint of `P` up to a factor).
//!
//! A V-cycle restricts the residual down to the 2x2x2 grid, smooths there, and on the way up
//! interpolates, recomputes the residual and smooths at every level. The L2 norm of the final
//! residual is checked against the published value to 1e-8.
//!
//! Decomposition, as in the reference MPI code: the ranks (a power of two) form a 3-D grid of
//! blocks; every level keeps one ghost layer, refreshed after each operator by face
//! exchanges with the two neighbours along each axis in turn (`MPI_Irecv` from both sides,
//! `MPI_Send` to both, wait), so edges and corners travel through the later axes. Norms and
//! the choice of the twenty charges use `MPI_Allreduce`.
//!
//! Limitation: every rank must hold at least one point of the coarsest (2x2x2) grid, so at
//! most two ranks per axis, that is 1, 2, 4 or 8 ranks.

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{pow46, randlc, rel_ok, vranlc, wtime, Class, Outcome, A};

/// Seed of the charge generator.
const SEED: f64 = 314_159_265.0;
/// Number of `+1` (and of `-1`) charges.
const MM: usize = 10;
/// Verification tolerance (relative).
const EPSILON: f64 = 1.0e-8;
/// Residual operator coefficients (centre, faces, edges, corners).
const COEF_A: [f64; 4] = [-8.0 / 3.0, 0.0, 1.0 / 6.0, 1.0 / 12.0];

/// Grid size per dimension, V-cycles and reference L2 norm of the final residual.
fn params(class: Class) -> (usize, usize, f64) {
    match class {
        Class::S => (32, 4, 0.530_770_700_573_4e-4),
        Class::W => (128, 4, 0.646_732_937_533_9e-5),
        Class::A => (256, 4, 0.243_336_530_906_9e-5),
        Class::B => (256, 20, 0.180_056_440_135_5e-5),
        Class::C => (512, 20, 0.570_673_228_574_0e-6),
    }
}

/// Smoother coefficients for a class.
fn smoother(class: Class) -> [f64; 4] {
    match class {
        Class::S | Class::W | Class::A => [-3.0 / 8.0, 1.0 / 32.0, -1.0 / 64.0, 0.0],
        _ => [-3.0 / 17.0, 1.0 / 33.0, -1.0 / 61.0, 0.0],
    }
}

/// The local block of one level: interior sizes, global offsets, array extents with ghosts.
#[derive(Clone, Copy, Debug)]
struct Level {
    n: [usize; 3],
    off: [usize; 3],
    /// Extents with the ghost layer (`n + 2`).
    s: [usize; 3],
}

impl Level {
    fn len(&self) -> usize {
        self.s[0] * self.s[1] * self.s[2]
    }
    /// Distance between neighbours along each axis.
    fn strides(&self) -> [usize; 3] {
        [1, self.s[0], self.s[0] * self.s[1]]
    }
    fn idx(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.s[0] * (j + self.s[1] * k)
    }
}

/// One rank's state.
struct Mg<'a> {
    world: &'a SimpleCommunicator,
    /// Process-grid extents.
    pdims: [usize; 3],
    /// Left and right neighbour along each axis (periodic).
    nbr: [[i32; 2]; 3],
    /// Levels `1..=lt` at indices `0..lt`.
    levels: Vec<Level>,
    /// Global points per dimension of the finest grid.
    nx: usize,
    smoother: [f64; 4],
    /// Line buffers of the stencils.
    buf1: Vec<f64>,
    buf2: Vec<f64>,
}

impl<'a> Mg<'a> {
    fn new(world: &'a SimpleCommunicator, nx: usize, class: Class) -> Result<Mg<'a>, String> {
        let size = world.size() as usize;
        let rank = world.rank() as usize;
        if !size.is_power_of_two() || size > 8 {
            return Err(format!("MG here runs on 1, 2, 4 or 8 ranks, not {size}"));
        }
        // Split the slowest axis first: 2 ranks -> 1x1x2, 4 -> 1x2x2, 8 -> 2x2x2.
        let mut pdims = [1usize; 3];
        let mut axis = 2;
        let mut rest = size;
        while rest > 1 {
            pdims[axis] *= 2;
            rest /= 2;
            axis = (axis + 2) % 3;
        }
        let coords = [rank % pdims[0], (rank / pdims[0]) % pdims[1], rank / (pdims[0] * pdims[1])];
        let rank_of = |c: [usize; 3]| (c[0] + pdims[0] * (c[1] + pdims[1] * c[2])) as i32;
        let mut nbr = [[0i32; 2]; 3];
        for (a, nb) in nbr.iter_mut().enumerate() {
            let mut left = coords;
            left[a] = (coords[a] + pdims[a] - 1) % pdims[a];
            let mut right = coords;
            right[a] = (coords[a] + 1) % pdims[a];
            *nb = [rank_of(left), rank_of(right)];
        }
        let lt = nx.trailing_zeros() as usize;
        let levels: Vec<Level> = (1..=lt)
            .map(|k| {
                let g = 1usize << k;
                let n = [g / pdims[0], g / pdims[1], g / pdims[2]];
                Level {
                    n,
                    off: [coords[0] * n[0], coords[1] * n[1], coords[2] * n[2]],
                    s: [n[0] + 2, n[1] + 2, n[2] + 2],
                }
            })
            .collect();
        let line = nx / pdims[0] + 2;
        Ok(Mg {
            world,
            pdims,
            nbr,
            levels,
            nx,
            smoother: smoother(class),
            buf1: vec![0.0; line],
            buf2: vec![0.0; line],
        })
    }

    fn level(&self, k: usize) -> Level {
        self.levels[k - 1]
    }

    /// Refreshes the ghost layer of `f` (level `k`): along each axis in turn, full planes
    /// (ghosts of the other axes included) go to both neighbours.
    fn comm3(&self, f: &mut [f64], k: usize) {
        let lv = self.level(k);
        let st = lv.strides();
        for a in 0..3 {
            let (b, c) = match a {
                0 => (1, 2),
                1 => (0, 2),
                _ => (0, 1),
            };
            let plane = |p: usize| {
                let base = p * st[a];
                (0..lv.s[c]).flat_map(move |y| (0..lv.s[b]).map(move |x| base + x * st[b] + y * st[c]))
            };
            let n = lv.n[a];
            if self.pdims[a] == 1 {
                for (g, i) in plane(0).zip(plane(n)) {
                    f[g] = f[i];
                }
                for (g, i) in plane(n + 1).zip(plane(1)) {
                    f[g] = f[i];
                }
                continue;
            }
            let to_left: Vec<f64> = plane(1).map(|i| f[i]).collect();
            let to_right: Vec<f64> = plane(n).map(|i| f[i]).collect();
            let mut from_left = vec![0.0f64; to_left.len()];
            let mut from_right = vec![0.0f64; to_left.len()];
            let [left, right] = self.nbr[a];
            let tag_l = 10 + 2 * a as i32; // travelling left
            let tag_r = tag_l + 1; // travelling right
            mpi::request::scope(|scope| {
                let rl =
                    self.world.process_at_rank(left).immediate_receive_into_with_tag(scope, &mut from_left[..], tag_r);
                let rr = self.world.process_at_rank(right).immediate_receive_into_with_tag(
                    scope,
                    &mut from_right[..],
                    tag_l,
                );
                self.world.process_at_rank(left).send_with_tag(&to_left[..], tag_l);
                self.world.process_at_rank(right).send_with_tag(&to_right[..], tag_r);
                rl.wait();
                rr.wait();
            });
            for (g, v) in plane(0).zip(from_left) {
                f[g] = v;
            }
            for (g, v) in plane(n + 1).zip(from_right) {
                f[g] = v;
            }
        }
    }

    /// `r = v - A u` (with `v = None`: `r = r - A u`), then the ghost exchange of `r`.
    fn resid(&mut self, u: &[f64], v: Option<&[f64]>, r: &mut [f64], k: usize) {
        let lv = self.level(k);
        let [_, sy, sz] = lv.strides();
        let (u1, u2) = (&mut self.buf1, &mut self.buf2);
        let a = COEF_A;
        for i3 in 1..=lv.n[2] {
            for i2 in 1..=lv.n[1] {
                let base = lv.idx(0, i2, i3);
                for i1 in 0..lv.s[0] {
                    let c = base + i1;
                    u1[i1] = u[c - sy] + u[c + sy] + u[c - sz] + u[c + sz];
                    u2[i1] = u[c - sy - sz] + u[c + sy - sz] + u[c - sy + sz] + u[c + sy + sz];
                }
                for i1 in 1..=lv.n[0] {
                    let c = base + i1;
                    let rhs = match v {
                        Some(v) => v[c],
                        None => r[c],
                    };
                    r[c] = rhs
                        - a[0] * u[c]
                        - a[2] * (u2[i1] + u1[i1 - 1] + u1[i1 + 1])
                        - a[3] * (u2[i1 - 1] + u2[i1 + 1]);
                }
            }
        }
        self.comm3(r, k);
    }

    /// `u = u + S r`, then the ghost exchange of `u`.
    fn psinv(&mut self, r: &[f64], u: &mut [f64], k: usize) {
        let lv = self.level(k);
        let [_, sy, sz] = lv.strides();
        let (r1, r2) = (&mut self.buf1, &mut self.buf2);
        let c = self.smoother;
        for i3 in 1..=lv.n[2] {
            for i2 in 1..=lv.n[1] {
                let base = lv.idx(0, i2, i3);
                for i1 in 0..lv.s[0] {
                    let p = base + i1;
                    r1[i1] = r[p - sy] + r[p + sy] + r[p - sz] + r[p + sz];
                    r2[i1] = r[p - sy - sz] + r[p + sy - sz] + r[p - sy + sz] + r[p + sy + sz];
                }
                for i1 in 1..=lv.n[0] {
                    let p = base + i1;
                    u[p] += c[0] * r[p]
                        + c[1] * (r[p - 1] + r[p + 1] + r1[i1])
                        + c[2] * (r2[i1] + r1[i1 - 1] + r1[i1 + 1])
                        + c[3] * (r2[i1 - 1] + r2[i1 + 1]);
                }
            }
        }
        self.comm3(u, k);
    }

    /// Restriction `s = P r` from level `k` to `k - 1`, then the ghost exchange of `s`.
    fn rprj3(&mut self, r: &[f64], s: &mut [f64], k: usize) {
        let fl = self.level(k);
        let cl = self.level(k - 1);
        let [_, sy, sz] = fl.strides();
        let (x1, y1) = (&mut self.buf1, &mut self.buf2);
        for j3 in 1..=cl.n[2] {
            for j2 in 1..=cl.n[1] {
                let base = fl.idx(0, 2 * j2, 2 * j3);
                for i1 in 0..fl.s[0] {
                    let p = base + i1;
                    x1[i1] = r[p - sy] + r[p + sy] + r[p - sz] + r[p + sz];
                    y1[i1] = r[p - sy - sz] + r[p - sy + sz] + r[p + sy - sz] + r[p + sy + sz];
                }
                let cbase = cl.idx(0, j2, j3);
                for j1 in 1..=cl.n[0] {
                    let i1 = 2 * j1;
                    let p = base + i1;
                    s[cbase + j1] = 0.5 * r[p]
                        + 0.25 * (r[p - 1] + r[p + 1] + x1[i1])
                        + 0.125 * (x1[i1 - 1] + x1[i1 + 1] + y1[i1])
                        + 0.0625 * (y1[i1 - 1] + y1[i1 + 1]);
                }
            }
        }
        self.comm3(s, k - 1);
    }

    /// Prolongation `u = u + Q z` from level `k - 1` to `k`, over every point of the local
    /// fine array (ghosts included: the coarse ghosts hold what they need).
    fn interp(&self, z: &[f64], u: &mut [f64], k: usize) {
        let fl = self.level(k);
        let cl = self.level(k - 1);
        // Fine index i: even -> coarse i/2; odd -> half of (i-1)/2 and half of (i+1)/2.
        let weights = |i: usize| -> ([usize; 2], [f64; 2], usize) {
            if i.is_multiple_of(2) {
                ([i / 2, 0], [1.0, 0.0], 1)
            } else {
                ([(i - 1) / 2, i.div_ceil(2)], [0.5, 0.5], 2)
            }
        };
        // Per fine line: first combine the (up to four) coarse lines it lies between,
        // then interpolate along the line.
        let mut t = vec![0.0f64; cl.s[0]];
        for i3 in 0..fl.s[2] {
            let (c3, w3, n3) = weights(i3);
            for i2 in 0..fl.s[1] {
                let (c2, w2, n2) = weights(i2);
                t.fill(0.0);
                for a3 in 0..n3 {
                    for a2 in 0..n2 {
                        let row = cl.idx(0, c2[a2], c3[a3]);
                        let w = w2[a2] * w3[a3];
                        for (tv, zv) in t.iter_mut().zip(&z[row..row + cl.s[0]]) {
                            *tv += w * zv;
                        }
                    }
                }
                let base = fl.idx(0, i2, i3);
                for (i1, uv) in u[base..base + fl.s[0]].iter_mut().enumerate() {
                    let half = i1 / 2;
                    *uv += if i1.is_multiple_of(2) { t[half] } else { 0.5 * (t[half] + t[half + 1]) };
                }
            }
        }
    }

    /// One V-cycle: `u` and `r` hold every level (index `k - 1`), `v` the right-hand side.
    fn mg3p(&mut self, u: &mut [Vec<f64>], v: &[f64], r: &mut [Vec<f64>]) {
        let lt = self.levels.len();
        for k in (2..=lt).rev() {
            let (lo, hi) = r.split_at_mut(k - 1);
            self.rprj3(&hi[0], &mut lo[k - 2], k);
        }
        u[0].fill(0.0);
        self.psinv(&r[0], &mut u[0], 1);
        for k in 2..lt {
            let (lo, hi) = u.split_at_mut(k - 1);
            let uk = &mut hi[0];
            uk.fill(0.0);
            self.interp(&lo[k - 2], uk, k);
            self.resid(uk, None, &mut r[k - 1], k);
            self.psinv(&r[k - 1], uk, k);
        }
        let (lo, hi) = u.split_at_mut(lt - 1);
        let ut = &mut hi[0];
        self.interp(&lo[lt - 2], ut, lt);
        self.resid(ut, Some(v), &mut r[lt - 1], lt);
        self.psinv(&r[lt - 1], ut, lt);
    }

    /// L2 norm (root mean square over the global grid) and max norm of `r` at the finest level.
    fn norm2u3(&self, r: &[f64]) -> (f64, f64) {
        let lv = self.level(self.levels.len());
        let mut s = 0.0f64;
        let mut mx = 0.0f64;
        for i3 in 1..=lv.n[2] {
            for i2 in 1..=lv.n[1] {
                let base = lv.idx(0, i2, i3);
                for &x in &r[base + 1..=base + lv.n[0]] {
                    s += x * x;
                    mx = mx.max(x.abs());
                }
            }
        }
        let mut gs = 0.0f64;
        let mut gmx = 0.0f64;
        self.world.all_reduce_into(&s, &mut gs, SystemOperation::sum());
        self.world.all_reduce_into(&mx, &mut gmx, SystemOperation::max());
        let nn = (self.nx * self.nx * self.nx) as f64;
        ((gs / nn).sqrt(), gmx)
    }

    /// The right-hand side: `+1` at the ten globally largest generator values, `-1` at the ten
    /// smallest. Each rank keeps its ten best candidates of each kind; ten rounds of
    /// `MPI_Allreduce` (max, min) pick the global ones.
    fn zran3(&self, z: &mut [f64]) {
        let lv = self.level(self.levels.len());
        let nx = self.nx;
        z.fill(0.0);
        let mut line = vec![0.0f64; lv.n[0]];
        // Ten largest (descending) and ten smallest (ascending): (value, local index, global index).
        let mut big: Vec<(f64, usize, i64)> = Vec::with_capacity(MM + 1);
        let mut small: Vec<(f64, usize, i64)> = Vec::with_capacity(MM + 1);
        for i3 in 1..=lv.n[2] {
            for i2 in 1..=lv.n[1] {
                let g0 = lv.off[0] + nx * (lv.off[1] + i2 - 1 + nx * (lv.off[2] + i3 - 1));
                let mut x = SEED;
                randlc(&mut x, pow46(A, g0 as u64));
                vranlc(&mut x, A, &mut line);
                let base = lv.idx(0, i2, i3);
                for (i, &val) in line.iter().enumerate() {
                    let cand = (val, base + i + 1, (g0 + i) as i64);
                    if big.len() < MM || val > big[MM - 1].0 {
                        let pos = big.partition_point(|c| c.0 >= val);
                        big.insert(pos, cand);
                        big.truncate(MM);
                    }
                    if small.len() < MM || val < small[MM - 1].0 {
                        let pos = small.partition_point(|c| c.0 <= val);
                        small.insert(pos, cand);
                        small.truncate(MM);
                    }
                }
            }
        }
        let mut plus = Vec::with_capacity(MM);
        let mut minus = Vec::with_capacity(MM);
        let (mut ib, mut is) = (0usize, 0usize);
        for _ in 0..MM {
            for (list, ptr, out, op_max) in [(&big, &mut ib, &mut plus, true), (&small, &mut is, &mut minus, false)] {
                let mine = list.get(*ptr).map_or(if op_max { 0.0 } else { 1.0 }, |c| c.0);
                let mut best = 0.0f64;
                let op = if op_max { SystemOperation::max() } else { SystemOperation::min() };
                self.world.all_reduce_into(&mine, &mut best, op);
                let claim = match list.get(*ptr) {
                    Some(c) if c.0 == best => c.2,
                    _ => -1,
                };
                let mut winner = -1i64;
                self.world.all_reduce_into(&claim, &mut winner, SystemOperation::max());
                if let Some(c) = list.get(*ptr) {
                    if c.2 == winner {
                        out.push(c.1);
                        *ptr += 1;
                    }
                }
            }
        }
        for &p in &minus {
            z[p] = -1.0;
        }
        for &p in &plus {
            z[p] = 1.0;
        }
        self.comm3(z, self.levels.len());
    }
}

/// Runs MG for `class` on `world` (see the module documentation).
pub fn run(world: &SimpleCommunicator, class: Class) -> Result<Outcome, String> {
    let (nx, nit, reference) = params(class);
    let mut mg = Mg::new(world, nx, class)?;
    let lt = mg.levels.len();
    let mut u: Vec<Vec<f64>> = mg.levels.iter().map(|l| vec![0.0; l.len()]).collect();
    let mut r: Vec<Vec<f64>> = mg.levels.iter().map(|l| vec![0.0; l.len()]).collect();
    let mut v = vec![0.0f64; mg.level(lt).len()];
    mg.zran3(&mut v);

    // One untimed cycle to touch everything, then start again.
    mg.resid(&u[lt - 1], Some(&v), &mut r[lt - 1], lt);
    mg.mg3p(&mut u, &v, &mut r);
    mg.resid(&u[lt - 1], Some(&v), &mut r[lt - 1], lt);
    for f in u.iter_mut() {
        f.fill(0.0);
    }
    mg.zran3(&mut v);
    world.barrier();

    let t0 = wtime();
    mg.resid(&u[lt - 1], Some(&v), &mut r[lt - 1], lt);
    let (rnm2_0, rnmu_0) = mg.norm2u3(&r[lt - 1]);
    for _ in 0..nit {
        mg.mg3p(&mut u, &v, &mut r);
        mg.resid(&u[lt - 1], Some(&v), &mut r[lt - 1], lt);
    }
    let (rnm2, rnmu) = mg.norm2u3(&r[lt - 1]);
    let t_local = wtime() - t0;
    let mut t = 0.0f64;
    world.all_reduce_into(&t_local, &mut t, SystemOperation::max());

    let err = (rnm2 - reference).abs() / reference;
    let verified = rel_ok(rnm2, reference, EPSILON);
    let details = vec![
        format!("Size: {nx}x{nx}x{nx} (class {}), iterations: {nit}", class.letter()),
        format!("Number of processes: {} ({}x{}x{} blocks)", world.size(), mg.pdims[0], mg.pdims[1], mg.pdims[2]),
        format!("Initial residual: L2 {rnm2_0:.13e}, max {rnmu_0:.13e}"),
        format!("L2 Norm is  {rnm2:.13e} (max {rnmu:.6e})"),
        format!("Reference   {reference:.13e}"),
        format!("Error is    {err:.13e}"),
    ];
    let nn = (nx * nx * nx) as f64;
    let mops = if t > 0.0 { 58.0 * nit as f64 * nn * 1.0e-6 / t } else { 0.0 };
    Ok(Outcome { verified, time_s: t, mops, details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_indexing() {
        let cl = Level { n: [2, 2, 2], off: [0; 3], s: [4, 4, 4] };
        let fl = Level { n: [4, 4, 4], off: [0; 3], s: [6, 6, 6] };
        assert_eq!(cl.len(), 64);
        assert_eq!(fl.idx(1, 2, 3), 1 + 6 * (2 + 6 * 3));
    }
}
