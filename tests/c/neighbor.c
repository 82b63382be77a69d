/* neighbor: the neighbourhood collectives (§7.6) on every kind of topology, and
 * MPI_Dist_graph_create, whose edges a process may give for any other.
 *   - Cartesian, periodic ring: Neighbor_allgather and _alltoall put block 2d from the -1
 *     neighbour (what it sent toward +1) and block 2d + 1 from the +1 neighbour, also at 2
 *     ranks, where both neighbours are one process;
 *   - Cartesian, 2-d, not periodic: MPI_PROC_NULL neighbours leave their blocks alone;
 *     Ineighbor_alltoallv with counts and displacements;
 *   - graph (Graph_create ring): Neighbor_allgatherv in the order of MPI_Graph_neighbors;
 *   - distributed graph from MPI_Dist_graph_create where every process gives the edges of
 *     another one, weighted: its neighbour lists and weights, then Neighbor_alltoallw with a
 *     strided datatype on the send side and Ineighbor_allgather;
 *   - no neighbours with MPI_WEIGHTS_EMPTY make a weighted graph;
 *   - a neighbourhood collective on a communicator without a topology fails. */
#include "check.h"

static int rank, size;

static void cartesian_ring(void)
{
    int dims[1] = {size}, periods[1] = {1};
    MPI_Comm ring;
    MPI_OK(MPI_Cart_create(MPI_COMM_WORLD, 1, dims, periods, 0, &ring));
    int prev = (rank + size - 1) % size, next = (rank + 1) % size;
    int got[2] = {-1, -1};
    MPI_OK(MPI_Neighbor_allgather(&rank, 1, MPI_INT, got, 1, MPI_INT, ring));
    CHECKF(got[0] == prev && got[1] == next, "allgather got %d %d, want %d %d", got[0], got[1], prev, next);
    /* Block 0 goes toward -1, block 1 toward +1: the -1 neighbour's block 1 lands in 0. */
    int send[2] = {100 * rank + 0, 100 * rank + 1}, recv[2] = {-1, -1};
    MPI_OK(MPI_Neighbor_alltoall(send, 1, MPI_INT, recv, 1, MPI_INT, ring));
    CHECKF(recv[0] == 100 * prev + 1 && recv[1] == 100 * next + 0, "alltoall got %d %d", recv[0], recv[1]);
    MPI_OK(MPI_Comm_free(&ring));
}

static void cartesian_grid(void)
{
    /* size x 1 grid, not periodic: the first and last row have a PROC_NULL neighbour, and
     * in the second dimension both neighbours are. (Periodic, that dimension would make each
     * process its own -1 and +1 neighbour; Open MPI 4.1 then swaps blocks 2 and 3 against
     * §7.6, so the case is not asserted here: kawarimi's lanes are the same as in the
     * two-process ring above, and runtime/src/comm.rs tests the neighbourhood itself.) */
    int dims[2] = {size, 1}, periods[2] = {0, 0};
    MPI_Comm grid;
    MPI_OK(MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, 0, &grid));
    int up, down;
    MPI_OK(MPI_Cart_shift(grid, 0, 1, &up, &down));
    /* Block k: k + 1 ints of value 10 * rank + k, at displacement 4 k. */
    int counts[4] = {1, 2, 3, 4}, displs[4] = {0, 4, 8, 12};
    int send[16], recv[16];
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < counts[k]; j++)
            send[displs[k] + j] = 10 * rank + k;
    for (int i = 0; i < 16; i++)
        recv[i] = -7;
    /* What block k receives comes from a neighbour's block k ^ 1 (the other direction), so
     * the receive counts are those of the paired send block. */
    int rcounts[4] = {2, 1, 4, 3};
    MPI_Request req;
    MPI_OK(MPI_Ineighbor_alltoallv(send, counts, displs, MPI_INT, recv, rcounts, displs, MPI_INT, grid, &req));
    MPI_OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    int from[4] = {up, down, MPI_PROC_NULL, MPI_PROC_NULL};
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++) {
            int want = -7;
            if (j < rcounts[k] && from[k] != MPI_PROC_NULL)
                want = 10 * from[k] + (k ^ 1);
            CHECKF(recv[displs[k] + j] == want, "block %d int %d: %d, want %d", k, j, recv[displs[k] + j], want);
        }
    MPI_OK(MPI_Comm_free(&grid));
}

static void graph_ring(void)
{
    /* Node i's neighbours: i + 1 then i - 1 (one neighbour at 2 ranks, listed twice). */
    int index[8], edges[16];
    for (int i = 0; i < size; i++) {
        index[i] = 2 * (i + 1);
        edges[2 * i] = (i + 1) % size;
        edges[2 * i + 1] = (i + size - 1) % size;
    }
    MPI_Comm g;
    MPI_OK(MPI_Graph_create(MPI_COMM_WORLD, size, index, edges, 0, &g));
    int nb[2];
    MPI_OK(MPI_Graph_neighbors(g, rank, 2, nb));
    /* From neighbour j, rank + 1 ints of its rank, placed back to front. */
    int mine[8], got[16], counts[2] = {nb[0] + 1, nb[1] + 1}, displs[2] = {8, 0};
    for (int i = 0; i < 8; i++)
        mine[i] = rank;
    for (int i = 0; i < 16; i++)
        got[i] = -1;
    MPI_OK(MPI_Neighbor_allgatherv(mine, rank + 1, MPI_INT, got, counts, displs, MPI_INT, g));
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < counts[j]; i++)
            CHECKF(got[displs[j] + i] == nb[j], "from neighbour %d: %d", nb[j], got[displs[j] + i]);
    CHECK(got[nb[1] + 1] == -1 && got[8 + nb[0] + 1] == -1);
    MPI_OK(MPI_Comm_free(&g));
}

