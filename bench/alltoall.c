/*
 * alltoall: MPI_Alltoall of MPI_BYTE blocks; `size` is the block each rank sends to each
 * other rank (1 B .. 1 MiB, so a rank sends P*size bytes per call).
 * Prints, per size:  bench=alltoall ranks=P size=S median_us=M p99_us=Q avg_us=A iters=N
 *
 * Validation, every iteration: the block from rank s to rank d carries the word pattern of
 * (s, d, iter); every rank checks all P blocks it received (receive buffer poisoned first).
 *
 * Usage: alltoall [iteration-scale]
 */
#include "common.h"

int main(int argc, char **argv) {
    int rank, p;
    bench_init(&argc, &argv, "alltoall", 1, &rank, &p);
    static const size_t sizes[] = {1, 8, 64, 512, 4096, 32768, 262144, 1048576};
    const size_t maxn = 1u << 20;
    unsigned char *sbuf = xmalloc(maxn * (size_t)p), *rbuf = xmalloc(maxn * (size_t)p);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        int iters = scaled(coll_iters_for(n * (size_t)p), 10);
        int warm = iters / 10 < 3 ? 3 : iters / 10;
        double *samples = xmalloc(sizeof(double) * (size_t)iters);
        for (int it = 0; it < warm + iters; it++) {
            for (int d = 0; d < p; d++) fill_words(sbuf + (size_t)d * n, n, (uint64_t)rank, (uint64_t)d, (uint64_t)it);
            memset(rbuf, 0xEE, n * (size_t)p);
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = now_us();
            MPI_Alltoall(sbuf, (int)n, MPI_BYTE, rbuf, (int)n, MPI_BYTE, MPI_COMM_WORLD);
            double t1 = now_us();
            if (it >= warm) samples[it - warm] = t1 - t0;
            for (int s = 0; s < p; s++) {
                long bad = check_words(rbuf + (size_t)s * n, n, (uint64_t)s, (uint64_t)rank, (uint64_t)it);
                if (bad >= 0)
                    BENCH_FAIL("alltoall", "size %zu iter %d: block from rank %d wrong at offset %ld", n, it, s, bad);
            }
        }
        report_coll("alltoall", n, samples, iters);
        free(samples);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) printf("bench=alltoall status=ok ranks=%d\n", p);
    free(sbuf);
    free(rbuf);
    MPI_Finalize();
    return 0;
}
