/*
 * Shared helpers for kawarimi's benchmark programs (the .c files in bench/).
 *
 * Time is read with clock_gettime(CLOCK_MONOTONIC) rather than MPI_Wtime, so that native
 * Open MPI and kawarimi are measured with the very same clock.  Every program checks the
 * bytes it moved; on a mismatch it prints a line starting with "bench=<name> FAIL" to
 * stderr and calls MPI_Abort, so the run exits non-zero.
 */
#ifndef KAWARIMI_BENCH_COMMON_H
#define KAWARIMI_BENCH_COMMON_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Iteration multiplier: argv[1] if given (e.g. 0.1 for a smoke run, 4 for a long one). */
static double bench_scale = 1.0;

static inline void bench_parse_scale(int argc, char **argv) {
    if (argc > 1) {
        double s = atof(argv[1]);
        if (s > 0) bench_scale = s;
    }
}

/* The start every benchmark shares: MPI_Init, the scale (argv[1]), this rank and the job's
 * size. A job of fewer than min_ranks ranks aborts, naming the benchmark. */
static inline void bench_init(int *argc, char ***argv, const char *name, int min_ranks, int *rank, int *size) {
    MPI_Init(argc, argv);
    bench_parse_scale(*argc, *argv);
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    if (*size < min_ranks) {
        if (*rank == 0) fprintf(stderr, "%s needs at least %d ranks\n", name, min_ranks);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

static inline int scaled(int iters, int min) {
    double v = iters * bench_scale;
    return v < min ? min : (int)v;
}

#define BENCH_FAIL(name, ...)                                                                 \
    do {                                                                                      \
        int r_;                                                                               \
        MPI_Comm_rank(MPI_COMM_WORLD, &r_);                                                   \
        fprintf(stderr, "bench=%s FAIL rank=%d: ", name, r_);                                 \
        fprintf(stderr, __VA_ARGS__);                                                         \
        fprintf(stderr, "\n");                                                                \
        fflush(stderr);                                                                       \
        MPI_Abort(MPI_COMM_WORLD, 3);                                                         \
        exit(3);                                                                              \
    } while (0)

/* The byte a sender puts at offset i of a message identified by (a, b, c). */
static inline unsigned char pattern_byte(size_t i, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + a * 0xBF58476D1CE4E5B9ull + b * 0x94D049BB133111EBull + c;
    x ^= x >> 29;
    return (unsigned char)(x ^ (x >> 17));
}

static inline void fill_pattern(unsigned char *p, size_t n, uint64_t a, uint64_t b, uint64_t c) {
    for (size_t i = 0; i < n; i++) p[i] = pattern_byte(i, a, b, c);
}

/* Returns the first offset that differs from the pattern, or -1. */
static inline long check_pattern(const unsigned char *p, size_t n, uint64_t a, uint64_t b, uint64_t c) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern_byte(i, a, b, c)) return (long)i;
    return -1;
}

/*
 * A faster pattern for bulk checks (about 8x cheaper than pattern_byte): 8-byte words
 * w[k] = k*C1 + a*C2 + b*C3 + c*C4, so a shifted, stale or foreign block always differs.
 */
static inline uint64_t pattern_word(size_t k, uint64_t a, uint64_t b, uint64_t c) {
    return (uint64_t)k * 0x9E3779B97F4A7C15ull + a * 0xBF58476D1CE4E5B9ull + b * 0x94D049BB133111EBull +
           c * 0xD6E8FEB86659FD93ull + 1;
}

static inline void fill_words(unsigned char *p, size_t n, uint64_t a, uint64_t b, uint64_t c) {
    size_t k = 0;
    for (; (k + 1) * 8 <= n; k++) {
        uint64_t w = pattern_word(k, a, b, c);
        memcpy(p + k * 8, &w, 8);
    }
    if (k * 8 < n) {
        uint64_t w = pattern_word(k, a, b, c);
        memcpy(p + k * 8, &w, n - k * 8);
    }
}

/* Returns the byte offset of the first differing word, or -1. */
static inline long check_words(const unsigned char *p, size_t n, uint64_t a, uint64_t b, uint64_t c) {
    size_t k = 0;
    for (; (k + 1) * 8 <= n; k++) {
        uint64_t w = pattern_word(k, a, b, c), got;
        memcpy(&got, p + k * 8, 8);
        if (got != w) return (long)(k * 8);
    }
    if (k * 8 < n) {
        uint64_t w = pattern_word(k, a, b, c);
        if (memcmp(p + k * 8, &w, n - k * 8) != 0) return (long)(k * 8);
    }
    return -1;
}

/*
 * Cheap per-iteration stamps for large buffers: three 8-byte words (head, middle, tail)
 * carry an iteration number, so a buffer that was not (fully) overwritten this iteration is
 * caught without an O(n) pass.  Full-content checks happen on warm-up iterations.
 */
static inline size_t stamp_offset(size_t n, int k) {
    if (k == 0) return 0;
    if (k == 1) return (n / 2) & ~(size_t)7;
    return n - 8;
}

static inline void put_stamps(unsigned char *p, size_t n, uint64_t v) {
    for (int k = 0; k < 3; k++) {
        uint64_t w = v * 3 + (uint64_t)k + 0x5A5A000000000000ull;
        memcpy(p + stamp_offset(n, k), &w, 8);
    }
}

static inline void clear_stamps(unsigned char *p, size_t n) {
    for (int k = 0; k < 3; k++) memset(p + stamp_offset(n, k), 0xEE, 8);
}

static inline int stamps_ok(const unsigned char *p, size_t n, uint64_t v) {
    for (int k = 0; k < 3; k++) {
        uint64_t w, want = v * 3 + (uint64_t)k + 0x5A5A000000000000ull;
        memcpy(&w, p + stamp_offset(n, k), 8);
        if (w != want) return 0;
    }
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts `v` in place; median (mean of the two middle values for even n) and nearest-rank p99. */
static inline void summarize(double *v, int n, double *median, double *p99) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    *median = (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    int k = (int)((99 * (long)n + 99) / 100) - 1; /* ceil(0.99 n) - 1 */
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    *p99 = v[k];
}

static inline void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench: out of memory (%zu bytes)\n", n);
        MPI_Abort(MPI_COMM_WORLD, 4);
        exit(4);
    }
    return p;
}

/*
 * Collective timing: every rank times each call; rank 0 gets the per-iteration maximum over
 * ranks (the time until the slowest rank was done) and prints median, p99 and mean of it.
 * Ranks enter each timed call together (a barrier precedes it, outside the timed region).
 */
static inline void report_coll(const char *name, size_t n, double *samples, int iters) {
    int rank, nranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    double *mx = rank == 0 ? xmalloc(sizeof(double) * (size_t)iters) : NULL;
    MPI_Reduce(samples, mx, iters, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        double sum = 0, med, p99;
        for (int i = 0; i < iters; i++) sum += mx[i];
        summarize(mx, iters, &med, &p99);
        printf("bench=%s ranks=%d size=%zu median_us=%.3f p99_us=%.3f avg_us=%.3f iters=%d\n", name, nranks, n, med, p99,
               sum / iters, iters);
        fflush(stdout);
        free(mx);
    }
}

static inline int coll_iters_for(size_t n) {
    if (n <= 4096) return 1000;
    if (n <= 32768) return 400;
    if (n <= 262144) return 100;
    if (n <= 1048576) return 40;
    return 20;
}

#endif
