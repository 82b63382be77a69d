/* conformance: behaviour the standard (or every common implementation) defines and that
 * third-party MPI test suites check, each found wrong in kawarimi once. Only behaviour that
 * native Open MPI 4.1 shows is asserted (the program must pass natively too).
 *   - MPI_Exscan leaves rank 0's receive buffer alone (blocking and nonblocking);
 *   - a persistent request keeps its datatype and communicator: the program may free both
 *     handles after the *_init call (§3.9) and start the request again and again;
 *   - counts beyond 2^31 survive MPI_Status_set_elements_x / MPI_Get_elements_x, and the
 *     int forms say MPI_UNDEFINED rather than a truncated number;
 *   - datatypes with very large counts are made (MPI_Type_vector of 10^8 and of 2^30
 *     blocks: sizes beyond 2^31 bytes through MPI_Type_size_x), and a vector of 2^23
 *     separate bytes moves between ranks, packed and unpacked, byte for byte;
 *   - a user reduction function may ask the size and extent of the datatype it is given
 *     (and of predefined ones): written once for several types, it finds its elements so;
 *   - a user-defined error class or code without a string has the empty string (§8.5);
 *     every predefined class (MPI_ERR_WIN, MPI_T_ERR_* included) is its own class and has
 *     a string; MPI_Comm_call_errhandler hands a user handler the code it was given;
 *   - MPI_Pack_external writes external32 (big-endian) bytes for ints, shorts, doubles and
 *     a strided vector, MPI_Pack_external_size counts them, MPI_Unpack_external reads them
 *     back, and any representation name packs external32, as in Open MPI;
 *   - generalized requests (§12.2): the query function, which calls MPI_Status_set_elements,
 *     fills the status of MPI_Wait and of MPI_Waitall and MPI_Testany, the free function runs
 *     once after it (also for a request freed before it was completed), and MPI_Cancel calls
 *     the cancel function;
 *   - MPI_Finalize deletes MPI_COMM_SELF's attributes in the reverse order of their setting,
 *     an attribute set again counting as set then (§8.7.1);
 *   - attributes on datatypes (§6.7.4): copied by their callback on MPI_Type_dup, deleted by
 *     theirs on MPI_Type_delete_attr and MPI_Type_free, also on a predefined datatype;
 *   - the tool interface (§14.3) works before MPI_Init, counts its initialisations, and
 *     refuses an index past its variables and an unknown name (it must not abort);
 *   - MPI_Type_match_size finds a 16-byte real (MPI_REAL16, IEEE binary128 with gfortran),
 *     which then moves and compares exactly. (Its MPI_SUM is not checked here: native Open
 *     MPI 4.1 sums MPI_REAL16 in x87 precision and gets it wrong; kawarimi's sum is tested
 *     in shim/src/widefloat.rs.) */
#include "check.h"

static int rank, size;

