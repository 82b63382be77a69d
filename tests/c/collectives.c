/* collectives: Barrier, Bcast, Reduce/Allreduce over every predefined op and
 * the usual C types, MAXLOC/MINLOC, MPI_IN_PLACE, Gather(v), Scatter(v),
 * Allgather(v), Alltoall(v,w), Reduce_scatter(_block), Scan, Exscan and
 * user-defined ops (commutative, and non-commutative 2x2 matrix products
 * whose order of application is checked), at several message sizes. */
#include "check.h"

static int rank, size;
static const int counts[] = {1, 3, 1000, 65536};
#define NCOUNTS 4

enum { SUM, PROD, MAX, MIN, LAND, LOR, BOR, BAND, BXOR, NOPS };
static const char *opname[NOPS] = {"SUM", "PROD", "MAX", "MIN", "LAND", "LOR", "BOR", "BAND", "BXOR"};
static MPI_Op mpiop(int o)
{
    switch (o) {
    case SUM: return MPI_SUM;
    case PROD: return MPI_PROD;
    case MAX: return MPI_MAX;
    case MIN: return MPI_MIN;
    case LAND: return MPI_LAND;
    case LOR: return MPI_LOR;
    case BOR: return MPI_BOR;
    case BAND: return MPI_BAND;
    default: return MPI_BXOR;
    }
}

/* small values so that sums and products are exact in every type */
static long gen(int o, int r, int i)
{
    switch (o) {
    case PROD: return ((r + i) % 3 == 0) ? 2 : 1;
    case LAND: case LOR: return (i % 4 == 0) ? 1 : ((r + i) % 3 != 0) ? (r + 1) : 0;
    case BOR: case BAND: case BXOR: return (long)((1u << ((r + i) % 8)) | ((unsigned)i & 0x30u) | 0x100u);
    default: return (r * 7 + i * 3) % 13 + (i % 5);
    }
}

/* One reduction test per C type. mode 0: Reduce at each root (all roots for
 * small counts), 1: Allreduce, 2: Allreduce in place, 3: Reduce in place at
 * the root. */
