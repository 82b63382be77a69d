/* rma: one-sided communication (§11) on windows of every rank.
 *   - MPI_Win_create over an int array; fence epochs: Put to the next rank, Get from it,
 *     Accumulate (MPI_SUM) from everyone into rank 0, with derived datatypes on the origin
 *     and the target side, and to MPI_PROC_NULL (nothing happens);
 *   - MPI_Win_allocate with a displacement unit, its attributes (base, size, unit, flavor,
 *     model), group and name;
 *   - passive target: an exclusive lock around MPI_Fetch_and_op (a counter every rank
 *     increments), MPI_Compare_and_swap (exactly one rank wins), lock_all with Put, flush and
 *     Get_accumulate (MPI_NO_OP reads, MPI_REPLACE writes);
 *   - general active target: each rank posts to its previous rank and starts on its next,
 *     puts with MPI_Rput and reads back with MPI_Rget (requests waited for after
 *     MPI_Win_complete), MPI_Win_wait and MPI_Win_test at the target;
 *   - MPI_Win_allocate_shared: each rank's part, written with plain stores, is read with plain
 *     loads by every rank through MPI_Win_shared_query (real shared memory, parts back to back
 *     in rank order), and a Put lands in it too;
 *   - MPI_Win_create_dynamic: memory attached at run time, targeted by its address;
 *   - window attributes (delete callback run by MPI_Win_free), a user error handler that
 *     receives the window, MPI_Win_call_errhandler, MPI_Win_set_info/get_info;
 *   - a nonblocking reduction with a user function that asks MPI_Type_size runs while windows
 *     exist and the rank computes (the function runs on the program's thread, not stuck);
 *   - errors returned with MPI_ERRORS_RETURN on the window: an operation outside any epoch is
 *     MPI_ERR_RMA_SYNC, one past the target's window is MPI_ERR_RMA_RANGE, an accumulate
 *     with an op that does not apply to its type (MPI_BAND on doubles) is MPI_ERR_OP. */
#include "check.h"

static int rank, size;

#define N 16

