/* MPI_THREAD_MULTIPLE: several threads of each rank in MPI at once, each on its own
 * communicator (MPI-3.1 §12.4).
 *
 * 1. A dependency between threads of one process: thread 0 blocks in MPI_Recv for a message
 *    that the left neighbour's thread 1 sends only after a pause, and sends on only once it
 *    has it; thread 1 pauses, sends, then blocks in MPI_Recv for thread 0's onward message. A
 *    library that holds one lock across a blocking wait deadlocks here.
 * 2. Every thread, concurrently, for ITERS rounds on its own communicator: a ring Sendrecv,
 *    an Allreduce, Isend/Irecv with Waitall, an Ibarrier with Wait, a Probe then Recv, a
 *    Waitany over two receives, and a Bcast. Every value is checked.
 * 3. A blocking collective still pairs with the other members' blocking ones when a
 *    nonblocking one is started between them in another order (rank 0 starts an Iallreduce,
 *    then enters a Barrier; the others enter the Barrier first): mpi4py's test_ulfm does this,
 *    and it hung when a blocking collective waiting without the lock took the nonblocking
 *    collectives' tags.
 * 4. The same for one-sided synchronisation: rank 0's thread 0 waits in MPI_Win_lock for a
 *    lock that the last rank holds until a message from rank 0's thread 1 arrives, which
 *    thread 1 sends only after a pause.
 * 5. Communicator and window constructors (and MPI_Win_free, which waits for the other
 *    members too) in two threads at once, each over its own parent, entered in
 *    crossed orders (on even ranks thread 1 starts late, on odd ranks thread 0): a library
 *    that waits inside a constructor holding one lock deadlocks, and one whose concurrent
 *    context agreements can give two communicators of one process the same context
 *    delivers messages to the wrong one. Each new communicator carries a ring exchange on
 *    two tags whose values name the thread, and an allreduce, all checked.
 * 6. See creating_groups. */
#include <pthread.h>
#include <unistd.h>

#include "check.h"

#define THREADS 4
#define ITERS 100

static int me, np, left, right;
static MPI_Comm comms[THREADS];

static void *dependent(void *arg)
{
    int t = (int)(intptr_t)arg;
    int v = -1;
    if (t == 0) {
        MPI_OK(MPI_Recv(&v, 1, MPI_INT, left, 1, comms[0], MPI_STATUS_IGNORE));
        CHECKF(v == 1000 + left, "thread 0 received %d", v);
        int w = 2000 + me;
        MPI_OK(MPI_Send(&w, 1, MPI_INT, right, 2, comms[1]));
    } else {
        usleep(50000); /* thread 0 is inside MPI_Recv by now */
        int w = 1000 + me;
        MPI_OK(MPI_Send(&w, 1, MPI_INT, right, 1, comms[0]));
        MPI_OK(MPI_Recv(&v, 1, MPI_INT, left, 2, comms[1], MPI_STATUS_IGNORE));
        CHECKF(v == 2000 + left, "thread 1 received %d", v);
    }
    return NULL;
}

static int val(int rank, int t, int i) { return rank * 100000 + t * 1000 + i; }

