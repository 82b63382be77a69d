/* p2p_basic: blocking and nonblocking point-to-point in every send mode,
 * Sendrecv(_replace), MPI_PROC_NULL, zero-length messages, status fields,
 * Get_count / Get_elements. */
#include "check.h"

#define N 100

static int rank, size, next, prev;

static void fill(int *b, int n, int who, int salt)
{
    for (int i = 0; i < n; i++)
        b[i] = who * 100000 + salt * 1000 + i;
}

static void expect(const int *b, int n, int who, int salt, const char *what)
{
    for (int i = 0; i < n; i++)
        CHECKF(b[i] == who * 100000 + salt * 1000 + i,
               "%s: element %d is %d, expected %d", what, i, b[i],
               who * 100000 + salt * 1000 + i);
}

static void check_status(const MPI_Status *st, int src, int tag, MPI_Datatype t,
                         int count, const char *what)
{
    int c = -7;
    CHECKF(st->MPI_SOURCE == src, "%s: MPI_SOURCE %d expected %d", what, st->MPI_SOURCE, src);
    CHECKF(st->MPI_TAG == tag, "%s: MPI_TAG %d expected %d", what, st->MPI_TAG, tag);
    MPI_OK(MPI_Get_count(st, t, &c));
    CHECKF(c == count, "%s: Get_count %d expected %d", what, c, count);
    MPI_OK(MPI_Get_elements(st, t, &c));
    CHECKF(c == count, "%s: Get_elements %d expected %d", what, c, count);
}

/* A legal ring with blocking sends: rank 0 sends first, everyone else
 * receives first. */
typedef int (*send_fn)(const void *, int, MPI_Datatype, int, int, MPI_Comm);

