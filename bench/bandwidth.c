/*
 * bandwidth: streaming between pairs of ranks, in one of three modes (argv[2]):
 *   uni    (default, bench=bandwidth)  rank 0 sends to rank 1; other ranks idle;
 *   bi     (bench=bibw)                ranks 0 and 1 send to each other at once;
 *   pairs  (bench=multipair)           rank i sends to rank i + n/2 for every i < n/2, all at
 *                                      once (n/2 pairs; an odd last rank idles).
 *
 * Per loop every receiver pre-posts a window of MPI_Irecv (one buffer per slot), every
 * sender issues the same number of MPI_Isend, both MPI_Waitall; a receiver that does not
 * also send answers with a 4-byte ack, so the loop ends only when the data has arrived.
 * Rate = bytes delivered / time of the timed loops, in MB/s (1 MB = 10^6 bytes): for `bi` the
 * bytes of both directions, for `pairs` the sum over the pairs.
 * Prints, per size:  bench=NAME size=S mbps=R window=W loops=L
 *
 * Validation: every slot buffer carries a distinct pattern.  Messages under 64 bytes are
 * refilled and checked in full every loop; larger ones in full during the warm-up loops and an
 * untimed final loop (receive buffers poisoned first), and by per-loop stamps in the timed loops.
 *
 * Usage: bandwidth [iteration-scale [uni|bi|pairs]]
 */
#include "common.h"

static const size_t sizes[] = {1, 8, 64, 512, 4096, 32768, 262144, 1048576, 4194304};
#define NSIZES (sizeof sizes / sizeof sizes[0])
#define MAX_WINDOW 64
#define WINDOW_BYTES (32u << 20) /* receive memory per size: window * size <= 32 MiB */
#define ACK_TAG 999

/* Checks receive slot w of a loop; `full`: every byte, else the stamps only. */
static void check_slot(const char *name, unsigned char *b, size_t n, int l, int w, int small, int full,
                       MPI_Status *st) {
    int cnt;
    MPI_Get_count(st, MPI_BYTE, &cnt);
    if ((size_t)cnt != n) BENCH_FAIL(name, "size %zu loop %d slot %d: count %d", n, l, w, cnt);
    uint64_t stamp = (uint64_t)l * MAX_WINDOW + (uint64_t)w;
    long bad = -1;
    if (small) {
        bad = check_pattern(b, n, n, (uint64_t)w, (uint64_t)l * 1000 + 2);
    } else if (full) {
        unsigned char *ref = xmalloc(n); /* the slot's pattern plus this loop's stamps */
        fill_pattern(ref, n, n, (uint64_t)w, 2);
        put_stamps(ref, n, stamp);
        for (size_t i = 0; i < n && bad < 0; i++)
            if (b[i] != ref[i]) bad = (long)i;
        free(ref);
    } else if (!stamps_ok(b, n, stamp)) {
        BENCH_FAIL(name, "size %zu loop %d slot %d: stale or wrong data (stamp mismatch)", n, l, w);
    }
    if (bad >= 0) BENCH_FAIL(name, "size %zu loop %d slot %d: wrong byte at offset %ld", n, l, w, bad);
}

int main(int argc, char **argv) {
    int rank, nranks;
    const char *mode = argc > 2 ? argv[2] : "uni";
    int bi = strcmp(mode, "bi") == 0, pairs = strcmp(mode, "pairs") == 0;
    if (!bi && !pairs && strcmp(mode, "uni") != 0) {
        fprintf(stderr, "bandwidth: mode %s is not uni, bi or pairs\n", mode);
        return 2;
    }
    const char *name = bi ? "bibw" : pairs ? "multipair" : "bandwidth";
    bench_init(&argc, &argv, name, 2, &rank, &nranks);

    /* This rank's peer and what it does with it. */
    int half = pairs ? nranks / 2 : 1, peer = -1, sends = 0, recvs = 0;
    if (rank < half) {
        peer = rank + half;
        sends = 1;
        recvs = bi;
    } else if (rank < 2 * half) {
        peer = rank - half;
        recvs = 1;
        sends = bi;
    }
    unsigned char *smem = sends ? xmalloc(WINDOW_BYTES) : NULL;
    unsigned char *rmem = recvs ? xmalloc(WINDOW_BYTES) : NULL;
    MPI_Request reqs[2 * MAX_WINDOW];
    MPI_Status st[2 * MAX_WINDOW];

    for (size_t si = 0; si < NSIZES; si++) {
        size_t n = sizes[si];
        int window = (int)(WINDOW_BYTES / n);
        if (window > MAX_WINDOW) window = MAX_WINDOW;
        long want_loops = (long)((256u << 20) / ((size_t)window * n));
        if (want_loops > 500) want_loops = 500;
        int loops = scaled((int)want_loops, 20);
        int warm = 3;
        int total = warm + loops + 1; /* the last loop is an untimed full check */
        int small = n < 64;
        if (sends)
            for (int w = 0; w < window; w++) fill_pattern(smem + (size_t)w * n, n, n, (uint64_t)w, 2);
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = 0, t1 = 0;
        for (int l = 0; peer >= 0 && l < total; l++) {
            int full = small || l < warm || l == total - 1;
            if (l == warm) t0 = now_us();
            int nreq = 0;
            for (int w = 0; recvs && w < window; w++) {
                unsigned char *b = rmem + (size_t)w * n;
                if (full) memset(b, 0xEE, n);
                else clear_stamps(b, n);
                MPI_Irecv(b, (int)n, MPI_BYTE, peer, w, MPI_COMM_WORLD, &reqs[nreq++]);
            }
            for (int w = 0; sends && w < window; w++) {
                unsigned char *b = smem + (size_t)w * n;
                if (small) fill_pattern(b, n, n, (uint64_t)w, (uint64_t)l * 1000 + 2);
                else put_stamps(b, n, (uint64_t)l * MAX_WINDOW + (uint64_t)w);
                MPI_Isend(b, (int)n, MPI_BYTE, peer, w, MPI_COMM_WORLD, &reqs[nreq++]);
            }
            MPI_Waitall(nreq, reqs, st);
            for (int w = 0; recvs && w < window; w++) check_slot(name, rmem + (size_t)w * n, n, l, w, small, full, &st[w]);
            if (sends && !recvs) {
                int ack = -1;
                MPI_Recv(&ack, 1, MPI_INT, peer, ACK_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                if (ack != l) BENCH_FAIL(name, "size %zu loop %d: ack %d", n, l, ack);
            } else if (recvs && !sends) {
                MPI_Send(&l, 1, MPI_INT, peer, ACK_TAG, MPI_COMM_WORLD);
            }
            if (l == total - 2) t1 = now_us();
        }
        /* Each sender's rate, summed: one pair (uni), one pair both ways (bi), n/2 pairs. */
        double directions = bi ? 2.0 : 1.0;
        double mine = (sends && rank < half) ? directions * (double)n * window * loops / (t1 - t0) : 0.0;
        double sum = 0.0;
        MPI_Reduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            printf("bench=%s size=%zu mbps=%.2f window=%d loops=%d\n", name, n, sum, window, loops);
            fflush(stdout);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) printf("bench=%s status=ok ranks=%d\n", name, nranks);
    free(smem);
    free(rmem);
    MPI_Finalize();
    return 0;
}
