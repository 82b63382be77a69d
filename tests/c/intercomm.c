/* intercomm: inter-communicators (MPI-3.1 6.6 and 5.2.2). The world splits into a low half
 * (group A) and a high half (group B; one more process when the size is odd), joined by
 * MPI_Intercomm_create over MPI_COMM_WORLD. Checked: remote size and group, point-to-point
 * naming remote ranks (with the status reporting them), every collective in its inter form
 * (MPI_ROOT / MPI_PROC_NULL roots, results from the *other* group), a non-commutative
 * reduction, nonblocking forms, MPI_Comm_dup, MPI_Comm_split and MPI_Comm_create of an
 * inter-communicator,
 * MPI_Intercomm_merge in both orders, MPI_Comm_compare, and the errors of calls that an
 * inter-communicator does not allow. */
#include "check.h"

static int wrank, wsize;

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    CHECKF(wsize >= 2, "needs at least 2 ranks, has %d", wsize);

    int half = wsize / 2;
    int in_a = wrank < half;
    int na = half, nb = wsize - half;
    int lsize = in_a ? na : nb, rsize = in_a ? nb : na;
    /* World rank of rank q of the remote group. */
#define REMOTE_WORLD(q) (in_a ? half + (q) : (q))

    MPI_Comm local, inter;
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, in_a, wrank, &local));
    MPI_OK(MPI_Intercomm_create(local, 0, MPI_COMM_WORLD, in_a ? half : 0, 77, &inter));
    int lrank, n, flag;
    MPI_OK(MPI_Comm_rank(inter, &lrank));
    CHECK(lrank == (in_a ? wrank : wrank - half));
    MPI_OK(MPI_Comm_size(inter, &n));
    CHECK(n == lsize);
    MPI_OK(MPI_Comm_remote_size(inter, &n));
    CHECKF(n == rsize, "remote size %d, expected %d", n, rsize);
    MPI_OK(MPI_Comm_test_inter(inter, &flag));
    CHECK(flag);
    MPI_OK(MPI_Comm_test_inter(local, &flag));
    CHECK(!flag);

    /* The remote group, translated to world ranks. */
    MPI_Group rgroup, wgroup;
    MPI_OK(MPI_Comm_remote_group(inter, &rgroup));
    MPI_OK(MPI_Comm_group(MPI_COMM_WORLD, &wgroup));
    for (int q = 0; q < rsize; q++) {
        int w;
        MPI_OK(MPI_Group_translate_ranks(rgroup, 1, &q, wgroup, &w));
        CHECKF(w == REMOTE_WORLD(q), "remote rank %d is world %d, expected %d", q, w, REMOTE_WORLD(q));
    }
    MPI_Group_free(&rgroup);
    MPI_Group_free(&wgroup);

    /* Point-to-point: rank i of each group sends to rank i % rsize of the other; every process
     * receives from all the remote ranks that send to it, by MPI_ANY_SOURCE. */
    {
        int expect = 0;
        for (int q = 0; q < rsize; q++)
            expect += (q % lsize == lrank);
        int msg = 1000 * wrank + 5;
        MPI_Request sreq;
        MPI_OK(MPI_Isend(&msg, 1, MPI_INT, lrank % rsize, 3, inter, &sreq));
        for (int k = 0; k < expect; k++) {
            int got;
            MPI_Status st;
            MPI_OK(MPI_Recv(&got, 1, MPI_INT, MPI_ANY_SOURCE, 3, inter, &st));
            CHECKF(st.MPI_SOURCE >= 0 && st.MPI_SOURCE < rsize, "source %d", st.MPI_SOURCE);
            CHECKF(got == 1000 * REMOTE_WORLD(st.MPI_SOURCE) + 5, "got %d from remote %d", got, st.MPI_SOURCE);
        }
        MPI_OK(MPI_Wait(&sreq, MPI_STATUS_IGNORE));
        int bad = 0;
        MPI_Comm_set_errhandler(inter, MPI_ERRORS_RETURN);
        int rc = MPI_Send(&bad, 1, MPI_INT, rsize, 3, inter);
        CHECKF(err_class(rc) == MPI_ERR_RANK, "send to remote rank %d gave class %d", rsize, err_class(rc));
    }

    MPI_OK(MPI_Barrier(inter));

    /* Bcast from rank 0 of A to all of B, then from the last rank of B to all of A. */
    for (int from_a = 1; from_a >= 0; from_a--) {
        int root_local = from_a ? 0 : nb - 1;
        int v[3] = {-1, -1, -1};
        int root;
        if (in_a == from_a) {
            root = lrank == root_local ? MPI_ROOT : MPI_PROC_NULL;
            if (root == MPI_ROOT)
                v[0] = 11, v[1] = 22, v[2] = 33 + from_a;
        } else {
            root = root_local;
        }
        MPI_OK(MPI_Bcast(v, 3, MPI_INT, root, inter));
        if (in_a != from_a)
            CHECKF(v[0] == 11 && v[1] == 22 && v[2] == 33 + from_a, "bcast got %d %d %d", v[0], v[1], v[2]);
        else if (root == MPI_PROC_NULL)
            CHECK(v[0] == -1);
    }

    /* Allreduce: each group gets the sum over the other group's world ranks. */
    {
        int remote_sum = 0;
        for (int q = 0; q < rsize; q++)
            remote_sum += REMOTE_WORLD(q);
        int got = -1;
        MPI_OK(MPI_Allreduce(&wrank, &got, 1, MPI_INT, MPI_SUM, inter));
        CHECKF(got == remote_sum, "allreduce %d, expected %d", got, remote_sum);
        MPI_Request r;
        got = -1;
        MPI_OK(MPI_Iallreduce(&wrank, &got, 1, MPI_INT, MPI_MAX, inter, &r));
        MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
        CHECKF(got == REMOTE_WORLD(rsize - 1), "iallreduce max %d", got);
    }

    /* Reduce with a non-commutative op: B's maps composed in rank order reach A's rank 0. */
    {
        MPI_Op op;
        MPI_OK(MPI_Op_create(affine, 0, &op));
        long pair[2] = {wrank + 2, wrank + 1}, got[2] = {-1, -1};
        int root = in_a ? (lrank == 0 ? MPI_ROOT : MPI_PROC_NULL) : 0;
        MPI_Datatype pt;
        MPI_OK(MPI_Type_contiguous(2, MPI_LONG, &pt));
        MPI_OK(MPI_Type_commit(&pt));
        MPI_OK(MPI_Reduce(pair, got, 1, pt, op, root, inter));
        if (root == MPI_ROOT) {
            long a = half + 2, b = half + 1;
            for (int w = half + 1; w < wsize; w++) {
                long na_ = (a * (w + 2)) % 1000003, nb_ = (b * (w + 2) + (w + 1)) % 1000003;
                a = na_, b = nb_;
            }
            CHECKF(got[0] == a && got[1] == b, "reduce (%ld,%ld), expected (%ld,%ld)", got[0], got[1], a, b);
        }
        MPI_Type_free(&pt);
        MPI_Op_free(&op);
    }

    /* Gather to B's rank 0 from all of A; Scatter back from it. */
    {
        int root = in_a ? 0 : (lrank == 0 ? MPI_ROOT : MPI_PROC_NULL);
        int *all = xmalloc(sizeof(int) * (size_t)na);
        int mine = 7 * wrank + 1;
        MPI_OK(MPI_Gather(&mine, 1, MPI_INT, all, 1, MPI_INT, root, inter));
        if (root == MPI_ROOT)
            for (int q = 0; q < na; q++)
                CHECKF(all[q] == 7 * q + 1, "gather[%d] = %d", q, all[q]);
        if (root == MPI_ROOT)
            for (int q = 0; q < na; q++)
                all[q] = 100 + q;
        int got = -1;
        MPI_OK(MPI_Scatter(all, 1, MPI_INT, &got, 1, MPI_INT, root, inter));
        if (in_a)
            CHECKF(got == 100 + lrank, "scatter got %d", got);
        /* Gatherv with varying counts: remote rank q sends q+1 ints. */
        int cnt = in_a ? lrank + 1 : 0;
        int *send = xmalloc(sizeof(int) * (size_t)(cnt + 1));
        for (int i = 0; i < cnt; i++)
            send[i] = 10 * wrank + i;
        int *counts = xmalloc(sizeof(int) * (size_t)na), *displs = xmalloc(sizeof(int) * (size_t)na), total = 0;
        for (int q = 0; q < na; q++)
            counts[q] = q + 1, displs[q] = total, total += q + 1;
        int *gv = xmalloc(sizeof(int) * (size_t)total);
        MPI_OK(MPI_Gatherv(send, cnt, MPI_INT, gv, counts, displs, MPI_INT, root, inter));
        if (root == MPI_ROOT)
            for (int q = 0; q < na; q++)
                for (int i = 0; i <= q; i++)
                    CHECKF(gv[displs[q] + i] == 10 * q + i, "gatherv from %d[%d] = %d", q, i, gv[displs[q] + i]);
        free(all), free(send), free(counts), free(displs), free(gv);
    }

    /* Allgather: every process gets the other group's values in its rank order. */
    {
        int *all = xmalloc(sizeof(int) * (size_t)rsize);
        int mine = wrank * wrank;
        MPI_OK(MPI_Allgather(&mine, 1, MPI_INT, all, 1, MPI_INT, inter));
        for (int q = 0; q < rsize; q++)
            CHECKF(all[q] == REMOTE_WORLD(q) * REMOTE_WORLD(q), "allgather[%d] = %d", q, all[q]);
        free(all);
    }

    /* Alltoall: part q goes to remote rank q and carries both ends' world ranks. */
    {
        int *send = xmalloc(sizeof(int) * (size_t)rsize), *recv = xmalloc(sizeof(int) * (size_t)rsize);
        for (int q = 0; q < rsize; q++)
            send[q] = 100 * wrank + REMOTE_WORLD(q);
        MPI_Request r;
        MPI_OK(MPI_Ialltoall(send, 1, MPI_INT, recv, 1, MPI_INT, inter, &r));
        MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
        for (int q = 0; q < rsize; q++)
            CHECKF(recv[q] == 100 * REMOTE_WORLD(q) + wrank, "alltoall[%d] = %d", q, recv[q]);
        free(send), free(recv);
    }

    /* Reduce_scatter_block: the other group's sum of vectors, one element per local rank. */
    {
        int got = -1;
        if (lsize == rsize) {
            int *in = xmalloc(sizeof(int) * (size_t)lsize);
            for (int i = 0; i < lsize; i++)
                in[i] = wrank + i;
            MPI_OK(MPI_Reduce_scatter_block(in, &got, 1, MPI_INT, MPI_SUM, inter));
            int expect = 0;
            for (int q = 0; q < rsize; q++)
                expect += REMOTE_WORLD(q) + lrank;
            CHECKF(got == expect, "reduce_scatter_block %d, expected %d", got, expect);
            free(in);
        }
    }

    /* Dup keeps the groups; the copy is congruent and carries its own traffic. */
    MPI_Comm dup;
    MPI_OK(MPI_Comm_dup(inter, &dup));
    int cmp;
    MPI_OK(MPI_Comm_compare(inter, dup, &cmp));
    CHECKF(cmp == MPI_CONGRUENT, "compare(inter, dup) = %d", cmp);
    MPI_OK(MPI_Comm_compare(inter, local, &cmp));
    CHECK(cmp == MPI_UNEQUAL);
    {
        int got = -1;
        MPI_OK(MPI_Allreduce(&lrank, &got, 1, MPI_INT, MPI_SUM, dup));
        CHECK(got == rsize * (rsize - 1) / 2);
    }

    /* Split by local rank: colour c pairs local rank c with remote rank c; a colour the other
     * group lacks gives MPI_COMM_NULL. */
    MPI_Comm pair;
    MPI_OK(MPI_Comm_split(dup, lrank, 0, &pair));
    if (lrank < rsize) {
        CHECK(pair != MPI_COMM_NULL);
        MPI_OK(MPI_Comm_remote_size(pair, &n));
        CHECK(n == 1);
        int got = -1;
        MPI_OK(MPI_Sendrecv(&wrank, 1, MPI_INT, 0, 9, &got, 1, MPI_INT, 0, 9, pair, MPI_STATUS_IGNORE));
        CHECKF(got == REMOTE_WORLD(lrank), "pair partner %d", got);
        MPI_Comm_free(&pair);
    } else {
        CHECK(pair == MPI_COMM_NULL);
    }

    /* Merge: A low gives world order; A high puts B first. */
    for (int a_high = 0; a_high <= 1; a_high++) {
        MPI_Comm merged;
        MPI_OK(MPI_Intercomm_merge(inter, in_a ? a_high : !a_high, &merged));
        int mr, ms;
        MPI_OK(MPI_Comm_rank(merged, &mr));
        MPI_OK(MPI_Comm_size(merged, &ms));
        CHECK(ms == wsize);
        int expect = a_high ? (in_a ? nb + lrank : lrank) : wrank;
        CHECKF(mr == expect, "merged rank %d, expected %d (A high: %d)", mr, expect, a_high);
        int sum = -1;
        MPI_OK(MPI_Allreduce(&wrank, &sum, 1, MPI_INT, MPI_SUM, merged));
        CHECK(sum == wsize * (wsize - 1) / 2);
        MPI_Comm_free(&merged);
    }

    /* MPI_Comm_create of an inter-communicator: each side names a group of its own
     * processes (here all but its rank 0 when it has others), and gets an inter-communicator
     * between the two groups; a process left out gets MPI_COMM_NULL. (Groups in the
     * parent's order: Open MPI 4.1 numbers the remote group in the parent's order whatever
     * order the other side gave, which this test does not hold against either.) */
    {
        int lkeep = lsize > 1 ? lsize - 1 : 1, rkeep = rsize > 1 ? rsize - 1 : 1;
        int ranks[64];
        for (int i = 0; i < lkeep; i++)
            ranks[i] = lsize > 1 ? i + 1 : 0;
        MPI_Group lgroup, sub;
        MPI_OK(MPI_Comm_group(inter, &lgroup));
        MPI_OK(MPI_Group_incl(lgroup, lkeep, ranks, &sub));
        MPI_Comm created;
        MPI_OK(MPI_Comm_create(inter, sub, &created));
        int in_sub = lsize == 1 || lrank != 0;
        if (!in_sub) {
            CHECK(created == MPI_COMM_NULL);
        } else {
            CHECK(created != MPI_COMM_NULL);
            int is_inter = 0, cl, cr, crank;
            MPI_OK(MPI_Comm_test_inter(created, &is_inter));
            MPI_OK(MPI_Comm_size(created, &cl));
            MPI_OK(MPI_Comm_remote_size(created, &cr));
            MPI_OK(MPI_Comm_rank(created, &crank));
            CHECKF(is_inter && cl == lkeep && cr == rkeep, "inter %d, sizes %d/%d, want %d/%d", is_inter, cl, cr,
                   lkeep, rkeep);
            CHECKF(crank == (lsize > 1 ? lrank - 1 : 0), "rank %d in the created communicator", crank);
            /* The remote group: the other side's processes but its rank 0. */
            MPI_Group rgroup_inter, rgroup_created;
            MPI_OK(MPI_Comm_remote_group(inter, &rgroup_inter));
            MPI_OK(MPI_Comm_remote_group(created, &rgroup_created));
            for (int q = 0; q < rkeep; q++) {
                int t = -1;
                MPI_OK(MPI_Group_translate_ranks(rgroup_created, 1, &q, rgroup_inter, &t));
                CHECKF(t == (rsize > 1 ? q + 1 : 0), "remote rank %d is %d of the parent's remote group", q, t);
            }
            /* Results come from the other side's group. */
            int sum = -1, want = 0;
            for (int q = 0; q < rsize; q++)
                if (rsize == 1 || q != 0)
                    want += REMOTE_WORLD(q);
            MPI_OK(MPI_Allreduce(&wrank, &sum, 1, MPI_INT, MPI_SUM, created));
            CHECKF(sum == want, "allreduce over the created inter-communicator: %d, want %d", sum, want);
            MPI_Group_free(&rgroup_inter);
            MPI_Group_free(&rgroup_created);
            MPI_Comm_free(&created);
        }
        MPI_Group_free(&sub);
        MPI_Group_free(&lgroup);
    }

    /* What an inter-communicator does not allow is refused with the right class. */
    {
        int x = 1, y;
        MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
        int rc = MPI_Scan(&x, &y, 1, MPI_INT, MPI_SUM, dup);
        CHECKF(err_class(rc) == MPI_ERR_COMM, "scan on an inter-communicator: class %d", err_class(rc));
        rc = MPI_Bcast(&x, 1, MPI_INT, rsize, dup);
        CHECKF(err_class(rc) == MPI_ERR_ROOT, "bcast to remote rank %d: class %d", rsize, err_class(rc));
        int dims[1] = {lsize}, periods[1] = {0};
        MPI_Comm cart;
        /* Open MPI reports an unusable communicator on MPI_COMM_WORLD's handler. */
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        rc = MPI_Cart_create(dup, 1, dims, periods, 0, &cart);
        CHECKF(err_class(rc) == MPI_ERR_COMM, "cart_create on an inter-communicator: class %d", err_class(rc));
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    }

    MPI_Comm_free(&dup);
    MPI_Comm_free(&inter);
    MPI_Comm_free(&local);
    return finish("intercomm");
}
