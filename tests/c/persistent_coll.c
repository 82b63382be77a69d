/* Persistent collectives (MPI-4.0 §6.12), as Open MPI 4.1 exports them: MPIX_*_init from
 * <mpi-ext.h>. Each request is made once and started several rounds, with the send buffers
 * changed between starts (a start reads them then, not at the init call); the user datatype
 * and op of one are freed right after its init call (the request keeps them: the standard lets
 * a program free them; native Open MPI 4.1 crashes at the next start when the op goes first,
 * so natively the op is freed after the request instead); several run
 * at once through MPI_Startall; a completed request is inactive, so a wait on it returns at
 * once, and it starts again. Neighbourhood forms run on a periodic ring. */
#include "check.h"

#include <mpi-ext.h> /* after <mpi.h> (in check.h), which it builds on */

#define ROUNDS 4

static int me, np;

static void sum_pairs(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    const int *a = in;
    int *b = inout;
    for (int i = 0; i < 2 * *len; i++)
        b[i] += a[i];
}

/* Value of element i of rank r's send buffer in round k. */
static int val(int r, int k, int i) { return 1000 * r + 100 * k + i; }

static void bcast_and_reduce(void)
{
    int buf[8], in[8], out[8];
    MPI_Request bcast, allreduce;
    MPI_OK(MPIX_Bcast_init(buf, 8, MPI_INT, np - 1, MPI_COMM_WORLD, MPI_INFO_NULL, &bcast));
    MPI_OK(MPIX_Allreduce_init(in, out, 8, MPI_INT, MPI_SUM, MPI_COMM_WORLD, MPI_INFO_NULL, &allreduce));
    for (int k = 0; k < ROUNDS; k++) {
        for (int i = 0; i < 8; i++) {
            buf[i] = me == np - 1 ? val(me, k, i) : -1;
            in[i] = val(me, k, i);
            out[i] = -1;
        }
        MPI_OK(MPI_Start(&bcast));
        MPI_OK(MPI_Start(&allreduce));
        MPI_Status st;
        MPI_OK(MPI_Wait(&bcast, &st));
        MPI_OK(MPI_Wait(&allreduce, MPI_STATUS_IGNORE));
        CHECK(bcast != MPI_REQUEST_NULL && allreduce != MPI_REQUEST_NULL);
        for (int i = 0; i < 8; i++) {
            CHECKF(buf[i] == val(np - 1, k, i), "round %d bcast[%d] = %d", k, i, buf[i]);
            int want = 0;
            for (int r = 0; r < np; r++)
                want += val(r, k, i);
            CHECKF(out[i] == want, "round %d allreduce[%d] = %d, want %d", k, i, out[i], want);
        }
        /* Inactive now: a wait returns at once. */
        MPI_OK(MPI_Wait(&bcast, MPI_STATUS_IGNORE));
        int flag = 0;
        MPI_OK(MPI_Test(&allreduce, &flag, MPI_STATUS_IGNORE));
        CHECK(flag);
    }
    MPI_OK(MPI_Request_free(&bcast));
    MPI_OK(MPI_Request_free(&allreduce));
    CHECK(bcast == MPI_REQUEST_NULL);
}

/* Whether the library is kawarimi (which keeps a freed op for the request that uses it). */
static int under_kawarimi(void)
{
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len;
    MPI_OK(MPI_Get_library_version(version, &len));
    return strstr(version, "kawarimi") != NULL;
}

/* A user datatype (two ints) and a user op freed right after the init call. */
static void freed_type_and_op(void)
{
    int op_first = under_kawarimi();
    MPI_Datatype pair;
    MPI_Op op;
    MPI_OK(MPI_Type_contiguous(2, MPI_INT, &pair));
    MPI_OK(MPI_Type_commit(&pair));
    MPI_OK(MPI_Op_create(sum_pairs, 1, &op));
    int in[6], out[6];
    MPI_Request req;
    MPI_OK(MPIX_Reduce_init(in, out, 3, pair, op, 0, MPI_COMM_WORLD, MPI_INFO_NULL, &req));
    MPI_OK(MPI_Type_free(&pair));
    if (op_first)
        MPI_OK(MPI_Op_free(&op));
    for (int k = 0; k < ROUNDS; k++) {
        for (int i = 0; i < 6; i++) {
            in[i] = val(me, k, i);
            out[i] = -1;
        }
        MPI_OK(MPI_Start(&req));
        MPI_OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
        if (me == 0)
            for (int i = 0; i < 6; i++) {
                int want = 0;
                for (int r = 0; r < np; r++)
                    want += val(r, k, i);
                CHECKF(out[i] == want, "round %d reduce[%d] = %d, want %d", k, i, out[i], want);
            }
    }
    MPI_OK(MPI_Request_free(&req));
    if (!op_first)
        MPI_OK(MPI_Op_free(&op));
}