#define DEF_RED(T, MT, NAME, INTEGER)                                          \
    static T comb_##NAME(int o, T a, T b)                                      \
    {                                                                          \
        switch (o) {                                                           \
        case SUM: return a + b;                                                \
        case PROD: return a * b;                                               \
        case MAX: return a > b ? a : b;                                        \
        case MIN: return a < b ? a : b;                                        \
        case LAND: return (T)(a && b);                                         \
        case LOR: return (T)(a || b);                                          \
        default: return INTEGER ? bits_##NAME(o, a, b) : a;                    \
        }                                                                      \
    }                                                                          \
    static void red_##NAME(int o, int count, int mode, int root)               \
    {                                                                          \
        T *in = xmalloc(sizeof(T) * (size_t)count);                            \
        T *out = xmalloc(sizeof(T) * (size_t)count);                           \
        for (int i = 0; i < count; i++) {                                      \
            in[i] = (T)gen(o, rank, i);                                        \
            out[i] = (T)-77;                                                   \
        }                                                                      \
        int have = 1;                                                          \
        if (mode == 0) {                                                       \
            MPI_OK(MPI_Reduce(in, out, count, MT, mpiop(o), root, MPI_COMM_WORLD)); \
            have = rank == root;                                               \
        } else if (mode == 1) {                                                \
            MPI_OK(MPI_Allreduce(in, out, count, MT, mpiop(o), MPI_COMM_WORLD)); \
        } else if (mode == 2) {                                                \
            memcpy(out, in, sizeof(T) * (size_t)count);                        \
            MPI_OK(MPI_Allreduce(MPI_IN_PLACE, out, count, MT, mpiop(o), MPI_COMM_WORLD)); \
        } else {                                                               \
            if (rank == root) {                                                \
                memcpy(out, in, sizeof(T) * (size_t)count);                    \
                MPI_OK(MPI_Reduce(MPI_IN_PLACE, out, count, MT, mpiop(o), root, MPI_COMM_WORLD)); \
            } else {                                                           \
                MPI_OK(MPI_Reduce(in, NULL, count, MT, mpiop(o), root, MPI_COMM_WORLD)); \
            }                                                                  \
            have = rank == root;                                               \
        }                                                                      \
        if (have) {                                                            \
            for (int i = 0; i < count; i++) {                                  \
                T e = (T)gen(o, 0, i);                                         \
                for (int r = 1; r < size; r++)                                 \
                    e = comb_##NAME(o, e, (T)gen(o, r, i));                    \
                if (o == LAND || o == LOR)                                     \
                    CHECKF((out[i] != 0) == (e != 0), "%s %s count %d mode %d elem %d", \
                           #NAME, opname[o], count, mode, i);                  \
                else                                                           \
                    CHECKF(out[i] == e, "%s %s count %d mode %d root %d elem %d: got %g expected %g", \
                           #NAME, opname[o], count, mode, root, i, (double)out[i], (double)e); \
            }                                                                  \
        } else {                                                               \
            for (int i = 0; i < count; i++)                                    \
                CHECK(out[i] == (T)-77);                                       \
        }                                                                      \
        free(in);                                                              \
        free(out);                                                             \
    }

#define DEF_BITS(T, NAME)                                                      \
    static T bits_##NAME(int o, T a, T b)                                      \
    {                                                                          \
        return o == BOR ? (a | b) : o == BAND ? (a & b) : (a ^ b);             \
    }
#define DEF_NOBITS(T, NAME)                                                    \
    static T bits_##NAME(int o, T a, T b)                                      \
    {                                                                          \
        (void)o; (void)b;                                                      \
        return a;                                                              \
    }

DEF_BITS(int, int)
DEF_BITS(long, long)
DEF_BITS(unsigned, unsigned)
DEF_NOBITS(double, double)
DEF_NOBITS(float, float)
DEF_RED(int, MPI_INT, int, 1)
DEF_RED(long, MPI_LONG, long, 1)
DEF_RED(unsigned, MPI_UNSIGNED, unsigned, 1)
DEF_RED(double, MPI_DOUBLE, double, 0)
DEF_RED(float, MPI_FLOAT, float, 0)

typedef void (*red_fn)(int, int, int, int);

static void all_reductions(void)
{
    struct { red_fn f; int integer; } types[] = {
        {red_int, 1}, {red_long, 1}, {red_unsigned, 1}, {red_double, 0}, {red_float, 0}};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (int o = 0; o < NOPS; o++) {
            /* logical and bitwise ops are for integer types only */
            if (!types[t].integer && o >= LAND)
                continue;
            for (int c = 0; c < NCOUNTS; c++) {
                int count = counts[c];
                int big = count > 1000;
                if (big && o != SUM && o != MAX)
                    continue; /* keep the run short */
                for (int root = 0; root < size; root++) {
                    if (big && root != size - 1)
                        continue;
                    types[t].f(o, count, 0, root);
                    types[t].f(o, count, 3, (root + 1) % size);
                }
                types[t].f(o, count, 1, 0);
                types[t].f(o, count, 2, 0);
            }
        }
    }
}

/* MAXLOC / MINLOC with MPI_DOUBLE_INT and MPI_2INT: ties resolve to the
 * lowest index. */
static void loc_tests(void)
{
    for (int c = 0; c < 3; c++) {
        int count = counts[c];
        struct { double v; int i; } *din = xmalloc(sizeof *din * (size_t)count),
                                     *dout = xmalloc(sizeof *dout * (size_t)count);
        struct { int v; int i; } *iin = xmalloc(sizeof *iin * (size_t)count),
                                  *iout = xmalloc(sizeof *iout * (size_t)count);
        for (int op = 0; op < 2; op++) {
            MPI_Op mop = op == 0 ? MPI_MAXLOC : MPI_MINLOC;
            for (int i = 0; i < count; i++) {
                int v = (i * 7 + rank * 3) % 5; /* ties across ranks */
                din[i].v = v + 0.25;
                din[i].i = rank * 10;
                iin[i].v = v - 2;
                iin[i].i = rank * 10 + 1;
            }
            MPI_OK(MPI_Allreduce(din, dout, count, MPI_DOUBLE_INT, mop, MPI_COMM_WORLD));
            MPI_OK(MPI_Reduce(iin, iout, count, MPI_2INT, mop, size - 1, MPI_COMM_WORLD));
            for (int i = 0; i < count; i++) {
                int best = (i * 7) % 5, bi = 0;
                for (int r = 1; r < size; r++) {
                    int v = (i * 7 + r * 3) % 5;
                    if (op == 0 ? v > best : v < best) {
                        best = v;
                        bi = r;
                    }
                }
                CHECKF(dout[i].v == best + 0.25 && dout[i].i == bi * 10,
                       "%s DOUBLE_INT elem %d got (%g,%d) expected (%g,%d)", op ? "MINLOC" : "MAXLOC",
                       i, dout[i].v, dout[i].i, best + 0.25, bi * 10);
                if (rank == size - 1)
                    CHECKF(iout[i].v == best - 2 && iout[i].i == bi * 10 + 1,
                           "%s 2INT elem %d got (%d,%d)", op ? "MINLOC" : "MAXLOC", i, iout[i].v,
                           iout[i].i);
            }
        }
        free(din);
        free(dout);
        free(iin);
        free(iout);
    }
}

static void bcast_tests(void)
{
    const int sizes[] = {1, 100, 3 << 20};
    for (int s = 0; s < 3; s++) {
        int n = sizes[s];
        unsigned char *b = xmalloc((size_t)n);
        for (int root = 0; root < size; root++) {
            for (int i = 0; i < n; i++)
                b[i] = rank == root ? (unsigned char)(i * 13 + root) : 0;
            MPI_OK(MPI_Bcast(b, n, MPI_BYTE, root, MPI_COMM_WORLD));
            for (int i = 0; i < n; i++)
                if (b[i] != (unsigned char)(i * 13 + root))
                    CHECKF(0, "Bcast %d bytes root %d: byte %d", n, root, i);
        }
        free(b);
    }
    /* bcast of ints and doubles */
    int iv[10];
    double dv[10];
    for (int i = 0; i < 10; i++) {
        iv[i] = rank == 1 ? i * i : -1;
        dv[i] = rank == 1 ? i / 4.0 : -1;
    }
    MPI_OK(MPI_Bcast(iv, 10, MPI_INT, 1, MPI_COMM_WORLD));
    MPI_OK(MPI_Bcast(dv, 10, MPI_DOUBLE, 1, MPI_COMM_WORLD));
    for (int i = 0; i < 10; i++)
        CHECK(iv[i] == i * i && dv[i] == i / 4.0);
}

static int val(int r, int i) { return r * 100003 + i; }

static void gather_scatter_tests(void)
{
    for (int c = 0; c < NCOUNTS; c++) {
        int n = counts[c];
        if (n > 1000)
            n = 16384;
        int *sb = xmalloc(sizeof(int) * (size_t)n);
        int *rb = xmalloc(sizeof(int) * (size_t)n * (size_t)size);
        for (int root = 0; root < size; root++) {
            /* Gather */
            for (int i = 0; i < n; i++)
                sb[i] = val(rank, i);
            for (int i = 0; i < n * size; i++)
                rb[i] = -1;
            MPI_OK(MPI_Gather(sb, n, MPI_INT, rb, n, MPI_INT, root, MPI_COMM_WORLD));
            if (rank == root)
                for (int r = 0; r < size; r++)
                    for (int i = 0; i < n; i++)
                        CHECKF(rb[r * n + i] == val(r, i), "Gather n %d root %d from %d elem %d", n, root, r, i);
            /* Gather in place */
            if (rank == root) {
                for (int i = 0; i < n * size; i++)
                    rb[i] = -1;
                for (int i = 0; i < n; i++)
                    rb[root * n + i] = val(root, i) + 1;
                MPI_OK(MPI_Gather(MPI_IN_PLACE, n, MPI_INT, rb, n, MPI_INT, root, MPI_COMM_WORLD));
            } else {
                for (int i = 0; i < n; i++)
                    sb[i] = val(rank, i) + 1;
                MPI_OK(MPI_Gather(sb, n, MPI_INT, NULL, 0, MPI_INT, root, MPI_COMM_WORLD));
            }
            if (rank == root)
                for (int r = 0; r < size; r++)
                    for (int i = 0; i < n; i++)
                        CHECKF(rb[r * n + i] == val(r, i) + 1, "Gather IN_PLACE n %d root %d", n, root);
            /* Scatter */
            if (rank == root)
                for (int r = 0; r < size; r++)
                    for (int i = 0; i < n; i++)
                        rb[r * n + i] = val(r, i) * 3 + root;
            for (int i = 0; i < n; i++)
                sb[i] = -1;
            MPI_OK(MPI_Scatter(rb, n, MPI_INT, sb, n, MPI_INT, root, MPI_COMM_WORLD));
            for (int i = 0; i < n; i++)
                CHECKF(sb[i] == val(rank, i) * 3 + root, "Scatter n %d root %d elem %d", n, root, i);
            /* Scatter in place at the root: its own block stays put */
            if (rank == root) {
                MPI_OK(MPI_Scatter(rb, n, MPI_INT, MPI_IN_PLACE, n, MPI_INT, root, MPI_COMM_WORLD));
                for (int i = 0; i < n; i++)
                    CHECK(rb[root * n + i] == val(root, i) * 3 + root);
            } else {
                for (int i = 0; i < n; i++)
                    sb[i] = -1;
                MPI_OK(MPI_Scatter(NULL, 0, MPI_INT, sb, n, MPI_INT, root, MPI_COMM_WORLD));
                for (int i = 0; i < n; i++)
                    CHECK(sb[i] == val(rank, i) * 3 + root);
            }
            if (n > 1000 && root > 0)
                break;
        }
        /* Allgather, and in place */
        for (int i = 0; i < n; i++)
            sb[i] = val(rank, i);
        for (int i = 0; i < n * size; i++)
            rb[i] = -1;
        MPI_OK(MPI_Allgather(sb, n, MPI_INT, rb, n, MPI_INT, MPI_COMM_WORLD));
        for (int r = 0; r < size; r++)
            for (int i = 0; i < n; i++)
                CHECKF(rb[r * n + i] == val(r, i), "Allgather n %d from %d elem %d", n, r, i);
        for (int i = 0; i < n * size; i++)
            rb[i] = -1;
        for (int i = 0; i < n; i++)
            rb[rank * n + i] = val(rank, i) ^ 0x55;
        MPI_OK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, rb, n, MPI_INT, MPI_COMM_WORLD));
        for (int r = 0; r < size; r++)
            for (int i = 0; i < n; i++)
                CHECKF(rb[r * n + i] == (val(r, i) ^ 0x55), "Allgather IN_PLACE n %d", n);
        free(sb);
        free(rb);
    }
}