static void exscan_leaves_rank0_alone(void)
{
    int in = rank + 1, out = -77;
    MPI_OK(MPI_Exscan(&in, &out, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    if (rank == 0)
        CHECKF(out == -77, "rank 0's Exscan buffer became %d", out);
    else
        CHECKF(out == rank * (rank + 1) / 2, "Exscan gave %d", out);
    long pair[2] = {rank + 2, rank}, got[2] = {-5, -6};
    MPI_Op affine_op;
    MPI_OK(MPI_Op_create(affine, 0, &affine_op));
    MPI_Datatype two_longs;
    MPI_OK(MPI_Type_contiguous(2, MPI_LONG, &two_longs));
    MPI_OK(MPI_Type_commit(&two_longs));
    MPI_Request r;
    MPI_OK(MPI_Iexscan(pair, got, 1, two_longs, affine_op, MPI_COMM_WORLD, &r));
    MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    if (rank == 0)
        CHECKF(got[0] == -5 && got[1] == -6, "rank 0's Iexscan buffer became (%ld, %ld)", got[0], got[1]);
    else {
        /* (x_0 o x_1 o ... o x_{r-1}) folded in rank order. */
        long a = 2, b = 0;
        for (int k = 1; k < rank; k++) {
            long na = a * (k + 2) % 1000003, nb = (b * (k + 2) + k) % 1000003;
            a = na, b = nb;
        }
        CHECKF(got[0] == a && got[1] == b, "Iexscan gave (%ld, %ld), want (%ld, %ld)", got[0], got[1], a, b);
    }
    MPI_OK(MPI_Op_free(&affine_op));
    MPI_OK(MPI_Type_free(&two_longs));
}

static void persistent_requests_keep_their_objects(void)
{
    int peer = rank ^ 1;
    if (peer >= size)
        peer = MPI_PROC_NULL;
    MPI_Datatype every_other;
    MPI_OK(MPI_Type_vector(3, 1, 2, MPI_INT, &every_other));
    MPI_OK(MPI_Type_commit(&every_other));
    MPI_Comm dup;
    MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    int sbuf[6], rbuf[6];
    MPI_Request rq[2];
    MPI_OK(MPI_Send_init(sbuf, 1, every_other, peer, 9, dup, &rq[0]));
    MPI_OK(MPI_Recv_init(rbuf, 1, every_other, peer, 9, dup, &rq[1]));
    MPI_OK(MPI_Type_free(&every_other));
    MPI_OK(MPI_Comm_free(&dup));
    CHECK(every_other == MPI_DATATYPE_NULL && dup == MPI_COMM_NULL);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 6; i++)
            sbuf[i] = 100 * rank + 10 * round + i, rbuf[i] = -1;
        MPI_OK(MPI_Startall(2, rq));
        MPI_OK(MPI_Waitall(2, rq, MPI_STATUSES_IGNORE));
        if (peer == MPI_PROC_NULL)
            continue;
        for (int i = 0; i < 6; i++) {
            int want = i % 2 == 0 ? 100 * peer + 10 * round + i : -1;
            CHECKF(rbuf[i] == want, "round %d: element %d is %d, want %d", round, i, rbuf[i], want);
        }
    }
    MPI_OK(MPI_Request_free(&rq[0]));
    MPI_OK(MPI_Request_free(&rq[1]));
}

static void large_counts_are_not_truncated(void)
{
    MPI_Status st;
    MPI_Count big = ((MPI_Count)1 << 33) + 5, got = 0;
    MPI_OK(MPI_Status_set_elements_x(&st, MPI_BYTE, big));
    MPI_OK(MPI_Get_elements_x(&st, MPI_BYTE, &got));
    CHECKF(got == big, "Get_elements_x gave %lld, want %lld", (long long)got, (long long)big);
    int n = 0;
    MPI_OK(MPI_Get_count(&st, MPI_BYTE, &n));
    CHECKF(n == MPI_UNDEFINED, "Get_count of 2^33 + 5 bytes gave %d", n);
    MPI_OK(MPI_Get_elements(&st, MPI_BYTE, &n));
    CHECKF(n == MPI_UNDEFINED, "Get_elements of 2^33 + 5 bytes gave %d", n);
    /* 2^31 + 1 ints: elements in the int form do not fit either. */
    MPI_Count ints = ((MPI_Count)1 << 31) + 1;
    MPI_OK(MPI_Status_set_elements_x(&st, MPI_INT, ints));
    MPI_OK(MPI_Get_elements_x(&st, MPI_INT, &got));
    CHECKF(got == ints, "Get_elements_x gave %lld ints, want %lld", (long long)got, (long long)ints);
    MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECKF(n == MPI_UNDEFINED, "Get_count of 2^31 + 1 ints gave %d", n);
    /* A count that fits still comes back whole. */
    MPI_OK(MPI_Status_set_elements(&st, MPI_DOUBLE, 12345));
    MPI_OK(MPI_Get_count(&st, MPI_DOUBLE, &n));
    CHECKF(n == 12345, "Get_count gave %d", n);
    /* Elements of a struct are its basic elements in order, whatever their sizes (MPICH's
     * datatype/large_count): {char, int, double, short} is 4 elements and 15 bytes. */
    int bl[4] = {1, 1, 1, 1};
    MPI_Aint d[4] = {0, 8, 16, 24};
    MPI_Datatype ty[4] = {MPI_CHAR, MPI_INT, MPI_DOUBLE, MPI_SHORT}, fs;
    MPI_OK(MPI_Type_create_struct(4, bl, d, ty, &fs));
    MPI_OK(MPI_Type_commit(&fs));
    const int counts[3] = {4, 3, 10}, whole[3] = {1, MPI_UNDEFINED, MPI_UNDEFINED};
    for (int k = 0; k < 3; k++) {
        int e = -1, c = -1;
        MPI_Count ex = -1;
        MPI_OK(MPI_Status_set_elements(&st, fs, counts[k]));
        MPI_OK(MPI_Get_elements(&st, fs, &e));
        MPI_OK(MPI_Get_elements_x(&st, fs, &ex));
        MPI_OK(MPI_Get_count(&st, fs, &c));
        CHECKF(e == counts[k] && ex == counts[k] && c == whole[k],
               "set_elements(%d) of a struct: get_elements %d, _x %lld, get_count %d", counts[k], e, (long long)ex, c);
    }
    MPI_OK(MPI_Type_free(&fs));
}

