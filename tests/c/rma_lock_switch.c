/* A passive-target lock held across live switches. Rank 0 locks rank 1's window exclusively,
 * puts a value, creates the file argv[1] ("the lock is held"), and keeps the lock, computing
 * outside MPI, until the file argv[2] exists (the test creates it after switching the job
 * several times); then it puts a second value and unlocks. Meanwhile every other rank but 1
 * asks for the same lock (exclusive, or shared on rank 3) and must get it only after rank 0's
 * unlock: it must read the second value. With no argument the hold is 1 s and no file is
 * involved, so the program also runs on its own. */
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int main(int argc, char **argv)
{
    MPI_OK(MPI_Init(&argc, &argv));
    int me = world_rank(), np = world_size();
    const char *ready = argc > 2 ? argv[1] : NULL, *release = argc > 2 ? argv[2] : NULL;
    long *base;
    MPI_Win win;
    MPI_OK(MPI_Win_allocate(2 * sizeof(long), sizeof(long), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win));
    base[0] = base[1] = 0;
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    const long first = 1111, second = 2222;
    int target = np > 1 ? 1 : 0;

    if (me == 0) {
        MPI_OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, target, 0, win));
        MPI_OK(MPI_Put(&first, 1, MPI_LONG, target, 0, 1, MPI_LONG, win));
        MPI_OK(MPI_Win_flush(target, win));
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD)); /* the others ask for the lock after this */
        if (ready) {
            FILE *f = fopen(ready, "w");
            CHECKF(f != NULL, "cannot create %s", ready);
            fclose(f);
            double give_up = now() + 120;
            while (!exists(release)) {
                CHECKF(now() < give_up, "%s did not appear within 120 s", release);
                usleep(10000);
            }
        } else {
            usleep(1000000);
        }
        /* Still held: nobody else got in, so the window holds this rank's first value. */
        long seen = -1;
        MPI_OK(MPI_Get(&seen, 1, MPI_LONG, target, 0, 1, MPI_LONG, win));
        MPI_OK(MPI_Win_flush(target, win));
        CHECKF(seen == first, "the window changed under an exclusive lock: %ld", seen);
        MPI_OK(MPI_Put(&second, 1, MPI_LONG, target, 0, 1, MPI_LONG, win));
        MPI_OK(MPI_Win_unlock(target, win));
    } else {
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
        if (me != target) {
            int type = me == 3 ? MPI_LOCK_SHARED : MPI_LOCK_EXCLUSIVE;
            MPI_OK(MPI_Win_lock(type, target, 0, win));
            long seen = -1;
            MPI_OK(MPI_Get(&seen, 1, MPI_LONG, target, 0, 1, MPI_LONG, win));
            MPI_OK(MPI_Win_flush(target, win));
            CHECKF(seen == second, "rank %d got the lock before rank 0 let it go: read %ld", me, seen);
            if (type == MPI_LOCK_EXCLUSIVE) {
                /* Count the exclusive holders after rank 0. */
                long one = 1, old = 0;
                MPI_OK(MPI_Fetch_and_op(&one, &old, MPI_LONG, target, 1, MPI_SUM, win));
            }
            MPI_OK(MPI_Win_unlock(target, win));
        }
    }
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    if (me == target && np > 1) {
        int exclusive_waiters = 0;
        for (int r = 2; r < np; r++)
            exclusive_waiters += r != 3;
        CHECKF(base[0] == second, "the window holds %ld, want %ld", base[0], second);
        CHECKF(base[1] == exclusive_waiters, "%ld exclusive holders counted, want %d", base[1], exclusive_waiters);
    }
    MPI_OK(MPI_Win_free(&win));
    return finish("rma_lock_switch");
}
