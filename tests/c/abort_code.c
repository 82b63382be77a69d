/* abort_code: not a self-checking test. Rank 1 calls MPI_Abort(MPI_COMM_WORLD, argv[1]) after
 * a barrier while the others wait in a second one; tests/tests/c_programs.rs checks that
 * mpirun exits with exactly that code (0 included), natively and under kawarimi. */
#include <mpi.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int rank;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 1)
        MPI_Abort(MPI_COMM_WORLD, argc > 1 ? atoi(argv[1]) : 1);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    return 42; /* never reached: the job ends with rank 1's code */
}
