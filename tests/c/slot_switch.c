/* Small blocking collectives that a switch interrupts while some ranks wait in them.
 *
 * On one host kawarimi runs small barriers, broadcasts and reductions through slots in shared
 * memory. Here rank 0 spends argv[1] seconds (default 4) away while every other rank already
 * waits in an MPI_Allreduce, then joins it. How it spends them is argv[3]:
 * - "compute" (the default): touching no MPI. A switch during the gap takes the slots away
 *   before rank 0 has published its part: the waiting ranks must run the allreduce again on
 *   whatever the resumed job offers (TCP, if the switch moved the ranks apart).
 * - "inside": inside MPI_Reduce_local with a slow user-defined op, so that a quiesce must wait
 *   for rank 0 to leave it. With argv[4], rank 0 creates that file once inside the op, so that
 *   a test quiesces while it is there however slowly the job came up. If rank 0 then publishes its part before it takes the quiesce,
 *   the waiting ranks complete the allreduce before they detach; if its
 *   control thread takes the quiesce first, they run it again.
 * Either way the sum must be right. Then every rank runs rounds of allreduce, bcast, reduce and
 * barrier, on the world and on a split communicator, for argv[2] seconds (default 4), checking
 * each result, while the test moves the hosts again. */
#include "check.h"

/* One round of checked collectives on `comm`; `round` varies the values and the root. */
static void round_on(MPI_Comm comm, long round)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    long mine[3] = {rank + round, 1, -rank * round}, sum[3];
    MPI_OK(MPI_Allreduce(mine, sum, 3, MPI_LONG, MPI_SUM, comm));
    long ranks = (long)size * (size - 1) / 2;
    CHECKF(sum[0] == ranks + size * round && sum[1] == size && sum[2] == -ranks * round,
           "allreduce round %ld: %ld %ld %ld", round, sum[0], sum[1], sum[2]);

    int root = (int)(round % size);
    double value[5] = {0};
    if (rank == root)
        for (int i = 0; i < 5; i++)
            value[i] = round * 10.0 + i;
    MPI_OK(MPI_Bcast(value, 5, MPI_DOUBLE, root, comm));
    for (int i = 0; i < 5; i++)
        CHECKF(value[i] == round * 10.0 + i, "bcast round %ld from %d: [%d] = %g", round, root, i, value[i]);

    int top = -1, me = rank * 3 + (int)(round % 7);
    MPI_OK(MPI_Reduce(&me, &top, 1, MPI_INT, MPI_MAX, root, comm));
    if (rank == root)
        CHECKF(top == (size - 1) * 3 + (int)(round % 7), "reduce round %ld: max %d", round, top);
    MPI_OK(MPI_Barrier(comm));
}

static double slow_op_seconds;
static const char *inside_file;

/* A sum that takes its time: rank 0 stays inside MPI for the gap. */
static void slow_sum(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    double t0 = now();
    if (inside_file) {
        FILE *f = fopen(inside_file, "w");
        CHECKF(f != NULL, "cannot create %s", inside_file);
        fclose(f);
    }
    while (now() - t0 < slow_op_seconds)
        ;
    for (int i = 0; i < *len; i++)
        ((long *)inout)[i] += ((long *)in)[i];
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double gap = argc > 1 ? atof(argv[1]) : 4.0;
    double seconds = argc > 2 ? atof(argv[2]) : 4.0;
    int inside = argc > 3 && strcmp(argv[3], "inside") == 0;

    /* Warm up: the world agrees on its slots. */
    for (long r = 0; r < 20; r++)
        round_on(MPI_COMM_WORLD, r);
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    if (rank == 0 && inside) {
        MPI_Op slow;
        MPI_OK(MPI_Op_create(slow_sum, 1, &slow));
        slow_op_seconds = gap;
        inside_file = argc > 4 ? argv[4] : NULL;
        long a = 1, b = 2;
        MPI_OK(MPI_Reduce_local(&a, &b, 1, MPI_LONG, slow));
        CHECK(b == 3);
        MPI_OK(MPI_Op_free(&slow));
    } else if (rank == 0) {
        volatile double x = 0;
        double t0 = now();
        while (now() - t0 < gap)
            for (int i = 0; i < 100000; i++)
                x += i * 1e-9;
    }
    long part = 1000 + rank, total = 0;
    MPI_OK(MPI_Allreduce(&part, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD));
    CHECKF(total == 1000L * size + (long)size * (size - 1) / 2, "the interrupted allreduce gave %ld", total);

    MPI_Comm half;
    /* Ranks 0-1 and 2-3: on one host each while the test moves the hosts to "a a b b" and back
     * to one, apart once it moves them to "a b a b". */
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, rank / 2, rank, &half));
    long rounds = 0;
    double t0 = now();
    int more = 1;
    while (more) {
        round_on(MPI_COMM_WORLD, rounds);
        round_on(half, rounds);
        rounds++;
        /* Every rank stops after the same round: rank 0's clock decides. */
        more = rank == 0 ? now() - t0 < seconds : 0;
        MPI_OK(MPI_Bcast(&more, 1, MPI_INT, 0, MPI_COMM_WORLD));
    }
    MPI_OK(MPI_Comm_free(&half));
    if (rank == 0)
        printf("slot_switch: %ld rounds after the gap\n", rounds);
    return finish("slot_switch");
}