/* v-variants: rank r contributes cnt(r) = base + 3r elements; the receive
 * layout has gaps (displacement stride > count) and reversed placement. */
static void v_tests(void)
{
    const int bases[] = {0, 1, 500, 20000};
    for (int b = 0; b < 4; b++) {
        int base = bases[b];
        int *rc = xmalloc(sizeof(int) * (size_t)size), *dp = xmalloc(sizeof(int) * (size_t)size);
        int total = 0, maxc = base + 3 * (size - 1);
        for (int r = 0; r < size; r++) {
            rc[r] = base + 3 * r;
            dp[size - 1 - r] = 0; /* filled below */
        }
        /* reversed order with 2-element gaps */
        int off = 0;
        for (int r = size - 1; r >= 0; r--) {
            dp[r] = off;
            off += rc[r] + 2;
        }
        total = off;
        int *sb = xmalloc(sizeof(int) * (size_t)(maxc + 1));
        int *rb = xmalloc(sizeof(int) * (size_t)(total + 1));
        int mine = rc[rank];
        for (int root = 0; root < size; root++) {
            for (int i = 0; i < mine; i++)
                sb[i] = val(rank, i) + base;
            for (int i = 0; i < total; i++)
                rb[i] = -5;
            MPI_OK(MPI_Gatherv(sb, mine, MPI_INT, rb, rc, dp, MPI_INT, root, MPI_COMM_WORLD));
            if (rank == root) {
                for (int r = 0; r < size; r++) {
                    for (int i = 0; i < rc[r]; i++)
                        CHECKF(rb[dp[r] + i] == val(r, i) + base, "Gatherv base %d root %d from %d", base, root, r);
                    CHECK(rb[dp[r] + rc[r]] == -5 && rb[dp[r] + rc[r] + 1] == -5);
                }
            }
            /* Scatterv back, with values changed */
            if (rank == root)
                for (int r = 0; r < size; r++)
                    for (int i = 0; i < rc[r]; i++)
                        rb[dp[r] + i] = val(r, i) * 2 + root;
            for (int i = 0; i <= maxc; i++)
                sb[i] = -9;
            MPI_OK(MPI_Scatterv(rb, rc, dp, MPI_INT, sb, mine, MPI_INT, root, MPI_COMM_WORLD));
            for (int i = 0; i < mine; i++)
                CHECKF(sb[i] == val(rank, i) * 2 + root, "Scatterv base %d root %d", base, root);
            CHECK(sb[mine] == -9);
            if (base > 1000)
                break;
        }
        /* Allgatherv, and in place */
        for (int i = 0; i < mine; i++)
            sb[i] = val(rank, i) - base;
        for (int i = 0; i < total; i++)
            rb[i] = -5;
        MPI_OK(MPI_Allgatherv(sb, mine, MPI_INT, rb, rc, dp, MPI_INT, MPI_COMM_WORLD));
        for (int r = 0; r < size; r++)
            for (int i = 0; i < rc[r]; i++)
                CHECKF(rb[dp[r] + i] == val(r, i) - base, "Allgatherv base %d from %d", base, r);
        for (int i = 0; i < total; i++)
            rb[i] = -5;
        for (int i = 0; i < mine; i++)
            rb[dp[rank] + i] = val(rank, i) + 7;
        MPI_OK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, rb, rc, dp, MPI_INT, MPI_COMM_WORLD));
        for (int r = 0; r < size; r++) {
            for (int i = 0; i < rc[r]; i++)
                CHECKF(rb[dp[r] + i] == val(r, i) + 7, "Allgatherv IN_PLACE base %d", base);
            CHECK(rb[dp[r] + rc[r]] == -5);
        }
        free(sb);
        free(rb);
        free(rc);
        free(dp);
    }
}