static void large_count_datatypes(void)
{
    MPI_Datatype v;
    MPI_OK(MPI_Type_vector(100000000, 1, 2, MPI_INT, &v));
    MPI_OK(MPI_Type_commit(&v));
    MPI_Count size_x = 0, lb_x = -1, extent_x = 0;
    MPI_OK(MPI_Type_size_x(v, &size_x));
    CHECKF(size_x == 400000000, "size of 10^8 ints: %lld", (long long)size_x);
    MPI_OK(MPI_Type_get_extent_x(v, &lb_x, &extent_x));
    CHECKF(lb_x == 0 && extent_x == (MPI_Count)(2 * 100000000 - 1) * 4, "lb %lld extent %lld", (long long)lb_x,
           (long long)extent_x);
    MPI_OK(MPI_Type_free(&v));
    /* 2^30 pairs of ints: 2^33 bytes of data. */
    MPI_OK(MPI_Type_vector(1 << 30, 2, 3, MPI_INT, &v));
    MPI_OK(MPI_Type_commit(&v));
    int int_size = 0;
    MPI_OK(MPI_Type_size(v, &int_size));
    CHECKF(int_size == MPI_UNDEFINED, "MPI_Type_size of 2^33 bytes gave %d", int_size);
    MPI_OK(MPI_Type_size_x(v, &size_x));
    CHECKF(size_x == (MPI_Count)1 << 33, "size_x %lld", (long long)size_x);
    MPI_OK(MPI_Type_free(&v));

    /* Every other byte of a 2^24-byte buffer, sent as one element to the next rank, which
     * receives it both as plain bytes and through the same vector. */
    const int n = 1 << 23;
    MPI_OK(MPI_Type_vector(n, 1, 2, MPI_CHAR, &v));
    MPI_OK(MPI_Type_commit(&v));
    unsigned char *sparse = malloc(2 * (size_t)n), *dense = malloc(n), *back = malloc(2 * (size_t)n);
    CHECK(sparse && dense && back);
    for (size_t i = 0; i < 2 * (size_t)n; i++)
        sparse[i] = (unsigned char)(i % 2 ? 0xEE : (i / 2 * 7 + rank) % 251);
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    MPI_OK(MPI_Sendrecv(sparse, 1, v, next, 31, dense, n, MPI_CHAR, prev, 31, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    size_t wrong = 0;
    for (size_t i = 0; i < (size_t)n; i++)
        wrong += dense[i] != (unsigned char)((i * 7 + prev) % 251);
    CHECKF(wrong == 0, "%zu of %d bytes wrong through a vector of 2^23 blocks", wrong, n);
    memset(back, 0x55, 2 * (size_t)n);
    MPI_OK(MPI_Sendrecv(dense, n, MPI_CHAR, prev, 32, back, 1, v, next, 32, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    for (size_t i = 0; i < 2 * (size_t)n; i++)
        wrong += back[i] != (i % 2 ? 0x55 : sparse[i]);
    CHECKF(wrong == 0, "%zu bytes wrong unpacking into a vector of 2^23 blocks", wrong);
    free(sparse);
    free(dense);
    free(back);
    MPI_OK(MPI_Type_free(&v));
}

static void external32(void)
{
    int ints[3] = {0x01020304, -2, 0x7f000001};
    short sh = 0x0a0b;
    double d = 1.0; /* 0x3ff0000000000000 */
    unsigned char buf[64];
    MPI_Aint pos = 0, size = 0;
    MPI_OK(MPI_Pack_external_size("external32", 3, MPI_INT, &size));
    CHECKF(size == 12, "external32 size of 3 ints: %ld", (long)size);
    MPI_OK(MPI_Pack_external("external32", ints, 3, MPI_INT, buf, sizeof buf, &pos));
    MPI_OK(MPI_Pack_external("external32", &sh, 1, MPI_SHORT, buf, sizeof buf, &pos));
    MPI_OK(MPI_Pack_external("external32", &d, 1, MPI_DOUBLE, buf, sizeof buf, &pos));
    CHECKF(pos == 22, "position %ld after 3 ints, a short and a double", (long)pos);
    const unsigned char want[22] = {1, 2, 3, 4, 0xff, 0xff, 0xff, 0xfe, 0x7f, 0, 0, 1, 0x0a, 0x0b,
                                    0x3f, 0xf0, 0, 0, 0, 0, 0, 0};
    CHECKF(memcmp(buf, want, sizeof want) == 0, "external32 bytes differ: %02x %02x %02x %02x", buf[0], buf[1], buf[2], buf[3]);
    /* A vector of every other int, read back into a plain array. */
    int wide[6] = {10, -1, 20, -1, 30, -1}, back[3] = {0, 0, 0};
    MPI_Datatype every_other;
    MPI_OK(MPI_Type_vector(3, 1, 2, MPI_INT, &every_other));
    MPI_OK(MPI_Type_commit(&every_other));
    pos = 0;
    MPI_OK(MPI_Pack_external("external32", wide, 1, every_other, buf, sizeof buf, &pos));
    CHECK(pos == 12 && buf[3] == 10 && buf[7] == 20 && buf[11] == 30);
    MPI_Aint in = 0;
    MPI_OK(MPI_Unpack_external("external32", buf, pos, &in, back, 3, MPI_INT));
    CHECKF(in == 12 && back[0] == 10 && back[1] == 20 && back[2] == 30, "read back %d %d %d", back[0], back[1], back[2]);
    MPI_OK(MPI_Type_free(&every_other));
    /* Open MPI 4.1 packs external32 whatever the representation is called. */
    pos = 0;
    MPI_OK(MPI_Pack_external("native", ints, 1, MPI_INT, buf, sizeof buf, &pos));
    CHECK(pos == 4 && buf[0] == 1 && buf[3] == 4);
}

static int greq_queries, greq_frees, greq_cancels;

static int greq_query(void *extra, MPI_Status *status)
{
    greq_queries++;
    MPI_Status_set_elements(status, MPI_INT, *(int *)extra);
    MPI_Status_set_cancelled(status, 0);
    status->MPI_SOURCE = MPI_UNDEFINED;
    status->MPI_TAG = MPI_UNDEFINED;
    return MPI_SUCCESS;
}

static int greq_free(void *extra)
{
    (void)extra;
    greq_frees++;
    return MPI_SUCCESS;
}

static int greq_cancel(void *extra, int complete)
{
    (void)extra;
    CHECK(complete == 0);
    greq_cancels++;
    return MPI_SUCCESS;
}

static void generalized_requests(void)
{
    int five = 5, seven = 7, flag = 1, n = -1;
    MPI_Request r, rs[3];
    MPI_Status st, sts[3];
    MPI_OK(MPI_Grequest_start(greq_query, greq_free, greq_cancel, &five, &r));
    MPI_OK(MPI_Test(&r, &flag, &st));
    CHECKF(flag == 0 && greq_queries == 0, "a generalized request completed by itself");
    MPI_OK(MPI_Grequest_complete(r));
    MPI_OK(MPI_Wait(&r, &st));
    MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECKF(n == 5 && r == MPI_REQUEST_NULL, "count %d", n);
    CHECKF(greq_queries == 1 && greq_frees == 1, "%d queries, %d frees", greq_queries, greq_frees);

    /* Two of them in a Waitall with a message to myself. */
    int x = rank, y = -1;
    MPI_OK(MPI_Grequest_start(greq_query, greq_free, greq_cancel, &five, &rs[0]));
    MPI_OK(MPI_Irecv(&y, 1, MPI_INT, rank, 9, MPI_COMM_WORLD, &rs[1]));
    MPI_OK(MPI_Grequest_start(greq_query, greq_free, greq_cancel, &seven, &rs[2]));
    MPI_OK(MPI_Send(&x, 1, MPI_INT, rank, 9, MPI_COMM_WORLD));
    MPI_OK(MPI_Grequest_complete(rs[2]));
    MPI_OK(MPI_Grequest_complete(rs[0]));
    MPI_OK(MPI_Waitall(3, rs, sts));
    int n0 = -1, n2 = -1;
    MPI_OK(MPI_Get_count(&sts[0], MPI_INT, &n0));
    MPI_OK(MPI_Get_count(&sts[2], MPI_INT, &n2));
    CHECKF(n0 == 5 && n2 == 7 && y == rank, "Waitall counts %d %d, message %d", n0, n2, y);
    CHECKF(greq_queries == 3 && greq_frees == 3, "%d queries, %d frees", greq_queries, greq_frees);

    /* Testany finds the completed one. */
    int index = -1;
    MPI_OK(MPI_Grequest_start(greq_query, greq_free, greq_cancel, &seven, &rs[0]));
    MPI_OK(MPI_Grequest_complete(rs[0]));
    MPI_OK(MPI_Testany(1, rs, &index, &flag, &st));
    MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECKF(flag && index == 0 && n == 7, "Testany: flag %d index %d count %d", flag, index, n);

    /* Freed first, completed after: the free function runs, the query does not. */
    MPI_Request keep;
    MPI_OK(MPI_Grequest_start(greq_query, greq_free, greq_cancel, &five, &r));
    keep = r;
    MPI_OK(MPI_Request_free(&r));
    CHECK(greq_frees == 4);
    MPI_OK(MPI_Grequest_complete(keep));
    CHECKF(greq_frees == 5 && greq_queries == 4, "%d queries, %d frees", greq_queries, greq_frees);

    /* Cancel calls the cancel function, told it has not completed. */
    MPI_OK(MPI_Grequest_start(greq_query, greq_free, greq_cancel, &five, &r));
    MPI_OK(MPI_Cancel(&r));
    CHECK(greq_cancels == 1);
    MPI_OK(MPI_Grequest_complete(r));
    MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    CHECKF(greq_queries == 5 && greq_frees == 6, "%d queries, %d frees", greq_queries, greq_frees);

    /* MPI_Request_get_status of a completed one runs its query (§12.2) and frees nothing;
     * the wait after it runs the query again and frees the request. */
    MPI_OK(MPI_Grequest_start(greq_query, greq_free, greq_cancel, &seven, &r));
    MPI_OK(MPI_Request_get_status(r, &flag, &st));
    CHECKF(flag == 0 && greq_queries == 5, "get_status of an incomplete one: flag %d", flag);
    MPI_OK(MPI_Grequest_complete(r));
    MPI_OK(MPI_Request_get_status(r, &flag, &st));
    MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECKF(flag == 1 && n == 7 && r != MPI_REQUEST_NULL, "get_status: flag %d count %d", flag, n);
    CHECKF(greq_queries == 6 && greq_frees == 6, "%d queries, %d frees", greq_queries, greq_frees);
    MPI_OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    CHECKF(greq_queries == 7 && greq_frees == 7, "%d queries, %d frees", greq_queries, greq_frees);
}

/* Sums elements of whatever integer type it is given, found by asking MPI about it. */
static void sum_by_size(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    int size = 0, int_size = 0;
    MPI_Aint lb = -1, extent = 0, tlb = -1, textent = 0;
    MPI_Count size_x = 0;
    CHECK(MPI_Type_size(*dt, &size) == MPI_SUCCESS);
    CHECK(MPI_Type_size_x(*dt, &size_x) == MPI_SUCCESS && size_x == size);
    CHECK(MPI_Type_get_extent(*dt, &lb, &extent) == MPI_SUCCESS && lb == 0 && extent == size);
    CHECK(MPI_Type_get_true_extent(*dt, &tlb, &textent) == MPI_SUCCESS && tlb == 0 && textent == size);
    CHECK(MPI_Type_size(MPI_INT, &int_size) == MPI_SUCCESS && int_size == (int)sizeof(int));
    for (int i = 0; i < *len; i++) {
        if (size == (int)sizeof(int))
            ((int *)inout)[i] += ((int *)in)[i];
        else if (size == 2 * (int)sizeof(long)) {
            ((long *)inout)[2 * i] += ((long *)in)[2 * i];
            ((long *)inout)[2 * i + 1] += ((long *)in)[2 * i + 1];
        } else
            CHECKF(0, "unexpected datatype size %d", size);
    }
}

static void user_op_queries_its_datatype(void)
{
    MPI_Op op;
    MPI_OK(MPI_Op_create(sum_by_size, 1, &op));
    int x[3] = {rank, 1, 2 * rank}, y[3];
    MPI_OK(MPI_Allreduce(x, y, 3, MPI_INT, op, MPI_COMM_WORLD));
    CHECKF(y[0] == size * (size - 1) / 2 && y[1] == size && y[2] == size * (size - 1), "ints: %d %d %d", y[0], y[1], y[2]);
    MPI_Datatype two_longs;
    MPI_OK(MPI_Type_contiguous(2, MPI_LONG, &two_longs));
    MPI_OK(MPI_Type_commit(&two_longs));
    long a[4] = {rank, 1, 10, rank * 3}, b[4];
    MPI_OK(MPI_Reduce(a, b, 2, two_longs, op, 0, MPI_COMM_WORLD));
    if (rank == 0)
        CHECKF(b[0] == size * (size - 1) / 2 && b[1] == size && b[2] == 10 * size && b[3] == 3 * size * (size - 1) / 2,
               "pairs: %ld %ld %ld %ld", b[0], b[1], b[2], b[3]);
    MPI_OK(MPI_Type_free(&two_longs));
    MPI_OK(MPI_Op_free(&op));
}

static void real16_by_size(void)
{
    MPI_Datatype t;
    int tsize = 0;
    MPI_Aint lb = -1, extent = 0;
    MPI_OK(MPI_Type_match_size(MPI_TYPECLASS_REAL, 16, &t));
    MPI_OK(MPI_Type_size(t, &tsize));
    MPI_OK(MPI_Type_get_extent(t, &lb, &extent));
    CHECKF(t == MPI_REAL16 && tsize == 16 && lb == 0 && extent == 16, "REAL class of 16 bytes: size %d, extent %ld",
           tsize, (long)extent);
    MPI_OK(MPI_Type_size(MPI_COMPLEX32, &tsize));
    CHECKF(tsize == 32, "MPI_COMPLEX32 has %d bytes", tsize);
    /* 1 + (rank + 1) 2^-100: equal in every precision but binary128's. */
    __float128 tiny = (__float128)1 / ((__float128)(1ULL << 50) * (1ULL << 50));
    __float128 mine = 1 + (rank + 1) * tiny, most = 0, got[2] = {0, 0}, pair[2] = {mine, -mine};
    MPI_OK(MPI_Allreduce(&mine, &most, 1, MPI_REAL16, MPI_MAX, MPI_COMM_WORLD));
    CHECK(most == 1 + size * tiny);
    MPI_OK(MPI_Bcast(pair, 2, MPI_REAL16, size - 1, MPI_COMM_WORLD));
    memcpy(got, pair, sizeof got);
    CHECK(got[0] == 1 + size * tiny && got[1] == -(1 + size * tiny));
}

static int type_copies, type_deletes;

static int copy_type_attr(MPI_Datatype t, int keyval, void *extra, void *in, void *out, int *flag)
{
    (void)t, (void)keyval;
    CHECK(extra == (void *)&type_copies);
    *(long *)out = (long)in + 100;
    *flag = 1;
    type_copies++;
    return MPI_SUCCESS;
}

static int delete_type_attr(MPI_Datatype t, int keyval, void *value, void *extra)
{
    (void)keyval, (void)extra;
    int size = 0;
    /* The datatype still exists while its attributes are deleted. */
    CHECK(MPI_Type_size(t, &size) == MPI_SUCCESS && size == 3 * (int)sizeof(int));
    CHECK((long)value == 7 || (long)value == 107);
    type_deletes++;
    return MPI_SUCCESS;
}

static void datatype_attributes(void)
{
    int k, flag = 0;
    void *v = NULL;
    MPI_Datatype three, copy;
    MPI_OK(MPI_Type_create_keyval(copy_type_attr, delete_type_attr, &k, &type_copies));
    MPI_OK(MPI_Type_contiguous(3, MPI_INT, &three));
    MPI_OK(MPI_Type_get_attr(three, k, &v, &flag));
    CHECK(flag == 0);
    MPI_OK(MPI_Type_set_attr(three, k, (void *)7L));
    MPI_OK(MPI_Type_dup(three, &copy));
    CHECKF(type_copies == 1, "copy callback ran %d times", type_copies);
    MPI_OK(MPI_Type_get_attr(copy, k, &v, &flag));
    CHECKF(flag && (long)v == 107, "the duplicate's attribute: %d, %ld", flag, (long)v);
    MPI_OK(MPI_Type_get_attr(three, k, &v, &flag));
    CHECKF(flag && (long)v == 7, "the original's attribute: %d, %ld", flag, (long)v);
    MPI_OK(MPI_Type_delete_attr(three, k));
    CHECKF(type_deletes == 1, "delete callback ran %d times", type_deletes);
    MPI_OK(MPI_Type_get_attr(three, k, &v, &flag));
    CHECK(flag == 0);
    MPI_OK(MPI_Type_free(&copy));
    CHECKF(type_deletes == 2, "MPI_Type_free ran %d delete callbacks in all", type_deletes);
    MPI_OK(MPI_Type_free(&three));
    /* A predefined datatype caches attributes too; a keyval with no callbacks. */
    int plain;
    MPI_OK(MPI_Type_create_keyval(MPI_TYPE_NULL_COPY_FN, MPI_TYPE_NULL_DELETE_FN, &plain, NULL));
    MPI_OK(MPI_Type_set_attr(MPI_DOUBLE, plain, (void *)42L));
    MPI_OK(MPI_Type_get_attr(MPI_DOUBLE, plain, &v, &flag));
    CHECKF(flag && (long)v == 42, "MPI_DOUBLE's attribute: %d, %ld", flag, (long)v);
    MPI_OK(MPI_Type_delete_attr(MPI_DOUBLE, plain));
    MPI_OK(MPI_Type_free_keyval(&plain));
    MPI_OK(MPI_Type_free_keyval(&k));
    CHECK(k == MPI_KEYVAL_INVALID && plain == MPI_KEYVAL_INVALID);
}

static int handled_code = -1;

static void remember_code(MPI_Comm *comm, int *code, ...)
{
    (void)comm;
    handled_code = *code;
}

static void user_error_strings(void)
{
    for (int code = 0; code <= MPI_T_ERR_INVALID_NAME; code++) {
        int c = -1, n = 0;
        char s[MPI_MAX_ERROR_STRING] = "";
        MPI_OK(MPI_Error_class(code, &c));
        MPI_OK(MPI_Error_string(code, s, &n));
        CHECKF(c == code && n > 0 && (int)strlen(s) == n, "predefined code %d: class %d, string \"%s\"", code, c, s);
    }
    int cls, code, other, len = -1, c = -1;
    char text[MPI_MAX_ERROR_STRING];
    MPI_OK(MPI_Add_error_class(&cls));
    MPI_OK(MPI_Add_error_code(cls, &code));
    MPI_OK(MPI_Add_error_code(cls, &other));
    MPI_OK(MPI_Error_string(cls, text, &len));
    CHECKF(len == 0 && text[0] == 0, "a class without a string: \"%s\" (%d)", text, len);
    MPI_OK(MPI_Add_error_string(code, "first words"));
    MPI_OK(MPI_Add_error_string(code, "second words"));
    MPI_OK(MPI_Error_string(code, text, &len));
    CHECKF(len == 12 && strcmp(text, "second words") == 0, "a code's string: \"%s\" (%d)", text, len);
    MPI_OK(MPI_Error_string(other, text, &len));
    CHECKF(len == 0 && text[0] == 0, "a code without a string: \"%s\" (%d)", text, len);
    MPI_OK(MPI_Error_class(other, &c));
    CHECKF(c == cls, "class of a user code: %d, want %d", c, cls);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rc = MPI_Add_error_string(MPI_ERR_COMM, "not mine");
    CHECKF(rc != MPI_SUCCESS && err_class(rc) == MPI_ERR_ARG, "a string for a predefined code: %d", rc);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    /* The application raises its own code on a communicator of its own. */
    MPI_Comm dup;
    MPI_Errhandler h;
    MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    MPI_OK(MPI_Comm_create_errhandler(remember_code, &h));
    MPI_OK(MPI_Comm_set_errhandler(dup, h));
    MPI_OK(MPI_Comm_call_errhandler(dup, other));
    CHECKF(handled_code == other, "the handler got code %d, want %d", handled_code, other);
    MPI_OK(MPI_Comm_call_errhandler(dup, MPI_ERR_WIN));
    CHECKF(handled_code == MPI_ERR_WIN, "the handler got code %d, want MPI_ERR_WIN", handled_code);
    MPI_OK(MPI_Errhandler_free(&h));
    MPI_OK(MPI_Comm_free(&dup));
}

/* The values MPI_COMM_SELF's delete callback must see, in this order: 10 when the
 * attribute of keyval 0 is set again, then at MPI_Finalize newest setting first. */
static const long self_deletions[] = {10, 20, 11, 13, 12};
static int self_deleted;

static int check_self_deletion(MPI_Comm comm, int keyval, void *value, void *extra)
{
    (void)comm, (void)keyval, (void)extra;
    int n = (int)(sizeof self_deletions / sizeof self_deletions[0]);
    CHECKF(self_deleted < n && (long)value == self_deletions[self_deleted],
           "deletion %d of MPI_COMM_SELF's attributes has value %ld", self_deleted, (long)value);
    self_deleted++;
    return MPI_SUCCESS;
}

static void self_attributes_for_finalize(void)
{
    int k[4];
    for (int i = 0; i < 4; i++)
        MPI_OK(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, check_self_deletion, &k[i], NULL));
    MPI_OK(MPI_Comm_set_attr(MPI_COMM_SELF, k[2], (void *)12L));
    MPI_OK(MPI_Comm_set_attr(MPI_COMM_SELF, k[0], (void *)10L));
    MPI_OK(MPI_Comm_set_attr(MPI_COMM_SELF, k[3], (void *)13L));
    MPI_OK(MPI_Comm_set_attr(MPI_COMM_SELF, k[1], (void *)11L));
    MPI_OK(MPI_Comm_set_attr(MPI_COMM_SELF, k[0], (void *)20L));
    CHECKF(self_deleted == 1, "setting an attribute again deleted %d values", self_deleted);
    /* A freed keyval's attribute is still deleted at MPI_Finalize. */
    MPI_OK(MPI_Comm_free_keyval(&k[3]));
}

/* Before MPI_Init, and again with MPI initialised; the counts are whatever the MPI has. */
static void tool_interface_before_init(void)
{
    int provided = -1, n = -1, idx = -1, len = 0;
    CHECK(MPI_T_cvar_get_num(&n) == MPI_T_ERR_NOT_INITIALIZED);
    CHECK(MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) == MPI_SUCCESS && provided == MPI_THREAD_SINGLE);
    CHECK(MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) == MPI_SUCCESS);
    CHECK(MPI_T_cvar_get_num(&n) == MPI_SUCCESS && n >= 0);
    char name[256], desc[256];
    int verbosity, bind, scope, dlen = sizeof desc;
    MPI_Datatype dt;
    MPI_T_enum en;
    len = sizeof name;
    /* Open MPI answers MPI_T_ERR_INVALID here, the standard MPI_T_ERR_INVALID_INDEX. */
    int rc = MPI_T_cvar_get_info(n, name, &len, &verbosity, &dt, &en, desc, &dlen, &bind, &scope);
    CHECKF(rc == MPI_T_ERR_INVALID_INDEX || rc == MPI_T_ERR_INVALID, "cvar %d past the last: %d", n, rc);
    CHECK(MPI_T_cvar_get_index("kawarimi_no_such_variable", &idx) == MPI_T_ERR_INVALID_NAME);
    CHECK(MPI_T_pvar_get_num(&n) == MPI_SUCCESS && n >= 0);
    CHECK(MPI_T_category_get_num(&n) == MPI_SUCCESS && n >= 0);
    MPI_T_pvar_session session;
    CHECK(MPI_T_pvar_session_create(&session) == MPI_SUCCESS);
    CHECK(MPI_T_pvar_session_free(&session) == MPI_SUCCESS && session == MPI_T_PVAR_SESSION_NULL);
    CHECK(MPI_T_finalize() == MPI_SUCCESS);
    /* Still initialised once. */
    CHECK(MPI_T_pvar_get_num(&n) == MPI_SUCCESS);
}

static void tool_interface_after_init(void)
{
    int n = -1;
    CHECK(MPI_T_category_get_num(&n) == MPI_SUCCESS && n >= 0);
    CHECK(MPI_T_finalize() == MPI_SUCCESS);
    CHECK(MPI_T_finalize() == MPI_T_ERR_NOT_INITIALIZED);
    CHECK(MPI_T_cvar_get_num(&n) == MPI_T_ERR_NOT_INITIALIZED);
}

int main(int argc, char **argv)
{
    tool_interface_before_init();
    MPI_Init(&argc, &argv);
    tool_interface_after_init();
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    exscan_leaves_rank0_alone();
    persistent_requests_keep_their_objects();
    large_counts_are_not_truncated();
    large_count_datatypes();
    external32();
    generalized_requests();
    user_op_queries_its_datatype();
    user_error_strings();
    real16_by_size();
    datatype_attributes();
    self_attributes_for_finalize();
    finish("conformance");
    /* After "OK": a missing deletion makes the run fail by its exit status. */
    if (self_deleted != 5) {
        fprintf(stderr, "FAIL conformance: MPI_Finalize made %d of 4 deletions\n", self_deleted - 1);
        return 1;
    }
    return 0;
}
