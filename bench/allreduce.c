/*
 * allreduce: MPI_Allreduce(MPI_SUM) of doubles over all ranks, 8 B .. 4 MiB.
 * Prints, per size:  bench=allreduce ranks=P size=S median_us=M p99_us=Q avg_us=A iters=N
 * (per-iteration time = the slowest rank's; see report_coll in common.h).
 *
 * Validation, every iteration: rank r contributes (r+1)*(i%1000+1) + (iter%13) at element i;
 * all values are small integers, so the sum is exact in double and must equal
 * (i%1000+1)*P(P+1)/2 + P*(iter%13) on every rank.  The output buffer is poisoned first.
 *
 * Usage: allreduce [iteration-scale]
 */
#include "common.h"

int main(int argc, char **argv) {
    int rank, p;
    bench_init(&argc, &argv, "allreduce", 1, &rank, &p);
    const size_t maxn = 4u << 20;
    double *in = xmalloc(maxn), *out = xmalloc(maxn);
    static const size_t sizes[] = {8, 64, 512, 4096, 32768, 262144, 1048576, 4194304};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        size_t cnt = n / sizeof(double);
        int iters = scaled(coll_iters_for(n), 10);
        int warm = iters / 10 < 3 ? 3 : iters / 10;
        double *samples = xmalloc(sizeof(double) * (size_t)iters);
        for (int it = 0; it < warm + iters; it++) {
            double k = (double)(it % 13);
            for (size_t i = 0; i < cnt; i++) in[i] = (double)(rank + 1) * (double)(i % 1000 + 1) + k;
            memset(out, 0xEE, n);
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = now_us();
            MPI_Allreduce(in, out, (int)cnt, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            double t1 = now_us();
            if (it >= warm) samples[it - warm] = t1 - t0;
            double tri = (double)p * (p + 1) / 2.0, pk = (double)p * k;
            for (size_t i = 0; i < cnt; i++) {
                double want = (double)(i % 1000 + 1) * tri + pk;
                if (out[i] != want)
                    BENCH_FAIL("allreduce", "size %zu iter %d: element %zu is %.17g, expected %.17g", n, it, i, out[i], want);
            }
        }
        report_coll("allreduce", n, samples, iters);
        free(samples);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) printf("bench=allreduce status=ok ranks=%d\n", p);
    free(in);
    free(out);
    MPI_Finalize();
    return 0;
}
