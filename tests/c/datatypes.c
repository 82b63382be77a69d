/* datatypes: every type constructor, size/extent/true extent, Get_address,
 * Pack/Unpack, sending one layout and receiving a different but type-matched
 * one, MPI_BOTTOM with absolute addresses, and derived types in collectives. */
#include "check.h"
#include <stddef.h>

static int rank, size, next, prev;

static void extent_is(MPI_Datatype t, int sz, MPI_Aint lb, MPI_Aint ext, MPI_Aint tlb, MPI_Aint text,
                      const char *what)
{
    int s;
    MPI_Aint l, e;
    MPI_OK(MPI_Type_size(t, &s));
    CHECKF(s == sz, "%s: size %d expected %d", what, s, sz);
    MPI_OK(MPI_Type_get_extent(t, &l, &e));
    CHECKF(l == lb && e == ext, "%s: lb/extent %ld/%ld expected %ld/%ld", what, (long)l, (long)e, (long)lb,
           (long)ext);
    MPI_OK(MPI_Type_get_true_extent(t, &l, &e));
    CHECKF(l == tlb && e == text, "%s: true lb/extent %ld/%ld expected %ld/%ld", what, (long)l, (long)e,
           (long)tlb, (long)text);
}

/* send `count` items of type st from sb to next, receive into rb as
 * rcount items of rt from prev */
static void xfer(const void *sb, int count, MPI_Datatype st, void *rb, int rcount, MPI_Datatype rt, int tag)
{
    MPI_OK(MPI_Sendrecv(sb, count, st, next, tag, rb, rcount, rt, prev, tag, MPI_COMM_WORLD,
                        MPI_STATUS_IGNORE));
}

struct rec {
    char c;
    double d;
    int i;
    short s[3];
};

/* The elements of a darray that grid position `rank` owns, in memory order: a direct
 * reading of the ownership rules of MPI-3.1 4.1.4, to check MPI_Type_create_darray's type
 * against. Returns how many indices it wrote to `out`. */
