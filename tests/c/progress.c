/* progress: what a rank sends inside a collective (or an eager send) must leave it before
 * the call returns, not wait for its next MPI call. After each operation every rank but 0
 * stays outside MPI until rank 0 has finished the same operation (rank 0 says so with a
 * file); if a message rank 0 needs was still queued at a sender, rank 0 never finishes and
 * the sender reports it after 30 s. Natively every operation passes at once. */
#include "check.h"

#include <sys/stat.h>
#include <unistd.h>

static int rank, size;
static char base[256];

static void after(int step, const char *what)
{
    char path[300];
    snprintf(path, sizeof path, "%s-%d", base, step);
    if (rank == 0) {
        FILE *f = fopen(path, "w");
        CHECKF(f != NULL, "cannot create %s", path);
        fclose(f);
    } else {
        for (int i = 0; i < 3000; i++) {
            if (access(path, F_OK) == 0)
                return;
            usleep(10000);
        }
        CHECKF(0, "%s: rank 0 did not finish while rank %d stayed outside MPI for 30 s: a message rank %d sent "
                  "inside the call was still queued",
               what, rank, rank);
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long id = (long)getpid();
    MPI_OK(MPI_Bcast(&id, 1, MPI_LONG, 0, MPI_COMM_WORLD));
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/kawarimi-progress-%ld", tmp && *tmp ? tmp : "/tmp", id);

    int step = 0, x = rank + 1, y = 0;
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    after(step++, "MPI_Barrier");
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    MPI_OK(MPI_Allreduce(&x, &y, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(y == size * (size + 1) / 2);
    after(step++, "MPI_Allreduce");
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    y = rank == size - 1 ? 77 : 0;
    MPI_OK(MPI_Bcast(&y, 1, MPI_INT, size - 1, MPI_COMM_WORLD));
    CHECK(y == 77);
    after(step++, "MPI_Bcast from the last rank");
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    MPI_Request r;
    MPI_OK(MPI_Ibarrier(MPI_COMM_WORLD, &r));
    MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    after(step++, "MPI_Ibarrier + MPI_Wait");
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    /* an eager send to rank 0, which receives it while the sender is outside MPI */
    if (rank == size - 1 && rank != 0)
        MPI_OK(MPI_Send(&x, 1, MPI_INT, 0, 5, MPI_COMM_WORLD));
    if (rank == 0 && size > 1) {
        MPI_OK(MPI_Recv(&y, 1, MPI_INT, size - 1, 5, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        CHECK(y == size);
    }
    after(step++, "an eager MPI_Send");
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    if (rank == 0) {
        for (int i = 0; i < step; i++) {
            char path[300];
            snprintf(path, sizeof path, "%s-%d", base, i);
            unlink(path);
        }
    }
    return finish("progress");
}