static void fence_epochs(void)
{
    int buf[N];
    for (int i = 0; i < N; i++)
        buf[i] = -1;
    MPI_Win win;
    MPI_OK(MPI_Win_create(buf, sizeof buf, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;

    /* Put my rank into slot `rank` of the next rank, and 3 ints of a strided origin into
     * slots 8..10 of it. */
    int strided[6] = {100 * rank, -9, 100 * rank + 1, -9, 100 * rank + 2, -9};
    MPI_Datatype every_other;
    MPI_OK(MPI_Type_vector(3, 1, 2, MPI_INT, &every_other));
    MPI_OK(MPI_Type_commit(&every_other));
    MPI_OK(MPI_Win_fence(MPI_MODE_NOPRECEDE, win));
    MPI_OK(MPI_Put(&rank, 1, MPI_INT, next, rank, 1, MPI_INT, win));
    MPI_OK(MPI_Put(strided, 1, every_other, next, 8, 3, MPI_INT, win));
    MPI_OK(MPI_Put(&rank, 1, MPI_INT, MPI_PROC_NULL, 0, 1, MPI_INT, win));
    MPI_OK(MPI_Win_fence(0, win));
    CHECKF(buf[prev] == prev, "slot %d holds %d", prev, buf[prev]);
    for (int k = 0; k < 3; k++)
        CHECKF(buf[8 + k] == 100 * prev + k, "slot %d holds %d", 8 + k, buf[8 + k]);

    /* Get them back from the next rank, slots 8 and 10 through a strided target type, into a
     * contiguous origin. */
    int got[2] = {-1, -1}, mine = -1;
    MPI_Datatype two_apart;
    MPI_OK(MPI_Type_vector(2, 1, 2, MPI_INT, &two_apart));
    MPI_OK(MPI_Type_commit(&two_apart));
    MPI_OK(MPI_Get(&mine, 1, MPI_INT, next, rank, 1, MPI_INT, win));
    MPI_OK(MPI_Get(got, 2, MPI_INT, next, 8, 1, two_apart, win));
    MPI_OK(MPI_Win_fence(0, win));
    CHECKF(mine == rank, "got %d back", mine);
    CHECKF(got[0] == 100 * rank && got[1] == 100 * rank + 2, "got %d %d", got[0], got[1]);

    /* Everyone adds rank + 1 into rank 0's slot 15, twice. */
    if (rank == 0)
        buf[15] = 0;
    MPI_OK(MPI_Win_fence(0, win));
    int add = rank + 1;
    MPI_OK(MPI_Accumulate(&add, 1, MPI_INT, 0, 15, 1, MPI_INT, MPI_SUM, win));
    MPI_OK(MPI_Accumulate(&add, 1, MPI_INT, 0, 15, 1, MPI_INT, MPI_SUM, win));
    MPI_OK(MPI_Win_fence(MPI_MODE_NOSUCCEED, win));
    if (rank == 0)
        CHECKF(buf[15] == size * (size + 1), "sum %d, want %d", buf[15], size * (size + 1));
    MPI_OK(MPI_Type_free(&every_other));
    MPI_OK(MPI_Type_free(&two_apart));
    MPI_OK(MPI_Win_free(&win));
    CHECK(win == MPI_WIN_NULL);
}

static void allocated_window(void)
{
    long *base = NULL;
    MPI_Win win;
    MPI_OK(MPI_Win_allocate(4 * sizeof(long), sizeof(long), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win));
    CHECK(base != NULL);
    void *attr;
    int flag = 0;
    MPI_OK(MPI_Win_get_attr(win, MPI_WIN_BASE, &attr, &flag));
    CHECK(flag && attr == base);
    MPI_OK(MPI_Win_get_attr(win, MPI_WIN_SIZE, &attr, &flag));
    CHECK(flag && *(MPI_Aint *)attr == 4 * sizeof(long));
    MPI_OK(MPI_Win_get_attr(win, MPI_WIN_DISP_UNIT, &attr, &flag));
    CHECK(flag && *(int *)attr == sizeof(long));
    MPI_OK(MPI_Win_get_attr(win, MPI_WIN_CREATE_FLAVOR, &attr, &flag));
    CHECK(flag && *(int *)attr == MPI_WIN_FLAVOR_ALLOCATE);
    MPI_OK(MPI_Win_get_attr(win, MPI_WIN_MODEL, &attr, &flag));
    CHECK(flag && *(int *)attr == MPI_WIN_UNIFIED);

    MPI_Group wg, cg;
    int cmp;
    MPI_OK(MPI_Win_get_group(win, &wg));
    MPI_OK(MPI_Comm_group(MPI_COMM_WORLD, &cg));
    MPI_OK(MPI_Group_compare(wg, cg, &cmp));
    CHECK(cmp == MPI_IDENT);
    MPI_OK(MPI_Group_free(&wg));
    MPI_OK(MPI_Group_free(&cg));
    char name[MPI_MAX_OBJECT_NAME];
    int len;
    MPI_OK(MPI_Win_set_name(win, "halo"));
    MPI_OK(MPI_Win_get_name(win, name, &len));
    CHECK(len == 4 && strcmp(name, "halo") == 0);

    /* Displacements count longs: slot 3 of the previous rank gets my rank. */
    for (int i = 0; i < 4; i++)
        base[i] = -1;
    long me = rank;
    MPI_OK(MPI_Win_fence(0, win));
    MPI_OK(MPI_Put(&me, 1, MPI_LONG, (rank + size - 1) % size, 3, 1, MPI_LONG, win));
    MPI_OK(MPI_Win_fence(0, win));
    CHECKF(base[3] == (rank + 1) % size && base[0] == -1, "slots %ld %ld", base[0], base[3]);
    MPI_OK(MPI_Win_free(&win));
}

static void passive_target(void)
{
    int *base;
    MPI_Win win;
    MPI_OK(MPI_Win_allocate(4 * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win));
    for (int i = 0; i < 4; i++)
        base[i] = 0;
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    /* A counter at rank 0 slot 0, each rank adds one and sees the value before. */
    int one = 1, before = -1;
    MPI_OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, win));
    MPI_OK(MPI_Fetch_and_op(&one, &before, MPI_INT, 0, 0, MPI_SUM, win));
    MPI_OK(MPI_Win_unlock(0, win));
    CHECKF(before >= 0 && before < size, "fetched %d", before);
    /* Everyone tries to swap 0 -> rank + 1 in slot 1: one wins. */
    int mine = rank + 1, zero = 0, old = -1;
    MPI_OK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
    MPI_OK(MPI_Compare_and_swap(&mine, &zero, &old, MPI_INT, 0, 1, win));
    MPI_OK(MPI_Win_unlock(0, win));
    int won = old == 0, winners = 0;
    MPI_OK(MPI_Allreduce(&won, &winners, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECKF(winners == 1, "%d ranks won the swap", winners);
    if (rank == 0) {
        CHECKF(base[0] == size, "counter %d", base[0]);
        CHECKF(base[1] >= 1 && base[1] <= size, "swapped in %d", base[1]);
    }
    int befores = 0;
    MPI_OK(MPI_Allreduce(&before, &befores, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECKF(befores == size * (size - 1) / 2, "the counter's old values sum to %d", befores);

    /* lock_all: write slot 2 of the next rank, flush, read it back atomically, replace it. */
    int next = (rank + 1) % size, seen = -1, replaced = -1, ten = 10 * rank;
    MPI_OK(MPI_Win_lock_all(0, win));
    MPI_OK(MPI_Put(&rank, 1, MPI_INT, next, 2, 1, MPI_INT, win));
    MPI_OK(MPI_Win_flush(next, win));
    MPI_OK(MPI_Get_accumulate(NULL, 0, MPI_INT, &seen, 1, MPI_INT, next, 2, 1, MPI_INT, MPI_NO_OP, win));
    MPI_OK(MPI_Win_flush_all(win));
    CHECKF(seen == rank, "read %d after a flush", seen);
    MPI_OK(MPI_Get_accumulate(&ten, 1, MPI_INT, &replaced, 1, MPI_INT, next, 2, 1, MPI_INT, MPI_REPLACE, win));
    MPI_OK(MPI_Win_unlock_all(win));
    CHECKF(replaced == rank, "replaced %d", replaced);
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    int prev = (rank + size - 1) % size;
    CHECKF(base[2] == 10 * prev, "slot 2 holds %d", base[2]);
    MPI_OK(MPI_Win_free(&win));
}

static void general_active_target(void)
{
    int buf[4] = {-1, -1, -1, -1};
    MPI_Win win;
    MPI_OK(MPI_Win_create(buf, sizeof buf, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    MPI_Group world, to_next, from_prev;
    MPI_OK(MPI_Comm_group(MPI_COMM_WORLD, &world));
    MPI_OK(MPI_Group_incl(world, 1, &next, &to_next));
    MPI_OK(MPI_Group_incl(world, 1, &prev, &from_prev));
    for (int round = 0; round < 3; round++) {
        /* The previous rank writes into me; I write into the next rank. */
        MPI_OK(MPI_Win_post(from_prev, 0, win));
        MPI_OK(MPI_Win_start(to_next, 0, win));
        int v[2] = {100 * round + rank, 100 * round + rank + 1}, back[2] = {-1, -1};
        MPI_Request rq[2];
        MPI_OK(MPI_Rput(v, 2, MPI_INT, next, 1, 2, MPI_INT, win, &rq[0]));
        MPI_OK(MPI_Wait(&rq[0], MPI_STATUS_IGNORE));
        MPI_OK(MPI_Rget(back, 1, MPI_INT, next, 0, 1, MPI_INT, win, &rq[1]));
        MPI_OK(MPI_Win_complete(win));
        MPI_OK(MPI_Wait(&rq[1], MPI_STATUS_IGNORE));
        CHECKF(round == 0 ? back[0] == -1 : back[0] == 100 * (round - 1) + rank + 7,
               "round %d: read %d from slot 0 of the next rank", round, back[0]);
        if (round % 2) {
            /* Polled for up to 30 s: on a loaded machine the origin may take its time. */
            int flag = 0;
            for (double t0 = now(); !flag && now() - t0 < 30.0;)
                MPI_OK(MPI_Win_test(win, &flag));
            CHECK(flag);
        } else {
            MPI_OK(MPI_Win_wait(win));
        }
        CHECKF(buf[1] == 100 * round + prev && buf[2] == 100 * round + prev + 1, "round %d: %d %d", round, buf[1], buf[2]);
        buf[0] = 100 * round + prev + 7;
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    }
    MPI_OK(MPI_Group_free(&world));
    MPI_OK(MPI_Group_free(&to_next));
    MPI_OK(MPI_Group_free(&from_prev));
    MPI_OK(MPI_Win_free(&win));
}

static void shared_window(void)
{
    MPI_Comm node;
    MPI_OK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int nrank, nsize;
    MPI_Comm_rank(node, &nrank);
    MPI_Comm_size(node, &nsize);
    int *mine;
    MPI_Win win;
    MPI_OK(MPI_Win_allocate_shared((nrank + 1) * sizeof(int), sizeof(int), MPI_INFO_NULL, node, &mine, &win));
    int flavor_flag = 0, *flavor;
    MPI_OK(MPI_Win_get_attr(win, MPI_WIN_CREATE_FLAVOR, &flavor, &flavor_flag));
    CHECK(flavor_flag && *flavor == MPI_WIN_FLAVOR_SHARED);
    MPI_OK(MPI_Win_lock_all(0, win));
    for (int k = 0; k <= nrank; k++)
        mine[k] = 100 * nrank + k;
    MPI_OK(MPI_Win_sync(win));
    MPI_OK(MPI_Barrier(node));
    MPI_OK(MPI_Win_sync(win));
    char *prev_end = NULL;
    for (int r = 0; r < nsize; r++) {
        MPI_Aint sz;
        int unit;
        int *p;
        MPI_OK(MPI_Win_shared_query(win, r, &sz, &unit, &p));
        CHECKF(sz == (MPI_Aint)((r + 1) * sizeof(int)) && unit == sizeof(int), "rank %d: %ld bytes, unit %d", r, (long)sz, unit);
        CHECKF(prev_end == NULL || (char *)p == prev_end, "rank %d's part does not follow the one before", r);
        prev_end = (char *)p + sz;
        for (int k = 0; k <= r; k++)
            CHECKF(p[k] == 100 * r + k, "rank %d's int %d read through shared memory: %d", r, k, p[k]);
    }
    MPI_Aint sz0;
    int unit0, *p0, *first;
    MPI_OK(MPI_Win_shared_query(win, MPI_PROC_NULL, &sz0, &unit0, &p0));
    MPI_OK(MPI_Win_shared_query(win, 0, &sz0, &unit0, &first));
    CHECK(p0 == first);
    MPI_OK(MPI_Win_unlock_all(win));
    /* A Put to the next rank's slot 0 lands in the shared memory too. */
    int next = (nrank + 1) % nsize, v = 7000 + nrank;
    MPI_OK(MPI_Win_fence(0, win));
    MPI_OK(MPI_Put(&v, 1, MPI_INT, next, 0, 1, MPI_INT, win));
    MPI_OK(MPI_Win_fence(0, win));
    CHECKF(mine[0] == 7000 + (nrank + nsize - 1) % nsize, "slot 0 holds %d", mine[0]);
    MPI_OK(MPI_Win_free(&win));
    /* Odd ranks give no memory: asked for non-contiguous parts, theirs have size 0 and no
     * address (contiguous, Open MPI gives the address where they would start). */
    int *none;
    MPI_Info noncontig;
    MPI_OK(MPI_Info_create(&noncontig));
    MPI_OK(MPI_Info_set(noncontig, "alloc_shared_noncontig", "true"));
    MPI_OK(MPI_Win_allocate_shared(nrank % 2 ? 0 : sizeof(int), sizeof(int), noncontig, node, &none, &win));
    MPI_OK(MPI_Info_free(&noncontig));
    for (int r = 0; r < nsize; r++) {
        MPI_Aint sz;
        int unit, *p;
        MPI_OK(MPI_Win_shared_query(win, r, &sz, &unit, &p));
        CHECKF(r % 2 ? sz == 0 && p == NULL : sz >= (MPI_Aint)sizeof(int) && p != NULL, "rank %d: %ld bytes at %p", r, (long)sz, (void *)p);
    }
    MPI_OK(MPI_Win_free(&win));
    MPI_OK(MPI_Comm_free(&node));
}

static void dynamic_window(void)
{
    MPI_Win win;
    MPI_OK(MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    /* 128 ints of which only the first 4 are attached: the Put past them below stays inside
     * this allocation, which Open MPI (which does not check) then writes to. */
    int *mem = malloc(128 * sizeof(int));
    for (int i = 0; i < 4; i++)
        mem[i] = -1;
    MPI_OK(MPI_Win_attach(win, mem, 4 * sizeof(int)));
    MPI_Aint mine, *all = malloc(size * sizeof(MPI_Aint));
    MPI_OK(MPI_Get_address(mem, &mine));
    MPI_OK(MPI_Allgather(&mine, 1, MPI_AINT, all, 1, MPI_AINT, MPI_COMM_WORLD));
    int next = (rank + 1) % size, prev = (rank + size - 1) % size, v = 500 + rank;
    MPI_OK(MPI_Win_fence(0, win));
    MPI_OK(MPI_Put(&v, 1, MPI_INT, next, MPI_Aint_add(all[next], 2 * sizeof(int)), 1, MPI_INT, win));
    MPI_OK(MPI_Win_fence(0, win));
    CHECKF(mem[2] == 500 + prev && mem[0] == -1, "attached memory holds %d %d", mem[0], mem[2]);
    /* Past what the next rank attached: Open MPI 4.1 takes the Put silently and writes it; kawarimi's origin
     * cannot see the target's regions, so the target tells it, and its next synchronisation
     * after the target applied the Put says MPI_ERR_RMA_RANGE. No process sees another error,
     * and the target's memory is untouched. */
    MPI_OK(MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
    int rcs[4], classes[4];
    rcs[0] = MPI_Put(&v, 1, MPI_INT, next, MPI_Aint_add(all[next], 64 * sizeof(int)), 1, MPI_INT, win);
    for (int k = 1; k < 4; k++)
        rcs[k] = MPI_Win_fence(0, win);
    for (int k = 0; k < 4; k++) {
        MPI_OK(MPI_Error_class(rcs[k], &classes[k]));
        CHECKF(classes[k] == MPI_SUCCESS || classes[k] == MPI_ERR_RMA_RANGE, "call %d: class %d", k, classes[k]);
    }
    CHECK(mem[0] == -1 && mem[2] == 500 + prev && mem[3] == -1);
    MPI_OK(MPI_Win_detach(win, mem));
    MPI_OK(MPI_Win_free(&win));
    free(mem);
    free(all);
}

static int deletions, handled_code = -1;
static MPI_Win handled_win = MPI_WIN_NULL;

static int count_deletion(MPI_Win w, int keyval, void *value, void *extra)
{
    (void)w, (void)keyval, (void)extra;
    CHECK(*(int *)value == 42);
    deletions++;
    return MPI_SUCCESS;
}

static void remember_error(MPI_Win *w, int *code, ...)
{
    handled_win = *w;
    handled_code = *code;
}

static void attributes_and_handlers(void)
{
    int buf[2];
    MPI_Win win;
    MPI_OK(MPI_Win_create(buf, sizeof buf, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    int keyval, value = 42, *got, flag = 0;
    MPI_OK(MPI_Win_create_keyval(MPI_WIN_NULL_COPY_FN, count_deletion, &keyval, NULL));
    MPI_OK(MPI_Win_set_attr(win, keyval, &value));
    MPI_OK(MPI_Win_get_attr(win, keyval, &got, &flag));
    CHECK(flag && got == &value);
    MPI_Errhandler eh;
    MPI_OK(MPI_Win_create_errhandler(remember_error, &eh));
    MPI_OK(MPI_Win_set_errhandler(win, eh));
    int x = 1;
    int rc = MPI_Put(&x, 1, MPI_INT, 0, 0, 1, MPI_INT, win);
    int cls;
    MPI_OK(MPI_Error_class(rc, &cls));
    CHECKF(cls == MPI_ERR_RMA_SYNC && handled_win == win, "class %d, handler called for the window: %d", cls, handled_win == win);
    MPI_OK(MPI_Win_call_errhandler(win, MPI_ERR_OTHER));
    CHECKF(handled_code == MPI_ERR_OTHER, "handler got %d", handled_code);
    MPI_Info info, used;
    MPI_OK(MPI_Info_create(&info));
    MPI_OK(MPI_Info_set(info, "no_locks", "true"));
    MPI_OK(MPI_Win_set_info(win, info));
    MPI_OK(MPI_Win_get_info(win, &used));
    MPI_OK(MPI_Info_free(&info));
    MPI_OK(MPI_Info_free(&used));
    MPI_OK(MPI_Win_free(&win));
    CHECKF(deletions == 1, "%d deletions at MPI_Win_free", deletions);
    MPI_OK(MPI_Win_free_keyval(&keyval));
    MPI_OK(MPI_Errhandler_free(&eh));
}

static void sum_by_size(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    int sz = 0;
    MPI_Type_size(*dt, &sz);
    CHECK(sz == sizeof(int));
    for (int i = 0; i < *len; i++)
        ((int *)inout)[i] += ((int *)in)[i];
}

static void user_op_with_windows_open(void)
{
    int mem[1];
    MPI_Win win;
    MPI_OK(MPI_Win_create(mem, sizeof mem, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    MPI_Op op;
    MPI_OK(MPI_Op_create(sum_by_size, 1, &op));
    int x = rank + 1, sum = 0;
    MPI_Request r;
    MPI_OK(MPI_Iallreduce(&x, &sum, 1, MPI_INT, op, MPI_COMM_WORLD, &r));
    /* Compute a while without MPI, the window's progress thread running meanwhile. */
    double t0 = now();
    volatile double y = 0;
    while (now() - t0 < 0.3)
        y += 1e-9;
    MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    CHECKF(sum == size * (size + 1) / 2, "sum %d", sum);
    MPI_OK(MPI_Op_free(&op));
    MPI_OK(MPI_Win_free(&win));
}

static void errors(void)
{
    int buf[4] = {0, 0, 0, 0};
    MPI_Win win;
    MPI_OK(MPI_Win_create(buf, sizeof buf, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    MPI_OK(MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
    int cls = -1, x = 1;
    int rc = MPI_Put(&x, 1, MPI_INT, 0, 0, 1, MPI_INT, win);
    MPI_OK(MPI_Error_class(rc, &cls));
    CHECKF(cls == MPI_ERR_RMA_SYNC, "a put outside an epoch: class %d", cls);
    MPI_OK(MPI_Win_fence(0, win));
    rc = MPI_Put(&x, 1, MPI_INT, 0, 4, 1, MPI_INT, win);
    MPI_OK(MPI_Error_class(rc, &cls));
    CHECKF(cls == MPI_ERR_RMA_RANGE, "a put past the window: class %d", cls);
    double d = 1.0;
    rc = MPI_Accumulate(&d, 1, MPI_DOUBLE, 0, 0, 1, MPI_DOUBLE, MPI_BAND, win);
    MPI_OK(MPI_Error_class(rc, &cls));
    CHECKF(cls == MPI_ERR_OP, "MPI_BAND on doubles: class %d", cls);
    MPI_OK(MPI_Win_fence(0, win));
    MPI_OK(MPI_Win_free(&win));
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    fence_epochs();
    allocated_window();
    passive_target();
    general_active_target();
    shared_window();
    dynamic_window();
    attributes_and_handlers();
    user_op_with_windows_open();
    errors();
    return finish("rma");
}
