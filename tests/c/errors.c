/* errors: with MPI_ERRORS_RETURN, wrong arguments return the right error
 * class; Error_string / Error_class; user error handlers. Only behaviour that
 * native Open MPI 4.1 shows is asserted (the program must pass natively). */
#include "check.h"

static int rank, size;
static int handler_calls, handler_code;
static MPI_Comm handler_comm;

static void my_handler(MPI_Comm *comm, int *code, ...)
{
    handler_calls++;
    handler_code = *code;
    handler_comm = *comm;
}

#define EXPECT_CLASS(call, cls)                                                                        \
    do {                                                                                               \
        int rc_ = (call);                                                                              \
        CHECKF(rc_ != MPI_SUCCESS && err_class(rc_) == (cls), "%s returned %d (class %d), expected class %s", \
               #call, rc_, err_class(rc_), #cls);                                                      \
    } while (0)

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;

    /* the default handler on COMM_WORLD is MPI_ERRORS_ARE_FATAL */
    MPI_Errhandler eh;
    MPI_OK(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh));
    CHECK(eh == MPI_ERRORS_ARE_FATAL);
    MPI_OK(MPI_Errhandler_free(&eh));

    MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_OK(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh));
    CHECK(eh == MPI_ERRORS_RETURN);
    MPI_OK(MPI_Errhandler_free(&eh));

    int buf[16] = {0};

    /* ---- argument errors on point-to-point ---- */
    EXPECT_CLASS(MPI_Send(buf, 1, MPI_INT, size, 0, MPI_COMM_WORLD), MPI_ERR_RANK);
    EXPECT_CLASS(MPI_Send(buf, 1, MPI_INT, -5, 0, MPI_COMM_WORLD), MPI_ERR_RANK);
    EXPECT_CLASS(MPI_Recv(buf, 1, MPI_INT, size + 3, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE), MPI_ERR_RANK);
    EXPECT_CLASS(MPI_Send(buf, 1, MPI_INT, next, -1, MPI_COMM_WORLD), MPI_ERR_TAG);
    EXPECT_CLASS(MPI_Recv(buf, 1, MPI_INT, prev, -7, MPI_COMM_WORLD, MPI_STATUS_IGNORE), MPI_ERR_TAG);
    {
        MPI_Request rq;
        EXPECT_CLASS(MPI_Isend(buf, 1, MPI_INT, next, -2, MPI_COMM_WORLD, &rq), MPI_ERR_TAG);
        EXPECT_CLASS(MPI_Irecv(buf, 1, MPI_INT, -3, 0, MPI_COMM_WORLD, &rq), MPI_ERR_RANK);
    }
    EXPECT_CLASS(MPI_Send(buf, -1, MPI_INT, next, 0, MPI_COMM_WORLD), MPI_ERR_COUNT);
    EXPECT_CLASS(MPI_Recv(buf, -4, MPI_INT, prev, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE), MPI_ERR_COUNT);
    EXPECT_CLASS(MPI_Send(buf, 1, MPI_DATATYPE_NULL, next, 0, MPI_COMM_WORLD), MPI_ERR_TYPE);
    /* MPI_COMM_NULL: the error is raised on COMM_WORLD's handler in Open MPI
     * 4.1 (MPI-3.1 leaves the handler for an invalid communicator to the
     * implementation), which returns here */
    EXPECT_CLASS(MPI_Send(buf, 1, MPI_INT, next, 0, MPI_COMM_NULL), MPI_ERR_COMM);
    {
        int r;
        EXPECT_CLASS(MPI_Comm_rank(MPI_COMM_NULL, &r), MPI_ERR_COMM);
        EXPECT_CLASS(MPI_Barrier(MPI_COMM_NULL), MPI_ERR_COMM);
    }
    /* NULL buffer with count > 0: Open MPI 4.1 reports MPI_ERR_BUFFER */
    EXPECT_CLASS(MPI_Send(NULL, 4, MPI_INT, next, 0, MPI_COMM_WORLD), MPI_ERR_BUFFER);
    /* an uncommitted derived type */
    {
        MPI_Datatype t;
        MPI_OK(MPI_Type_contiguous(2, MPI_INT, &t));
        EXPECT_CLASS(MPI_Send(buf, 1, t, next, 0, MPI_COMM_WORLD), MPI_ERR_TYPE);
        MPI_OK(MPI_Type_free(&t));
    }
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    /* ---- truncation ---- */
    {
        int big[8] = {1, 2, 3, 4, 5, 6, 7, 8}, small[4];
        MPI_Status st;
        MPI_Request rq;
        MPI_OK(MPI_Isend(big, 8, MPI_INT, next, 3, MPI_COMM_WORLD, &rq));
        int rc = MPI_Recv(small, 4, MPI_INT, prev, 3, MPI_COMM_WORLD, &st);
        CHECKF(err_class(rc) == MPI_ERR_TRUNCATE, "truncated Recv gave class %d", err_class(rc));
        MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
        /* Sendrecv too */
        rc = MPI_Sendrecv(big, 8, MPI_INT, next, 4, small, 2, MPI_INT, prev, 4, MPI_COMM_WORLD, &st);
        CHECKF(err_class(rc) == MPI_ERR_TRUNCATE, "truncated Sendrecv gave class %d", err_class(rc));
    }
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    /* ---- collectives ---- */
    EXPECT_CLASS(MPI_Bcast(buf, 1, MPI_INT, size, MPI_COMM_WORLD), MPI_ERR_ROOT);
    EXPECT_CLASS(MPI_Bcast(buf, 1, MPI_INT, -1, MPI_COMM_WORLD), MPI_ERR_ROOT);
    EXPECT_CLASS(MPI_Reduce(buf, buf + 8, 1, MPI_INT, MPI_SUM, size + 1, MPI_COMM_WORLD), MPI_ERR_ROOT);
    EXPECT_CLASS(MPI_Allreduce(buf, buf + 8, 1, MPI_INT, MPI_OP_NULL, MPI_COMM_WORLD), MPI_ERR_OP);
    EXPECT_CLASS(MPI_Allreduce(buf, buf + 8, -1, MPI_INT, MPI_SUM, MPI_COMM_WORLD), MPI_ERR_COUNT);
    EXPECT_CLASS(MPI_Bcast(buf, 1, MPI_DATATYPE_NULL, 0, MPI_COMM_WORLD), MPI_ERR_TYPE);
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    /* ---- other objects ---- */
    {
        MPI_Comm c;
        int color = 0;
        EXPECT_CLASS(MPI_Comm_dup(MPI_COMM_NULL, &c), MPI_ERR_COMM);
        EXPECT_CLASS(MPI_Comm_split(MPI_COMM_NULL, color, 0, &c), MPI_ERR_COMM);
        MPI_Group g;
        EXPECT_CLASS(MPI_Comm_group(MPI_COMM_NULL, &g), MPI_ERR_COMM);
        int sz;
        EXPECT_CLASS(MPI_Type_size(MPI_DATATYPE_NULL, &sz), MPI_ERR_TYPE);
        /* (Group_translate_ranks with an out-of-range rank is not tested:
         * native Open MPI 4.1 returns MPI_SUCCESS for it) */
    }

    /* ---- info objects, attributes and error handlers (the classes Open MPI 4.1 gives, which
     * mpi4py's test_exceptions checks) ---- */
    {
        MPI_Info info;
        MPI_OK(MPI_Info_create(&info));
        char longkey[MPI_MAX_INFO_KEY + 8], longval[MPI_MAX_INFO_VAL + 8], key[MPI_MAX_INFO_KEY + 1];
        memset(longkey, 'k', sizeof longkey - 1);
        longkey[sizeof longkey - 1] = 0;
        memset(longval, 'v', sizeof longval - 1);
        longval[sizeof longval - 1] = 0;
        EXPECT_CLASS(MPI_Info_delete(info, "absent"), MPI_ERR_INFO_NOKEY);
        EXPECT_CLASS(MPI_Info_set(info, longkey, "v"), MPI_ERR_INFO_KEY);
        EXPECT_CLASS(MPI_Info_set(info, "", "v"), MPI_ERR_INFO_KEY);
        EXPECT_CLASS(MPI_Info_set(info, "k", longval), MPI_ERR_INFO_VALUE);
        EXPECT_CLASS(MPI_Info_get_nthkey(info, 3, key), MPI_ERR_INFO_KEY);
        int nkeys;
        EXPECT_CLASS(MPI_Info_get_nkeys(MPI_INFO_NULL, &nkeys), MPI_ERR_INFO);
        MPI_Info none = MPI_INFO_NULL;
        EXPECT_CLASS(MPI_Info_free(&none), MPI_ERR_INFO);
        MPI_OK(MPI_Info_free(&info));

        void *v;
        int flag;
        EXPECT_CLASS(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_KEYVAL_INVALID, &v, &flag), MPI_ERR_KEYVAL);
        EXPECT_CLASS(MPI_Type_get_attr(MPI_INT, MPI_KEYVAL_INVALID, &v, &flag), MPI_ERR_KEYVAL);
        EXPECT_CLASS(MPI_Comm_get_attr(MPI_COMM_NULL, MPI_TAG_UB, &v, &flag), MPI_ERR_COMM);
        MPI_Errhandler eh = MPI_ERRHANDLER_NULL;
        EXPECT_CLASS(MPI_Errhandler_free(&eh), MPI_ERR_ARG);
    }

    /* ---- error strings and classes ---- */
    {
        const int classes[] = {MPI_SUCCESS, MPI_ERR_BUFFER, MPI_ERR_COUNT, MPI_ERR_TYPE, MPI_ERR_TAG,
                               MPI_ERR_COMM, MPI_ERR_RANK, MPI_ERR_ROOT, MPI_ERR_TRUNCATE, MPI_ERR_OP,
                               MPI_ERR_OTHER, MPI_ERR_INTERN, MPI_ERR_IN_STATUS, MPI_ERR_PENDING,
                               MPI_ERR_REQUEST, MPI_ERR_ARG, MPI_ERR_UNKNOWN};
        for (size_t k = 0; k < sizeof classes / sizeof classes[0]; k++) {
            char s[MPI_MAX_ERROR_STRING];
            int len = -1;
            MPI_OK(MPI_Error_string(classes[k], s, &len));
            CHECKF(len > 0 && len < MPI_MAX_ERROR_STRING && (int)strlen(s) == len,
                   "Error_string(%d) len %d", classes[k], len);
            CHECK(err_class(classes[k]) == classes[k]);
        }
        CHECK(MPI_SUCCESS == 0);
        CHECK(MPI_ERR_LASTCODE > MPI_ERR_UNKNOWN);
        /* a real error code's string is non-empty too */
        int rc = MPI_Send(buf, 1, MPI_INT, size, 0, MPI_COMM_WORLD);
        char s[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_OK(MPI_Error_string(rc, s, &len));
        CHECK(len > 0);
        /* user-added classes and codes */
        int cls, code;
        MPI_OK(MPI_Add_error_class(&cls));
        MPI_OK(MPI_Add_error_code(cls, &code));
        MPI_OK(MPI_Add_error_string(code, "kawarimi test error"));
        CHECK(err_class(code) == cls);
        MPI_OK(MPI_Error_string(code, s, &len));
        CHECKF(strcmp(s, "kawarimi test error") == 0, "user error string '%s'", s);
    }

    /* ---- user error handler ---- */
    {
        MPI_Errhandler mine;
        MPI_Comm c;
        MPI_OK(MPI_Comm_create_errhandler(my_handler, &mine));
        MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &c));
        /* a dup inherits ERRORS_RETURN from world */
        MPI_OK(MPI_Comm_get_errhandler(c, &eh));
        CHECK(eh == MPI_ERRORS_RETURN);
        MPI_OK(MPI_Errhandler_free(&eh));
        MPI_OK(MPI_Comm_set_errhandler(c, mine));
        int rc = MPI_Send(buf, 1, MPI_INT, size + 2, 0, c);
        CHECKF(handler_calls == 1, "handler called %d times", handler_calls);
        CHECK(handler_comm == c);
        CHECKF(err_class(handler_code) == MPI_ERR_RANK, "handler got class %d", err_class(handler_code));
        CHECK(err_class(rc) == MPI_ERR_RANK);
        /* truncation goes to the handler too */
        int big[8] = {0}, small[2];
        MPI_Request rq;
        MPI_OK(MPI_Isend(big, 8, MPI_INT, next, 9, c, &rq));
        rc = MPI_Recv(small, 2, MPI_INT, prev, 9, c, MPI_STATUS_IGNORE);
        CHECK(handler_calls == 2 && err_class(handler_code) == MPI_ERR_TRUNCATE);
        CHECK(err_class(rc) == MPI_ERR_TRUNCATE);
        MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
        /* Comm_call_errhandler */
        MPI_OK(MPI_Comm_call_errhandler(c, MPI_ERR_OTHER));
        CHECK(handler_calls == 3 && handler_code == MPI_ERR_OTHER);
        /* the handler is inherited by a dup of c */
        MPI_Comm c2;
        MPI_OK(MPI_Comm_dup(c, &c2));
        rc = MPI_Send(buf, 1, MPI_INT, next, -9, c2);
        CHECK(handler_calls == 4 && handler_comm == c2 && err_class(handler_code) == MPI_ERR_TAG);
        MPI_OK(MPI_Comm_free(&c2));
        /* the world handler was not involved */
        rc = MPI_Send(buf, 1, MPI_INT, size + 2, 0, MPI_COMM_WORLD);
        CHECK(handler_calls == 4 && err_class(rc) == MPI_ERR_RANK);
        MPI_OK(MPI_Comm_get_errhandler(c, &eh));
        CHECK(eh == mine);
        MPI_OK(MPI_Errhandler_free(&eh));
        MPI_OK(MPI_Errhandler_free(&mine));
        CHECK(mine == MPI_ERRHANDLER_NULL);
        /* still set on c after the user's handle is freed */
        MPI_OK(MPI_Comm_call_errhandler(c, MPI_ERR_ARG));
        CHECK(handler_calls == 5 && handler_code == MPI_ERR_ARG);
        MPI_OK(MPI_Comm_free(&c));
    }

    /* after all that, communication still works */
    {
        int v = rank, got = -1;
        MPI_OK(MPI_Sendrecv(&v, 1, MPI_INT, next, 0, &got, 1, MPI_INT, prev, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        CHECK(got == prev);
        int sum = 0;
        MPI_OK(MPI_Allreduce(&v, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
        CHECK(sum == size * (size - 1) / 2);
    }
    return finish("errors");
}