static void *rounds(void *arg)
{
    int t = (int)(intptr_t)arg;
    MPI_Comm c = comms[t];
    for (int i = 0; i < ITERS; i++) {
        int out = val(me, t, i), in = -1;
        MPI_OK(MPI_Sendrecv(&out, 1, MPI_INT, right, 10, &in, 1, MPI_INT, left, 10, c, MPI_STATUS_IGNORE));
        CHECKF(in == val(left, t, i), "thread %d round %d: sendrecv got %d", t, i, in);

        long sum = 0, mine = val(me, t, i);
        MPI_OK(MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, c));
        long want = 0;
        for (int r = 0; r < np; r++)
            want += val(r, t, i);
        CHECKF(sum == want, "thread %d round %d: allreduce %ld, want %ld", t, i, sum, want);

        int a = -1, b = -1;
        MPI_Request rq[4];
        MPI_OK(MPI_Irecv(&a, 1, MPI_INT, left, 11, c, &rq[0]));
        MPI_OK(MPI_Irecv(&b, 1, MPI_INT, right, 12, c, &rq[1]));
        MPI_OK(MPI_Isend(&out, 1, MPI_INT, right, 11, c, &rq[2]));
        MPI_OK(MPI_Isend(&out, 1, MPI_INT, left, 12, c, &rq[3]));
        MPI_OK(MPI_Waitall(4, rq, MPI_STATUSES_IGNORE));
        CHECKF(a == val(left, t, i) && b == val(right, t, i), "thread %d round %d: waitall %d %d", t, i, a, b);

        MPI_Request bar;
        MPI_OK(MPI_Ibarrier(c, &bar));
        MPI_OK(MPI_Wait(&bar, MPI_STATUS_IGNORE));

        MPI_OK(MPI_Send(&out, 1, MPI_INT, right, 13, c));
        MPI_Status st;
        MPI_OK(MPI_Probe(left, 13, c, &st));
        CHECK(st.MPI_SOURCE == left && st.MPI_TAG == 13);
        MPI_OK(MPI_Recv(&in, 1, MPI_INT, st.MPI_SOURCE, 13, c, MPI_STATUS_IGNORE));
        CHECKF(in == val(left, t, i), "thread %d round %d: probed %d", t, i, in);

        int x = -1, y = -1, idx = -1;
        MPI_OK(MPI_Irecv(&x, 1, MPI_INT, left, 14, c, &rq[0]));
        MPI_OK(MPI_Irecv(&y, 1, MPI_INT, right, 15, c, &rq[1]));
        MPI_OK(MPI_Send(&out, 1, MPI_INT, right, 14, c));
        MPI_OK(MPI_Send(&out, 1, MPI_INT, left, 15, c));
        MPI_OK(MPI_Waitany(2, rq, &idx, MPI_STATUS_IGNORE));
        CHECK(idx == 0 || idx == 1);
        MPI_OK(MPI_Waitany(2, rq, &idx, MPI_STATUS_IGNORE));
        CHECK(x == val(left, t, i) && y == val(right, t, i));

        int root = i % np, v = me == root ? val(root, t, i) : -1;
        MPI_OK(MPI_Bcast(&v, 1, MPI_INT, root, c));
        CHECKF(v == val(root, t, i), "thread %d round %d: bcast %d", t, i, v);
    }
    return NULL;
}

static void crossed_order(void)
{
    int in = 1 << me, out = 0;
    MPI_Request req = MPI_REQUEST_NULL;
    if (me == 0)
        MPI_OK(MPI_Iallreduce(&in, &out, 1, MPI_INT, MPI_BOR, MPI_COMM_WORLD, &req));
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    if (me != 0)
        MPI_OK(MPI_Iallreduce(&in, &out, 1, MPI_INT, MPI_BOR, MPI_COMM_WORLD, &req));
    MPI_OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    CHECKF(out == (1 << np) - 1, "iallreduce gave %#x", out);
}

static void run_threads(void *(*f)(void *), int n);

static MPI_Win win;
static int *winbuf;

static void *locking(void *arg)
{
    int t = (int)(intptr_t)arg, holder = np - 1;
    if (t == 0) {
        MPI_OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, holder, 0, win));
        int v = 4242;
        MPI_OK(MPI_Put(&v, 1, MPI_INT, holder, 1, 1, MPI_INT, win));
        MPI_OK(MPI_Win_unlock(holder, win));
    } else {
        usleep(50000); /* thread 0 waits in MPI_Win_lock by now */
        int go = 1;
        MPI_OK(MPI_Send(&go, 1, MPI_INT, holder, 7, MPI_COMM_WORLD));
    }
    return NULL;
}

