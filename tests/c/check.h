/* Shared helpers for kawarimi's self-checking MPI test programs.
 *
 * Every program checks each result with CHECK / CHECKF. On failure they print
 *   FAIL <file>:<line> rank <r>: <what>
 * to stderr and call MPI_Abort(MPI_COMM_WORLD, 1). At the end rank 0 prints
 * exactly one line "OK <program-name>" after a final barrier (see finish()). */
#ifndef KAWARIMI_CHECK_H
#define KAWARIMI_CHECK_H

#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A 64-bit mixing function (MurmurHash3's finaliser): deterministic pseudo-random sizes,
 * targets and bytes that every rank can compute for any other. */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Seconds on the monotonic clock. */
static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int check_world_rank_(void)
{
    int init = 0, fin = 0, r = -1;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin)
        MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

static inline void check_fail_(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

static inline void check_fail_(const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "FAIL %s:%d rank %d: %s\n", file, line, check_world_rank_(), msg);
    fflush(stderr);
    fflush(stdout);
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin)
        MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

/* CHECK(cond): fails with the text of the condition. */
#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            check_fail_(__FILE__, __LINE__, "%s", #cond);                      \
    } while (0)

/* CHECKF(cond, fmt, ...): fails with the condition and a formatted detail. */
#define CHECKF(cond, ...)                                                      \
    do {                                                                       \
        if (!(cond)) {                                                         \
            char check_detail_[768];                                           \
            snprintf(check_detail_, sizeof check_detail_, __VA_ARGS__);        \
            check_fail_(__FILE__, __LINE__, "%s (%s)", #cond, check_detail_);  \
        }                                                                      \
    } while (0)

/* MPI_OK(call): the call must return MPI_SUCCESS. */
#define MPI_OK(call)                                                           \
    do {                                                                       \
        int mpi_ok_rc_ = (call);                                               \
        if (mpi_ok_rc_ != MPI_SUCCESS)                                         \
            check_fail_(__FILE__, __LINE__, "%s returned %d", #call,           \
                        mpi_ok_rc_);                                           \
    } while (0)

/* Error class of an error code (MPI_Error_class must itself succeed). */
static inline int err_class(int code)
{
    int cls = -1;
    if (MPI_Error_class(code, &cls) != MPI_SUCCESS)
        return -1;
    return cls;
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        check_fail_(__FILE__, __LINE__, "malloc(%zu) failed", n);
    return p;
}

static inline int world_rank(void)
{
    int r;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

static inline int world_size(void)
{
    int s;
    MPI_Comm_size(MPI_COMM_WORLD, &s);
    return s;
}

/* A non-commutative user op on pairs of longs (a, b): (a1,b1) o (a2,b2) = (a1*a2, b1*a2 + b2)
 * mod 1000003 (composition of affine maps), so any reordering of operands shows. */
static inline void affine(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    long *x = in, *y = inout;
    for (int i = 0; i < *len; i++) {
        long a = x[2 * i] * y[2 * i], b = x[2 * i + 1] * y[2 * i] + y[2 * i + 1];
        y[2 * i] = a % 1000003;
        y[2 * i + 1] = b % 1000003;
    }
}

/* Final barrier, "OK <name>" from rank 0, MPI_Finalize. */
static inline int finish(const char *name)
{
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    if (world_rank() == 0) {
        printf("OK %s\n", name);
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}

#endif
