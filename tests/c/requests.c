/* requests: Wait/Test, Waitall/Testall, Waitany/Testany, Waitsome/Testsome,
 * Request_free of a send, MPI_REQUEST_NULL in arrays, MPI_STATUS(ES)_IGNORE,
 * persistent requests. */
#include "check.h"

#define K 8

static int rank, size, next, prev;

static void check_empty(const MPI_Status *st, const char *what)
{
    int c = -1;
    /* an "empty" status: source ANY_SOURCE, tag ANY_TAG, count 0 */
    CHECKF(st->MPI_SOURCE == MPI_ANY_SOURCE, "%s: source %d", what, st->MPI_SOURCE);
    CHECKF(st->MPI_TAG == MPI_ANY_TAG, "%s: tag %d", what, st->MPI_TAG);
    MPI_OK(MPI_Get_count(st, MPI_INT, &c));
    CHECKF(c == 0, "%s: count %d", what, c);
}

/* Post K receives from prev (tags base..base+K-1) and K sends to next. */
static void post(int *rbuf, int *sbuf, MPI_Request *rr, MPI_Request *sr, int base)
{
    for (int i = 0; i < K; i++) {
        rbuf[i] = -1;
        MPI_OK(MPI_Irecv(&rbuf[i], 1, MPI_INT, prev, base + i, MPI_COMM_WORLD, &rr[i]));
    }
    for (int i = 0; i < K; i++) {
        sbuf[i] = rank * 1000 + base + i;
        MPI_OK(MPI_Isend(&sbuf[i], 1, MPI_INT, next, base + i, MPI_COMM_WORLD, &sr[i]));
    }
}

