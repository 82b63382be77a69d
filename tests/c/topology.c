/* topology: Dims_create, Cart_create (periodic and not, reorder = 0),
 * Cart_coords/Cart_rank/Cart_shift with a halo exchange over Sendrecv,
 * Cart_sub, Cart_get, Cartdim_get, Topo_test; a graph topology (Graph_create on all but
 * the last rank: a ring with a chord, its queries, Graph_map) and a distributed graph
 * (Dist_graph_create_adjacent: each rank hears from its two neighbours on a ring and
 * speaks to the next, weighted; then unweighted), with a message along every edge. */
#include "check.h"

static int rank, size;

static void dims_tests(void)
{
    int d2[2] = {0, 0};
    MPI_OK(MPI_Dims_create(6, 2, d2));
    CHECKF(d2[0] == 3 && d2[1] == 2, "Dims_create(6,2) = %d x %d", d2[0], d2[1]);
    int d3[3] = {0, 0, 0};
    MPI_OK(MPI_Dims_create(12, 3, d3));
    CHECKF(d3[0] == 3 && d3[1] == 2 && d3[2] == 2, "Dims_create(12,3) = %d %d %d", d3[0], d3[1], d3[2]);
    int f3[3] = {0, 3, 0};
    MPI_OK(MPI_Dims_create(24, 3, f3));
    CHECKF(f3[0] == 4 && f3[1] == 3 && f3[2] == 2, "Dims_create(24,3,{0,3,0}) = %d %d %d", f3[0], f3[1], f3[2]);
    int p[2] = {0, 0};
    MPI_OK(MPI_Dims_create(7, 2, p));
    CHECK(p[0] == 7 && p[1] == 1);
    int one[1] = {0};
    MPI_OK(MPI_Dims_create(5, 1, one));
    CHECK(one[0] == 5);
    int sq[2] = {0, 0};
    MPI_OK(MPI_Dims_create(16, 2, sq));
    CHECK(sq[0] == 4 && sq[1] == 4);
    /* for the actual size: product matches, non-increasing */
    int dn[2] = {0, 0};
    MPI_OK(MPI_Dims_create(size, 2, dn));
    CHECK(dn[0] * dn[1] == size && dn[0] >= dn[1]);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);
    int status;

    dims_tests();
    MPI_OK(MPI_Topo_test(MPI_COMM_WORLD, &status));
    CHECK(status == MPI_UNDEFINED);

    /* ---- 2D grid, periodic in dim 0, not in dim 1 ---- */
    int dims[2] = {0, 0}, periods[2] = {1, 0};
    MPI_OK(MPI_Dims_create(size, 2, dims));
    MPI_Comm cart;
    MPI_OK(MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, 0, &cart));
    CHECK(cart != MPI_COMM_NULL);
    MPI_OK(MPI_Topo_test(cart, &status));
    CHECK(status == MPI_CART);
    int nd, r;
    MPI_OK(MPI_Cartdim_get(cart, &nd));
    CHECK(nd == 2);
    MPI_OK(MPI_Comm_rank(cart, &r));
    CHECK(r == rank); /* reorder = 0 */
    int gd[2], gp[2], gc[2], coords[2];
    MPI_OK(MPI_Cart_get(cart, 2, gd, gp, gc));
    CHECK(gd[0] == dims[0] && gd[1] == dims[1] && gp[0] == 1 && gp[1] == 0);
    /* row-major: rank = c0 * dims[1] + c1 */
    CHECKF(gc[0] == rank / dims[1] && gc[1] == rank % dims[1], "coords (%d,%d)", gc[0], gc[1]);
    for (int q = 0; q < size; q++) {
        MPI_OK(MPI_Cart_coords(cart, q, 2, coords));
        CHECK(coords[0] == q / dims[1] && coords[1] == q % dims[1]);
        int back;
        MPI_OK(MPI_Cart_rank(cart, coords, &back));
        CHECK(back == q);
    }
    /* the periodic dimension wraps out-of-range coordinates */
    {
        int c[2] = {gc[0] + dims[0], gc[1]}, back;
        MPI_OK(MPI_Cart_rank(cart, c, &back));
        CHECK(back == rank);
        c[0] = gc[0] - dims[0];
        MPI_OK(MPI_Cart_rank(cart, c, &back));
        CHECK(back == rank);
    }

    /* shifts and a halo exchange in both directions of both dimensions */
    for (int dim = 0; dim < 2; dim++) {
        for (int disp = -1; disp <= 1; disp += 2) {
            int src, dst;
            MPI_OK(MPI_Cart_shift(cart, dim, disp, &src, &dst));
            int ec[2] = {gc[0], gc[1]}, es, ed;
            /* expected dest */
            ec[dim] = gc[dim] + disp;
            if (dim == 0)
                ec[0] = (ec[0] + dims[0]) % dims[0];
            if (ec[dim] < 0 || ec[dim] >= dims[dim])
                ed = MPI_PROC_NULL;
            else
                ed = ec[0] * dims[1] + ec[1];
            ec[0] = gc[0];
            ec[1] = gc[1];
            ec[dim] = gc[dim] - disp;
            if (dim == 0)
                ec[0] = (ec[0] + dims[0]) % dims[0];
            if (ec[dim] < 0 || ec[dim] >= dims[dim])
                es = MPI_PROC_NULL;
            else
                es = ec[0] * dims[1] + ec[1];
            CHECKF(src == es && dst == ed, "Cart_shift dim %d disp %d: (%d,%d) expected (%d,%d)", dim, disp, src,
                   dst, es, ed);
            /* halo: send my 8-element edge to dst, receive src's into my halo */
            int edge[8], halo[8];
            for (int i = 0; i < 8; i++) {
                edge[i] = rank * 100 + i;
                halo[i] = -1;
            }
            MPI_Status st;
            MPI_OK(MPI_Sendrecv(edge, 8, MPI_INT, dst, 10 + dim, halo, 8, MPI_INT, src, 10 + dim, cart, &st));
            for (int i = 0; i < 8; i++)
                CHECK(halo[i] == (src == MPI_PROC_NULL ? -1 : src * 100 + i));
            CHECK(st.MPI_SOURCE == src);
        }
    }
    /* a larger shift in the periodic dimension */
    {
        int src, dst;
        MPI_OK(MPI_Cart_shift(cart, 0, dims[0] + 1, &src, &dst));
        int c[2] = {(gc[0] + 1) % dims[0], gc[1]}, e;
        MPI_OK(MPI_Cart_rank(cart, c, &e));
        CHECK(dst == e);
    }

    /* ---- Cart_sub: keep dim 1 -> rows; keep dim 0 -> columns ---- */
    {
        int keep_row[2] = {0, 1}, keep_col[2] = {1, 0};
        MPI_Comm row, col;
        MPI_OK(MPI_Cart_sub(cart, keep_row, &row));
        MPI_OK(MPI_Cart_sub(cart, keep_col, &col));
        int n, rr;
        MPI_OK(MPI_Comm_size(row, &n));
        MPI_OK(MPI_Comm_rank(row, &rr));
        CHECK(n == dims[1] && rr == gc[1]);
        MPI_OK(MPI_Comm_size(col, &n));
        MPI_OK(MPI_Comm_rank(col, &rr));
        CHECK(n == dims[0] && rr == gc[0]);
        MPI_OK(MPI_Topo_test(row, &status));
        CHECK(status == MPI_CART);
        int sd, sp, sc;
        MPI_OK(MPI_Cartdim_get(col, &nd));
        CHECK(nd == 1);
        MPI_OK(MPI_Cart_get(col, 1, &sd, &sp, &sc));
        CHECK(sd == dims[0] && sp == 1 && sc == gc[0]);
        /* sum of world ranks along my row */
        int sum = 0, expect = 0;
        MPI_OK(MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, row));
        for (int j = 0; j < dims[1]; j++)
            expect += gc[0] * dims[1] + j;
        CHECK(sum == expect);
        MPI_OK(MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, col));
        expect = 0;
        for (int i = 0; i < dims[0]; i++)
            expect += i * dims[1] + gc[1];
        CHECK(sum == expect);
        /* keep nothing: a 0-dimensional, single-rank communicator */
        int keep_none[2] = {0, 0};
        MPI_Comm pt;
        MPI_OK(MPI_Cart_sub(cart, keep_none, &pt));
        MPI_OK(MPI_Comm_size(pt, &n));
        CHECK(n == 1);
        MPI_OK(MPI_Comm_free(&pt));
        MPI_OK(MPI_Comm_free(&row));
        MPI_OK(MPI_Comm_free(&col));
    }
    MPI_OK(MPI_Comm_free(&cart));

    /* ---- a 1D non-periodic line over size-1 ranks: the last rank is out ---- */
    {
        int d = size - 1, per = 0;
        MPI_Comm line;
        MPI_OK(MPI_Cart_create(MPI_COMM_WORLD, 1, &d, &per, 0, &line));
        if (rank == size - 1) {
            CHECK(line == MPI_COMM_NULL);
        } else {
            int src, dst, v = rank, got = -1;
            MPI_OK(MPI_Cart_shift(line, 0, 1, &src, &dst));
            CHECK(src == (rank == 0 ? MPI_PROC_NULL : rank - 1));
            CHECK(dst == (rank == size - 2 ? MPI_PROC_NULL : rank + 1));
            MPI_OK(MPI_Sendrecv(&v, 1, MPI_INT, dst, 0, &got, 1, MPI_INT, src, 0, line, MPI_STATUS_IGNORE));
            CHECK(got == (src == MPI_PROC_NULL ? -1 : src));
            MPI_OK(MPI_Comm_free(&line));
        }
    }

    /* ---- 3D fully periodic torus ---- */
    {
        int d3[3] = {0, 0, 0}, p3[3] = {1, 1, 1};
        MPI_OK(MPI_Dims_create(size, 3, d3));
        CHECK(d3[0] * d3[1] * d3[2] == size);
        MPI_Comm t;
        MPI_OK(MPI_Cart_create(MPI_COMM_WORLD, 3, d3, p3, 0, &t));
        int c3[3];
        MPI_OK(MPI_Cart_coords(t, rank, 3, c3));
        CHECK(rank == (c3[0] * d3[1] + c3[1]) * d3[2] + c3[2]);
        for (int dim = 0; dim < 3; dim++) {
            int src, dst, v = rank, got = -1;
            MPI_OK(MPI_Cart_shift(t, dim, 1, &src, &dst));
            int cc[3] = {c3[0], c3[1], c3[2]}, e;
            cc[dim] = (cc[dim] + 1) % d3[dim];
            MPI_OK(MPI_Cart_rank(t, cc, &e));
            CHECK(dst == e);
            MPI_OK(MPI_Sendrecv(&v, 1, MPI_INT, dst, 3, &got, 1, MPI_INT, src, 3, t, MPI_STATUS_IGNORE));
            CHECK(got == src);
        }
        MPI_OK(MPI_Comm_free(&t));
    }

    /* ---- Cart_map ---- */
    {
        int d = size, per = 0, newrank;
        MPI_OK(MPI_Cart_map(MPI_COMM_WORLD, 1, &d, &per, &newrank));
        CHECK(newrank >= 0 && newrank < size);
    }

    /* ---- Graph_create: a ring over ranks 0..n-1 (n = size - 1 when size > 2, leaving the
     * last rank out), plus a chord 0 -> n/2 when n > 2. ---- */
    {
        int n = size > 2 ? size - 1 : size;
        int index[64], edges[192], e = 0;
        for (int i = 0; i < n; i++) {
            edges[e++] = (i + 1) % n;
            edges[e++] = (i + n - 1) % n;
            if (i == 0 && n > 2)
                edges[e++] = n / 2;
            index[i] = e;
        }
        MPI_Comm g;
        MPI_OK(MPI_Graph_create(MPI_COMM_WORLD, n, index, edges, 0, &g));
        if (rank >= n) {
            CHECK(g == MPI_COMM_NULL);
        } else {
            int t, nn, ne, cnt, nb[8], gi[64], ge[192];
            MPI_OK(MPI_Topo_test(g, &t));
            CHECKF(t == MPI_GRAPH, "Topo_test of a graph: %d", t);
            MPI_OK(MPI_Graphdims_get(g, &nn, &ne));
            CHECKF(nn == n && ne == e, "Graphdims_get: %d nodes, %d edges", nn, ne);
            MPI_OK(MPI_Graph_get(g, n, e, gi, ge));
            CHECK(memcmp(gi, index, n * sizeof(int)) == 0 && memcmp(ge, edges, e * sizeof(int)) == 0);
            MPI_OK(MPI_Graph_neighbors_count(g, rank, &cnt));
            int want = 2 + (rank == 0 && n > 2);
            CHECKF(cnt == want, "rank %d has %d neighbours, want %d", rank, cnt, want);
            MPI_OK(MPI_Graph_neighbors(g, rank, 8, nb));
            CHECK(nb[0] == (rank + 1) % n && nb[1] == (rank + n - 1) % n);
            int newrank;
            MPI_OK(MPI_Graph_map(MPI_COMM_WORLD, n, index, edges, &newrank));
            CHECK(newrank == rank);
            MPI_Comm d;
            MPI_OK(MPI_Comm_dup(g, &d));
            MPI_OK(MPI_Topo_test(d, &t));
            CHECKF(t == MPI_GRAPH, "a duplicate keeps the graph: %d", t);
            MPI_OK(MPI_Comm_free(&d));
            MPI_OK(MPI_Comm_free(&g));
        }
    }

    /* ---- Dist_graph_create_adjacent: hear from both ring neighbours, speak to the next. ---- */
    for (int weighted = 1; weighted >= 0; weighted--) {
        int next = (rank + 1) % size, prev = (rank + size - 1) % size;
        int src[2] = {prev, next}, sw[2] = {10 * prev, 10 * next}, dst[2] = {next, prev}, dw[2] = {1, 2};
        MPI_Comm dg;
        MPI_OK(MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 2, src, weighted ? sw : MPI_UNWEIGHTED, 2, dst,
                                              weighted ? dw : MPI_UNWEIGHTED, MPI_INFO_NULL, 0, &dg));
        int t, in, out, w, s2[2], sw2[2] = {-1, -1}, d2[2], dw2[2] = {-1, -1};
        MPI_OK(MPI_Topo_test(dg, &t));
        CHECKF(t == MPI_DIST_GRAPH, "Topo_test of a distributed graph: %d", t);
        MPI_OK(MPI_Dist_graph_neighbors_count(dg, &in, &out, &w));
        CHECKF(in == 2 && out == 2 && (w != 0) == weighted, "degrees %d/%d, weighted %d", in, out, w);
        MPI_OK(MPI_Dist_graph_neighbors(dg, 2, s2, weighted ? sw2 : MPI_UNWEIGHTED, 2, d2, weighted ? dw2 : MPI_UNWEIGHTED));
        CHECK(s2[0] == prev && s2[1] == next && d2[0] == next && d2[1] == prev);
        if (weighted)
            CHECK(sw2[0] == 10 * prev && sw2[1] == 10 * next && dw2[0] == 1 && dw2[1] == 2);
        /* A message along each out-edge, received from each in-edge, by rank in dg. */
        int got[2] = {-1, -1};
        MPI_Request r[4];
        for (int i = 0; i < 2; i++)
            MPI_OK(MPI_Irecv(&got[i], 1, MPI_INT, s2[i], i, dg, &r[i]));
        /* To the next rank I am its previous one (tag 0), to the previous its next (tag 1). */
        MPI_OK(MPI_Isend(&rank, 1, MPI_INT, d2[0], 0, dg, &r[2]));
        MPI_OK(MPI_Isend(&rank, 1, MPI_INT, d2[1], 1, dg, &r[3]));
        MPI_OK(MPI_Waitall(4, r, MPI_STATUSES_IGNORE));
        CHECK(got[0] == prev && got[1] == next);
        MPI_OK(MPI_Comm_free(&dg));
    }

    return finish("topology");
}