static int a2a(int from, int to, int i) { return from * 1000000 + to * 10000 + i; }

static void alltoall_tests(void)
{
    /* 100000 ints (400 KB) per rank go by rendezvous, from and into the buffers themselves
     * (single copy on shared memory). */
    const int ns[] = {1, 7, 1000, 16384, 100000};
    for (int c = 0; c < 5; c++) {
        int n = ns[c];
        int *sb = xmalloc(sizeof(int) * (size_t)n * (size_t)size);
        int *rb = xmalloc(sizeof(int) * (size_t)n * (size_t)size);
        for (int to = 0; to < size; to++)
            for (int i = 0; i < n; i++)
                sb[to * n + i] = a2a(rank, to, i % 10000);
        for (int i = 0; i < n * size; i++)
            rb[i] = -1;
        MPI_OK(MPI_Alltoall(sb, n, MPI_INT, rb, n, MPI_INT, MPI_COMM_WORLD));
        for (int from = 0; from < size; from++)
            for (int i = 0; i < n; i++)
                CHECKF(rb[from * n + i] == a2a(from, rank, i % 10000), "Alltoall n %d from %d elem %d", n, from, i);
        free(sb);
        free(rb);
    }

    /* Alltoallv: rank r sends cnt(r,j) = (r + 2j) % 4 + m elements to j */
    const int ms[] = {0, 1, 3000};
    for (int c = 0; c < 3; c++) {
        int m = ms[c];
        int *sc = xmalloc(sizeof(int) * (size_t)size), *sd = xmalloc(sizeof(int) * (size_t)size);
        int *rc = xmalloc(sizeof(int) * (size_t)size), *rd = xmalloc(sizeof(int) * (size_t)size);
        int stot = 0, rtot = 0;
        for (int j = 0; j < size; j++) {
            sc[j] = (rank + 2 * j) % 4 + m;
            rc[j] = (j + 2 * rank) % 4 + m;
        }
        /* send blocks in reverse order, receive blocks with a gap of 1 */
        for (int j = size - 1; j >= 0; j--) {
            sd[j] = stot;
            stot += sc[j];
        }
        for (int j = 0; j < size; j++) {
            rd[j] = rtot;
            rtot += rc[j] + 1;
        }
        int *sb = xmalloc(sizeof(int) * (size_t)(stot + 1)), *rb = xmalloc(sizeof(int) * (size_t)(rtot + 1));
        for (int j = 0; j < size; j++)
            for (int i = 0; i < sc[j]; i++)
                sb[sd[j] + i] = a2a(rank, j, i);
        for (int i = 0; i < rtot; i++)
            rb[i] = -3;
        MPI_OK(MPI_Alltoallv(sb, sc, sd, MPI_INT, rb, rc, rd, MPI_INT, MPI_COMM_WORLD));
        for (int j = 0; j < size; j++) {
            for (int i = 0; i < rc[j]; i++)
                CHECKF(rb[rd[j] + i] == a2a(j, rank, i), "Alltoallv m %d from %d elem %d", m, j, i);
            CHECK(rb[rd[j] + rc[j]] == -3);
        }

        /* Alltoallw: same exchange with byte displacements and, for odd
         * sources, the receive described by one contiguous derived type. */
        MPI_Datatype *st = xmalloc(sizeof(MPI_Datatype) * (size_t)size),
                     *rt = xmalloc(sizeof(MPI_Datatype) * (size_t)size);
        int *sdb = xmalloc(sizeof(int) * (size_t)size), *rdb = xmalloc(sizeof(int) * (size_t)size),
            *rcw = xmalloc(sizeof(int) * (size_t)size);
        for (int j = 0; j < size; j++) {
            st[j] = MPI_INT;
            sdb[j] = sd[j] * (int)sizeof(int);
            rdb[j] = rd[j] * (int)sizeof(int);
            if (j % 2 == 1 && rc[j] > 0) {
                MPI_OK(MPI_Type_contiguous(rc[j], MPI_INT, &rt[j]));
                MPI_OK(MPI_Type_commit(&rt[j]));
                rcw[j] = 1;
            } else {
                rt[j] = MPI_INT;
                rcw[j] = rc[j];
            }
        }
        for (int i = 0; i < rtot; i++)
            rb[i] = -3;
        MPI_OK(MPI_Alltoallw(sb, sc, sdb, st, rb, rcw, rdb, rt, MPI_COMM_WORLD));
        for (int j = 0; j < size; j++) {
            for (int i = 0; i < rc[j]; i++)
                CHECKF(rb[rd[j] + i] == a2a(j, rank, i), "Alltoallw m %d from %d elem %d", m, j, i);
            CHECK(rb[rd[j] + rc[j]] == -3);
            if (rt[j] != MPI_INT)
                MPI_OK(MPI_Type_free(&rt[j]));
        }
        free(st); free(rt); free(sdb); free(rdb); free(rcw);
        free(sb); free(rb); free(sc); free(sd); free(rc); free(rd);
    }
}