/* Several at once through MPI_Startall and MPI_Waitall. */
static void started_together(void)
{
    int *a2a_in = xmalloc(sizeof(int) * np), *a2a_out = xmalloc(sizeof(int) * np);
    int *gathered = xmalloc(sizeof(int) * np), *all = xmalloc(sizeof(int) * np);
    int *counts = xmalloc(sizeof(int) * np), *displs = xmalloc(sizeof(int) * np);
    for (int r = 0; r < np; r++) {
        counts[r] = 1;
        displs[r] = np - 1 - r; /* reversed placement */
    }
    int mine = 0, scanned = 0, exscanned = -7, rsb_in[64], rsb_out = -1;
    CHECK(np <= 64);
    MPI_Request reqs[7];
    MPI_OK(MPIX_Barrier_init(MPI_COMM_WORLD, MPI_INFO_NULL, &reqs[0]));
    MPI_OK(MPIX_Alltoall_init(a2a_in, 1, MPI_INT, a2a_out, 1, MPI_INT, MPI_COMM_WORLD, MPI_INFO_NULL, &reqs[1]));
    MPI_OK(MPIX_Gather_init(&mine, 1, MPI_INT, gathered, 1, MPI_INT, 0, MPI_COMM_WORLD, MPI_INFO_NULL, &reqs[2]));
    MPI_OK(MPIX_Allgatherv_init(&mine, 1, MPI_INT, all, counts, displs, MPI_INT, MPI_COMM_WORLD, MPI_INFO_NULL, &reqs[3]));
    MPI_OK(MPIX_Scan_init(&mine, &scanned, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, MPI_INFO_NULL, &reqs[4]));
    MPI_OK(MPIX_Exscan_init(&mine, &exscanned, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, MPI_INFO_NULL, &reqs[5]));
    MPI_OK(MPIX_Reduce_scatter_block_init(rsb_in, &rsb_out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, MPI_INFO_NULL,
                                          &reqs[6]));
    for (int k = 0; k < ROUNDS; k++) {
        mine = val(me, k, 0);
        for (int r = 0; r < np; r++) {
            a2a_in[r] = val(me, k, r);
            rsb_in[r] = val(me, k, r);
        }
        MPI_OK(MPI_Startall(7, reqs));
        MPI_OK(MPI_Waitall(7, reqs, MPI_STATUSES_IGNORE));
        int prefix = 0;
        for (int r = 0; r < np; r++) {
            CHECKF(a2a_out[r] == val(r, k, me), "round %d alltoall[%d] = %d", k, r, a2a_out[r]);
            if (me == 0)
                CHECKF(gathered[r] == val(r, k, 0), "round %d gather[%d] = %d", k, r, gathered[r]);
            CHECKF(all[np - 1 - r] == val(r, k, 0), "round %d allgatherv[%d] = %d", k, np - 1 - r, all[np - 1 - r]);
            if (r < me)
                prefix += val(r, k, 0);
        }
        CHECKF(scanned == prefix + mine, "round %d scan = %d", k, scanned);
        if (me > 0)
            CHECKF(exscanned == prefix, "round %d exscan = %d, want %d", k, exscanned, prefix);
        CHECKF(rsb_out == val(np - 1, k, me), "round %d reduce_scatter_block = %d", k, rsb_out);
    }
    for (int i = 0; i < 7; i++)
        MPI_OK(MPI_Request_free(&reqs[i]));
    free(a2a_in);
    free(a2a_out);
    free(gathered);
    free(all);
    free(counts);
    free(displs);
}

/* Neighbourhood forms on a periodic ring: block 0 from the left neighbour, 1 from the right. */
static void neighbours(void)
{
    MPI_Comm ring;
    int dims[1] = {np}, periods[1] = {1};
    MPI_OK(MPI_Cart_create(MPI_COMM_WORLD, 1, dims, periods, 0, &ring));
    int rank, left, right;
    MPI_OK(MPI_Comm_rank(ring, &rank));
    MPI_OK(MPI_Cart_shift(ring, 0, 1, &left, &right));
    int mine = 0, got[2], sendto[2], recvd[2];
    MPI_Request req[2];
    MPI_OK(MPIX_Neighbor_allgather_init(&mine, 1, MPI_INT, got, 1, MPI_INT, ring, MPI_INFO_NULL, &req[0]));
    MPI_OK(MPIX_Neighbor_alltoall_init(sendto, 1, MPI_INT, recvd, 1, MPI_INT, ring, MPI_INFO_NULL, &req[1]));
    for (int k = 0; k < ROUNDS; k++) {
        mine = val(rank, k, 0);
        sendto[0] = val(rank, k, 1); /* to the left */
        sendto[1] = val(rank, k, 2); /* to the right */
        MPI_OK(MPI_Startall(2, req));
        MPI_OK(MPI_Waitall(2, req, MPI_STATUSES_IGNORE));
        if (np > 2) {
            CHECKF(got[0] == val(left, k, 0) && got[1] == val(right, k, 0), "round %d neighbor_allgather %d %d", k,
                   got[0], got[1]);
            /* The left neighbour sent its block 1 (to its right: this rank); the right one its block 0. */
            CHECKF(recvd[0] == val(left, k, 2) && recvd[1] == val(right, k, 1), "round %d neighbor_alltoall %d %d",
                   k, recvd[0], recvd[1]);
        }
    }
    MPI_OK(MPI_Request_free(&req[0]));
    MPI_OK(MPI_Request_free(&req[1]));
    MPI_OK(MPI_Comm_free(&ring));
}

int main(int argc, char **argv)
{
    MPI_OK(MPI_Init(&argc, &argv));
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &np));
    bcast_and_reduce();
    freed_type_and_op();
    started_together();
    neighbours();
    return finish("persistent_coll");
}
