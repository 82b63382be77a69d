/* comms_groups: Comm_dup/split/split_type/create/create_group/free/disconnect/compare,
 * names, attributes with copy/delete callbacks, MPI_TAG_UB, group
 * constructors and queries, and messaging on derived communicators. */
#include "check.h"

#include <unistd.h>

static int rank, size;
static int copy_calls, delete_calls;
static int last_deleted;

/* The callbacks call MPI themselves, as libraries' do (mpi4py's delete callback asks
 * MPI_Finalized): an implementation must not hold its own locks while running them. */
static int copy_cb(MPI_Comm oldcomm, int keyval, void *extra, void *in, void *out, int *flag)
{
    (void)keyval;
    CHECK(*(int *)extra == 4242);
    int r;
    MPI_OK(MPI_Comm_rank(oldcomm, &r));
    CHECK(r == rank);
    int *v = xmalloc(sizeof(int));
    *v = *(int *)in + 1000; /* the copy is distinguishable */
    *(void **)out = v;
    *flag = 1;
    copy_calls++;
    return MPI_SUCCESS;
}

static int delete_cb(MPI_Comm comm, int keyval, void *val, void *extra)
{
    (void)keyval;
    CHECK(*(int *)extra == 4242);
    int finalized = 1, n = 0;
    MPI_OK(MPI_Finalized(&finalized));
    CHECK(finalized == 0);
    MPI_OK(MPI_Comm_size(comm, &n)); /* the communicator is still usable */
    CHECK(n == size);
    last_deleted = *(int *)val;
    if (last_deleted >= 1000) /* copies were malloc'ed by copy_cb */
        free(val);
    delete_calls++;
    return MPI_SUCCESS;
}

/* MPI_Finalize deletes the attributes of MPI_COMM_SELF first (MPI-3.1 8.7.1), while MPI
 * still works; an atexit check fails the program if that never happened. */
static int self_deleted;

static int self_delete_cb(MPI_Comm comm, int keyval, void *val, void *extra)
{
    (void)keyval;
    (void)extra;
    CHECK(comm == MPI_COMM_SELF && *(int *)val == 99);
    int finalized = 1, n = 0;
    MPI_OK(MPI_Finalized(&finalized));
    CHECK(finalized == 0);
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &n));
    CHECK(n == size);
    self_deleted++;
    return MPI_SUCCESS;
}

static void check_self_deleted(void)
{
    if (self_deleted != 1) {
        fprintf(stderr, "comms_groups: the MPI_COMM_SELF attribute was deleted %d times in MPI_Finalize\n", self_deleted);
        _exit(3);
    }
}

