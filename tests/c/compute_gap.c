/* A rank that computes for a long time without calling MPI, with messages to it in flight.
 *
 * Rank 0 sends rank 1 a large and a small message, then everyone waits in a barrier, while
 * rank 1 first computes for argv[1] seconds (default 4) touching no MPI at all, and only then
 * receives. A quiesce issued during the gap must still complete (the rank's control thread
 * drains it), and the messages must arrive intact after the resume. */
#include "check.h"

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double gap = argc > 1 ? atof(argv[1]) : 4.0;
    const int big = 3 << 20;
    unsigned char *buf = malloc(big);
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0) {
        for (int i = 0; i < big; i++)
            buf[i] = (unsigned char)(i * 7 + 1);
        MPI_Request rq[2];
        int small = 42;
        MPI_OK(MPI_Isend(buf, big, MPI_BYTE, 1, 1, MPI_COMM_WORLD, &rq[0]));
        MPI_OK(MPI_Isend(&small, 1, MPI_INT, 1, 2, MPI_COMM_WORLD, &rq[1]));
        MPI_OK(MPI_Waitall(2, rq, MPI_STATUSES_IGNORE));
    } else if (rank == 1) {
        /* The long computation: no MPI call until it ends. */
        volatile double x = 0;
        double t0 = now();
        while (now() - t0 < gap)
            for (int i = 0; i < 100000; i++)
                x += i * 1e-9;
        int small = 0;
        MPI_OK(MPI_Recv(&small, 1, MPI_INT, 0, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        CHECK(small == 42);
        MPI_OK(MPI_Recv(buf, big, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        for (int i = 0; i < big; i++)
            CHECKF(buf[i] == (unsigned char)(i * 7 + 1), "byte %d", i);
    }
    free(buf);
    return finish("compute_gap");
}
