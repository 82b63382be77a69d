/* nbc: nonblocking collectives (MPI-3.1 5.12). Every I-collective against the value its
 * blocking form gives; several in flight at once on one communicator, completed in another
 * order than started; point-to-point traffic that only flows once a peer's nonblocking
 * collective has progressed (the progress rule: a rank blocked in MPI_Recv must still let
 * its pending MPI_Ibarrier advance); derived datatypes, MPI_IN_PLACE, a non-commutative user
 * op, and Test polling. */
#include "check.h"

static int rank, size;

static void wait_by_test(MPI_Request *r)
{
    int flag = 0;
    for (long spins = 0; !flag; spins++) {
        MPI_OK(MPI_Test(r, &flag, MPI_STATUS_IGNORE));
        CHECKF(spins < 100000000L, "request never completed under MPI_Test");
    }
    CHECK(*r == MPI_REQUEST_NULL);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm comm;
    MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));

    /* ---- progress: rank 0 sends to rank 1 only after its Ibarrier completes; rank 1
     * starts the Ibarrier, then blocks in MPI_Recv. Unless rank 1's barrier progresses
     * while it waits in Recv, nobody ever finishes. ---- */
    if (size >= 2) {
        MPI_Request b;
        int token = -1;
        MPI_OK(MPI_Ibarrier(comm, &b));
        if (rank == 1) {
            MPI_OK(MPI_Recv(&token, 1, MPI_INT, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            CHECK(token == 42);
            MPI_OK(MPI_Wait(&b, MPI_STATUS_IGNORE));
        } else {
            MPI_OK(MPI_Wait(&b, MPI_STATUS_IGNORE));
            if (rank == 0) {
                token = 42;
                MPI_OK(MPI_Send(&token, 1, MPI_INT, 1, 7, MPI_COMM_WORLD));
            }
        }
    }

    /* ---- several at once on one communicator, completed in reverse ---- */
    {
        enum { N = 1000 };
        int *bc = xmalloc(N * sizeof(int));
        long sum_in[3], sum_out[3], max_in = rank, max_out = -1;
        for (int i = 0; i < N; i++)
            bc[i] = rank == size - 1 ? i * 3 + 1 : -1;
        for (int k = 0; k < 3; k++)
            sum_in[k] = (rank + 1) * (k + 1);
        MPI_Request r[4];
        MPI_OK(MPI_Ibcast(bc, N, MPI_INT, size - 1, comm, &r[0]));
        MPI_OK(MPI_Iallreduce(sum_in, sum_out, 3, MPI_LONG, MPI_SUM, comm, &r[1]));
        MPI_OK(MPI_Iallreduce(&max_in, &max_out, 1, MPI_LONG, MPI_MAX, comm, &r[2]));
        MPI_OK(MPI_Ibarrier(comm, &r[3]));
        for (int k = 3; k >= 0; k--)
            MPI_OK(MPI_Wait(&r[k], MPI_STATUS_IGNORE));
        for (int i = 0; i < N; i++)
            CHECKF(bc[i] == i * 3 + 1, "ibcast element %d = %d", i, bc[i]);
        long tri = (long)size * (size + 1) / 2;
        for (int k = 0; k < 3; k++)
            CHECKF(sum_out[k] == tri * (k + 1), "iallreduce sum[%d] = %ld", k, sum_out[k]);
        CHECK(max_out == size - 1);
        free(bc);
    }

    /* ---- a blocking collective while a nonblocking one is pending ---- */
    {
        int a = rank, b_out = -1, c_out = -1;
        MPI_Request r;
        MPI_OK(MPI_Iallreduce(&a, &b_out, 1, MPI_INT, MPI_SUM, comm, &r));
        MPI_OK(MPI_Allreduce(&a, &c_out, 1, MPI_INT, MPI_MAX, comm));
        CHECK(c_out == size - 1);
        wait_by_test(&r);
        CHECK(b_out == size * (size - 1) / 2);
    }

    /* ---- reduce (non-commutative, to a non-zero root), scan, exscan ---- */
    {
        long mine[2] = {rank + 2, rank + 1}, out[2] = {0, 0}, scan[2], exscan[2] = {-7, -7};
        MPI_Op op;
        MPI_OK(MPI_Op_create(affine, 0, &op));
        MPI_Datatype pair;
        MPI_OK(MPI_Type_contiguous(2, MPI_LONG, &pair));
        MPI_OK(MPI_Type_commit(&pair));
        int root = size / 2;
        MPI_Request r[3];
        MPI_OK(MPI_Ireduce(mine, out, 1, pair, op, root, comm, &r[0]));
        MPI_OK(MPI_Iscan(mine, scan, 1, pair, op, comm, &r[1]));
        MPI_OK(MPI_Iexscan(mine, exscan, 1, pair, op, comm, &r[2]));
        MPI_OK(MPI_Waitall(3, r, MPI_STATUSES_IGNORE));
        /* the expected folds, in rank order */
        long acc[2] = {1, 0};
        for (int q = 0; q < size; q++) {
            long x[2] = {q + 2, q + 1};
            if (q == rank && rank > 0)
                CHECKF(exscan[0] == acc[0] && exscan[1] == acc[1], "iexscan at %d", rank);
            int one = 1;
            MPI_Datatype d = pair;
            long y[2] = {x[0], x[1]};
            if (q > 0) {
                affine(acc, y, &one, &d);
            }
            acc[0] = y[0];
            acc[1] = y[1];
            if (q == rank)
                CHECKF(scan[0] == acc[0] && scan[1] == acc[1], "iscan at %d", rank);
        }
        if (rank == root)
            CHECKF(out[0] == acc[0] && out[1] == acc[1], "ireduce: (%ld,%ld) vs (%ld,%ld)", out[0], out[1], acc[0], acc[1]);
        MPI_OK(MPI_Type_free(&pair));
        MPI_OK(MPI_Op_free(&op));
    }

    /* ---- gather/scatter family, with a strided (vector) receive type ---- */
    {
        int *send = xmalloc(size * 2 * sizeof(int)), *recv = xmalloc(size * 4 * sizeof(int));
        MPI_Datatype every_other;
        MPI_OK(MPI_Type_vector(2, 1, 2, MPI_INT, &every_other));
        MPI_Datatype spaced;
        MPI_OK(MPI_Type_create_resized(every_other, 0, 4 * sizeof(int), &spaced));
        MPI_OK(MPI_Type_commit(&spaced));
        for (int i = 0; i < 2; i++)
            send[i] = rank * 10 + i;
        for (int i = 0; i < size * 4; i++)
            recv[i] = -1;
        MPI_Request r;
        MPI_OK(MPI_Igather(send, 2, MPI_INT, recv, 1, spaced, 0, comm, &r));
        MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
        if (rank == 0)
            for (int q = 0; q < size; q++)
                CHECKF(recv[4 * q] == q * 10 && recv[4 * q + 2] == q * 10 + 1 && recv[4 * q + 1] == -1,
                       "igather from %d", q);
        for (int i = 0; i < size * 4; i++)
            recv[i] = -1;
        MPI_OK(MPI_Iallgather(send, 2, MPI_INT, recv, 1, spaced, comm, &r));
        MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
        for (int q = 0; q < size; q++)
            CHECKF(recv[4 * q] == q * 10 && recv[4 * q + 2] == q * 10 + 1, "iallgather from %d", q);
        /* scatterv: rank q gets q+1 ints starting at q*(q+1)/2 */
        int total = size * (size + 1) / 2;
        int *all = xmalloc(total * sizeof(int)), *counts = xmalloc(size * sizeof(int)), *displs = xmalloc(size * sizeof(int));
        for (int i = 0; i < total; i++)
            all[i] = 1000 + i;
        for (int q = 0; q < size; q++) {
            counts[q] = q + 1;
            displs[q] = q * (q + 1) / 2;
        }
        int *piece = xmalloc((rank + 1) * sizeof(int));
        MPI_OK(MPI_Iscatterv(all, counts, displs, MPI_INT, piece, rank + 1, MPI_INT, size - 1, comm, &r));
        MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
        for (int i = 0; i <= rank; i++)
            CHECK(piece[i] == 1000 + rank * (rank + 1) / 2 + i);
        /* and back with igatherv + iallgatherv in place */
        for (int i = 0; i < total; i++)
            all[i] = -1;
        for (int i = 0; i <= rank; i++)
            all[displs[rank] + i] = piece[i];
        MPI_OK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, counts, displs, MPI_INT, comm, &r));
        MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
        for (int i = 0; i < total; i++)
            CHECKF(all[i] == 1000 + i, "iallgatherv in place [%d] = %d", i, all[i]);
        free(piece);
        free(all);
        free(counts);
        free(displs);
        free(send);
        free(recv);
        MPI_OK(MPI_Type_free(&spaced));
        MPI_OK(MPI_Type_free(&every_other));
    }

    /* ---- all-to-all family and reduce-scatter ---- */
    {
        int *s = xmalloc(size * sizeof(int)), *d = xmalloc(size * sizeof(int));
        for (int q = 0; q < size; q++) {
            s[q] = rank * 100 + q;
            d[q] = -1;
        }
        MPI_Request r[2];
        int *rs = xmalloc(size * sizeof(int)), rsb = -1;
        for (int q = 0; q < size; q++)
            rs[q] = q + rank;
        MPI_OK(MPI_Ialltoall(s, 1, MPI_INT, d, 1, MPI_INT, comm, &r[0]));
        MPI_OK(MPI_Ireduce_scatter_block(rs, &rsb, 1, MPI_INT, MPI_SUM, comm, &r[1]));
        MPI_OK(MPI_Waitall(2, r, MPI_STATUSES_IGNORE));
        for (int q = 0; q < size; q++)
            CHECKF(d[q] == q * 100 + rank, "ialltoall from %d = %d", q, d[q]);
        CHECK(rsb == size * rank + size * (size - 1) / 2);
        /* alltoallv in place */
        int *counts = xmalloc(size * sizeof(int)), *displs = xmalloc(size * sizeof(int));
        for (int q = 0; q < size; q++) {
            counts[q] = 1;
            displs[q] = q;
            d[q] = rank * 100 + q;
        }
        MPI_OK(MPI_Ialltoallv(MPI_IN_PLACE, NULL, NULL, MPI_DATATYPE_NULL, d, counts, displs, MPI_INT, comm, &r[0]));
        MPI_OK(MPI_Wait(&r[0], MPI_STATUS_IGNORE));
        for (int q = 0; q < size; q++)
            CHECKF(d[q] == q * 100 + rank, "ialltoallv in place from %d = %d", q, d[q]);
        free(counts);
        free(displs);
        free(rs);
        free(s);
        free(d);
    }

    /* ---- many in flight: more than one per tag kind, interleaved with p2p ---- */
    {
        enum { K = 16 };
        int in[K], out[K];
        MPI_Request r[K];
        for (int k = 0; k < K; k++) {
            in[k] = rank * K + k;
            MPI_OK(MPI_Iallreduce(&in[k], &out[k], 1, MPI_INT, MPI_MAX, comm, &r[k]));
        }
        int right = (rank + 1) % size, left = (rank + size - 1) % size, got = -1;
        MPI_OK(MPI_Sendrecv(&rank, 1, MPI_INT, right, 3, &got, 1, MPI_INT, left, 3, comm, MPI_STATUS_IGNORE));
        CHECK(got == left);
        MPI_OK(MPI_Waitall(K, r, MPI_STATUSES_IGNORE));
        for (int k = 0; k < K; k++)
            CHECKF(out[k] == (size - 1) * K + k, "iallreduce %d = %d", k, out[k]);
    }

    /* ---- MPI_Comm_idup: two pending at once, a blocking dup and a collective between, and
     * the attributes copied by their callback ---- */
    {
        int key, value = 5;
        MPI_OK(MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, &key, NULL));
        MPI_OK(MPI_Comm_set_attr(comm, key, &value));
        MPI_Comm a, b, c;
        MPI_Request r[2];
        MPI_OK(MPI_Comm_idup(comm, &a, &r[0]));
        MPI_OK(MPI_Comm_idup(comm, &b, &r[1]));
        MPI_OK(MPI_Comm_dup(comm, &c));
        int one = 1, sum = 0;
        MPI_OK(MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, comm));
        CHECK(sum == size);
        MPI_OK(MPI_Waitall(2, r, MPI_STATUSES_IGNORE));
        MPI_Comm all[3] = {a, b, c};
        for (int i = 0; i < 3; i++) {
            int res, flag = 0, *got = NULL;
            MPI_OK(MPI_Comm_compare(all[i], comm, &res));
            CHECK(res == MPI_CONGRUENT);
            MPI_OK(MPI_Comm_get_attr(all[i], key, &got, &flag));
            CHECK(flag && got == &value);
            for (int j = 0; j < i; j++) {
                MPI_OK(MPI_Comm_compare(all[i], all[j], &res));
                CHECK(res == MPI_CONGRUENT);
            }
        }
        /* traffic on the three must stay apart: the same tag on each, received in reverse */
        int right = (rank + 1) % size, left = (rank + size - 1) % size, got[3] = {-1, -1, -1};
        MPI_Request q[6];
        for (int i = 0; i < 3; i++)
            MPI_OK(MPI_Irecv(&got[i], 1, MPI_INT, left, 0, all[2 - i], &q[i]));
        for (int i = 0; i < 3; i++) {
            int v = 100 * i + rank;
            MPI_OK(MPI_Isend(&v, 1, MPI_INT, right, 0, all[2 - i], &q[3 + i]));
            MPI_OK(MPI_Wait(&q[3 + i], MPI_STATUS_IGNORE));
        }
        MPI_OK(MPI_Waitall(3, q, MPI_STATUSES_IGNORE));
        for (int i = 0; i < 3; i++)
            CHECKF(got[i] == 100 * i + left, "message on idup'ed communicator %d: %d", i, got[i]);
        for (int i = 0; i < 3; i++)
            MPI_OK(MPI_Comm_free(&all[i]));
        MPI_OK(MPI_Comm_free_keyval(&key));
    }

    /* ---- MPI_Comm_idup of overlapping communicators in opposite orders: each rank dups the
     * communicator it shares with its right neighbour, then the one it shares with its left,
     * so every pair dups its communicator first at one end and second at the other (blocking
     * dups would deadlock). Both complete, with contexts of their own. ---- */
    if (size >= 2) {
        MPI_Comm with_right = MPI_COMM_NULL, with_left = MPI_COMM_NULL;
        for (int i = 0; i < size; i++) {
            int lo = i, hi = (i + 1) % size, member = rank == lo || rank == hi;
            MPI_Comm pair;
            MPI_OK(MPI_Comm_split(comm, member ? 0 : MPI_UNDEFINED, rank == lo ? 0 : 1, &pair));
            if (rank == lo)
                with_right = pair;
            else if (rank == hi)
                with_left = pair;
        }
        MPI_Comm dup_right, dup_left;
        MPI_Request r[2];
        MPI_OK(MPI_Comm_idup(with_right, &dup_right, &r[0]));
        MPI_OK(MPI_Comm_idup(with_left, &dup_left, &r[1]));
        MPI_OK(MPI_Waitall(2, r, MPI_STATUSES_IGNORE));
        int res;
        MPI_OK(MPI_Comm_compare(dup_right, with_right, &res));
        CHECK(res == MPI_CONGRUENT);
        MPI_OK(MPI_Comm_compare(dup_left, with_left, &res));
        CHECK(res == MPI_CONGRUENT);
        /* The same tag on all four, received in the other order than sent: each message must
         * arrive on the communicator it was sent on. In a pair the left end is rank 0. */
        int mine[2] = {1000 + rank, 2000 + rank}, got[2] = {-1, -1}, left = (rank + size - 1) % size;
        MPI_Request q[4];
        MPI_OK(MPI_Irecv(&got[0], 1, MPI_INT, 0, 0, with_left, &q[0]));
        MPI_OK(MPI_Irecv(&got[1], 1, MPI_INT, 0, 0, dup_left, &q[1]));
        MPI_OK(MPI_Isend(&mine[1], 1, MPI_INT, 1, 0, dup_right, &q[2]));
        MPI_OK(MPI_Isend(&mine[0], 1, MPI_INT, 1, 0, with_right, &q[3]));
        MPI_OK(MPI_Waitall(4, q, MPI_STATUSES_IGNORE));
        CHECKF(got[0] == 1000 + left && got[1] == 2000 + left, "overlapping idups: got %d and %d from %d", got[0],
               got[1], left);
        MPI_Comm all[4] = {with_right, with_left, dup_right, dup_left};
        for (int i = 0; i < 4; i++)
            MPI_OK(MPI_Comm_free(&all[i]));
    }

    /* A nonblocking collective and a blocking one started in different orders on different
     * ranks: rank 0 starts an Iallreduce and then enters a Barrier, the others enter the
     * Barrier first. Open MPI matches blocking and nonblocking collectives apart, and
     * programs (mpi4py's Iagree test) rely on it. */
    {
        int in = rank + 1, sum = -1;
        MPI_Request r;
        if (rank == 0) {
            MPI_OK(MPI_Iallreduce(&in, &sum, 1, MPI_INT, MPI_SUM, comm, &r));
            MPI_OK(MPI_Barrier(comm));
        } else {
            MPI_OK(MPI_Barrier(comm));
            MPI_OK(MPI_Iallreduce(&in, &sum, 1, MPI_INT, MPI_SUM, comm, &r));
        }
        MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
        CHECKF(sum == size * (size + 1) / 2, "iallreduce across a barrier: %d", sum);
    }

    MPI_OK(MPI_Comm_free(&comm));
    return finish("nbc");
}
