/*
 * barrier: back-to-back MPI_Barrier calls.
 * Prints:  bench=barrier ranks=P size=0 median_us=M p99_us=Q avg_us=A iters=N
 * (per-iteration time = the slowest rank's; see report_coll in common.h).
 *
 * Validation (after timing): in 2P rounds one rank, in turn, sleeps 3 ms before entering the
 * barrier; no rank may leave that barrier before the late rank entered it.  Entry and exit
 * times use CLOCK_MONOTONIC, which is shared by all processes of one host, so the check runs
 * only when every rank is on the same host (it says so when it is skipped).
 *
 * Usage: barrier [iteration-scale]
 */
#include "common.h"
#include <unistd.h>

static double host_id(void) {
    char name[256] = {0};
    gethostname(name, sizeof name - 1);
    uint64_t h = 1469598103934665603ull;
    for (char *c = name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return (double)(h >> 12); /* exact in a double */
}

int main(int argc, char **argv) {
    int rank, p;
    bench_init(&argc, &argv, "barrier", 1, &rank, &p);
    int iters = scaled(5000, 50), warm = iters / 10;
    double *samples = xmalloc(sizeof(double) * (size_t)iters);
    MPI_Barrier(MPI_COMM_WORLD);
    for (int it = 0; it < warm + iters; it++) {
        double t0 = now_us();
        MPI_Barrier(MPI_COMM_WORLD);
        double t1 = now_us();
        if (it >= warm) samples[it - warm] = t1 - t0;
    }
    report_coll("barrier", 0, samples, iters);
    free(samples);

    double h = host_id(), hmin, hmax;
    MPI_Allreduce(&h, &hmin, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&h, &hmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (hmin == hmax) {
        for (int k = 0; k < 2 * p; k++) {
            int late = k % p;
            MPI_Barrier(MPI_COMM_WORLD);
            double enter = -1e300;
            if (rank == late) {
                usleep(3000);
                enter = now_us();
            }
            MPI_Barrier(MPI_COMM_WORLD);
            double exit_t = now_us(), max_enter, min_exit;
            MPI_Allreduce(&enter, &max_enter, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            MPI_Allreduce(&exit_t, &min_exit, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
            if (min_exit < max_enter)
                BENCH_FAIL("barrier", "round %d: a rank left the barrier %.1f us before rank %d entered it", k,
                           max_enter - min_exit, late);
        }
    } else if (rank == 0) {
        printf("bench=barrier note=ranks-on-several-hosts-ordering-check-skipped\n");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) printf("bench=barrier status=ok ranks=%d\n", p);
    MPI_Finalize();
    return 0;
}
