/*
 * idle_wait: how much CPU a rank burns while it waits in MPI_Recv for a message that comes
 * late.  On a node with more ranks than cores, that CPU is taken from the ranks that work.
 *
 * Rank 0 sleeps `wait_s` seconds (default 5), then sends every other rank one int; the
 * others block in MPI_Recv meanwhile and measure their own CPU time (getrusage: user plus
 * system) over the wait.  Prints, per waiting rank:
 *   bench=idle_wait rank=R wait_s=W cpu_s=C cpu_share=C/W
 * Validation: the value received must be the one sent.
 *
 * Usage: idle_wait [wait_s]
 */
#include "common.h"

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double wait_s = argc > 1 ? atof(argv[1]) : 5.0;
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        struct timespec ts = {(time_t)wait_s, (long)((wait_s - (time_t)wait_s) * 1e9)};
        nanosleep(&ts, NULL);
        for (int r = 1; r < size; r++) {
            int v = 1000 + r;
            MPI_Send(&v, 1, MPI_INT, r, 7, MPI_COMM_WORLD);
        }
    } else {
        int v = -1;
        double t0 = MPI_Wtime(), c0 = cpu_s();
        MPI_Recv(&v, 1, MPI_INT, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        double waited = MPI_Wtime() - t0, used = cpu_s() - c0;
        if (v != 1000 + rank) BENCH_FAIL("idle_wait", "rank %d received %d, expected %d", rank, v, 1000 + rank);
        printf("bench=idle_wait rank=%d wait_s=%.2f cpu_s=%.3f cpu_share=%.3f\n", rank, waited, used, used / waited);
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}