static void check_recv(const int *rbuf, int base)
{
    for (int i = 0; i < K; i++)
        CHECKF(rbuf[i] == prev * 1000 + base + i, "recv %d got %d", i, rbuf[i]);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);
    next = (rank + 1) % size;
    prev = (rank + size - 1) % size;
    int rbuf[K], sbuf[K];
    MPI_Request rr[K], sr[K];
    MPI_Status st, sts[K];
    int flag, idx, outcount, indices[K];

    /* Wait / Test on null requests: immediate, empty status. */
    {
        MPI_Request n = MPI_REQUEST_NULL;
        MPI_OK(MPI_Wait(&n, &st));
        check_empty(&st, "Wait(REQUEST_NULL)");
        flag = 0;
        MPI_OK(MPI_Test(&n, &flag, &st));
        CHECK(flag == 1);
        check_empty(&st, "Test(REQUEST_NULL)");
    }

    /* 1. Wait / Test */
    post(rbuf, sbuf, rr, sr, 0);
    for (int i = 0; i < K; i++) {
        if (i % 2 == 0) {
            MPI_OK(MPI_Wait(&rr[i], &st));
        } else {
            flag = 0;
            double t0 = MPI_Wtime();
            while (!flag) {
                MPI_OK(MPI_Test(&rr[i], &flag, &st));
                CHECK(MPI_Wtime() - t0 < 30);
            }
        }
        CHECK(rr[i] == MPI_REQUEST_NULL);
        CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == i);
    }
    for (int i = 0; i < K; i++)
        MPI_OK(MPI_Wait(&sr[i], MPI_STATUS_IGNORE));
    check_recv(rbuf, 0);

    /* 2. Waitall / Testall with statuses, with nulls mixed in */
    post(rbuf, sbuf, rr, sr, 100);
    {
        MPI_Request all[2 * K + 2];
        MPI_Status alls[2 * K + 2];
        all[0] = MPI_REQUEST_NULL;
        for (int i = 0; i < K; i++) {
            all[1 + i] = rr[i];
            all[1 + K + i] = sr[i];
        }
        all[2 * K + 1] = MPI_REQUEST_NULL;
        MPI_OK(MPI_Waitall(2 * K + 2, all, alls));
        for (int i = 0; i < 2 * K + 2; i++)
            CHECK(all[i] == MPI_REQUEST_NULL);
        for (int i = 0; i < K; i++)
            CHECK(alls[1 + i].MPI_SOURCE == prev && alls[1 + i].MPI_TAG == 100 + i);
        check_empty(&alls[0], "Waitall null entry");
        check_empty(&alls[2 * K + 1], "Waitall null entry");
        check_recv(rbuf, 100);
    }
    post(rbuf, sbuf, rr, sr, 200);
    flag = 0;
    {
        double t0 = MPI_Wtime();
        while (!flag) {
            MPI_OK(MPI_Testall(K, rr, &flag, sts));
            CHECK(MPI_Wtime() - t0 < 30);
        }
    }
    for (int i = 0; i < K; i++)
        CHECK(rr[i] == MPI_REQUEST_NULL && sts[i].MPI_TAG == 200 + i && sts[i].MPI_SOURCE == prev);
    flag = 0;
    while (!flag)
        MPI_OK(MPI_Testall(K, sr, &flag, MPI_STATUSES_IGNORE));
    check_recv(rbuf, 200);
    /* Testall of all-null is true */
    flag = 0;
    MPI_OK(MPI_Testall(K, rr, &flag, MPI_STATUSES_IGNORE));
    CHECK(flag == 1);
    MPI_OK(MPI_Waitall(0, NULL, MPI_STATUSES_IGNORE));

    /* 3. Waitany / Testany: every index exactly once, status tag matches */
    post(rbuf, sbuf, rr, sr, 300);
    {
        int seen[K] = {0};
        for (int k = 0; k < K; k++) {
            MPI_OK(MPI_Waitany(K, rr, &idx, &st));
            CHECKF(idx >= 0 && idx < K, "Waitany index %d", idx);
            CHECKF(!seen[idx], "Waitany returned %d twice", idx);
            seen[idx] = 1;
            CHECK(rr[idx] == MPI_REQUEST_NULL);
            CHECK(st.MPI_TAG == 300 + idx && st.MPI_SOURCE == prev);
        }
        MPI_OK(MPI_Waitany(K, rr, &idx, &st));
        CHECKF(idx == MPI_UNDEFINED, "Waitany on all-null gave %d", idx);
        check_empty(&st, "Waitany all-null");
        MPI_OK(MPI_Waitany(0, NULL, &idx, MPI_STATUS_IGNORE));
        CHECK(idx == MPI_UNDEFINED);
        MPI_OK(MPI_Waitall(K, sr, MPI_STATUSES_IGNORE));
        check_recv(rbuf, 300);
    }
    post(rbuf, sbuf, rr, sr, 400);
    {
        int seen[K] = {0}, got = 0;
        double t0 = MPI_Wtime();
        while (got < K) {
            flag = 0;
            MPI_OK(MPI_Testany(K, rr, &idx, &flag, &st));
            if (flag) {
                CHECKF(idx >= 0 && idx < K && !seen[idx], "Testany index %d", idx);
                seen[idx] = 1;
                got++;
                CHECK(st.MPI_TAG == 400 + idx);
            } else {
                CHECK(idx == MPI_UNDEFINED);
            }
            CHECK(MPI_Wtime() - t0 < 30);
        }
        flag = 0;
        MPI_OK(MPI_Testany(K, rr, &idx, &flag, &st));
        CHECK(flag == 1 && idx == MPI_UNDEFINED);
        check_empty(&st, "Testany all-null");
        MPI_OK(MPI_Waitall(K, sr, MPI_STATUSES_IGNORE));
        check_recv(rbuf, 400);
    }

    /* 4. Waitsome / Testsome */
    post(rbuf, sbuf, rr, sr, 500);
    {
        int seen[K] = {0}, got = 0;
        while (got < K) {
            MPI_OK(MPI_Waitsome(K, rr, &outcount, indices, sts));
            CHECKF(outcount >= 1 && outcount <= K - got, "Waitsome outcount %d", outcount);
            for (int j = 0; j < outcount; j++) {
                int i = indices[j];
                CHECKF(i >= 0 && i < K && !seen[i], "Waitsome index %d", i);
                seen[i] = 1;
                CHECK(rr[i] == MPI_REQUEST_NULL);
                CHECK(sts[j].MPI_TAG == 500 + i && sts[j].MPI_SOURCE == prev);
            }
            got += outcount;
        }
        MPI_OK(MPI_Waitsome(K, rr, &outcount, indices, sts));
        CHECKF(outcount == MPI_UNDEFINED, "Waitsome all-null gave %d", outcount);
        MPI_OK(MPI_Waitsome(K, sr, &outcount, indices, MPI_STATUSES_IGNORE));
        while (outcount != MPI_UNDEFINED)
            MPI_OK(MPI_Waitsome(K, sr, &outcount, indices, MPI_STATUSES_IGNORE));
        check_recv(rbuf, 500);
    }
    post(rbuf, sbuf, rr, sr, 600);
    {
        int seen[K] = {0}, got = 0;
        double t0 = MPI_Wtime();
        while (got < K) {
            MPI_OK(MPI_Testsome(K, rr, &outcount, indices, sts));
            CHECKF(outcount >= 0 && outcount <= K - got, "Testsome outcount %d", outcount);
            for (int j = 0; j < outcount; j++) {
                int i = indices[j];
                CHECKF(i >= 0 && i < K && !seen[i], "Testsome index %d", i);
                seen[i] = 1;
                CHECK(sts[j].MPI_TAG == 600 + i);
            }
            got += outcount;
            CHECK(MPI_Wtime() - t0 < 30);
        }
        MPI_OK(MPI_Testsome(K, rr, &outcount, indices, sts));
        CHECKF(outcount == MPI_UNDEFINED, "Testsome all-null gave %d", outcount);
        MPI_OK(MPI_Waitall(K, sr, MPI_STATUSES_IGNORE));
        check_recv(rbuf, 600);
    }

    /* 5. Request_free of an active send: the message is still delivered. */
    {
        static int big[10000];
        for (int i = 0; i < 10000; i++)
            big[i] = rank + i;
        MPI_Request r;
        MPI_OK(MPI_Isend(big, 10000, MPI_INT, next, 700, MPI_COMM_WORLD, &r));
        MPI_OK(MPI_Request_free(&r));
        CHECK(r == MPI_REQUEST_NULL);
        int *got = xmalloc(sizeof(int) * 10000);
        MPI_OK(MPI_Recv(got, 10000, MPI_INT, prev, 700, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        for (int i = 0; i < 10000; i++)
            CHECK(got[i] == prev + i);
        free(got);
        /* the receiver has the data, so after a barrier... the sender's
         * buffer may be reused: completion is known via the barrier */
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    }

    /* 6. MPI_STATUS_IGNORE everywhere */
    post(rbuf, sbuf, rr, sr, 800);
    MPI_OK(MPI_Wait(&rr[0], MPI_STATUS_IGNORE));
    MPI_OK(MPI_Waitany(K, rr, &idx, MPI_STATUS_IGNORE));
    CHECK(idx >= 1 && idx < K);
    MPI_OK(MPI_Waitsome(K, rr, &outcount, indices, MPI_STATUSES_IGNORE));
    MPI_OK(MPI_Waitall(K, rr, MPI_STATUSES_IGNORE));
    MPI_OK(MPI_Waitall(K, sr, MPI_STATUSES_IGNORE));
    check_recv(rbuf, 800);

    /* 7. Persistent requests: Send_init / Recv_init / Start / Startall */
    {
        int sv = 0, rv = -1;
        MPI_Request pr[2];
        MPI_OK(MPI_Recv_init(&rv, 1, MPI_INT, prev, 900, MPI_COMM_WORLD, &pr[0]));
        MPI_OK(MPI_Send_init(&sv, 1, MPI_INT, next, 900, MPI_COMM_WORLD, &pr[1]));
        /* an inactive persistent request completes at once with an empty status */
        MPI_OK(MPI_Wait(&pr[0], &st));
        CHECK(pr[0] != MPI_REQUEST_NULL);
        check_empty(&st, "inactive persistent");
        for (int it = 0; it < 5; it++) {
            sv = rank * 10 + it;
            if (it % 2 == 0) {
                MPI_OK(MPI_Startall(2, pr));
            } else {
                MPI_OK(MPI_Start(&pr[0]));
                MPI_OK(MPI_Start(&pr[1]));
            }
            MPI_OK(MPI_Waitall(2, pr, sts));
            CHECK(pr[0] != MPI_REQUEST_NULL && pr[1] != MPI_REQUEST_NULL);
            CHECKF(rv == prev * 10 + it, "persistent iteration %d got %d", it, rv);
            CHECK(sts[0].MPI_SOURCE == prev && sts[0].MPI_TAG == 900);
        }
        MPI_OK(MPI_Request_free(&pr[0]));
        MPI_OK(MPI_Request_free(&pr[1]));
        CHECK(pr[0] == MPI_REQUEST_NULL && pr[1] == MPI_REQUEST_NULL);
        /* persistent synchronous send */
        MPI_Request ps;
        MPI_OK(MPI_Ssend_init(&sv, 1, MPI_INT, next, 901, MPI_COMM_WORLD, &ps));
        sv = rank + 5;
        MPI_OK(MPI_Start(&ps));
        MPI_OK(MPI_Recv(&rv, 1, MPI_INT, prev, 901, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        MPI_OK(MPI_Wait(&ps, MPI_STATUS_IGNORE));
        CHECK(rv == prev + 5);
        MPI_OK(MPI_Request_free(&ps));
    }

    /* 8. Request_get_status does not free the request */
    {
        int v = rank, r2 = -1;
        MPI_Request a, b;
        MPI_OK(MPI_Irecv(&r2, 1, MPI_INT, prev, 950, MPI_COMM_WORLD, &a));
        MPI_OK(MPI_Isend(&v, 1, MPI_INT, next, 950, MPI_COMM_WORLD, &b));
        flag = 0;
        double t0 = MPI_Wtime();
        while (!flag) {
            MPI_OK(MPI_Request_get_status(a, &flag, &st));
            CHECK(MPI_Wtime() - t0 < 30);
        }
        CHECK(a != MPI_REQUEST_NULL);
        CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == 950);
        MPI_OK(MPI_Wait(&a, &st));
        CHECK(a == MPI_REQUEST_NULL && r2 == prev);
        MPI_OK(MPI_Wait(&b, MPI_STATUS_IGNORE));
    }

    return finish("requests");
}
