/* p2p_wildcard: MPI_ANY_SOURCE / MPI_ANY_TAG under contention with
 * non-overtaking checks, out-of-order receives by tag, Probe / Iprobe,
 * and cancelling a receive that cannot match. */
#include "check.h"

#define M 200   /* messages per sender in the contention phase */
#define NTAGS 7
#define K 16    /* messages per sender in the by-tag phase */

int main(int argc, char **argv)
{
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);

    /* 1. Contention: every rank != 0 sends M tagged messages to rank 0, which
     * receives them all with ANY_SOURCE/ANY_TAG. Per-sender order must be
     * preserved (non-overtaking) and each message must arrive exactly once. */
    if (rank == 0) {
        int *nexp = xmalloc(sizeof(int) * (size_t)size);
        for (int s = 0; s < size; s++)
            nexp[s] = 0;
        int total = (size - 1) * M;
        for (int k = 0; k < total; k++) {
            int msg[3];
            MPI_Status st;
            MPI_OK(MPI_Recv(msg, 3, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
            int src = st.MPI_SOURCE, c;
            CHECKF(src >= 1 && src < size, "bad source %d", src);
            CHECKF(msg[0] == src, "payload says sender %d, status says %d", msg[0], src);
            CHECKF(msg[1] == nexp[src], "from %d got message %d, expected %d (overtaking or loss)",
                   src, msg[1], nexp[src]);
            CHECKF(st.MPI_TAG == msg[1] % NTAGS, "tag %d for message %d", st.MPI_TAG, msg[1]);
            CHECK(msg[2] == ((src * 31 + msg[1]) ^ 0x5a5a));
            MPI_OK(MPI_Get_count(&st, MPI_INT, &c));
            CHECK(c == 3);
            nexp[src]++;
        }
        for (int s = 1; s < size; s++)
            CHECKF(nexp[s] == M, "got %d messages from %d", nexp[s], s);
        /* nothing extra may be pending */
        int flag = 1;
        MPI_OK(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE));
        CHECK(flag == 0);
        free(nexp);
    } else {
        int (*msgs)[3] = xmalloc(sizeof(int[3]) * M);
        MPI_Request rq[M];
        for (int i = 0; i < M; i++) {
            msgs[i][0] = rank;
            msgs[i][1] = i;
            msgs[i][2] = (rank * 31 + i) ^ 0x5a5a;
            /* a mix of modes: all of them are ordered with respect to each other */
            if (i % 4 == 0)
                MPI_OK(MPI_Send(msgs[i], 3, MPI_INT, 0, i % NTAGS, MPI_COMM_WORLD));
            else if (i % 4 == 1)
                MPI_OK(MPI_Ssend(msgs[i], 3, MPI_INT, 0, i % NTAGS, MPI_COMM_WORLD));
            if (i % 4 >= 2)
                MPI_OK(MPI_Isend(msgs[i], 3, MPI_INT, 0, i % NTAGS, MPI_COMM_WORLD, &rq[i]));
            else
                rq[i] = MPI_REQUEST_NULL;
        }
        MPI_OK(MPI_Waitall(M, rq, MPI_STATUSES_IGNORE));
        free(msgs);
    }
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    /* 2. Specific tags out of order: senders send tags 0..K-1 in order, rank 0
     * receives them in reverse tag order, from ANY_SOURCE with a given tag,
     * and from a given source with ANY_TAG at the end. */
    if (rank == 0) {
        int *seen = xmalloc(sizeof(int) * (size_t)size * K);
        memset(seen, 0, sizeof(int) * (size_t)size * K);
        for (int t = K - 1; t >= 1; t--) {
            for (int s = 1; s < size; s++) {
                int v;
                MPI_Status st;
                MPI_OK(MPI_Recv(&v, 1, MPI_INT, MPI_ANY_SOURCE, 100 + t, MPI_COMM_WORLD, &st));
                CHECK(st.MPI_TAG == 100 + t);
                CHECKF(v == st.MPI_SOURCE * 1000 + t, "value %d from %d tag %d", v, st.MPI_SOURCE, t);
                CHECKF(!seen[st.MPI_SOURCE * K + t], "duplicate from %d tag %d", st.MPI_SOURCE, t);
                seen[st.MPI_SOURCE * K + t] = 1;
            }
        }
        for (int s = size - 1; s >= 1; s--) {
            int v;
            MPI_Status st;
            MPI_OK(MPI_Recv(&v, 1, MPI_INT, s, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
            CHECK(st.MPI_SOURCE == s && st.MPI_TAG == 100);
            CHECK(v == s * 1000);
        }
        free(seen);
    } else {
        int vals[K];
        MPI_Request rq[K];
        for (int t = 0; t < K; t++) {
            vals[t] = rank * 1000 + t;
            MPI_OK(MPI_Isend(&vals[t], 1, MPI_INT, 0, 100 + t, MPI_COMM_WORLD, &rq[t]));
        }
        MPI_OK(MPI_Waitall(K, rq, MPI_STATUSES_IGNORE));
    }
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    /* 3. Probe / Iprobe, then receive with the probed source and tag and a
     * buffer sized by Get_count. */
    {
        int next = (rank + 1) % size;
        int len = 10 + rank * 3;
        int *sb = xmalloc(sizeof(int) * (size_t)len);
        for (int i = 0; i < len; i++)
            sb[i] = rank * 100 + i;
        MPI_Request rq;
        MPI_OK(MPI_Isend(sb, len, MPI_INT, next, 200 + rank, MPI_COMM_WORLD, &rq));
        MPI_Status st;
        MPI_OK(MPI_Probe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
        int src = st.MPI_SOURCE, tag = st.MPI_TAG, cnt;
        int prev = (rank + size - 1) % size;
        CHECKF(src == prev, "probed source %d", src);
        CHECKF(tag == 200 + prev, "probed tag %d", tag);
        MPI_OK(MPI_Get_count(&st, MPI_INT, &cnt));
        CHECKF(cnt == 10 + prev * 3, "probed count %d", cnt);
        /* probing again finds the same message */
        MPI_OK(MPI_Probe(src, tag, MPI_COMM_WORLD, &st));
        CHECK(st.MPI_SOURCE == src && st.MPI_TAG == tag);
        int *rb = xmalloc(sizeof(int) * (size_t)cnt);
        MPI_OK(MPI_Recv(rb, cnt, MPI_INT, src, tag, MPI_COMM_WORLD, &st));
        for (int i = 0; i < cnt; i++)
            CHECK(rb[i] == prev * 100 + i);
        MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
        free(rb);

        /* Iprobe polling */
        MPI_OK(MPI_Isend(sb, len, MPI_INT, next, 300, MPI_COMM_WORLD, &rq));
        int flag = 0;
        double t0 = MPI_Wtime();
        while (!flag) {
            MPI_OK(MPI_Iprobe(MPI_ANY_SOURCE, 300, MPI_COMM_WORLD, &flag, &st));
            CHECKF(MPI_Wtime() - t0 < 30.0, "Iprobe never found the message");
        }
        CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == 300);
        MPI_OK(MPI_Get_count(&st, MPI_INT, &cnt));
        CHECK(cnt == 10 + prev * 3);
        rb = xmalloc(sizeof(int) * (size_t)cnt);
        MPI_OK(MPI_Recv(rb, cnt, MPI_INT, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        for (int i = 0; i < cnt; i++)
            CHECK(rb[i] == prev * 100 + i);
        MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
        free(rb);
        free(sb);
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
        /* nothing left: Iprobe says no */
        MPI_OK(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st));
        CHECKF(flag == 0, "found a message from %d tag %d", st.MPI_SOURCE, st.MPI_TAG);
        /* keep section 4's sends after everybody's check */
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    }

    /* 4. Cancel a receive that cannot match. */
    {
        int v = -1, flag = 0;
        MPI_Request rq;
        MPI_Status st;
        MPI_OK(MPI_Irecv(&v, 1, MPI_INT, MPI_ANY_SOURCE, 999, MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Test(&rq, &flag, MPI_STATUS_IGNORE));
        CHECK(flag == 0);
        MPI_OK(MPI_Cancel(&rq));
        MPI_OK(MPI_Wait(&rq, &st));
        CHECK(rq == MPI_REQUEST_NULL);
        MPI_OK(MPI_Test_cancelled(&st, &flag));
        CHECK(flag == 1);
        CHECK(v == -1);
        /* a receive that completed normally is not cancelled */
        int next = (rank + 1) % size, prev = (rank + size - 1) % size, w = rank;
        MPI_OK(MPI_Sendrecv(&w, 1, MPI_INT, next, 998, &v, 1, MPI_INT, prev, 998,
                            MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Test_cancelled(&st, &flag));
        CHECK(flag == 0);
        CHECK(v == prev);
        /* the cancelled receive must not steal a later message with tag 999
         * (the barrier keeps every 999 send after every cancel) */
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
        MPI_OK(MPI_Sendrecv(&w, 1, MPI_INT, next, 999, &v, 1, MPI_INT, prev, 999,
                            MPI_COMM_WORLD, &st));
        CHECK(v == prev);
    }

    return finish("p2p_wildcard");
}
