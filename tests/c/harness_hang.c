/* harness_hang: not an MPI test. Used by the harness's own test of its
 * timeout: every rank blocks forever in a receive that nothing matches, so
 * the harness must kill the whole job (mpirun and every rank). */
#include "check.h"

int main(int argc, char **argv)
{
    int v;
    MPI_Init(&argc, &argv);
    MPI_Recv(&v, 1, MPI_INT, MPI_ANY_SOURCE, 4242, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Finalize();
    return 0;
}
