/*
 * rma: one-sided communication between ranks 0 and 1, each exposing a window of 1 MiB made by
 * MPI_Win_allocate.
 *
 *   rma_put    rank 0 holds MPI_Win_lock_all; one sample is MPI_Put of `size` bytes to rank 1
 *              then MPI_Win_flush(1), while rank 1 waits in MPI_Barrier;
 *   rma_get    the same with MPI_Get;
 *   rma_fence  both ranks: MPI_Accumulate (MPI_SUM of `size / 8` doubles) into the other, then
 *              MPI_Win_fence; one sample is one such epoch, timed at rank 0.
 * Prints, per size:  bench=NAME size=S median_us=M p99_us=P min_us=L iters=N
 *
 * Validation: every Put writes a fresh pattern, read back by the next Get of that size and
 * checked in full; after the accumulate epochs each rank checks its window holds the sum of
 * what the other added.
 *
 * Usage: rma [iteration-scale [put|get|fence]]   (without the second argument: all three)
 */
#include "common.h"

static const size_t sizes[] = {8, 512, 4096, 32768, 262144, 1048576};
#define NSIZES (sizeof sizes / sizeof sizes[0])
#define WINDOW (1 << 20)

static int iters_for(size_t n) {
    if (n <= 4096) return 2000;
    if (n <= 32768) return 1000;
    if (n <= 262144) return 200;
    return 60;
}

static void report(const char *name, size_t n, double *samples, int iters) {
    double med, p99;
    summarize(samples, iters, &med, &p99);
    printf("bench=%s size=%zu median_us=%.3f p99_us=%.3f min_us=%.3f iters=%d\n", name, n, med, p99, samples[0], iters);
    fflush(stdout);
}

int main(int argc, char **argv) {
    int rank, nranks;
    bench_init(&argc, &argv, "rma", 2, &rank, &nranks);
    const char *only = argc > 2 ? argv[2] : NULL;
    int want_put = !only || !strcmp(only, "put"), want_get = !only || !strcmp(only, "get");
    int want_fence = !only || !strcmp(only, "fence");
    if (nranks != 2) BENCH_FAIL("rma", "runs on 2 ranks, not %d", nranks);
    unsigned char *base;
    MPI_Win win;
    MPI_Win_allocate(WINDOW, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win);
    unsigned char *buf = xmalloc(WINDOW), *back = xmalloc(WINDOW);

    for (size_t si = 0; si < NSIZES; si++) {
        size_t n = sizes[si];
        int iters = scaled(iters_for(n), 20);
        int warm = iters / 10 < 5 ? 5 : iters / 10, total = warm + iters;
        double *samples = xmalloc(sizeof(double) * (size_t)iters);
        /* Put, then Get: rank 1 waits in a barrier (inside MPI) meanwhile. */
        for (int get = 0; get < 2; get++) {
            MPI_Barrier(MPI_COMM_WORLD);
            if (rank == 0) {
                MPI_Win_lock_all(0, win);
                for (int it = 0; it < total; it++) {
                    double t0 = now_us();
                    if (get)
                        MPI_Get(back, (int)n, MPI_BYTE, 1, 0, (int)n, MPI_BYTE, win);
                    else
                        MPI_Put(buf, (int)n, MPI_BYTE, 1, 0, (int)n, MPI_BYTE, win);
                    MPI_Win_flush(1, win);
                    double t1 = now_us();
                    if (it >= warm) samples[it - warm] = t1 - t0;
                    if (!get && it == total - 1) {
                        /* The last Put's bytes must be what a Get then reads. */
                        fill_pattern(buf, n, n, 77, 1);
                        MPI_Put(buf, (int)n, MPI_BYTE, 1, 0, (int)n, MPI_BYTE, win);
                        MPI_Win_flush(1, win);
                    }
                }
                if (get) {
                    long bad = check_pattern(back, n, n, 77, 1);
                    if (bad >= 0) BENCH_FAIL("rma", "size %zu: Get read a wrong byte at offset %ld", n, bad);
                }
                MPI_Win_unlock_all(win);
                if (get ? want_get : want_put) report(get ? "rma_get" : "rma_put", n, samples, iters);
            }
            MPI_Barrier(MPI_COMM_WORLD);
        }
        /* Accumulate epochs: each rank adds 1.0 to each of the other's first n / 8 doubles. */
        size_t nd = n / 8;
        double *ones = (double *)buf, *mine = (double *)base;
        for (size_t k = 0; k < nd; k++) ones[k] = 1.0, mine[k] = 0.0;
        MPI_Win_fence(0, win);
        for (int it = 0; it < total; it++) {
            double t0 = now_us();
            MPI_Accumulate(ones, (int)nd, MPI_DOUBLE, 1 - rank, 0, (int)nd, MPI_DOUBLE, MPI_SUM, win);
            MPI_Win_fence(0, win);
            double t1 = now_us();
            if (it >= warm) samples[it - warm] = t1 - t0;
        }
        for (size_t k = 0; k < nd; k++)
            if (mine[k] != (double)total) BENCH_FAIL("rma", "size %zu: double %zu holds %g after %d adds", n, k, mine[k], total);
        if (rank == 0 && want_fence) report("rma_fence", n, samples, iters);
        free(samples);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) printf("bench=rma status=ok ranks=%d\n", nranks);
    MPI_Win_free(&win);
    free(buf);
    free(back);
    MPI_Finalize();
    return 0;
}
