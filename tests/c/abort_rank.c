/* abort_rank: used by the kill test. Every rank loops on Allreduce + Barrier
 * for up to 60 s; rank size-1 kills itself with SIGKILL after about 1 s. The
 * launcher (and kawarimi) must notice the dead rank and end the job. Prints
 * nothing on success, and it should never succeed: reaching the end of the
 * loop exits with status 3. */
#include "check.h"
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);

    double t0 = MPI_Wtime();
    long iter = 0;
    while (MPI_Wtime() - t0 < 60.0) {
        int in = rank + 1, out = 0;
        MPI_OK(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
        CHECK(out == size * (size + 1) / 2);
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
        iter++;
        if (rank == size - 1 && MPI_Wtime() - t0 > 1.0)
            kill(getpid(), SIGKILL);
    }
    fprintf(stderr, "abort_rank: rank %d survived 60 s (%ld iterations)\n", rank, iter);
    MPI_Finalize();
    return 3;
}