static void lock_across_threads(void)
{
    int holder = np - 1;
    MPI_OK(MPI_Win_allocate(2 * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &winbuf, &win));
    winbuf[0] = winbuf[1] = 0;
    if (me == holder && np > 1) {
        MPI_OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, holder, 0, win));
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
        int go = 0;
        MPI_OK(MPI_Recv(&go, 1, MPI_INT, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        CHECK(go == 1);
        MPI_OK(MPI_Win_unlock(holder, win));
    } else {
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
        if (me == 0 && np > 1)
            run_threads(locking, 2);
    }
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    if (me == holder && np > 1)
        CHECKF(winbuf[1] == 4242, "the put under the lock left %d", winbuf[1]);
    MPI_OK(MPI_Win_free(&win));
}

#define CTOR_ITERS 12

/* Checks that `c` (made by thread t from comms[t] in round i, over `members` of the parent's
 * processes, this one at `rank`) carries this thread's messages and no other's. */
static void use_new_comm(MPI_Comm c, int t, int i, const char *what)
{
    int n, r;
    MPI_OK(MPI_Comm_size(c, &n));
    MPI_OK(MPI_Comm_rank(c, &r));
    int wr, wl;
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &wr));
    int out[2] = {wr * 1000 + t * 100 + i, t}, in[2] = {-1, -1};
    int rt = (r + 1) % n, lt = (r + n - 1) % n;
    MPI_Group g, wg;
    MPI_OK(MPI_Comm_group(c, &g));
    MPI_OK(MPI_Comm_group(MPI_COMM_WORLD, &wg));
    MPI_OK(MPI_Group_translate_ranks(g, 1, &lt, wg, &wl));
    MPI_OK(MPI_Sendrecv(out, 2, MPI_INT, rt, 20 + t, in, 2, MPI_INT, lt, 20 + t, c, MPI_STATUS_IGNORE));
    CHECKF(in[0] == wl * 1000 + t * 100 + i && in[1] == t, "thread %d round %d: %s carried %d/%d from world rank %d",
           t, i, what, in[0], in[1], wl);
    int sum = 0, one = 1;
    MPI_OK(MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, c));
    CHECKF(sum == n, "thread %d round %d: allreduce over %s gave %d of %d", t, i, what, sum, n);
    MPI_OK(MPI_Group_free(&g));
    MPI_OK(MPI_Group_free(&wg));
}

