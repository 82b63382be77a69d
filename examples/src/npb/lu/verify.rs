//! What LU verifies beside the residual: the error against the exact solution and the
//! spec's surface integral of the pressure.

use mpi::traits::*;

use super::{pressure, tag, Block, Vec5};

impl Block<'_> {
    /// RMS norm of the error against the exact solution.
    pub(super) fn error_norm(&self, u: &[Vec5]) -> Vec5 {
        self.rms_norm(|p, c, m| self.exact(c)[m] - u[p][m])
    }

    // ----- surface integral -----

    /// The spec's surface integral of the pressure: over the faces of the box of global indices
    /// `[1, n-2] x [1, n-3] x [2, n-2]` (sic, as published), each pair of opposite faces
    /// integrated with the trapezoid-like rule `h_a h_b / 4 * sum over cells of the corner
    /// values`, the three pairs summed.
    pub(super) fn surface_integral(&self, u: &[Vec5]) -> f64 {
        let first = [1, 1, 2];
        let last = [self.n0[0] - 2, self.n0[1] - 3, self.n0[2] - 2];
        let mut total = 0.0;
        // Faces normal to z first, then y, then x, as the reference.
        for normal in [2, 1, 0] {
            total += self.face_pair_integral(u, normal, first, last);
        }
        0.25 * total
    }

    /// The two faces of the box normal to `normal`, see [`Self::surface_integral`].
    fn face_pair_integral(&self, u: &[Vec5], normal: usize, first: [usize; 3], last: [usize; 3]) -> f64 {
        let axes: [usize; 2] = match normal {
            0 => [1, 2],
            1 => [0, 2],
            _ => [0, 1],
        };
        // Plane arrays over the owned points of the two axes plus one halo line at the end.
        let dims = axes.map(|a| self.n[a] + 1);
        let idx = |l: [usize; 2]| l[0] + dims[0] * l[1];
        let in_box = |a: usize, g: usize| g >= first[a] && g <= last[a];
        let owns = |g: usize| g >= self.off[normal] && g < self.off[normal] + self.n[normal];
        let held: Vec<bool> = [first[normal], last[normal]].iter().map(|&g| owns(g)).collect();
        let mut planes = vec![vec![0.0f64; dims[0] * dims[1]]; 2];
        for (s, plane) in planes.iter_mut().enumerate() {
            if !held[s] {
                continue;
            }
            let g_normal = if s == 0 { first[normal] } else { last[normal] };
            for lb in 0..self.n[axes[1]] {
                for la in 0..self.n[axes[0]] {
                    let l = [la, lb];
                    if !(0..2).all(|d| in_box(axes[d], self.off[axes[d]] + l[d])) {
                        continue;
                    }
                    let mut c = [0usize; 3];
                    c[normal] = g_normal - self.off[normal] + self.pad[normal];
                    for d in 0..2 {
                        c[axes[d]] = l[d] + self.pad[axes[d]];
                    }
                    plane[idx(l)] = pressure(&u[self.at(c[0], c[1], c[2])]);
                }
            }
        }
        // Halo lines from the upper neighbours: along y first, then along x (whose lines then
        // carry the y halo too, so the corner arrives), as the reference's exchange_4.
        let held_planes: Vec<usize> = (0..2).filter(|&s| held[s]).collect();
        if !held_planes.is_empty() {
            for d in [1, 0] {
                let Some(pd) = axes.iter().position(|&a| a == d) else { continue };
                // This rank needs the upper halo if its last cell (lower corner at its last
                // point) is in the box; it gives its first line if the lower neighbour's is.
                let last_owned = self.off[d] + self.n[d] - 1;
                let need = (first[d]..last[d]).contains(&last_owned);
                let give = (first[d] + 1..=last[d]).contains(&self.off[d]);
                let line = |at: usize| {
                    (0..dims[1 - pd]).map(move |t| {
                        let mut l = [0, 0];
                        l[pd] = at;
                        l[1 - pd] = t;
                        l
                    })
                };
                let t = tag(d, false);
                if let (true, Some(src)) = (need, self.nbr[d][1]) {
                    let mut buf = vec![0.0f64; held_planes.len() * dims[1 - pd]];
                    self.world.process_at_rank(src).receive_into_with_tag(&mut buf[..], t);
                    let mut it = buf.iter();
                    for &s in &held_planes {
                        for l in line(self.n[d]) {
                            planes[s][idx(l)] = it.next().copied().unwrap_or(0.0);
                        }
                    }
                }
                if let (true, Some(dst)) = (give, self.nbr[d][0]) {
                    let buf: Vec<f64> = held_planes
                        .iter()
                        .flat_map(|&s| line(0).map(|l| planes[s][idx(l)]).collect::<Vec<_>>())
                        .collect();
                    self.world.process_at_rank(dst).send_with_tag(&buf[..], t);
                }
            }
        }
        // Cells whose lower corner this rank owns.
        let [p1, p2] = [&planes[0], &planes[1]];
        let mut sum = 0.0;
        for lb in 0..self.n[axes[1]] {
            for la in 0..self.n[axes[0]] {
                let l = [la, lb];
                if !(0..2).all(|d| {
                    let g = self.off[axes[d]] + l[d];
                    g >= first[axes[d]] && g < last[axes[d]]
                }) {
                    continue;
                }
                let corners = [idx([la, lb]), idx([la + 1, lb]), idx([la, lb + 1]), idx([la + 1, lb + 1])];
                sum += corners.iter().map(|&q| p1[q]).sum::<f64>() + corners.iter().map(|&q| p2[q]).sum::<f64>();
            }
        }
        let [total] = self.sum_all([sum]);
        self.h[axes[0]] * self.h[axes[1]] * total
    }
}