static void reduce_scatter_tests(void)
{
    const int ms[] = {1, 100, 10000};
    for (int c = 0; c < 3; c++) {
        int m = ms[c];
        /* Reduce_scatter_block */
        int *sb = xmalloc(sizeof(int) * (size_t)m * (size_t)size);
        int *rb = xmalloc(sizeof(int) * (size_t)m * (size_t)size);
        for (int i = 0; i < m * size; i++)
            sb[i] = rank + i % 97;
        MPI_OK(MPI_Reduce_scatter_block(sb, rb, m, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
        for (int i = 0; i < m; i++) {
            int gi = rank * m + i;
            CHECKF(rb[i] == size * (size - 1) / 2 + size * (gi % 97), "Reduce_scatter_block m %d elem %d", m, i);
        }
        /* in place */
        for (int i = 0; i < m * size; i++)
            rb[i] = rank * 2 + i % 89;
        MPI_OK(MPI_Reduce_scatter_block(MPI_IN_PLACE, rb, m, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
        for (int i = 0; i < m; i++)
            CHECK(rb[i] == (size - 1) * 2 + (rank * m + i) % 89);
        /* Reduce_scatter with counts r+m-ish (one zero count allowed) */
        int *rc = xmalloc(sizeof(int) * (size_t)size), tot = 0, before = 0;
        for (int r = 0; r < size; r++) {
            rc[r] = (r == 1) ? 0 : m + r;
            if (r < rank)
                before += rc[r];
            tot += rc[r];
        }
        int *sb2 = xmalloc(sizeof(int) * (size_t)tot), *rb2 = xmalloc(sizeof(int) * (size_t)tot);
        for (int i = 0; i < tot; i++)
            sb2[i] = (rank + 1) * (i % 7 + 1);
        MPI_OK(MPI_Reduce_scatter(sb2, rb2, rc, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
        for (int i = 0; i < rc[rank]; i++)
            CHECKF(rb2[i] == size * (size + 1) / 2 * ((before + i) % 7 + 1), "Reduce_scatter m %d elem %d", m, i);
        free(sb); free(rb); free(rc); free(sb2); free(rb2);
    }
}

static void scan_tests(void)
{
    const int ms[] = {1, 50, 20000};
    for (int c = 0; c < 3; c++) {
        int m = ms[c];
        long *in = xmalloc(sizeof(long) * (size_t)m), *out = xmalloc(sizeof(long) * (size_t)m);
        double *din = xmalloc(sizeof(double) * (size_t)m), *dout = xmalloc(sizeof(double) * (size_t)m);
        for (int i = 0; i < m; i++) {
            in[i] = rank + 1 + i;
            din[i] = (double)((rank * 5 + i) % 11);
        }
        MPI_OK(MPI_Scan(in, out, m, MPI_LONG, MPI_SUM, MPI_COMM_WORLD));
        for (int i = 0; i < m; i++)
            CHECKF(out[i] == (long)(rank + 1) * (rank + 2) / 2 + (long)(rank + 1) * i, "Scan m %d elem %d", m, i);
        MPI_OK(MPI_Scan(din, dout, m, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
        for (int i = 0; i < m; i++) {
            double e = 0;
            for (int r = 0; r <= rank; r++)
                if ((double)((r * 5 + i) % 11) > e)
                    e = (double)((r * 5 + i) % 11);
            CHECK(dout[i] == e);
        }
        for (int i = 0; i < m; i++)
            out[i] = -1234;
        MPI_OK(MPI_Exscan(in, out, m, MPI_LONG, MPI_SUM, MPI_COMM_WORLD));
        if (rank > 0) /* undefined on rank 0 */
            for (int i = 0; i < m; i++)
                CHECKF(out[i] == (long)rank * (rank + 1) / 2 + (long)rank * i, "Exscan m %d elem %d", m, i);
        /* in place */
        for (int i = 0; i < m; i++)
            out[i] = rank + 1 + i;
        MPI_OK(MPI_Scan(MPI_IN_PLACE, out, m, MPI_LONG, MPI_SUM, MPI_COMM_WORLD));
        for (int i = 0; i < m; i++)
            CHECK(out[i] == (long)(rank + 1) * (rank + 2) / 2 + (long)(rank + 1) * i);
        for (int i = 0; i < m; i++)
            out[i] = rank + 1 + i;
        MPI_OK(MPI_Exscan(MPI_IN_PLACE, out, m, MPI_LONG, MPI_SUM, MPI_COMM_WORLD));
        if (rank > 0)
            for (int i = 0; i < m; i++)
                CHECK(out[i] == (long)rank * (rank + 1) / 2 + (long)rank * i);
        free(in); free(out); free(din); free(dout);
    }
}

/* ---- user-defined ops ---- */

/* commutative: elementwise (a + b) mod 1000 on ints */
static void addmod(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    int *a = in, *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = (a[i] + b[i]) % 1000;
}

/* non-commutative: 2x2 matrix product mod P; inout = in x inout, where "in"
 * holds the lower ranks' partial result, so the result is
 * A_0 x A_1 x ... x A_{n-1}. */
#define P 1000003ULL
typedef struct { long long m[4]; } mat;

static mat mmul(mat a, mat b)
{
    mat c;
    c.m[0] = (long long)(((unsigned long long)a.m[0] * (unsigned long long)b.m[0] + (unsigned long long)a.m[1] * (unsigned long long)b.m[2]) % P);
    c.m[1] = (long long)(((unsigned long long)a.m[0] * (unsigned long long)b.m[1] + (unsigned long long)a.m[1] * (unsigned long long)b.m[3]) % P);
    c.m[2] = (long long)(((unsigned long long)a.m[2] * (unsigned long long)b.m[0] + (unsigned long long)a.m[3] * (unsigned long long)b.m[2]) % P);
    c.m[3] = (long long)(((unsigned long long)a.m[2] * (unsigned long long)b.m[1] + (unsigned long long)a.m[3] * (unsigned long long)b.m[3]) % P);
    return c;
}

static int matmul_calls;
static MPI_Datatype mat_type;

static void matmul_op(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    CHECK(*dt == mat_type);
    mat *a = in, *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = mmul(a[i], b[i]);
    matmul_calls++;
}

static mat amat(int r, int i)
{
    mat a = {{1 + i % 5, r + 1, (r * 3 + i) % 4, 1}};
    return a;
}

static void user_op_tests(void)
{
    MPI_Op add, mm;
    MPI_OK(MPI_Op_create(addmod, 1, &add));
    MPI_OK(MPI_Op_create(matmul_op, 0, &mm));
    int commute = -1;
    MPI_OK(MPI_Op_commutative(add, &commute));
    CHECK(commute == 1);
    MPI_OK(MPI_Op_commutative(mm, &commute));
    CHECK(commute == 0);
    MPI_OK(MPI_Type_contiguous(4, MPI_LONG_LONG, &mat_type));
    MPI_OK(MPI_Type_commit(&mat_type));

    const int ms[] = {1, 5, 3000, 65536};
    for (int c = 0; c < 4; c++) {
        int m = ms[c];
        int *in = xmalloc(sizeof(int) * (size_t)m), *out = xmalloc(sizeof(int) * (size_t)m);
        for (int i = 0; i < m; i++)
            in[i] = (rank * 333 + i) % 1000;
        MPI_OK(MPI_Allreduce(in, out, m, MPI_INT, add, MPI_COMM_WORLD));
        for (int i = 0; i < m; i++) {
            int e = 0;
            for (int r = 0; r < size; r++)
                e = (e + (r * 333 + i) % 1000) % 1000;
            CHECKF(out[i] == e, "user commutative op m %d elem %d", m, i);
        }
        free(in);
        free(out);
    }

    const int ks[] = {1, 4, 2000, 40000}; /* 40000 matrices = 1.28 MB */
    for (int c = 0; c < 4; c++) {
        int k = ks[c];
        mat *in = xmalloc(sizeof(mat) * (size_t)k), *out = xmalloc(sizeof(mat) * (size_t)k);
        mat *exp_all = xmalloc(sizeof(mat) * (size_t)k), *exp_pre = xmalloc(sizeof(mat) * (size_t)k);
        for (int i = 0; i < k; i++) {
            in[i] = amat(rank, i);
            mat e = amat(0, i), pre = amat(0, i);
            for (int r = 1; r < size; r++) {
                e = mmul(e, amat(r, i));
                if (r <= rank)
                    pre = mmul(pre, amat(r, i));
            }
            exp_all[i] = e;
            exp_pre[i] = pre;
        }
        for (int root = 0; root < size; root++) {
            memset(out, 0, sizeof(mat) * (size_t)k);
            MPI_OK(MPI_Reduce(in, out, k, mat_type, mm, root, MPI_COMM_WORLD));
            if (rank == root)
                for (int i = 0; i < k; i++)
                    CHECKF(memcmp(&out[i], &exp_all[i], sizeof(mat)) == 0,
                           "non-commutative Reduce k %d root %d elem %d: wrong order of application", k, root, i);
            if (k > 100 && root > 0)
                break;
        }
        memset(out, 0, sizeof(mat) * (size_t)k);
        MPI_OK(MPI_Allreduce(in, out, k, mat_type, mm, MPI_COMM_WORLD));
        for (int i = 0; i < k; i++)
            CHECKF(memcmp(&out[i], &exp_all[i], sizeof(mat)) == 0, "non-commutative Allreduce k %d elem %d", k, i);
        memset(out, 0, sizeof(mat) * (size_t)k);
        MPI_OK(MPI_Scan(in, out, k, mat_type, mm, MPI_COMM_WORLD));
        for (int i = 0; i < k; i++)
            CHECKF(memcmp(&out[i], &exp_pre[i], sizeof(mat)) == 0, "non-commutative Scan k %d elem %d", k, i);
        MPI_OK(MPI_Exscan(in, out, k, mat_type, mm, MPI_COMM_WORLD));
        if (rank > 1) {
            /* prefix of ranks 0..rank-1 */
            for (int i = 0; i < k; i++) {
                mat pre = amat(0, i);
                for (int r = 1; r < rank; r++)
                    pre = mmul(pre, amat(r, i));
                CHECKF(memcmp(&out[i], &pre, sizeof(mat)) == 0, "non-commutative Exscan k %d elem %d", k, i);
            }
        } else if (rank == 1) {
            for (int i = 0; i < k; i++) {
                mat a0 = amat(0, i);
                CHECK(memcmp(&out[i], &a0, sizeof(mat)) == 0);
            }
        }
        /* Reduce_scatter_block with the non-commutative op */
        mat *big = xmalloc(sizeof(mat) * (size_t)k * (size_t)size);
        for (int j = 0; j < size; j++)
            for (int i = 0; i < k; i++)
                big[j * k + i] = amat(rank, i + j);
        MPI_OK(MPI_Reduce_scatter_block(big, out, k, mat_type, mm, MPI_COMM_WORLD));
        for (int i = 0; i < k; i++) {
            mat e = amat(0, i + rank);
            for (int r = 1; r < size; r++)
                e = mmul(e, amat(r, i + rank));
            CHECKF(memcmp(&out[i], &e, sizeof(mat)) == 0, "non-commutative Reduce_scatter_block k %d", k);
        }
        free(big);
        free(in); free(out); free(exp_all); free(exp_pre);
    }
    /* the user function must actually have been applied somewhere */
    int total_calls = 0;
    MPI_OK(MPI_Allreduce(&matmul_calls, &total_calls, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(total_calls > 0);
    MPI_OK(MPI_Op_free(&add));
    MPI_OK(MPI_Op_free(&mm));
    CHECK(add == MPI_OP_NULL && mm == MPI_OP_NULL);
    MPI_OK(MPI_Type_free(&mat_type));
}

/* Large allreduces and reduces of doubles (a reduce-scatter, then an allgather or a gather to
 * the root, each block landing in the receive buffer): element counts that do not cut evenly
 * into blocks, the send buffer read where it is and MPI_IN_PLACE, every root, and two
 * nonblocking allreduces in flight at once. */
static double lg(int r, int i) { return (double)(r + 1) * 0.5 + (double)(i % 1009); }
static double lg_sum(int i) { return 0.25 * size * (size + 1) + (double)size * (i % 1009); }

static void large_allreduce_tests(void)
{
    const int ns[] = {8192 + 3, 100003};
    for (int t = 0; t < 2; t++) {
        int n = ns[t];
        double *in = xmalloc(sizeof(double) * (size_t)n), *out = xmalloc(sizeof(double) * (size_t)n);
        double *out2 = xmalloc(sizeof(double) * (size_t)n);
        for (int i = 0; i < n; i++) in[i] = lg(rank, i);
        MPI_OK(MPI_Allreduce(in, out, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
        for (int i = 0; i < n; i++) CHECKF(out[i] == lg_sum(i), "large allreduce n %d elem %d: %g", n, i, out[i]);
        for (int i = 0; i < n; i++) CHECKF(in[i] == lg(rank, i), "large allreduce n %d changed the send buffer at %d", n, i);
        memcpy(out, in, sizeof(double) * (size_t)n);
        MPI_OK(MPI_Allreduce(MPI_IN_PLACE, out, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
        for (int i = 0; i < n; i++) CHECKF(out[i] == lg_sum(i), "large in-place allreduce n %d elem %d: %g", n, i, out[i]);
        for (int root = 0; root < size; root++) {
            for (int i = 0; i < n; i++) out[i] = -1.0;
            if (rank == root && root % 2) {
                memcpy(out, in, sizeof(double) * (size_t)n);
                MPI_OK(MPI_Reduce(MPI_IN_PLACE, out, n, MPI_DOUBLE, MPI_SUM, root, MPI_COMM_WORLD));
            } else {
                MPI_OK(MPI_Reduce(in, out, n, MPI_DOUBLE, MPI_SUM, root, MPI_COMM_WORLD));
            }
            for (int i = 0; i < n; i++)
                CHECKF(out[i] == (rank == root ? lg_sum(i) : -1.0), "large reduce n %d root %d elem %d: %g", n, root, i, out[i]);
        }
        MPI_Request rq[2];
        MPI_OK(MPI_Iallreduce(in, out, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &rq[0]));
        MPI_OK(MPI_Iallreduce(in, out2, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD, &rq[1]));
        MPI_OK(MPI_Waitall(2, rq, MPI_STATUSES_IGNORE));
        for (int i = 0; i < n; i++) {
            CHECKF(out[i] == lg_sum(i), "large iallreduce n %d elem %d: %g", n, i, out[i]);
            CHECKF(out2[i] == lg(size - 1, i), "large iallreduce MAX n %d elem %d: %g", n, i, out2[i]);
        }
        free(in);
        free(out);
        free(out2);
    }
    /* Large reduce-scatters with every part the same size (by blocks at a power of two of
     * ranks): Reduce_scatter with equal counts and Reduce_scatter_block. */
    int m = 20000;
    double *sb = xmalloc(sizeof(double) * (size_t)m * (size_t)size), *rb = xmalloc(sizeof(double) * (size_t)m);
    int *rc = xmalloc(sizeof(int) * (size_t)size);
    for (int i = 0; i < m * size; i++) sb[i] = lg(rank, i);
    for (int r = 0; r < size; r++) rc[r] = m;
    MPI_OK(MPI_Reduce_scatter(sb, rb, rc, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    for (int i = 0; i < m; i++) CHECKF(rb[i] == lg_sum(rank * m + i), "large reduce_scatter elem %d: %g", i, rb[i]);
    MPI_OK(MPI_Reduce_scatter_block(sb, rb, m, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    for (int i = 0; i < m; i++)
        CHECKF(rb[i] == lg_sum(rank * m + i), "large reduce_scatter_block elem %d: %g", i, rb[i]);
    free(sb);
    free(rb);
    free(rc);
}

/* Small collectives with a strided datatype (every other int) on one side and a contiguous
 * one on the other, and insignificant arguments left as garbage: on one host these run through
 * kawarimi's shared-memory slots, which must pack, unpack and ignore exactly as the standard
 * says. */
static void strided_small_tests(void)
{
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    enum { N = 3 };
    MPI_Datatype every_other;
    MPI_OK(MPI_Type_vector(N, 1, 2, MPI_INT, &every_other));
    MPI_OK(MPI_Type_commit(&every_other));
    int wide[2 * N * 8], flat[N * 8];
    for (int root = 0; root < size; root++) {
        /* Bcast: the root sends strided, the others receive strided. */
        for (int i = 0; i < 2 * N; i++)
            wide[i] = rank == root ? (i % 2 ? -7 : 100 * root + i) : -1;
        MPI_OK(MPI_Bcast(wide, 1, every_other, root, MPI_COMM_WORLD));
        for (int i = 0; i < 2 * N; i++)
            CHECKF(wide[i] == (i % 2 ? (rank == root ? -7 : -1) : 100 * root + i), "strided bcast root %d [%d] = %d",
                   root, i, wide[i]);
        /* Gather: contiguous blocks in, one strided element per rank at the root; the
         * non-roots' receive arguments are garbage. */
        int mine[N];
        for (int i = 0; i < N; i++)
            mine[i] = 10 * rank + i;
        for (int i = 0; i < 2 * N * size; i++)
            wide[i] = -1;
        if (rank == root)
            MPI_OK(MPI_Gather(mine, N, MPI_INT, wide, 1, every_other, root, MPI_COMM_WORLD));
        else
            MPI_OK(MPI_Gather(mine, N, MPI_INT, NULL, -5, MPI_DATATYPE_NULL, root, MPI_COMM_WORLD));
        if (rank == root)
            for (int r = 0; r < size; r++)
                for (int i = 0; i < 2 * N; i++) {
                    /* Element r of the vector type spans 2N-1 ints; consecutive ones follow at
                     * its extent (2N - 1). */
                    int at = r * (2 * N - 1) + i;
                    if (i % 2 == 0)
                        CHECKF(wide[at] == 10 * r + i / 2, "strided gather root %d from %d [%d] = %d", root, r, i,
                               wide[at]);
                }
        /* Scatter: strided blocks out of the root, contiguous in; the non-roots' send
         * arguments are garbage, and the root keeps its own block in place. */
        for (int i = 0; i < 2 * N * size; i++)
            wide[i] = i;
        for (int i = 0; i < N; i++)
            flat[i] = -1;
        if (rank == root)
            MPI_OK(MPI_Scatter(wide, 1, every_other, MPI_IN_PLACE, N, MPI_INT, root, MPI_COMM_WORLD));
        else
            MPI_OK(MPI_Scatter(NULL, -3, MPI_DATATYPE_NULL, flat, N, MPI_INT, root, MPI_COMM_WORLD));
        if (rank != root)
            for (int i = 0; i < N; i++)
                CHECKF(flat[i] == rank * (2 * N - 1) + 2 * i, "strided scatter root %d [%d] = %d", root, i, flat[i]);
    }
    /* Allgather and alltoall with strided receive buffers. */
    for (int i = 0; i < 2 * N * size; i++)
        wide[i] = -1;
    int one[N];
    for (int i = 0; i < N; i++)
        one[i] = rank * 1000 + i;
    MPI_OK(MPI_Allgather(one, N, MPI_INT, wide, 1, every_other, MPI_COMM_WORLD));
    for (int r = 0; r < size; r++)
        for (int i = 0; i < N; i++)
            CHECKF(wide[r * (2 * N - 1) + 2 * i] == r * 1000 + i, "strided allgather from %d [%d]", r, i);
    for (int i = 0; i < N * size; i++)
        flat[i] = rank * 100 + i;
    for (int i = 0; i < 2 * N * size; i++)
        wide[i] = -1;
    MPI_OK(MPI_Alltoall(flat, N, MPI_INT, wide, 1, every_other, MPI_COMM_WORLD));
    for (int r = 0; r < size; r++)
        for (int i = 0; i < N; i++)
            CHECKF(wide[r * (2 * N - 1) + 2 * i] == r * 100 + rank * N + i, "strided alltoall from %d [%d]", r, i);
    MPI_OK(MPI_Type_free(&every_other));
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);

    for (int i = 0; i < 10; i++)
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    bcast_tests();
    all_reductions();
    loc_tests();
    gather_scatter_tests();
    v_tests();
    alltoall_tests();
    reduce_scatter_tests();
    scan_tests();
    user_op_tests();
    large_allreduce_tests();
    strided_small_tests();
    return finish("collectives");
}