static void *constructing(void *arg)
{
    int t = (int)(intptr_t)arg;
    MPI_Comm parent = comms[t];
    if (t == 1 - me % 2)
        usleep(30000); /* the other thread is inside its first constructor by now */
    for (int i = 0; i < CTOR_ITERS; i++) {
        MPI_Comm d;
        MPI_OK(MPI_Comm_dup(parent, &d));
        use_new_comm(d, t, i, "MPI_Comm_dup");
        MPI_OK(MPI_Comm_free(&d));

        MPI_OK(MPI_Comm_split(parent, me % 2, -me, &d));
        use_new_comm(d, t, i, "MPI_Comm_split");
        MPI_OK(MPI_Comm_free(&d));

        MPI_Group g;
        MPI_OK(MPI_Comm_group(parent, &g));
        MPI_OK(MPI_Comm_create(parent, g, &d));
        use_new_comm(d, t, i, "MPI_Comm_create");
        MPI_OK(MPI_Comm_free(&d));
        MPI_OK(MPI_Comm_create_group(parent, g, 30 + t, &d));
        use_new_comm(d, t, i, "MPI_Comm_create_group");
        MPI_OK(MPI_Comm_free(&d));
        MPI_OK(MPI_Group_free(&g));


        MPI_OK(MPI_Comm_split_type(parent, MPI_COMM_TYPE_SHARED, me, MPI_INFO_NULL, &d));
        use_new_comm(d, t, i, "MPI_Comm_split_type");
        MPI_OK(MPI_Comm_free(&d));

        /* A window over the parent: each process puts its value into its right neighbour's. */
        int *wb = NULL;
        MPI_Win w;
        MPI_OK(MPI_Win_allocate(sizeof(int), sizeof(int), MPI_INFO_NULL, parent, &wb, &w));
        *wb = -1;
        MPI_OK(MPI_Win_fence(0, w));
        int v = me * 1000 + t * 100 + i;
        MPI_OK(MPI_Put(&v, 1, MPI_INT, right, 0, 1, MPI_INT, w));
        MPI_OK(MPI_Win_fence(0, w));
        CHECKF(*wb == left * 1000 + t * 100 + i, "thread %d round %d: the window holds %d", t, i, *wb);
        MPI_OK(MPI_Win_free(&w));

        /* A shared window (every rank of these tests is on one host): the left neighbour's part
         * is read in place. */
        int *sb = NULL;
        MPI_OK(MPI_Win_allocate_shared(sizeof(int), sizeof(int), MPI_INFO_NULL, parent, &sb, &w));
        MPI_OK(MPI_Win_lock_all(0, w));
        *sb = v;
        MPI_OK(MPI_Win_sync(w));
        MPI_OK(MPI_Barrier(parent));
        MPI_OK(MPI_Win_sync(w));
        MPI_Aint sz;
        int unit, *lb = NULL;
        MPI_OK(MPI_Win_shared_query(w, left, &sz, &unit, &lb));
        CHECKF(*lb == left * 1000 + t * 100 + i, "thread %d round %d: the shared window holds %d", t, i, *lb);
        MPI_OK(MPI_Win_unlock_all(w));
        MPI_OK(MPI_Win_free(&w));
    }
    return NULL;
}

/* 6. MPI_Comm_create_group over one parent in every thread at once, told apart by the tag
 *    alone (as MPICH's comm_create_group_threads2 does): the tags of one creation's
 *    collectives must never be those of another's, however many each takes. */
static void *creating_groups(void *arg)
{
    int t = (int)(intptr_t)arg;
    MPI_Group g;
    MPI_OK(MPI_Comm_group(MPI_COMM_WORLD, &g));
    for (int i = 0; i < CTOR_ITERS * 3; i++) {
        MPI_Comm d;
        MPI_OK(MPI_Comm_create_group(MPI_COMM_WORLD, g, t, &d));
        use_new_comm(d, t, i, "MPI_Comm_create_group over MPI_COMM_WORLD");
        MPI_OK(MPI_Comm_free(&d));
    }
    MPI_OK(MPI_Group_free(&g));
    return NULL;
}

static void run_threads(void *(*f)(void *), int n)
{
    pthread_t th[THREADS];
    for (int t = 0; t < n; t++)
        CHECK(pthread_create(&th[t], NULL, f, (void *)(intptr_t)t) == 0);
    for (int t = 0; t < n; t++)
        CHECK(pthread_join(th[t], NULL) == 0);
}

int main(int argc, char **argv)
{
    int provided = -1;
    MPI_OK(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided));
    CHECKF(provided == MPI_THREAD_MULTIPLE, "provided thread level %d", provided);
    int query = -1;
    MPI_OK(MPI_Query_thread(&query));
    CHECK(query == MPI_THREAD_MULTIPLE);
    me = world_rank();
    np = world_size();
    left = (me + np - 1) % np;
    right = (me + 1) % np;
    for (int t = 0; t < THREADS; t++)
        MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &comms[t]));
    run_threads(dependent, 2);
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    run_threads(rounds, THREADS);
    crossed_order();
    lock_across_threads();
    run_threads(constructing, 2);
    run_threads(creating_groups, THREADS);
    for (int t = 0; t < THREADS; t++)
        MPI_OK(MPI_Comm_free(&comms[t]));
    return finish("threads");
}
