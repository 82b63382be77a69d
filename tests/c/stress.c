/* Stress program for live switches: every message is checksummed and every byte checked.
 *
 * Each round, every rank sends a batch of messages to pseudo-random peers: sizes from 0 bytes
 * to 1 MiB (so both eager and rendezvous), on many tags, some synchronous, some through
 * MPI_ANY_SOURCE receives; then a round of collectives (Allreduce of the round's checksums,
 * Bcast, Alltoall). The content of each message is a pure function of (source, destination,
 * round, index), so the receiver recomputes it from the envelope alone and any loss,
 * duplication, corruption or reordering is detected. Runs for the number of seconds given
 * as argv[1] (default 10), then prints OK stress with the round count on stdout.
 *
 * Usage: stress [seconds] */
#include "check.h"

#include <unistd.h>

#define BATCH 12
/* Receives one rank may have to post in a round: messages go to uniformly random ranks, so
 * this is several times the mean (BATCH) and is never reached in practice (checked). */
#define MAX_INCOMING (BATCH * 4)
#define MAX_SIZE (1 << 20)

/* Message `i` of `round` from `src` to `dst`: its size, tag and bytes. */
static size_t msg_size(int src, int dst, int round, int i)
{
    uint64_t h = mix64(((uint64_t)src << 48) ^ ((uint64_t)dst << 32) ^ ((uint64_t)round << 8) ^ (uint64_t)i);
    switch (h % 4) {
    case 0: return h % 64;                 /* tiny */
    case 1: return h % 4096;               /* small */
    case 2: return h % 65536;              /* around the eager limit */
    default: return (h >> 8) % MAX_SIZE;   /* rendezvous */
    }
}

static void fill(unsigned char *b, size_t n, int src, int dst, int round, int i)
{
    uint64_t s = mix64(((uint64_t)round << 40) ^ ((uint64_t)src << 20) ^ ((uint64_t)dst << 4) ^ (uint64_t)i ^ 0x5eed);
    for (size_t k = 0; k < n; k++) {
        if (k % 8 == 0)
            s = mix64(s + k);
        b[k] = (unsigned char)(s >> (8 * (k % 8)));
    }
}

static uint64_t checksum(const unsigned char *b, size_t n)
{
    uint64_t c = 1469598103934665603ULL;
    for (size_t k = 0; k < n; k++)
        c = (c ^ b[k]) * 1099511628211ULL;
    return c;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double seconds = argc > 1 ? atof(argv[1]) : 10.0;
    unsigned char *sbuf[BATCH], *rbuf[MAX_INCOMING], *expect = malloc(MAX_SIZE);
    /* Touched up front (with a non-zero byte: a zero memset after malloc may become a
     * calloc that touches nothing), so that resident memory is flat from the start: the
     * switch test compares it across migrations to find leaks. */
    memset(expect, 0xa5, MAX_SIZE);
    for (int i = 0; i < BATCH; i++)
        memset(sbuf[i] = malloc(MAX_SIZE), 0xa5, MAX_SIZE);
    for (int i = 0; i < MAX_INCOMING; i++)
        memset(rbuf[i] = malloc(MAX_SIZE), 0xa5, MAX_SIZE);
    int *a2a_s = malloc(sizeof(int) * size), *a2a_r = malloc(sizeof(int) * size);

    double t0 = MPI_Wtime();
    int round = 0, stop = 0;
    long long messages = 0;
    while (!stop) {
        /* Who sends how many messages to whom this round is known to everyone. */
        int incoming = 0;
        for (int s = 0; s < size; s++)
            for (int i = 0; i < BATCH; i++)
                if ((int)(mix64((uint64_t)s * 977 + (uint64_t)round * 131 + (uint64_t)i) % (uint64_t)size) == rank)
                    incoming++;
        CHECKF(incoming <= MAX_INCOMING, "%d messages to receive in one round", incoming);
        MPI_Request rq[MAX_INCOMING + BATCH];
        int nr = 0;
        /* Half the receives name their source and tag, half take anything. */
        for (int k = 0; k < incoming; k++)
            MPI_OK(MPI_Irecv(rbuf[k], MAX_SIZE, MPI_BYTE, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &rq[nr++]));
        for (int i = 0; i < BATCH; i++) {
            int dst = (int)(mix64((uint64_t)rank * 977 + (uint64_t)round * 131 + (uint64_t)i) % (uint64_t)size);
            size_t n = msg_size(rank, dst, round, i);
            fill(sbuf[i], n, rank, dst, round, i);
            int tag = round % 1000 * BATCH + i;
            if (i % 5 == 0)
                MPI_OK(MPI_Issend(sbuf[i], (int)n, MPI_BYTE, dst, tag, MPI_COMM_WORLD, &rq[nr++]));
            else
                MPI_OK(MPI_Isend(sbuf[i], (int)n, MPI_BYTE, dst, tag, MPI_COMM_WORLD, &rq[nr++]));
        }
        MPI_Status st[MAX_INCOMING + BATCH];
        MPI_OK(MPI_Waitall(nr, rq, st));
        uint64_t sum = 0;
        for (int k = 0; k < incoming; k++) {
            int src = st[k].MPI_SOURCE, tag = st[k].MPI_TAG;
            int i = tag % BATCH;
            CHECKF(tag / BATCH == round % 1000, "round %d got tag %d", round, tag);
            size_t n = msg_size(src, rank, round, i);
            int count;
            MPI_OK(MPI_Get_count(&st[k], MPI_BYTE, &count));
            CHECKF((size_t)count == n, "from %d tag %d: %d bytes, expected %zu", src, tag, count, n);
            fill(expect, n, src, rank, round, i);
            CHECKF(memcmp(expect, rbuf[k], n) == 0, "from %d tag %d round %d: payload differs", src, tag, round);
            sum += checksum(rbuf[k], n);
        }
        messages += incoming;
        /* Collectives: the total of everyone's checksums must equal the senders' view. */
        uint64_t sent = 0;
        for (int i = 0; i < BATCH; i++) {
            int dst = (int)(mix64((uint64_t)rank * 977 + (uint64_t)round * 131 + (uint64_t)i) % (uint64_t)size);
            sent += checksum(sbuf[i], msg_size(rank, dst, round, i));
        }
        uint64_t tot[2] = {sum, sent}, all[2];
        MPI_OK(MPI_Allreduce(tot, all, 2, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
        CHECKF(all[0] == all[1], "round %d: received checksums %llx != sent %llx", round,
               (unsigned long long)all[0], (unsigned long long)all[1]);
        for (int p = 0; p < size; p++)
            a2a_s[p] = rank * 1000 + p + round;
        MPI_OK(MPI_Alltoall(a2a_s, 1, MPI_INT, a2a_r, 1, MPI_INT, MPI_COMM_WORLD));
        for (int p = 0; p < size; p++)
            CHECKF(a2a_r[p] == p * 1000 + rank + round, "alltoall from %d", p);
        stop = MPI_Wtime() - t0 > seconds;
        MPI_OK(MPI_Bcast(&stop, 1, MPI_INT, round % size, MPI_COMM_WORLD));
        round++;
    }
    long long total = 0;
    MPI_OK(MPI_Reduce(&messages, &total, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD));
    if (rank == 0)
        fprintf(stderr, "stress: %d rounds, %lld messages checked\n", round, total);
    for (int i = 0; i < BATCH; i++)
        free(sbuf[i]);
    for (int i = 0; i < MAX_INCOMING; i++)
        free(rbuf[i]);
    free(expect);
    free(a2a_s);
    free(a2a_r);
    return finish("stress");
}