static void ring_blocking(send_fn fn, int salt, const char *what)
{
    int sbuf[N], rbuf[N];
    MPI_Status st;
    fill(sbuf, N, rank, salt);
    memset(rbuf, 0xff, sizeof rbuf);
    if (rank == 0) {
        MPI_OK(fn(sbuf, N, MPI_INT, next, salt, MPI_COMM_WORLD));
        MPI_OK(MPI_Recv(rbuf, N, MPI_INT, prev, salt, MPI_COMM_WORLD, &st));
    } else {
        MPI_OK(MPI_Recv(rbuf, N, MPI_INT, prev, salt, MPI_COMM_WORLD, &st));
        MPI_OK(fn(sbuf, N, MPI_INT, next, salt, MPI_COMM_WORLD));
    }
    check_status(&st, prev, salt, MPI_INT, N, what);
    expect(rbuf, N, prev, salt, what);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);
    next = (rank + 1) % size;
    prev = (rank + size - 1) % size;

    /* 1. Send/Recv and Ssend in a ring. */
    ring_blocking(MPI_Send, 1, "Send ring");
    ring_blocking(MPI_Ssend, 2, "Ssend ring");

    /* 2. Isend/Irecv to both neighbours. */
    {
        int s1[N], s2[N], r1[N], r2[N];
        MPI_Request rq[4];
        MPI_Status st[4];
        fill(s1, N, rank, 3);
        fill(s2, N, rank, 4);
        MPI_OK(MPI_Irecv(r1, N, MPI_INT, prev, 3, MPI_COMM_WORLD, &rq[0]));
        MPI_OK(MPI_Irecv(r2, N, MPI_INT, next, 4, MPI_COMM_WORLD, &rq[1]));
        MPI_OK(MPI_Isend(s1, N, MPI_INT, next, 3, MPI_COMM_WORLD, &rq[2]));
        MPI_OK(MPI_Isend(s2, N, MPI_INT, prev, 4, MPI_COMM_WORLD, &rq[3]));
        MPI_OK(MPI_Waitall(4, rq, st));
        for (int i = 0; i < 4; i++)
            CHECK(rq[i] == MPI_REQUEST_NULL);
        check_status(&st[0], prev, 3, MPI_INT, N, "Irecv from prev");
        check_status(&st[1], next, 4, MPI_INT, N, "Irecv from next");
        expect(r1, N, prev, 3, "Irecv from prev");
        expect(r2, N, next, 4, "Irecv from next");
    }

    /* 3. Bsend with an attached buffer: all ranks Bsend first (legal because
     * the send is buffered), then receive. */
    {
        int sbuf[N], rbuf[N], psize = 0;
        MPI_Status st;
        MPI_OK(MPI_Pack_size(N, MPI_INT, MPI_COMM_WORLD, &psize));
        int bsize = 3 * (psize + MPI_BSEND_OVERHEAD);
        char *bbuf = xmalloc((size_t)bsize);
        MPI_OK(MPI_Buffer_attach(bbuf, bsize));
        for (int k = 0; k < 3; k++) {
            fill(sbuf, N, rank, 10 + k);
            MPI_OK(MPI_Bsend(sbuf, N, MPI_INT, next, 10 + k, MPI_COMM_WORLD));
        }
        memset(sbuf, 0, sizeof sbuf); /* buffered: the user buffer is free */
        for (int k = 0; k < 3; k++) {
            MPI_OK(MPI_Recv(rbuf, N, MPI_INT, prev, 10 + k, MPI_COMM_WORLD, &st));
            check_status(&st, prev, 10 + k, MPI_INT, N, "Bsend");
            expect(rbuf, N, prev, 10 + k, "Bsend");
        }
        void *det = NULL;
        int detsize = 0;
        MPI_OK(MPI_Buffer_detach(&det, &detsize));
        CHECK(det == (void *)bbuf);
        CHECKF(detsize == bsize, "detached size %d expected %d", detsize, bsize);
        free(bbuf);
    }

    /* 4. Rsend: receive pre-posted, barrier, then ready send. */
    {
        int sbuf[N], rbuf[N];
        MPI_Request rq;
        MPI_Status st;
        fill(sbuf, N, rank, 20);
        MPI_OK(MPI_Irecv(rbuf, N, MPI_INT, prev, 20, MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
        MPI_OK(MPI_Rsend(sbuf, N, MPI_INT, next, 20, MPI_COMM_WORLD));
        MPI_OK(MPI_Wait(&rq, &st));
        check_status(&st, prev, 20, MPI_INT, N, "Rsend");
        expect(rbuf, N, prev, 20, "Rsend");
        /* and Irsend */
        MPI_OK(MPI_Irecv(rbuf, N, MPI_INT, prev, 21, MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
        MPI_Request srq;
        fill(sbuf, N, rank, 21);
        MPI_OK(MPI_Irsend(sbuf, N, MPI_INT, next, 21, MPI_COMM_WORLD, &srq));
        MPI_OK(MPI_Wait(&rq, &st));
        MPI_OK(MPI_Wait(&srq, MPI_STATUS_IGNORE));
        check_status(&st, prev, 21, MPI_INT, N, "Irsend");
        expect(rbuf, N, prev, 21, "Irsend");
    }

    /* 5. Issend: cannot complete before the matching receive starts. */
    {
        int sbuf[N], rbuf[N], flag = 1;
        MPI_Request rq;
        MPI_Status st;
        fill(sbuf, N, rank, 30);
        MPI_OK(MPI_Issend(sbuf, N, MPI_INT, next, 30, MPI_COMM_WORLD, &rq));
        /* Nobody has posted the receive yet (receives come after the
         * barrier), so the synchronous send must still be pending. */
        MPI_OK(MPI_Test(&rq, &flag, MPI_STATUS_IGNORE));
        CHECK(flag == 0);
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
        MPI_OK(MPI_Recv(rbuf, N, MPI_INT, prev, 30, MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
        check_status(&st, prev, 30, MPI_INT, N, "Issend");
        expect(rbuf, N, prev, 30, "Issend");
        /* Ibsend with a buffer too */
        int bsize = 0;
        MPI_OK(MPI_Pack_size(N, MPI_INT, MPI_COMM_WORLD, &bsize));
        bsize += MPI_BSEND_OVERHEAD;
        char *bbuf = xmalloc((size_t)bsize);
        MPI_OK(MPI_Buffer_attach(bbuf, bsize));
        fill(sbuf, N, rank, 31);
        MPI_OK(MPI_Ibsend(sbuf, N, MPI_INT, next, 31, MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
        MPI_OK(MPI_Recv(rbuf, N, MPI_INT, prev, 31, MPI_COMM_WORLD, &st));
        check_status(&st, prev, 31, MPI_INT, N, "Ibsend");
        expect(rbuf, N, prev, 31, "Ibsend");
        void *det;
        MPI_OK(MPI_Buffer_detach(&det, &bsize));
        free(bbuf);
    }

    /* 6. Sendrecv and Sendrecv_replace. */
    {
        int sbuf[N], rbuf[N];
        MPI_Status st;
        fill(sbuf, N, rank, 40);
        MPI_OK(MPI_Sendrecv(sbuf, N, MPI_INT, next, 40, rbuf, N, MPI_INT, prev, 40,
                            MPI_COMM_WORLD, &st));
        check_status(&st, prev, 40, MPI_INT, N, "Sendrecv");
        expect(rbuf, N, prev, 40, "Sendrecv");
        /* different tags and counts in each direction */
        MPI_OK(MPI_Sendrecv(sbuf, rank + 1, MPI_INT, next, 41 + rank, rbuf, N, MPI_INT,
                            MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
        check_status(&st, prev, 41 + prev, MPI_INT, prev + 1, "Sendrecv wildcards");
        expect(rbuf, prev + 1, prev, 40, "Sendrecv wildcards");

        fill(sbuf, N, rank, 42);
        MPI_OK(MPI_Sendrecv_replace(sbuf, N, MPI_INT, next, 42, prev, 42, MPI_COMM_WORLD, &st));
        check_status(&st, prev, 42, MPI_INT, N, "Sendrecv_replace");
        expect(sbuf, N, prev, 42, "Sendrecv_replace");
    }

    /* 7. MPI_PROC_NULL: sends complete at once, receives complete at once
     * with source MPI_PROC_NULL, tag MPI_ANY_TAG, count 0. */
    {
        int buf[N];
        MPI_Status st;
        MPI_Request rq;
        fill(buf, N, rank, 50);
        MPI_OK(MPI_Send(buf, N, MPI_INT, MPI_PROC_NULL, 50, MPI_COMM_WORLD));
        MPI_OK(MPI_Ssend(buf, N, MPI_INT, MPI_PROC_NULL, 50, MPI_COMM_WORLD));
        MPI_OK(MPI_Recv(buf, N, MPI_INT, MPI_PROC_NULL, 50, MPI_COMM_WORLD, &st));
        check_status(&st, MPI_PROC_NULL, MPI_ANY_TAG, MPI_INT, 0, "Recv PROC_NULL");
        expect(buf, N, rank, 50, "Recv PROC_NULL leaves buffer");
        MPI_OK(MPI_Irecv(buf, N, MPI_INT, MPI_PROC_NULL, 51, MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Wait(&rq, &st));
        check_status(&st, MPI_PROC_NULL, MPI_ANY_TAG, MPI_INT, 0, "Irecv PROC_NULL");
        MPI_OK(MPI_Isend(buf, N, MPI_INT, MPI_PROC_NULL, 51, MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
        /* a non-periodic chain: the ends talk to PROC_NULL */
        int right = rank + 1 < size ? rank + 1 : MPI_PROC_NULL;
        int left = rank > 0 ? rank - 1 : MPI_PROC_NULL;
        int v = rank * 7 + 1, got = -12345;
        MPI_OK(MPI_Sendrecv(&v, 1, MPI_INT, right, 52, &got, 1, MPI_INT, left, 52,
                            MPI_COMM_WORLD, &st));
        if (left == MPI_PROC_NULL) {
            CHECK(got == -12345);
            check_status(&st, MPI_PROC_NULL, MPI_ANY_TAG, MPI_INT, 0, "chain end");
        } else {
            CHECK(got == left * 7 + 1);
            check_status(&st, left, 52, MPI_INT, 1, "chain");
        }
    }

    /* 8. Zero-length messages, including a NULL buffer. */
    {
        int rbuf[10];
        MPI_Status st;
        MPI_Request rq;
        for (int i = 0; i < 10; i++)
            rbuf[i] = 77;
        MPI_OK(MPI_Irecv(rbuf, 10, MPI_INT, prev, 60, MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Send(NULL, 0, MPI_INT, next, 60, MPI_COMM_WORLD));
        MPI_OK(MPI_Wait(&rq, &st));
        check_status(&st, prev, 60, MPI_INT, 0, "zero-length");
        for (int i = 0; i < 10; i++)
            CHECK(rbuf[i] == 77);
        MPI_OK(MPI_Sendrecv(rbuf, 0, MPI_BYTE, next, 61, NULL, 0, MPI_BYTE, prev, 61,
                            MPI_COMM_WORLD, &st));
        check_status(&st, prev, 61, MPI_BYTE, 0, "zero-length Sendrecv");
        MPI_OK(MPI_Irecv(rbuf, 10, MPI_INT, prev, 62, MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Ssend(rbuf, 0, MPI_INT, next, 62, MPI_COMM_WORLD));
        MPI_OK(MPI_Wait(&rq, &st));
        check_status(&st, prev, 62, MPI_INT, 0, "zero-length Ssend");
    }

    /* 9. Get_count / Get_elements with other datatypes. */
    {
        int sbuf[N], rbuf[N];
        MPI_Status st;
        int c;
        fill(sbuf, N, rank, 70);
        MPI_OK(MPI_Sendrecv(sbuf, N, MPI_INT, next, 70, rbuf, N, MPI_INT, prev, 70,
                            MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, MPI_BYTE, &c));
        CHECKF(c == N * (int)sizeof(int), "count in bytes %d", c);
        MPI_OK(MPI_Get_count(&st, MPI_SHORT, &c));
        CHECKF(c == N * (int)(sizeof(int) / sizeof(short)), "count in shorts %d", c);
        /* 3 bytes are not a whole number of ints */
        char cb[8] = {1, 2, 3}, cr[8];
        MPI_OK(MPI_Sendrecv(cb, 3, MPI_CHAR, next, 71, cr, 8, MPI_CHAR, prev, 71,
                            MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, MPI_INT, &c));
        CHECKF(c == MPI_UNDEFINED, "Get_count of 3 bytes as int gave %d", c);
        MPI_OK(MPI_Get_count(&st, MPI_CHAR, &c));
        CHECK(c == 3);
        CHECK(cr[0] == 1 && cr[1] == 2 && cr[2] == 3);
        /* a derived type of 2 ints: 3 ints received = 1.5 items */
        MPI_Datatype pair;
        MPI_OK(MPI_Type_contiguous(2, MPI_INT, &pair));
        MPI_OK(MPI_Type_commit(&pair));
        MPI_OK(MPI_Sendrecv(sbuf, 3, MPI_INT, next, 72, rbuf, 4, pair, prev, 72,
                            MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, pair, &c));
        CHECKF(c == MPI_UNDEFINED, "Get_count of 3 ints as pairs gave %d", c);
        MPI_OK(MPI_Get_elements(&st, pair, &c));
        CHECKF(c == 3, "Get_elements of 3 ints as pairs gave %d", c);
        MPI_OK(MPI_Get_count(&st, MPI_INT, &c));
        CHECK(c == 3);
        expect(rbuf, 3, prev, 70, "pairs");
        MPI_OK(MPI_Type_free(&pair));
        CHECK(pair == MPI_DATATYPE_NULL);
    }

    /* 10. Ordering: many messages with the same tag arrive in order. */
    {
        enum { M = 50 };
        int vals[M], got[M];
        MPI_Request rq[2 * M];
        for (int i = 0; i < M; i++) {
            vals[i] = rank * 1000 + i;
            MPI_OK(MPI_Irecv(&got[i], 1, MPI_INT, prev, 80, MPI_COMM_WORLD, &rq[i]));
        }
        for (int i = 0; i < M; i++)
            MPI_OK(MPI_Isend(&vals[i], 1, MPI_INT, next, 80, MPI_COMM_WORLD, &rq[M + i]));
        MPI_OK(MPI_Waitall(2 * M, rq, MPI_STATUSES_IGNORE));
        for (int i = 0; i < M; i++)
            CHECKF(got[i] == prev * 1000 + i, "message %d out of order: %d", i, got[i]);
    }

    return finish("p2p_basic");
}
