/*
 * pingpong: one-way point-to-point latency between ranks 0 and 1 (other ranks idle).
 *
 * Rank 0 sends `size` bytes with MPI_Send, rank 1 receives them and sends them straight back;
 * one round trip is timed per iteration and half of it is the one-way latency sample.
 * Prints, per size:  bench=pingpong size=S median_us=M p99_us=P min_us=L iters=N
 *
 * Validation: rank 1 echoes what it received, so rank 0 checks what came back.  Messages up
 * to 4 KiB are checked in full every iteration (fresh pattern, poisoned receive buffer);
 * larger ones are checked in full during warm-up and on the last iteration, and by three
 * per-iteration stamps (head, middle, tail) in between.
 *
 * Usage: pingpong [iteration-scale [max-size]]   (max-size: skip larger sizes, e.g. for profiling)
 */
#include "common.h"

static const size_t sizes[] = {0, 1, 8, 64, 512, 4096, 32768, 262144, 1048576, 4194304};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static int iters_for(size_t n) {
    if (n <= 4096) return 5000;
    if (n <= 32768) return 2000;
    if (n <= 262144) return 500;
    if (n <= 1048576) return 200;
    return 60;
}

int main(int argc, char **argv) {
    int rank, nranks;
    bench_init(&argc, &argv, "pingpong", 2, &rank, &nranks);
    size_t maxn = sizes[NSIZES - 1];
    size_t limit = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : maxn;
    unsigned char *sbuf = xmalloc(maxn), *rbuf = xmalloc(maxn);

    for (size_t si = 0; si < NSIZES; si++) {
        size_t n = sizes[si];
        if (n > limit) break;
        int iters = scaled(iters_for(n), 20);
        int warm = iters / 10 < 5 ? 5 : iters / 10;
        int total = warm + iters;
        double *samples = xmalloc(sizeof(double) * (size_t)iters);
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0) {
            for (int it = 0; it < total; it++) {
                int full = n <= 4096 || it < warm || it == total - 1;
                if (full) {
                    fill_pattern(sbuf, n, n, (uint64_t)it, 1);
                    memset(rbuf, 0xEE, n);
                } else {
                    put_stamps(sbuf, n, (uint64_t)it);
                    clear_stamps(rbuf, n);
                }
                double t0 = now_us();
                MPI_Send(sbuf, (int)n, MPI_BYTE, 1, 7, MPI_COMM_WORLD);
                MPI_Status st;
                MPI_Recv(rbuf, (int)n, MPI_BYTE, 1, 7, MPI_COMM_WORLD, &st);
                double t1 = now_us();
                int cnt;
                MPI_Get_count(&st, MPI_BYTE, &cnt);
                if ((size_t)cnt != n) BENCH_FAIL("pingpong", "size %zu iter %d: received count %d", n, it, cnt);
                if (full) {
                    long bad = check_pattern(rbuf, n, n, (uint64_t)it, 1);
                    if (bad >= 0) BENCH_FAIL("pingpong", "size %zu iter %d: wrong byte at offset %ld", n, it, bad);
                } else if (!stamps_ok(rbuf, n, (uint64_t)it)) {
                    BENCH_FAIL("pingpong", "size %zu iter %d: stale or wrong data (stamp mismatch)", n, it);
                }
                if (it >= warm) samples[it - warm] = (t1 - t0) / 2.0;
            }
            double med, p99;
            summarize(samples, iters, &med, &p99);
            printf("bench=pingpong size=%zu median_us=%.3f p99_us=%.3f min_us=%.3f iters=%d\n", n, med, p99,
                   samples[0], iters);
            fflush(stdout);
        } else if (rank == 1) {
            for (int it = 0; it < total; it++) {
                int full = n <= 4096 || it < warm || it == total - 1;
                if (full) memset(rbuf, 0xEE, n);
                else clear_stamps(rbuf, n);
                MPI_Status st;
                MPI_Recv(rbuf, (int)n, MPI_BYTE, 0, 7, MPI_COMM_WORLD, &st);
                MPI_Send(rbuf, (int)n, MPI_BYTE, 0, 7, MPI_COMM_WORLD);
                /* Checked after the echo so that rank 0's timed round trip does not include it. */
                if (full) {
                    long bad = check_pattern(rbuf, n, n, (uint64_t)it, 1);
                    if (bad >= 0) BENCH_FAIL("pingpong", "size %zu iter %d: rank 1 got a wrong byte at offset %ld", n, it, bad);
                } else if (!stamps_ok(rbuf, n, (uint64_t)it)) {
                    BENCH_FAIL("pingpong", "size %zu iter %d: rank 1 got stale data (stamp mismatch)", n, it);
                }
            }
        }
        free(samples);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) printf("bench=pingpong status=ok ranks=%d\n", nranks);
    free(sbuf);
    free(rbuf);
    MPI_Finalize();
    return 0;
}
