/*
 * bcast: MPI_Bcast of MPI_BYTE, 1 B .. 4 MiB; the root rotates every iteration.
 * Prints, per size:  bench=bcast ranks=P size=S median_us=M p99_us=Q avg_us=A iters=N
 *
 * Validation, every iteration: the root fills the buffer with the word pattern of
 * (size, root, iter); every other rank poisons its buffer first and checks all of it after.
 *
 * Usage: bcast [iteration-scale]
 */
#include "common.h"

int main(int argc, char **argv) {
    int rank, p;
    bench_init(&argc, &argv, "bcast", 1, &rank, &p);
    static const size_t sizes[] = {1, 8, 64, 512, 4096, 32768, 262144, 1048576, 4194304};
    unsigned char *buf = xmalloc(4u << 20);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        int iters = scaled(coll_iters_for(n), 10);
        int warm = iters / 10 < 3 ? 3 : iters / 10;
        double *samples = xmalloc(sizeof(double) * (size_t)iters);
        for (int it = 0; it < warm + iters; it++) {
            int root = it % p;
            if (rank == root) fill_words(buf, n, n, (uint64_t)root, (uint64_t)it);
            else memset(buf, 0xEE, n);
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = now_us();
            MPI_Bcast(buf, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
            double t1 = now_us();
            if (it >= warm) samples[it - warm] = t1 - t0;
            long bad = check_words(buf, n, n, (uint64_t)root, (uint64_t)it);
            if (bad >= 0) BENCH_FAIL("bcast", "size %zu iter %d root %d: wrong data at offset %ld", n, it, root, bad);
        }
        report_coll("bcast", n, samples, iters);
        free(samples);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) printf("bench=bcast status=ok ranks=%d\n", p);
    free(buf);
    MPI_Finalize();
    return 0;
}