static void ring_check(MPI_Comm c, int tag, const char *what)
{
    int r, n;
    MPI_OK(MPI_Comm_rank(c, &r));
    MPI_OK(MPI_Comm_size(c, &n));
    int nx = (r + 1) % n, pv = (r + n - 1) % n;
    int mine[2] = {r, rank}, got[2] = {-1, -1};
    MPI_Status st;
    MPI_OK(MPI_Sendrecv(mine, 2, MPI_INT, nx, tag, got, 2, MPI_INT, pv, tag, c, &st));
    CHECKF(got[0] == pv, "%s: got comm rank %d from %d", what, got[0], pv);
    CHECKF(st.MPI_SOURCE == pv, "%s: status source %d expected %d", what, st.MPI_SOURCE, pv);
    /* the world rank behind pv, via groups */
    MPI_Group g, wg;
    int wr;
    MPI_OK(MPI_Comm_group(c, &g));
    MPI_OK(MPI_Comm_group(MPI_COMM_WORLD, &wg));
    MPI_OK(MPI_Group_translate_ranks(g, 1, &pv, wg, &wr));
    CHECKF(got[1] == wr, "%s: world rank %d expected %d", what, got[1], wr);
    MPI_OK(MPI_Group_free(&g));
    MPI_OK(MPI_Group_free(&wg));
    int sum = 0;
    MPI_OK(MPI_Allreduce(&r, &sum, 1, MPI_INT, MPI_SUM, c));
    CHECKF(sum == n * (n - 1) / 2, "%s: Allreduce of ranks %d", what, sum);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    {
        static int self_value = 99;
        int self_key;
        MPI_OK(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, self_delete_cb, &self_key, NULL));
        MPI_OK(MPI_Comm_set_attr(MPI_COMM_SELF, self_key, &self_value));
        atexit(check_self_deleted);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);
    int res, r, n;

    /* ---- predefined communicators ---- */
    MPI_OK(MPI_Comm_size(MPI_COMM_SELF, &n));
    MPI_OK(MPI_Comm_rank(MPI_COMM_SELF, &r));
    CHECK(n == 1 && r == 0);
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, MPI_COMM_WORLD, &res));
    CHECK(res == MPI_IDENT);
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, MPI_COMM_SELF, &res));
    CHECK(res == MPI_UNEQUAL);

    /* ---- names ---- */
    {
        char name[MPI_MAX_OBJECT_NAME];
        int len = -1;
        MPI_OK(MPI_Comm_get_name(MPI_COMM_WORLD, name, &len));
        CHECKF(strcmp(name, "MPI_COMM_WORLD") == 0 && len == 14, "world name '%s'", name);
        MPI_OK(MPI_Comm_get_name(MPI_COMM_SELF, name, &len));
        CHECKF(strcmp(name, "MPI_COMM_SELF") == 0, "self name '%s'", name);
    }

    /* ---- dup ---- */
    MPI_Comm dup;
    MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, dup, &res));
    CHECK(res == MPI_CONGRUENT);
    MPI_OK(MPI_Comm_size(dup, &n));
    MPI_OK(MPI_Comm_rank(dup, &r));
    CHECK(n == size && r == rank);
    {
        char name[MPI_MAX_OBJECT_NAME];
        int len;
        MPI_OK(MPI_Comm_set_name(dup, "kawarimi dup"));
        MPI_OK(MPI_Comm_get_name(dup, name, &len));
        CHECKF(strcmp(name, "kawarimi dup") == 0 && len == 12, "dup name '%s' len %d", name, len);
    }
    ring_check(dup, 1, "dup");

    /* a message on the dup does not match a receive on the parent */
    if (rank == 0) {
        int a = 111, b = 222;
        MPI_Request rq[2];
        MPI_OK(MPI_Isend(&a, 1, MPI_INT, 1, 5, dup, &rq[0]));
        MPI_OK(MPI_Isend(&b, 1, MPI_INT, 1, 5, MPI_COMM_WORLD, &rq[1]));
        MPI_OK(MPI_Waitall(2, rq, MPI_STATUSES_IGNORE));
    } else if (rank == 1) {
        int v = -1;
        MPI_Status st;
        /* the dup's message was sent first and is surely here before world's */
        MPI_OK(MPI_Recv(&v, 1, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
        CHECKF(v == 222, "receive on world matched %d (message from the dup?)", v);
        MPI_OK(MPI_Recv(&v, 1, MPI_INT, 0, 5, dup, &st));
        CHECK(v == 111);
    }
    MPI_OK(MPI_Barrier(dup));

    /* ---- split reversing the rank order ---- */
    MPI_Comm rev;
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, 7, size - rank, &rev));
    MPI_OK(MPI_Comm_rank(rev, &r));
    MPI_OK(MPI_Comm_size(rev, &n));
    CHECKF(r == size - 1 - rank && n == size, "reversed split rank %d", r);
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, rev, &res));
    CHECKF(res == MPI_SIMILAR, "compare(world, reversed) = %d", res);
    ring_check(rev, 2, "reversed");

    /* ---- split by parity with rank 0 opting out ---- */
    MPI_Comm half;
    int color = rank == 0 ? MPI_UNDEFINED : rank % 2;
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, color, rank, &half));
    if (rank == 0) {
        CHECK(half == MPI_COMM_NULL);
    } else {
        CHECK(half != MPI_COMM_NULL);
        int expect_n = 0, expect_r = 0;
        for (int q = 1; q < size; q++)
            if (q % 2 == rank % 2) {
                if (q < rank)
                    expect_r++;
                expect_n++;
            }
        MPI_OK(MPI_Comm_size(half, &n));
        MPI_OK(MPI_Comm_rank(half, &r));
        CHECKF(n == expect_n && r == expect_r, "parity split size %d rank %d", n, r);
        ring_check(half, 3, "parity split");
        MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, half, &res));
        CHECK(res == MPI_UNEQUAL);
        MPI_OK(MPI_Comm_free(&half));
        CHECK(half == MPI_COMM_NULL);
    }

    /* ---- split_type shared ---- */
    {
        MPI_Comm shm;
        MPI_OK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &shm));
        CHECK(shm != MPI_COMM_NULL);
        /* ranks on the same host (by processor name) form the communicator */
        char me[MPI_MAX_PROCESSOR_NAME] = {0};
        int len;
        MPI_OK(MPI_Get_processor_name(me, &len));
        char *all = xmalloc((size_t)size * MPI_MAX_PROCESSOR_NAME);
        MPI_OK(MPI_Allgather(me, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME, MPI_CHAR,
                             MPI_COMM_WORLD));
        int same = 0, below = 0;
        for (int q = 0; q < size; q++)
            if (strcmp(all + (size_t)q * MPI_MAX_PROCESSOR_NAME, me) == 0) {
                same++;
                if (q < rank)
                    below++;
            }
        MPI_OK(MPI_Comm_size(shm, &n));
        MPI_OK(MPI_Comm_rank(shm, &r));
        CHECKF(n == same && r == below, "split_type shared: size %d rank %d, expected %d %d", n, r, same, below);
        ring_check(shm, 4, "shared");
        /* MPI_UNDEFINED split type gives COMM_NULL */
        MPI_Comm none;
        MPI_OK(MPI_Comm_split_type(MPI_COMM_WORLD, rank == 0 ? MPI_UNDEFINED : MPI_COMM_TYPE_SHARED, 0,
                                   MPI_INFO_NULL, &none));
        if (rank == 0)
            CHECK(none == MPI_COMM_NULL);
        else
            MPI_OK(MPI_Comm_free(&none));
        free(all);
        MPI_OK(MPI_Comm_free(&shm));
    }

    /* ---- groups ---- */
    MPI_Group world_g, even_g, rev_g, excl_g, range_g, u_g, i_g, d_g;
    MPI_OK(MPI_Comm_group(MPI_COMM_WORLD, &world_g));
    MPI_OK(MPI_Group_size(world_g, &n));
    MPI_OK(MPI_Group_rank(world_g, &r));
    CHECK(n == size && r == rank);
    {
        int *ranks = xmalloc(sizeof(int) * (size_t)size);
        for (int q = 0; q < size; q++)
            ranks[q] = size - 1 - q;
        MPI_OK(MPI_Group_incl(world_g, size, ranks, &rev_g));
        MPI_OK(MPI_Group_rank(rev_g, &r));
        CHECK(r == size - 1 - rank);
        MPI_OK(MPI_Group_compare(world_g, rev_g, &res));
        CHECK(res == MPI_SIMILAR);
        int zero = 0;
        MPI_OK(MPI_Group_excl(world_g, 1, &zero, &excl_g));
        MPI_OK(MPI_Group_size(excl_g, &n));
        MPI_OK(MPI_Group_rank(excl_g, &r));
        CHECK(n == size - 1 && r == (rank == 0 ? MPI_UNDEFINED : rank - 1));
        int range[1][3] = {{0, size - 1, 2}};
        MPI_OK(MPI_Group_range_incl(world_g, 1, range, &range_g));
        MPI_OK(MPI_Group_size(range_g, &n));
        CHECK(n == (size + 1) / 2);
        MPI_OK(MPI_Group_rank(range_g, &r));
        CHECK(r == (rank % 2 == 0 ? rank / 2 : MPI_UNDEFINED));
        /* even ranks by incl; equal to the range group */
        int ne = 0;
        for (int q = 0; q < size; q += 2)
            ranks[ne++] = q;
        MPI_OK(MPI_Group_incl(world_g, ne, ranks, &even_g));
        MPI_OK(MPI_Group_compare(even_g, range_g, &res));
        CHECK(res == MPI_IDENT);
        MPI_OK(MPI_Group_compare(even_g, world_g, &res));
        CHECK(res == MPI_UNEQUAL);
        /* descending range */
        MPI_Group desc_g;
        int drange[1][3] = {{size - 1, 0, -1}};
        MPI_OK(MPI_Group_range_incl(world_g, 1, drange, &desc_g));
        MPI_OK(MPI_Group_compare(desc_g, rev_g, &res));
        CHECK(res == MPI_IDENT);
        MPI_OK(MPI_Group_range_excl(world_g, 1, range, &d_g)); /* odd ranks */
        MPI_OK(MPI_Group_size(d_g, &n));
        CHECK(n == size / 2);
        MPI_OK(MPI_Group_free(&d_g));
        MPI_OK(MPI_Group_free(&desc_g));

        /* union: excl(0) U even = world (order: excl_g members then 0) */
        MPI_OK(MPI_Group_union(excl_g, even_g, &u_g));
        MPI_OK(MPI_Group_size(u_g, &n));
        CHECK(n == size);
        MPI_OK(MPI_Group_compare(u_g, world_g, &res));
        CHECKF(res == MPI_SIMILAR, "union compare %d", res);
        MPI_OK(MPI_Group_rank(u_g, &r));
        CHECK(r == (rank == 0 ? size - 1 : rank - 1));
        /* intersection: excl(0) ∩ even = even ranks >= 2, in excl_g order */
        MPI_OK(MPI_Group_intersection(excl_g, even_g, &i_g));
        MPI_OK(MPI_Group_size(i_g, &n));
        CHECK(n == ne - 1);
        MPI_OK(MPI_Group_rank(i_g, &r));
        CHECK(r == (rank % 2 == 0 && rank > 0 ? rank / 2 - 1 : MPI_UNDEFINED));
        MPI_OK(MPI_Group_free(&i_g));
        /* difference: world \ even = odd ranks */
        MPI_OK(MPI_Group_difference(world_g, even_g, &d_g));
        MPI_OK(MPI_Group_size(d_g, &n));
        CHECK(n == size / 2);
        MPI_OK(MPI_Group_rank(d_g, &r));
        CHECK(r == (rank % 2 == 1 ? rank / 2 : MPI_UNDEFINED));
        MPI_OK(MPI_Group_free(&d_g));
        /* empty results */
        MPI_OK(MPI_Group_difference(even_g, world_g, &d_g));
        MPI_OK(MPI_Group_size(d_g, &n));
        CHECK(n == 0);
        MPI_OK(MPI_Group_compare(d_g, MPI_GROUP_EMPTY, &res));
        CHECK(res == MPI_IDENT);
        if (d_g != MPI_GROUP_EMPTY)
            MPI_OK(MPI_Group_free(&d_g));
        MPI_OK(MPI_Group_size(MPI_GROUP_EMPTY, &n));
        CHECK(n == 0);
        MPI_OK(MPI_Group_rank(MPI_GROUP_EMPTY, &r));
        CHECK(r == MPI_UNDEFINED);

        /* translate ranks: reversed group, PROC_NULL passes through, a rank
         * missing from the target group is MPI_UNDEFINED */
        int in[3] = {0, MPI_PROC_NULL, size - 1}, out[3] = {-7, -7, -7};
        MPI_OK(MPI_Group_translate_ranks(rev_g, 3, in, world_g, out));
        CHECKF(out[0] == size - 1 && out[1] == MPI_PROC_NULL && out[2] == 0, "translate %d %d %d", out[0],
               out[1], out[2]);
        int in2[2] = {0, 1};
        MPI_OK(MPI_Group_translate_ranks(world_g, 2, in2, excl_g, out));
        CHECK(out[0] == MPI_UNDEFINED && out[1] == 0);
        free(ranks);
        MPI_OK(MPI_Group_free(&u_g));
        MPI_OK(MPI_Group_free(&range_g));
    }

    /* ---- Comm_create from a group (collective over world) ---- */
    {
        MPI_Comm ec;
        MPI_OK(MPI_Comm_create(MPI_COMM_WORLD, even_g, &ec));
        if (rank % 2 == 0) {
            CHECK(ec != MPI_COMM_NULL);
            MPI_OK(MPI_Comm_rank(ec, &r));
            MPI_OK(MPI_Comm_size(ec, &n));
            CHECK(r == rank / 2 && n == (size + 1) / 2);
            MPI_Group g;
            MPI_OK(MPI_Comm_group(ec, &g));
            MPI_OK(MPI_Group_compare(g, even_g, &res));
            CHECK(res == MPI_IDENT);
            MPI_OK(MPI_Group_free(&g));
            if (n > 1)
                ring_check(ec, 5, "Comm_create(even)");
            MPI_OK(MPI_Comm_free(&ec));
        } else {
            CHECK(ec == MPI_COMM_NULL);
        }
        /* reversed order group: ranks follow the group */
        MPI_OK(MPI_Comm_create(MPI_COMM_WORLD, rev_g, &ec));
        MPI_OK(MPI_Comm_rank(ec, &r));
        CHECK(r == size - 1 - rank);
        ring_check(ec, 6, "Comm_create(reversed)");
        MPI_OK(MPI_Comm_free(&ec));
        /* Comm_create_group: collective over the group members only */
        if (rank != 0) {
            MPI_OK(MPI_Comm_create_group(MPI_COMM_WORLD, excl_g, 77, &ec));
            MPI_OK(MPI_Comm_rank(ec, &r));
            MPI_OK(MPI_Comm_size(ec, &n));
            CHECK(r == rank - 1 && n == size - 1);
            if (n > 1)
                ring_check(ec, 7, "Comm_create_group");
            MPI_OK(MPI_Comm_free(&ec));
        }
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    }
    MPI_OK(MPI_Group_free(&even_g));
    MPI_OK(MPI_Group_free(&rev_g));
    MPI_OK(MPI_Group_free(&excl_g));
    MPI_OK(MPI_Group_free(&world_g));
    CHECK(world_g == MPI_GROUP_NULL);

    /* ---- attributes ---- */
    {
        int extra = 4242, key, key_nocopy, key_dupfn, flag;
        static int value = 7, other = 9;
        void *got;
        MPI_OK(MPI_Comm_create_keyval(copy_cb, delete_cb, &key, &extra));
        MPI_OK(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &key_nocopy, NULL));
        MPI_OK(MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, &key_dupfn, NULL));
        MPI_Comm c;
        MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &c));
        MPI_OK(MPI_Comm_get_attr(c, key, &got, &flag));
        CHECK(flag == 0);
        MPI_OK(MPI_Comm_set_attr(c, key, &value));
        MPI_OK(MPI_Comm_set_attr(c, key_nocopy, &other));
        MPI_OK(MPI_Comm_set_attr(c, key_dupfn, &other));
        MPI_OK(MPI_Comm_get_attr(c, key, &got, &flag));
        CHECK(flag == 1 && got == &value);
        /* replacing a value calls the delete callback on the old one */
        MPI_OK(MPI_Comm_set_attr(c, key, &value));
        CHECKF(delete_calls == 1 && last_deleted == 7, "delete on replace: %d calls", delete_calls);
        /* dup copies through the callbacks */
        MPI_Comm c2;
        MPI_OK(MPI_Comm_dup(c, &c2));
        CHECK(copy_calls == 1);
        MPI_OK(MPI_Comm_get_attr(c2, key, &got, &flag));
        CHECK(flag == 1 && *(int *)got == 1007);
        MPI_OK(MPI_Comm_get_attr(c2, key_nocopy, &got, &flag));
        CHECK(flag == 0);
        MPI_OK(MPI_Comm_get_attr(c2, key_dupfn, &got, &flag));
        CHECK(flag == 1 && got == &other);
        /* delete explicitly on the original */
        MPI_OK(MPI_Comm_delete_attr(c, key));
        CHECK(delete_calls == 2 && last_deleted == 7);
        MPI_OK(MPI_Comm_get_attr(c, key, &got, &flag));
        CHECK(flag == 0);
        /* freeing the copy calls delete on its value */
        MPI_OK(MPI_Comm_free(&c2));
        CHECK(delete_calls == 3 && last_deleted == 1007);
        /* the keyval can be freed while still attached; the attribute lives
         * on until the communicator goes */
        MPI_OK(MPI_Comm_set_attr(c, key, &value));
        MPI_OK(MPI_Comm_free_keyval(&key));
        CHECK(key == MPI_KEYVAL_INVALID);
        MPI_OK(MPI_Comm_free(&c));
        CHECK(delete_calls == 4 && last_deleted == 7);
        MPI_OK(MPI_Comm_free_keyval(&key_nocopy));
        MPI_OK(MPI_Comm_free_keyval(&key_dupfn));

        /* predefined attribute */
        int *tub;
        MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tub, &flag));
        CHECK(flag == 1 && *tub >= 32767);
        /* and it is available on a dup too (the standard attaches it to
         * COMM_WORLD; native Open MPI also answers it on derived
         * communicators, and applications rely on that) */
        MPI_OK(MPI_Comm_get_attr(dup, MPI_TAG_UB, &tub, &flag));
        CHECK(flag == 1 && *tub >= 32767);
        /* using the largest tag works */
        int v = rank, w = -1;
        MPI_OK(MPI_Sendrecv(&v, 1, MPI_INT, (rank + 1) % size, *tub, &w, 1, MPI_INT,
                            (rank + size - 1) % size, *tub, dup, MPI_STATUS_IGNORE));
        CHECK(w == (rank + size - 1) % size);
    }

    /* ---- many communicators: create and free in a loop ---- */
    for (int i = 0; i < 50; i++) {
        MPI_Comm a, b;
        MPI_OK(MPI_Comm_dup(dup, &a));
        MPI_OK(MPI_Comm_split(a, rank % 2, -rank, &b));
        int x = 1, y = 0;
        MPI_OK(MPI_Allreduce(&x, &y, 1, MPI_INT, MPI_SUM, b));
        CHECK(y == (rank % 2 == 0 ? (size + 1) / 2 : size / 2));
        MPI_OK(MPI_Comm_free(&b));
        MPI_OK(MPI_Comm_free(&a));
    }

    /* ---- MPI_Comm_disconnect (MPI-3.1 10.5.4) on an ordinary communicator: collective, the
     * attributes deleted, the handle set to MPI_COMM_NULL; refused for MPI_COMM_NULL and the
     * predefined communicators ---- */
    {
        MPI_Comm d;
        MPI_OK(MPI_Comm_dup(dup, &d));
        int key, extra = 4242, value = 5;
        MPI_OK(MPI_Comm_create_keyval(copy_cb, delete_cb, &key, &extra));
        MPI_OK(MPI_Comm_set_attr(d, key, &value));
        int before = delete_calls;
        int v = rank, w = -1;
        MPI_OK(MPI_Sendrecv(&v, 1, MPI_INT, (rank + 1) % size, 3, &w, 1, MPI_INT, (rank + size - 1) % size, 3, d,
                            MPI_STATUS_IGNORE));
        CHECK(w == (rank + size - 1) % size);
        MPI_OK(MPI_Comm_disconnect(&d));
        CHECK(d == MPI_COMM_NULL);
        CHECKF(delete_calls == before + 1 && last_deleted == 5, "disconnect deleted %d attributes",
               delete_calls - before);
        MPI_OK(MPI_Comm_free_keyval(&key));
        MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
        MPI_Comm null = MPI_COMM_NULL, world = MPI_COMM_WORLD;
        int rc = MPI_Comm_disconnect(&null), cls = -1;
        MPI_OK(MPI_Error_class(rc, &cls));
        CHECKF(cls == MPI_ERR_COMM, "disconnecting MPI_COMM_NULL gave class %d", cls);
        rc = MPI_Comm_disconnect(&world);
        MPI_OK(MPI_Error_class(rc, &cls));
        CHECKF(cls == MPI_ERR_COMM && world == MPI_COMM_WORLD, "disconnecting MPI_COMM_WORLD gave class %d", cls);
        MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL));
    }

    MPI_OK(MPI_Comm_free(&rev));
    MPI_OK(MPI_Comm_free(&dup));
    CHECK(dup == MPI_COMM_NULL);
    return finish("comms_groups");
}