static int darray_expected(int size, int rank, int nd, const int *g, const int *dist, const int *darg,
                           const int *ps, int order, int *out)
{
    int coords[4], rest = rank, below = size, total = 1, n = 0;
    for (int i = 0; i < nd; i++) {
        below /= ps[i];
        coords[i] = rest / below;
        rest %= below;
        total *= g[i];
    }
    for (int lin = 0; lin < total; lin++) {
        /* the index in each dimension of memory offset `lin` */
        int x[4], t = lin, mine = 1;
        for (int k = 0; k < nd; k++) {
            int d = order == MPI_ORDER_C ? nd - 1 - k : k;
            x[d] = t % g[d];
            t /= g[d];
        }
        for (int d = 0; d < nd; d++) {
            int owner;
            if (dist[d] == MPI_DISTRIBUTE_NONE) {
                owner = 0;
            } else if (dist[d] == MPI_DISTRIBUTE_BLOCK) {
                int blk = darg[d] == MPI_DISTRIBUTE_DFLT_DARG ? (g[d] + ps[d] - 1) / ps[d] : darg[d];
                owner = x[d] / blk;
            } else {
                int blk = darg[d] == MPI_DISTRIBUTE_DFLT_DARG ? 1 : darg[d];
                owner = (x[d] / blk) % ps[d];
            }
            mine &= owner == coords[d];
        }
        if (mine)
            out[n++] = lin;
    }
    return n;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);
    next = (rank + 1) % size;
    prev = (rank + size - 1) % size;
    const int I = (int)sizeof(int), D = (int)sizeof(double);

    /* ---- predefined sizes ---- */
    {
        int s;
        MPI_OK(MPI_Type_size(MPI_INT, &s));
        CHECK(s == I);
        MPI_OK(MPI_Type_size(MPI_DOUBLE, &s));
        CHECK(s == D);
        MPI_OK(MPI_Type_size(MPI_CHAR, &s));
        CHECK(s == 1);
        MPI_OK(MPI_Type_size(MPI_LONG_LONG, &s));
        CHECK(s == 8);
        extent_is(MPI_SHORT, 2, 0, 2, 0, 2, "MPI_SHORT");
    }

    /* ---- contiguous ---- */
    MPI_Datatype contig;
    MPI_OK(MPI_Type_contiguous(3, MPI_INT, &contig));
    MPI_OK(MPI_Type_commit(&contig));
    extent_is(contig, 3 * I, 0, 3 * I, 0, 3 * I, "contiguous");
    {
        int sb[12], rb[12];
        for (int i = 0; i < 12; i++) {
            sb[i] = rank * 100 + i;
            rb[i] = -1;
        }
        xfer(sb, 4, contig, rb, 12, MPI_INT, 1);
        for (int i = 0; i < 12; i++)
            CHECK(rb[i] == prev * 100 + i);
    }

    /* ---- vector: a 4x5 double matrix column pair ---- */
    MPI_Datatype vec;
    MPI_OK(MPI_Type_vector(4, 2, 5, MPI_DOUBLE, &vec));
    MPI_OK(MPI_Type_commit(&vec));
    extent_is(vec, 8 * D, 0, 17 * D, 0, 17 * D, "vector");
    {
        double m[20], flat[8];
        for (int i = 0; i < 20; i++)
            m[i] = rank * 1000 + i;
        xfer(m, 1, vec, flat, 8, MPI_DOUBLE, 2);
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 2; j++)
                CHECK(flat[k * 2 + j] == prev * 1000 + k * 5 + j);
        /* and back: contiguous into the strided layout */
        double m2[20];
        for (int i = 0; i < 20; i++)
            m2[i] = -1;
        xfer(flat, 8, MPI_DOUBLE, m2, 1, vec, 3);
        int pp = (prev + size - 1) % size;
        for (int i = 0; i < 20; i++) {
            int col = i % 5;
            CHECK(m2[i] == (col < 2 && i < 17 ? pp * 1000 + i : -1));
        }
    }

    /* ---- hvector with a stride in bytes ---- */
    MPI_Datatype hvec;
    MPI_OK(MPI_Type_create_hvector(3, 1, 24, MPI_INT, &hvec));
    MPI_OK(MPI_Type_commit(&hvec));
    extent_is(hvec, 3 * I, 0, 48 + I, 0, 48 + I, "hvector");
    {
        int sb[18], rb[3];
        for (int i = 0; i < 18; i++)
            sb[i] = rank * 10 + i;
        xfer(sb, 1, hvec, rb, 3, MPI_INT, 4);
        CHECK(rb[0] == prev * 10 + 0 && rb[1] == prev * 10 + 24 / I && rb[2] == prev * 10 + 48 / I);
    }

    /* ---- indexed ---- */
    MPI_Datatype idx;
    {
        int bl[3] = {2, 1, 3}, dp[3] = {0, 5, 9};
        MPI_OK(MPI_Type_indexed(3, bl, dp, MPI_INT, &idx));
        MPI_OK(MPI_Type_commit(&idx));
        extent_is(idx, 6 * I, 0, 12 * I, 0, 12 * I, "indexed");
        int sb[12], rb[6];
        for (int i = 0; i < 12; i++)
            sb[i] = rank * 50 + i;
        xfer(sb, 1, idx, rb, 6, MPI_INT, 5);
        int want[6] = {0, 1, 5, 9, 10, 11};
        for (int i = 0; i < 6; i++)
            CHECK(rb[i] == prev * 50 + want[i]);
        /* two items of the type are 12 ints apart */
        int sb2[24], rb2[12];
        for (int i = 0; i < 24; i++)
            sb2[i] = rank * 50 + i;
        xfer(sb2, 2, idx, rb2, 12, MPI_INT, 6);
        for (int i = 0; i < 6; i++)
            CHECK(rb2[i] == prev * 50 + want[i] && rb2[6 + i] == prev * 50 + 12 + want[i]);
    }

    /* ---- hindexed, unordered displacements ---- */
    MPI_Datatype hidx;
    {
        int bl[3] = {1, 2, 1};
        MPI_Aint dp[3] = {8 * D, 0, 4 * D};
        MPI_OK(MPI_Type_create_hindexed(3, bl, dp, MPI_DOUBLE, &hidx));
        MPI_OK(MPI_Type_commit(&hidx));
        extent_is(hidx, 4 * D, 0, 9 * D, 0, 9 * D, "hindexed");
        double sb[9], rb[4];
        for (int i = 0; i < 9; i++)
            sb[i] = rank + i / 10.0;
        xfer(sb, 1, hidx, rb, 4, MPI_DOUBLE, 7);
        /* type map order: 8, 0, 1, 4 */
        CHECK(rb[0] == prev + 0.8 && rb[1] == prev + 0.0 && rb[2] == prev + 0.1 && rb[3] == prev + 0.4);
    }

    /* ---- indexed_block, nonzero lower bound ---- */
    MPI_Datatype iblk;
    {
        int dp[3] = {1, 4, 8};
        MPI_OK(MPI_Type_create_indexed_block(3, 2, dp, MPI_INT, &iblk));
        MPI_OK(MPI_Type_commit(&iblk));
        extent_is(iblk, 6 * I, I, 9 * I, I, 9 * I, "indexed_block");
        int sb[10], rb[6];
        for (int i = 0; i < 10; i++)
            sb[i] = rank * 30 + i;
        xfer(sb, 1, iblk, rb, 6, MPI_INT, 8);
        int want[6] = {1, 2, 4, 5, 8, 9};
        for (int i = 0; i < 6; i++)
            CHECK(rb[i] == prev * 30 + want[i]);
    }

    /* ---- struct with padding, resized to the C struct's size ---- */
    MPI_Datatype rec_t, rec_raw;
    {
        struct rec r0;
        MPI_Aint base, a[4];
        MPI_OK(MPI_Get_address(&r0, &base));
        MPI_OK(MPI_Get_address(&r0.c, &a[0]));
        MPI_OK(MPI_Get_address(&r0.d, &a[1]));
        MPI_OK(MPI_Get_address(&r0.i, &a[2]));
        MPI_OK(MPI_Get_address(&r0.s, &a[3]));
        for (int k = 0; k < 4; k++)
            a[k] -= base;
        CHECK(a[0] == (MPI_Aint)offsetof(struct rec, c) && a[1] == (MPI_Aint)offsetof(struct rec, d));
        CHECK(a[2] == (MPI_Aint)offsetof(struct rec, i) && a[3] == (MPI_Aint)offsetof(struct rec, s));
        CHECK(MPI_Aint_diff(a[2], a[1]) == (MPI_Aint)(offsetof(struct rec, i) - offsetof(struct rec, d)));
        int bl[4] = {1, 1, 1, 3};
        MPI_Datatype ty[4] = {MPI_CHAR, MPI_DOUBLE, MPI_INT, MPI_SHORT};
        MPI_OK(MPI_Type_create_struct(4, bl, a, ty, &rec_raw));
        MPI_OK(MPI_Type_create_resized(rec_raw, 0, (MPI_Aint)sizeof(struct rec), &rec_t));
        MPI_OK(MPI_Type_commit(&rec_t));
        int sz = 1 + D + I + 6;
        /* true extent: from c to the end of s */
        MPI_Aint tend = (MPI_Aint)(offsetof(struct rec, s) + 3 * sizeof(short));
        extent_is(rec_t, sz, 0, (MPI_Aint)sizeof(struct rec), 0, tend, "struct resized");
        /* (the unresized struct's extent includes alignment padding by the
         * standard; not asserted here) */
        MPI_Aint l, t;
        MPI_OK(MPI_Type_get_true_extent(rec_raw, &l, &t));
        CHECK(l == 0 && t == tend);
        struct rec sb[5], rb[5];
        memset(rb, 0, sizeof rb);
        memset(sb, 0x7e, sizeof sb); /* padding bytes */
        for (int k = 0; k < 5; k++) {
            sb[k].c = (char)('a' + k + rank);
            sb[k].d = rank + k * 0.5;
            sb[k].i = rank * 10 + k;
            for (int j = 0; j < 3; j++)
                sb[k].s[j] = (short)(k * 3 + j - rank);
        }
        xfer(sb, 5, rec_t, rb, 5, rec_t, 9);
        for (int k = 0; k < 5; k++) {
            CHECK(rb[k].c == (char)('a' + k + prev) && rb[k].d == prev + k * 0.5 && rb[k].i == prev * 10 + k);
            for (int j = 0; j < 3; j++)
                CHECK(rb[k].s[j] == (short)(k * 3 + j - prev));
        }
        /* receive the same data as a flat type-matched layout: per record
         * char, double, int, 3 shorts -> a packed struct of those */
        struct flat { char c; double d; int i; short s[3]; } __attribute__((packed)) fr[5];
        MPI_Aint fd[4] = {0, 1, 1 + D, 1 + D + I};
        MPI_Datatype ft, ftr;
        MPI_OK(MPI_Type_create_struct(4, bl, fd, ty, &ft));
        MPI_OK(MPI_Type_create_resized(ft, 0, (MPI_Aint)sizeof(struct flat), &ftr));
        MPI_OK(MPI_Type_commit(&ftr));
        extent_is(ftr, sz, 0, sz, 0, sz, "packed struct");
        xfer(sb, 5, rec_t, fr, 5, ftr, 10);
        for (int k = 0; k < 5; k++) {
            double d;
            int iv;
            memcpy(&d, (char *)&fr[k] + 1, sizeof d);
            memcpy(&iv, (char *)&fr[k] + 1 + D, sizeof iv);
            CHECK(fr[k].c == (char)('a' + k + prev) && d == prev + k * 0.5 && iv == prev * 10 + k);
        }
        MPI_OK(MPI_Type_free(&ft));
        MPI_OK(MPI_Type_free(&ftr));
    }

    /* ---- subarray, C and Fortran order ---- */
    {
        int sizes[2] = {6, 8}, subs[2] = {2, 3}, starts[2] = {1, 2};
        MPI_Datatype sc, sf;
        MPI_OK(MPI_Type_create_subarray(2, sizes, subs, starts, MPI_ORDER_C, MPI_INT, &sc));
        MPI_OK(MPI_Type_create_subarray(2, sizes, subs, starts, MPI_ORDER_FORTRAN, MPI_INT, &sf));
        MPI_OK(MPI_Type_commit(&sc));
        MPI_OK(MPI_Type_commit(&sf));
        extent_is(sc, 6 * I, 0, 48 * I, (1 * 8 + 2) * I, (1 * 8 + 2 + 1) * I, "subarray C");
        extent_is(sf, 6 * I, 0, 48 * I, (1 + 2 * 6) * I, (1 + 2 * 6 + 1) * I, "subarray Fortran");
        int a[48], rb[6];
        for (int i = 0; i < 48; i++)
            a[i] = rank * 100 + i;
        xfer(a, 1, sc, rb, 6, MPI_INT, 11);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                CHECK(rb[i * 3 + j] == prev * 100 + (1 + i) * 8 + (2 + j));
        xfer(a, 1, sf, rb, 6, MPI_INT, 12);
        /* Fortran order: first index fastest, element (i,j) at i + 6j */
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++)
                CHECK(rb[j * 2 + i] == prev * 100 + (1 + i) + 6 * (2 + j));
        /* receive into a subarray of a zeroed array */
        int z[48];
        memset(z, 0, sizeof z);
        xfer(rb, 6, MPI_INT, z, 1, sc, 13);
        int pp = (prev + size - 1) % size, nz = 0;
        for (int i = 0; i < 48; i++)
            if (z[i])
                nz++;
        CHECK(nz == 6);
        CHECK(z[1 * 8 + 2] == pp * 100 + 1 + 6 * 2);
        MPI_OK(MPI_Type_free(&sc));
        MPI_OK(MPI_Type_free(&sf));
    }

    /* ---- resized and dup ---- */
    {
        MPI_Datatype r1, dupt;
        MPI_OK(MPI_Type_create_resized(MPI_INT, -I, 4 * I, &r1));
        MPI_OK(MPI_Type_commit(&r1));
        extent_is(r1, I, -I, 4 * I, 0, I, "resized int");
        /* 3 items of r1 pick every 4th int */
        int sb[12], rb[3];
        for (int i = 0; i < 12; i++)
            sb[i] = rank * 12 + i;
        xfer(sb, 3, r1, rb, 3, MPI_INT, 14);
        CHECK(rb[0] == prev * 12 && rb[1] == prev * 12 + 4 && rb[2] == prev * 12 + 8);
        MPI_OK(MPI_Type_dup(vec, &dupt));
        extent_is(dupt, 8 * D, 0, 17 * D, 0, 17 * D, "dup of vector");
        double m[20], flat[8];
        for (int i = 0; i < 20; i++)
            m[i] = rank + i;
        xfer(m, 1, dupt, flat, 8, MPI_DOUBLE, 15);
        CHECK(flat[0] == prev && flat[2] == prev + 5 && flat[7] == prev + 16);
        MPI_OK(MPI_Type_free(&dupt));
        CHECK(dupt == MPI_DATATYPE_NULL);
        MPI_OK(MPI_Type_free(&r1));
    }

    /* ---- nested: a vector of the struct type ---- */
    {
        MPI_Datatype vs;
        MPI_OK(MPI_Type_vector(2, 1, 3, rec_t, &vs));
        MPI_OK(MPI_Type_commit(&vs));
        struct rec sb[4], rb[2];
        memset(sb, 0, sizeof sb);
        for (int k = 0; k < 4; k++) {
            sb[k].i = rank * 10 + k;
            sb[k].d = k;
        }
        xfer(sb, 1, vs, rb, 2, rec_t, 16);
        CHECK(rb[0].i == prev * 10 && rb[1].i == prev * 10 + 3 && rb[1].d == 3);
        MPI_OK(MPI_Type_free(&vs));
    }

    /* ---- MPI_BOTTOM with absolute addresses ---- */
    {
        int x = rank * 3;
        double y = rank * 0.25;
        MPI_Aint ad[2];
        MPI_OK(MPI_Get_address(&x, &ad[0]));
        MPI_OK(MPI_Get_address(&y, &ad[1]));
        int bl[2] = {1, 1};
        MPI_Datatype ty[2] = {MPI_INT, MPI_DOUBLE}, abs_t;
        MPI_OK(MPI_Type_create_struct(2, bl, ad, ty, &abs_t));
        MPI_OK(MPI_Type_commit(&abs_t));
        struct { int a; double b; } in;
        MPI_Aint ib[2] = {offsetof(__typeof__(in), a), offsetof(__typeof__(in), b)};
        MPI_Datatype in_t;
        MPI_OK(MPI_Type_create_struct(2, bl, ib, ty, &in_t));
        MPI_OK(MPI_Type_commit(&in_t));
        xfer(MPI_BOTTOM, 1, abs_t, &in, 1, in_t, 17);
        CHECK(in.a == prev * 3 && in.b == prev * 0.25);
        MPI_OK(MPI_Type_free(&abs_t));
        MPI_OK(MPI_Type_free(&in_t));
    }

    /* ---- Pack / Unpack / Pack_size ---- */
    {
        int iv[5], psz1, psz2, pos = 0;
        double m[20];
        for (int i = 0; i < 5; i++)
            iv[i] = rank * 5 + i;
        for (int i = 0; i < 20; i++)
            m[i] = rank * 20 + i;
        MPI_OK(MPI_Pack_size(5, MPI_INT, MPI_COMM_WORLD, &psz1));
        MPI_OK(MPI_Pack_size(1, vec, MPI_COMM_WORLD, &psz2));
        CHECK(psz1 >= 5 * I && psz2 >= 8 * D);
        int cap = psz1 + psz2;
        char *buf = xmalloc((size_t)cap), *rbuf = xmalloc((size_t)cap);
        MPI_OK(MPI_Pack(iv, 5, MPI_INT, buf, cap, &pos, MPI_COMM_WORLD));
        CHECK(pos > 0 && pos <= psz1);
        MPI_OK(MPI_Pack(m, 1, vec, buf, cap, &pos, MPI_COMM_WORLD));
        CHECK(pos <= cap);
        MPI_Status st;
        MPI_OK(MPI_Sendrecv(buf, pos, MPI_PACKED, next, 18, rbuf, cap, MPI_PACKED, prev, 18, MPI_COMM_WORLD, &st));
        int got;
        MPI_OK(MPI_Get_count(&st, MPI_PACKED, &got));
        CHECK(got == pos);
        int oiv[5], upos = 0;
        double om[20];
        for (int i = 0; i < 20; i++)
            om[i] = -1;
        MPI_OK(MPI_Unpack(rbuf, cap, &upos, oiv, 5, MPI_INT, MPI_COMM_WORLD));
        MPI_OK(MPI_Unpack(rbuf, cap, &upos, om, 1, vec, MPI_COMM_WORLD));
        CHECK(upos == pos);
        for (int i = 0; i < 5; i++)
            CHECK(oiv[i] == prev * 5 + i);
        for (int i = 0; i < 20; i++)
            CHECK(om[i] == ((i % 5) < 2 && i < 17 ? prev * 20 + i : -1));
        /* packed data sent as MPI_PACKED can be received as the typed data
         * (homogeneous system): 5 ints then 8 doubles */
        struct { int i[5]; double d[8]; } typed;
        MPI_Aint tdp[2] = {offsetof(__typeof__(typed), i), offsetof(__typeof__(typed), d)};
        int tbl[2] = {5, 8};
        MPI_Datatype tty[2] = {MPI_INT, MPI_DOUBLE}, tt;
        MPI_OK(MPI_Type_create_struct(2, tbl, tdp, tty, &tt));
        MPI_OK(MPI_Type_commit(&tt));
        MPI_OK(MPI_Sendrecv(buf, pos, MPI_PACKED, next, 19, &typed, 1, tt, prev, 19, MPI_COMM_WORLD,
                            MPI_STATUS_IGNORE));
        CHECK(typed.i[4] == prev * 5 + 4 && typed.d[0] == prev * 20 && typed.d[7] == prev * 20 + 16);
        MPI_OK(MPI_Type_free(&tt));
        free(buf);
        free(rbuf);
    }

    /* ---- Get_elements on a partially filled derived receive ---- */
    {
        double sb[6] = {1, 2, 3, 4, 5, 6};
        double rb[20];
        MPI_Status st;
        MPI_OK(MPI_Sendrecv(sb, 3, MPI_DOUBLE, next, 20, rb, 2, vec, prev, 20, MPI_COMM_WORLD, &st));
        int c, e;
        MPI_OK(MPI_Get_count(&st, vec, &c));
        MPI_OK(MPI_Get_elements(&st, vec, &e));
        CHECK(c == MPI_UNDEFINED && e == 3);
        CHECK(rb[0] == 1 && rb[1] == 2 && rb[5] == 3);
    }

    /* ---- derived types in collectives ---- */
    {
        /* Gather of columns: each rank sends a contiguous column of M ints,
         * the root receives it as column r of an M x size matrix */
        enum { M = 7 };
        int col[M], *mat = xmalloc(sizeof(int) * M * (size_t)size);
        for (int i = 0; i < M; i++)
            col[i] = rank * 100 + i;
        MPI_Datatype colt, colr;
        MPI_OK(MPI_Type_vector(M, 1, size, MPI_INT, &colt));
        MPI_OK(MPI_Type_create_resized(colt, 0, I, &colr));
        MPI_OK(MPI_Type_commit(&colr));
        for (int root = 0; root < size; root++) {
            for (int i = 0; i < M * size; i++)
                mat[i] = -1;
            MPI_OK(MPI_Gather(col, M, MPI_INT, mat, 1, colr, root, MPI_COMM_WORLD));
            if (rank == root)
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < size; j++)
                        CHECKF(mat[i * size + j] == j * 100 + i, "column gather root %d (%d,%d)", root, i, j);
        }
        /* Scatter the columns back out */
        if (rank == 0)
            for (int i = 0; i < M * size; i++)
                mat[i] = i;
        MPI_OK(MPI_Scatter(mat, 1, colr, col, M, MPI_INT, 0, MPI_COMM_WORLD));
        for (int i = 0; i < M; i++)
            CHECK(col[i] == i * size + rank);
        /* Allgather with the column type */
        for (int i = 0; i < M; i++)
            col[i] = rank * 100 + i;
        MPI_OK(MPI_Allgather(col, M, MPI_INT, mat, 1, colr, MPI_COMM_WORLD));
        for (int i = 0; i < M; i++)
            for (int j = 0; j < size; j++)
                CHECK(mat[i * size + j] == j * 100 + i);

        /* Alltoall with resized vector types: a K x size matrix; column j
         * (stride size) goes to rank j, arriving as K contiguous ints */
        enum { K = 5 };
        int *a = xmalloc(sizeof(int) * K * (size_t)size), *b = xmalloc(sizeof(int) * K * (size_t)size);
        for (int k = 0; k < K; k++)
            for (int j = 0; j < size; j++)
                a[k * size + j] = rank * 10000 + j * 100 + k;
        MPI_Datatype kt, ktr;
        MPI_OK(MPI_Type_vector(K, 1, size, MPI_INT, &kt));
        MPI_OK(MPI_Type_create_resized(kt, 0, I, &ktr));
        MPI_OK(MPI_Type_commit(&ktr));
        MPI_OK(MPI_Alltoall(a, 1, ktr, b, K, MPI_INT, MPI_COMM_WORLD));
        for (int from = 0; from < size; from++)
            for (int k = 0; k < K; k++)
                CHECKF(b[from * K + k] == from * 10000 + rank * 100 + k, "alltoall vector from %d k %d", from, k);
        /* and the transpose on receive as well: send contiguous, receive the
         * column type */
        for (int j = 0; j < size; j++)
            for (int k = 0; k < K; k++)
                b[j * K + k] = rank * 10000 + j * 100 + k;
        MPI_OK(MPI_Alltoall(b, K, MPI_INT, a, 1, ktr, MPI_COMM_WORLD));
        for (int k = 0; k < K; k++)
            for (int from = 0; from < size; from++)
                CHECK(a[k * size + from] == from * 10000 + rank * 100 + k);
        /* Bcast and Allreduce with derived types */
        double m[20];
        for (int i = 0; i < 20; i++)
            m[i] = rank == 1 ? i : -1;
        MPI_OK(MPI_Bcast(m, 1, vec, 1, MPI_COMM_WORLD));
        for (int i = 0; i < 20; i++)
            CHECK(m[i] == ((i % 5) < 2 && i < 17 ? i : rank == 1 ? i : -1));
        /* (predefined reduction ops on derived datatypes are not tested:
         * native Open MPI 4.1 rejects MPI_SUM on a contiguous type of ints
         * with "not defined for non-intrinsic datatypes") */
        MPI_OK(MPI_Type_free(&kt));
        MPI_OK(MPI_Type_free(&ktr));
        MPI_OK(MPI_Type_free(&colt));
        MPI_OK(MPI_Type_free(&colr));
        free(a);
        free(b);
        free(mat);
    }

    /* freeing a type used to build another keeps the derived one usable */
    {
        MPI_Datatype base, outer;
        MPI_OK(MPI_Type_contiguous(2, MPI_INT, &base));
        MPI_OK(MPI_Type_vector(2, 1, 2, base, &outer));
        MPI_OK(MPI_Type_free(&base));
        MPI_OK(MPI_Type_commit(&outer));
        extent_is(outer, 4 * I, 0, 6 * I, 0, 6 * I, "vector of freed contiguous");
        int sb[6] = {1, 2, 3, 4, 5, 6}, rb[4];
        xfer(sb, 1, outer, rb, 4, MPI_INT, 21);
        CHECK(rb[0] == 1 && rb[1] == 2 && rb[2] == 5 && rb[3] == 6);
        MPI_OK(MPI_Type_free(&outer));
    }

    MPI_OK(MPI_Type_free(&contig));
    MPI_OK(MPI_Type_free(&vec));
    MPI_OK(MPI_Type_free(&hvec));
    MPI_OK(MPI_Type_free(&idx));
    MPI_OK(MPI_Type_free(&hidx));
    MPI_OK(MPI_Type_free(&iblk));
    MPI_OK(MPI_Type_free(&rec_t));
    MPI_OK(MPI_Type_free(&rec_raw));
    /* ---- Fortran 90 parameterized types and MPI_Type_match_size (the values are what
     * Open MPI 4.1 answers: this runs natively too) ---- */
    {
        struct { int r, size; const char *name; } ints[] = {
            {1, 1, "COMBINER MPI_BYTE"}, {2, 1, "COMBINER MPI_BYTE"}, {4, 2, "COMBINER MPI_SHORT"},
            {9, 4, "COMBINER MPI_INT"}, {18, 8, "COMBINER MPI_LONG"}};
        for (unsigned i = 0; i < sizeof ints / sizeof ints[0]; i++) {
            MPI_Datatype t, again;
            int sz, len, ni, na, nd, comb, r = -1;
            char name[MPI_MAX_OBJECT_NAME];
            MPI_OK(MPI_Type_create_f90_integer(ints[i].r, &t));
            MPI_OK(MPI_Type_create_f90_integer(ints[i].r, &again));
            CHECK(t == again);
            MPI_OK(MPI_Type_size(t, &sz));
            MPI_OK(MPI_Type_get_name(t, name, &len));
            CHECKF(sz == ints[i].size && strcmp(name, ints[i].name) == 0, "f90 integer %d: %d bytes, %s", ints[i].r, sz, name);
            MPI_OK(MPI_Type_get_envelope(t, &ni, &na, &nd, &comb));
            CHECK(ni == 1 && na == 0 && nd == 0 && comb == MPI_COMBINER_F90_INTEGER);
            MPI_OK(MPI_Type_get_contents(t, 1, 0, 0, &r, NULL, NULL));
            CHECK(r == ints[i].r);
        }
        struct { int p, r, size, cplx_size; } reals[] = {{6, 30, 4, 8}, {15, 300, 8, 16}, {18, 4000, 16, 32}, {MPI_UNDEFINED, 30, 4, 8}};
        for (unsigned i = 0; i < sizeof reals / sizeof reals[0]; i++) {
            MPI_Datatype t, c;
            int sz, csz, ni, na, nd, comb, pr[2];
            MPI_OK(MPI_Type_create_f90_real(reals[i].p, reals[i].r, &t));
            MPI_OK(MPI_Type_create_f90_complex(reals[i].p, reals[i].r, &c));
            MPI_OK(MPI_Type_size(t, &sz));
            MPI_OK(MPI_Type_size(c, &csz));
            CHECKF(sz == reals[i].size && csz == reals[i].cplx_size, "f90 real/complex %d,%d: %d/%d bytes", reals[i].p, reals[i].r, sz, csz);
            MPI_OK(MPI_Type_get_envelope(c, &ni, &na, &nd, &comb));
            CHECK(ni == 2 && comb == MPI_COMBINER_F90_COMPLEX);
            MPI_OK(MPI_Type_get_contents(t, 2, 0, 0, pr, NULL, NULL));
            CHECK(pr[0] == reals[i].p && pr[1] == reals[i].r);
        }
        /* a predefined type cannot be freed */
        MPI_Datatype t;
        MPI_OK(MPI_Type_create_f90_real(6, 30, &t));
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        CHECK(MPI_Type_free(&t) != MPI_SUCCESS);
        /* no such type */
        CHECK(MPI_Type_create_f90_integer(100, &t) != MPI_SUCCESS);
        struct { int cls, size; MPI_Datatype want; } m[] = {
            {MPI_TYPECLASS_INTEGER, 1, MPI_INTEGER1}, {MPI_TYPECLASS_INTEGER, 4, MPI_INTEGER},
            {MPI_TYPECLASS_INTEGER, 8, MPI_INTEGER8}, {MPI_TYPECLASS_REAL, 4, MPI_REAL},
            {MPI_TYPECLASS_REAL, 8, MPI_REAL8}, {MPI_TYPECLASS_COMPLEX, 16, MPI_COMPLEX16}};
        for (unsigned i = 0; i < sizeof m / sizeof m[0]; i++) {
            MPI_OK(MPI_Type_match_size(m[i].cls, m[i].size, &t));
            CHECKF(t == m[i].want, "match_size(%d, %d)", m[i].cls, m[i].size);
        }
        CHECK(MPI_Type_match_size(MPI_TYPECLASS_REAL, 2, &t) != MPI_SUCCESS);
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    }

    /* ---- MPI_Type_create_darray against the ownership rules, for every grid position ---- */
    {
        struct {
            int nd, g[3], dist[3], darg[3], ps[3], order;
        } cases[] = {
            {2, {10, 7}, {MPI_DISTRIBUTE_BLOCK, MPI_DISTRIBUTE_BLOCK}, {MPI_DISTRIBUTE_DFLT_DARG, MPI_DISTRIBUTE_DFLT_DARG}, {2, 3}, MPI_ORDER_C},
            {2, {10, 7}, {MPI_DISTRIBUTE_CYCLIC, MPI_DISTRIBUTE_CYCLIC}, {2, 3}, {3, 2}, MPI_ORDER_C},
            {2, {9, 8}, {MPI_DISTRIBUTE_CYCLIC, MPI_DISTRIBUTE_BLOCK}, {MPI_DISTRIBUTE_DFLT_DARG, 3}, {2, 3}, MPI_ORDER_FORTRAN},
            {3, {5, 6, 7}, {MPI_DISTRIBUTE_BLOCK, MPI_DISTRIBUTE_NONE, MPI_DISTRIBUTE_CYCLIC}, {2, MPI_DISTRIBUTE_DFLT_DARG, 2}, {3, 1, 2}, MPI_ORDER_C},
            {3, {4, 6, 5}, {MPI_DISTRIBUTE_CYCLIC, MPI_DISTRIBUTE_CYCLIC, MPI_DISTRIBUTE_BLOCK}, {3, 1, MPI_DISTRIBUTE_DFLT_DARG}, {2, 2, 2}, MPI_ORDER_FORTRAN},
        };
        for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            int nd = cases[c].nd, procs = 1, total = 1;
            for (int i = 0; i < nd; i++) {
                procs *= cases[c].ps[i];
                total *= cases[c].g[i];
            }
            int *all = xmalloc(total * sizeof(int)), *want = xmalloc(total * sizeof(int)), *got = xmalloc(total * sizeof(int));
            for (int i = 0; i < total; i++)
                all[i] = i;
            for (int q = 0; q < procs; q++) {
                MPI_Datatype t;
                MPI_OK(MPI_Type_create_darray(procs, q, nd, cases[c].g, cases[c].dist, cases[c].darg, cases[c].ps,
                                              cases[c].order, MPI_INT, &t));
                MPI_OK(MPI_Type_commit(&t));
                int n = darray_expected(procs, q, nd, cases[c].g, cases[c].dist, cases[c].darg, cases[c].ps, cases[c].order, want);
                int sz;
                MPI_Aint lb, ext;
                MPI_OK(MPI_Type_size(t, &sz));
                MPI_OK(MPI_Type_get_extent(t, &lb, &ext));
                CHECKF(sz == n * (int)sizeof(int) && lb == 0 && ext == total * (MPI_Aint)sizeof(int),
                       "darray case %u position %d: size %d (want %d elements), lb %ld, extent %ld", c, q, sz, n, (long)lb, (long)ext);
                int pos = 0;
                MPI_OK(MPI_Pack(all, 1, t, got, total * (int)sizeof(int), &pos, MPI_COMM_WORLD));
                for (int i = 0; i < n; i++)
                    CHECKF(got[i] == want[i], "darray case %u position %d: element %d is %d, want %d", c, q, i, got[i], want[i]);
                int ni, na, ndt, comb;
                MPI_OK(MPI_Type_get_envelope(t, &ni, &na, &ndt, &comb));
                CHECK(comb == MPI_COMBINER_DARRAY && ni == 4 * nd + 4 && ndt == 1);
                MPI_OK(MPI_Type_free(&t));
            }
            free(all);
            free(want);
            free(got);
        }
    }

    return finish("datatypes");
}
