/* rma_progress: a passive-target operation completes while its target computes without
 * calling MPI. Rank 0 exposes a counter and computes for 3 s; every other rank locks it,
 * increments it with MPI_Fetch_and_op and reads it back, and times that. With argv[1] (a bound
 * in ms) each rank requires its operations to finish within it: far less than the computation,
 * which only a target that progresses without its program's help can do. Without an argument
 * the times are printed only (Open MPI 4.1 over TCP applies them when the target next calls
 * MPI). Prints OK rma_progress.
 *
 * Usage: rma_progress [bound_ms] */
#include "check.h"

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double bound_ms = argc > 1 ? atof(argv[1]) : 0;
    long *counter;
    MPI_Win win;
    MPI_OK(MPI_Win_allocate(sizeof(long), sizeof(long), MPI_INFO_NULL, MPI_COMM_WORLD, &counter, &win));
    *counter = 0;
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0) {
        /* Compute, no MPI call, for 3 s. */
        volatile double x = 0;
        double t0 = now();
        while (now() - t0 < 3.0)
            for (int i = 0; i < 100000; i++)
                x += i * 1e-9;
    } else {
        /* Let rank 0 get into its computation first. */
        double t0 = now();
        while (now() - t0 < 0.3)
            ;
        long one = 1, before = -1;
        double t = now();
        MPI_OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, win));
        MPI_OK(MPI_Fetch_and_op(&one, &before, MPI_LONG, 0, 0, MPI_SUM, win));
        MPI_OK(MPI_Win_unlock(0, win));
        double ms = (now() - t) * 1e3;
        fprintf(stderr, "rma_progress: rank %d: lock, fetch-and-add, unlock on a computing target in %.1f ms\n", rank, ms);
        CHECKF(before >= 0 && before < size - 1, "fetched %ld", before);
        CHECKF(bound_ms == 0 || ms < bound_ms, "took %.1f ms, more than %.0f", ms, bound_ms);
    }
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0)
        CHECKF(*counter == size - 1, "counter %ld", *counter);
    MPI_OK(MPI_Win_free(&win));
    return finish("rma_progress");
}
