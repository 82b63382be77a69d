/* job_end: not a self-checking test. Used by tests/tests/job_end.rs to end a
 * job in each way a job can end badly, and then check that nothing of it
 * stays behind (processes, job files). argv[1] says how:
 *   hang   rank 1 sleeps for ever outside MPI, the others wait in a barrier
 *          (the test then kills the launcher);
 *   abort  rank 1 calls MPI_Abort(MPI_COMM_WORLD, 7) after a barrier;
 *   error  rank 1 sends to a rank that does not exist, under the default
 *          MPI_ERRORS_ARE_FATAL.
 * Every rank first prints "up <rank> <pid>" so the test knows the job runs, then
 * waits (at most 60 s) until the file argv[2] exists: the test looks at the running
 * ranks before any of them may end. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int rank, size, v = 0;
    const char *how = argc > 1 ? argv[1] : "hang";
    const char *go = argc > 2 ? argv[2] : NULL;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Barrier(MPI_COMM_WORLD);
    printf("up %d %d\n", rank, (int)getpid());
    fflush(stdout);
    for (int waited_ms = 0; go && access(go, F_OK) != 0 && waited_ms < 60000; waited_ms += 10)
        usleep(10000);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 1) {
        if (strcmp(how, "abort") == 0)
            MPI_Abort(MPI_COMM_WORLD, 7);
        else if (strcmp(how, "error") == 0)
            MPI_Send(&v, 1, MPI_INT, size, 0, MPI_COMM_WORLD);
        else
            for (;;)
                sleep(1);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    return 3; /* never reached in any mode */
}
