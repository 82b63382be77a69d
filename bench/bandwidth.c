/*
 * bandwidth: unidirectional streaming from rank 0 to rank 1 (other ranks idle).
 *
 * Per loop rank 1 pre-posts a window of MPI_Irecv (one buffer per slot), rank 0 issues the
 * same number of MPI_Isend, both MPI_Waitall, and rank 1 answers with a 4-byte ack so the
 * loop ends only when the data has arrived.  Rate = bytes delivered / time of the timed loops
 * on rank 0, in MB/s (1 MB = 10^6 bytes).
 * Prints, per size:  bench=bandwidth size=S mbps=R window=W loops=L
 *
 * Validation: every slot buffer carries a distinct pattern.  Messages under 64 bytes are
 * refilled and checked in full every loop; larger ones in full during the warm-up loops and an
 * untimed final loop (receive buffers poisoned first), and by per-loop stamps in the timed loops.
 *
 * Usage: bandwidth [iteration-scale]
 */
#include "common.h"

static const size_t sizes[] = {1, 8, 64, 512, 4096, 32768, 262144, 1048576, 4194304};
#define NSIZES (sizeof sizes / sizeof sizes[0])
#define MAX_WINDOW 64
#define WINDOW_BYTES (32u << 20) /* receive memory per size: window * size <= 32 MiB */

int main(int argc, char **argv) {
    int rank, nranks;
    bench_init(&argc, &argv, "bandwidth", 2, &rank, &nranks);
    unsigned char *mem = (rank <= 1) ? xmalloc(WINDOW_BYTES) : NULL;
    MPI_Request reqs[MAX_WINDOW];

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
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = 0, t1 = 0;
        if (rank == 0) {
            for (int w = 0; w < window; w++) fill_pattern(mem + (size_t)w * n, n, n, (uint64_t)w, 2);
            for (int l = 0; l < total; l++) {
                if (l == warm) t0 = now_us();
                for (int w = 0; w < window; w++) {
                    unsigned char *b = mem + (size_t)w * n;
                    if (small) fill_pattern(b, n, n, (uint64_t)w, (uint64_t)l * 1000 + 2);
                    else put_stamps(b, n, (uint64_t)l * MAX_WINDOW + (uint64_t)w);
                    MPI_Isend(b, (int)n, MPI_BYTE, 1, w, MPI_COMM_WORLD, &reqs[w]);
                }
                MPI_Waitall(window, reqs, MPI_STATUSES_IGNORE);
                int ack = -1;
                MPI_Recv(&ack, 1, MPI_INT, 1, 999, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                if (ack != l) BENCH_FAIL("bandwidth", "size %zu loop %d: ack %d", n, l, ack);
                if (l == total - 2) t1 = now_us();
            }
            double mbps = (double)n * window * loops / (t1 - t0); /* bytes/us == MB/s */
            printf("bench=bandwidth size=%zu mbps=%.2f window=%d loops=%d\n", n, mbps, window, loops);
            fflush(stdout);
        } else if (rank == 1) {
            for (int l = 0; l < total; l++) {
                int full = small || l < warm || l == total - 1;
                for (int w = 0; w < window; w++) {
                    unsigned char *b = mem + (size_t)w * n;
                    if (full) memset(b, 0xEE, n);
                    else clear_stamps(b, n);
                    MPI_Irecv(b, (int)n, MPI_BYTE, 0, w, MPI_COMM_WORLD, &reqs[w]);
                }
                MPI_Status st[MAX_WINDOW];
                MPI_Waitall(window, reqs, st);
                for (int w = 0; w < window; w++) {
                    unsigned char *b = mem + (size_t)w * n;
                    int cnt;
                    MPI_Get_count(&st[w], MPI_BYTE, &cnt);
                    if ((size_t)cnt != n) BENCH_FAIL("bandwidth", "size %zu loop %d slot %d: count %d", n, l, w, cnt);
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
                        BENCH_FAIL("bandwidth", "size %zu loop %d slot %d: stale or wrong data (stamp mismatch)", n, l, w);
                    }
                    if (bad >= 0) BENCH_FAIL("bandwidth", "size %zu loop %d slot %d: wrong byte at offset %ld", n, l, w, bad);
                }
                MPI_Send(&l, 1, MPI_INT, 0, 999, MPI_COMM_WORLD);
            }
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) printf("bench=bandwidth status=ok ranks=%d\n", nranks);
    free(mem);
    MPI_Finalize();
    return 0;
}