static void dist_graph(void)
{
    /* This process gives the edges of process `other`: other -> other + 1 (weight 10 other)
     * and other -> other + 2 (weight 20 other). */
    int other = (rank + 1) % size;
    int sources[1] = {other}, degrees[1] = {2};
    int dests[2] = {(other + 1) % size, (other + 2) % size}, weights[2] = {10 * other, 20 * other};
    MPI_Comm dg;
    MPI_OK(MPI_Dist_graph_create(MPI_COMM_WORLD, 1, sources, degrees, dests, weights, MPI_INFO_NULL, 0, &dg));
    int t, in, out, w;
    MPI_OK(MPI_Topo_test(dg, &t));
    CHECKF(t == MPI_DIST_GRAPH, "Topo_test: %d", t);
    MPI_OK(MPI_Dist_graph_neighbors_count(dg, &in, &out, &w));
    CHECKF(in == 2 && out == 2 && w, "degrees %d/%d weighted %d", in, out, w);
    int s[2], sw[2], d[2], dw[2];
    MPI_OK(MPI_Dist_graph_neighbors(dg, 2, s, sw, 2, d, dw));
    /* The order of the lists is the implementation's: check them as sets of pairs. */
    int p1 = (rank + size - 1) % size, p2 = (rank + size - 2) % size;
    for (int i = 0; i < 2; i++) {
        int ok_in = (s[i] == p1 && sw[i] == 10 * p1) || (s[i] == p2 && sw[i] == 20 * p2);
        CHECKF(ok_in, "source %d weight %d", s[i], sw[i]);
        int ok_out = (d[i] == (rank + 1) % size && dw[i] == 10 * rank) || (d[i] == (rank + 2) % size && dw[i] == 20 * rank);
        CHECKF(ok_out, "destination %d weight %d", d[i], dw[i]);
    }
    CHECK(s[0] != s[1] && d[0] != d[1]);

    /* Alltoallw: to destination i, 3 ints of a strided row (every other int of `wide`),
     * tagged with the destination's index; received as 3 plain ints at byte displacements. */
    MPI_Datatype every_other;
    MPI_OK(MPI_Type_vector(3, 1, 2, MPI_INT, &every_other));
    MPI_OK(MPI_Type_commit(&every_other));
    int wide[2][6];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 6; j++)
            wide[i][j] = j % 2 ? -5 : 1000 * rank + 100 * d[i] + j / 2;
    int scounts[2] = {1, 1}, rcounts[2] = {3, 3};
    MPI_Aint sdispls[2] = {0, sizeof wide[0]}, rdispls[2] = {0, 3 * sizeof(int)};
    MPI_Datatype stypes[2] = {every_other, every_other}, rtypes[2] = {MPI_INT, MPI_INT};
    int got[6] = {-1, -1, -1, -1, -1, -1};
    MPI_OK(MPI_Neighbor_alltoallw(wide, scounts, sdispls, stypes, got, rcounts, rdispls, rtypes, dg));
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            CHECKF(got[3 * i + j] == 1000 * s[i] + 100 * rank + j, "from source %d int %d: %d", s[i], j, got[3 * i + j]);
    MPI_OK(MPI_Type_free(&every_other));

    int from[2] = {-1, -1};
    MPI_Request req;
    MPI_OK(MPI_Ineighbor_allgather(&rank, 1, MPI_INT, from, 1, MPI_INT, dg, &req));
    MPI_OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    CHECK(from[0] == s[0] && from[1] == s[1]);
    MPI_OK(MPI_Comm_free(&dg));
}

/* No neighbours, with MPI_WEIGHTS_EMPTY: a weighted graph all the same. */
static void empty_weighted(void)
{
    MPI_Comm dg;
    int none[1] = {0};
    /* Open MPI's MPI_WEIGHTS_EMPTY is an empty array, which gcc takes for one read past. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overread"
    MPI_OK(MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 0, none, MPI_WEIGHTS_EMPTY, 0, none, MPI_WEIGHTS_EMPTY,
                                          MPI_INFO_NULL, 0, &dg));
#pragma GCC diagnostic pop
    int in = -1, out = -1, w = -1;
    MPI_OK(MPI_Dist_graph_neighbors_count(dg, &in, &out, &w));
    CHECKF(in == 0 && out == 0 && w, "degrees %d/%d weighted %d", in, out, w);
    MPI_OK(MPI_Comm_free(&dg));
}

static void no_topology(void)
{
    MPI_Comm plain;
    MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &plain));
    MPI_OK(MPI_Comm_set_errhandler(plain, MPI_ERRORS_RETURN));
    /* Open MPI 4.1 raises this error on MPI_COMM_WORLD, not on the communicator given, and
     * returns an error code of another class (kawarimi's is MPI_ERR_TOPOLOGY): only the
     * failure and the untouched buffer are asserted. */
    MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int x = rank, y[8] = {-3, -3};
    int rc = MPI_Neighbor_allgather(&x, 1, MPI_INT, y, 1, MPI_INT, plain);
    MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL));
    CHECKF(rc != MPI_SUCCESS && y[0] == -3 && y[1] == -3, "rc %d, y %d %d", rc, y[0], y[1]);
    MPI_OK(MPI_Comm_free(&plain));
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    cartesian_ring();
    cartesian_grid();
    graph_ring();
    dist_graph();
    empty_weighted();
    no_topology();
    return finish("neighbor");
}
