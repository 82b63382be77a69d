/* One-sided stress program for live switches: windows stay open and busy while the job is
 * quiesced and resumed, and every byte is checked.
 *
 * Each round has a fence epoch, in which every rank puts a block of pseudo-random size (0
 * bytes to 256 KiB: eager and rendezvous) and content into its own region of one target's
 * window and adds to a counter at another rank, and then a passive-target part, in which
 * every rank takes an exclusive lock on some rank, increments its ticket counter with
 * MPI_Fetch_and_op and reads back the block it put there, then unlocks. Contents are a pure
 * function of (origin, target, round), so the target checks its window after the fence, and
 * the counters are checked against their sums at the end. Runs for argv[1] seconds (default
 * 10), then prints OK rma_stress.
 *
 * Usage: rma_stress [seconds] */
#include "check.h"

#define REGION (256 * 1024)

static size_t block_size(int origin, int round)
{
    uint64_t h = mix64((uint64_t)origin << 32 ^ (uint64_t)round);
    return h % 3 == 0 ? h % 64 : (h >> 8) % REGION;
}

static int target_of(int origin, int round, int size)
{
    return (int)(mix64((uint64_t)origin * 131 + (uint64_t)round * 7) % (uint64_t)size);
}

static void fill(unsigned char *b, size_t n, int origin, int round)
{
    uint64_t s = mix64(((uint64_t)round << 20) ^ (uint64_t)origin ^ 0xfeed);
    for (size_t k = 0; k < n; k++) {
        if (k % 8 == 0)
            s = mix64(s + k);
        b[k] = (unsigned char)(s >> (8 * (k % 8)));
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double seconds = argc > 1 ? atof(argv[1]) : 10.0;

    /* Region o of a rank's data window belongs to origin o. */
    unsigned char *data;
    MPI_Win dwin;
    MPI_OK(MPI_Win_allocate((MPI_Aint)size * REGION, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &data, &dwin));
    memset(data, 0, (size_t)size * REGION);
    /* Counters: [0] sums the fence-epoch adds, [1] counts passive-target tickets. */
    long long *counters;
    MPI_Win cwin;
    MPI_OK(MPI_Win_allocate(2 * sizeof(long long), sizeof(long long), MPI_INFO_NULL, MPI_COMM_WORLD, &counters, &cwin));
    counters[0] = counters[1] = 0;
    unsigned char *block = malloc(REGION), *expect = malloc(REGION), *back = malloc(REGION);
    memset(block, 0xa5, REGION);
    memset(expect, 0xa5, REGION);
    memset(back, 0xa5, REGION);
    long long added = 0, tickets = 0;

    double t0 = MPI_Wtime();
    int round = 0, stop = 0;
    MPI_OK(MPI_Win_fence(0, dwin));
    MPI_OK(MPI_Win_fence(0, cwin));
    while (!stop) {
        int t = target_of(rank, round, size);
        size_t n = block_size(rank, round);
        fill(block, n, rank, round);
        MPI_OK(MPI_Put(block, (int)n, MPI_BYTE, t, (MPI_Aint)rank * REGION, (int)n, MPI_BYTE, dwin));
        long long add = (long long)(round + 1) * (rank + 1);
        MPI_OK(MPI_Accumulate(&add, 1, MPI_LONG_LONG, (rank + round) % size, 0, 1, MPI_LONG_LONG, MPI_SUM, cwin));
        added += add;
        MPI_OK(MPI_Win_fence(0, dwin));
        MPI_OK(MPI_Win_fence(0, cwin));
        /* Every origin that chose this rank left its block in its region. */
        for (int o = 0; o < size; o++) {
            if (target_of(o, round, size) != rank)
                continue;
            size_t m = block_size(o, round);
            fill(expect, m, o, round);
            CHECKF(memcmp(expect, data + (size_t)o * REGION, m) == 0, "round %d: block from %d differs", round, o);
        }

        /* Passive target: a ticket at rank l, and the block just put read back from t. */
        int l = (rank + round + 1) % size;
        long long one = 1, before = -1;
        MPI_OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, l, 0, cwin));
        MPI_OK(MPI_Fetch_and_op(&one, &before, MPI_LONG_LONG, l, 1, MPI_SUM, cwin));
        MPI_OK(MPI_Win_unlock(l, cwin));
        CHECKF(before >= 0, "ticket %lld", before);
        tickets++;
        MPI_OK(MPI_Win_lock(MPI_LOCK_SHARED, t, 0, dwin));
        MPI_OK(MPI_Get(back, (int)n, MPI_BYTE, t, (MPI_Aint)rank * REGION, (int)n, MPI_BYTE, dwin));
        MPI_OK(MPI_Win_unlock(t, dwin));
        CHECKF(memcmp(back, block, n) == 0, "round %d: the block read back from %d differs", round, t);

        stop = MPI_Wtime() - t0 > seconds;
        MPI_OK(MPI_Bcast(&stop, 1, MPI_INT, round % size, MPI_COMM_WORLD));
        round++;
        /* Nobody puts into a region before its target has checked it; the locks ended the
         * fence epochs, so both windows start new ones. */
        MPI_OK(MPI_Win_fence(0, dwin));
        MPI_OK(MPI_Win_fence(0, cwin));
    }
    long long mine[3] = {added, tickets, counters[0]}, here[2] = {counters[0], counters[1]}, all[3], got[2];
    MPI_OK(MPI_Allreduce(mine, all, 2, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD));
    MPI_OK(MPI_Allreduce(here, got, 2, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD));
    CHECKF(got[0] == all[0], "the counters hold %lld of %lld added", got[0], all[0]);
    CHECKF(got[1] == all[1], "the ticket counters hold %lld of %lld", got[1], all[1]);
    if (rank == 0)
        fprintf(stderr, "rma_stress: %d rounds, %lld tickets\n", round, all[1]);
    MPI_OK(MPI_Win_free(&dwin));
    MPI_OK(MPI_Win_free(&cwin));
    free(block);
    free(expect);
    free(back);
    return finish("rma_stress");
}
