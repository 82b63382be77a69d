/* env: Initialized/Finalized, Init_thread(FUNNELED) and Query_thread,
 * Is_thread_main, Wtime/Wtick, Get_processor_name, Get_version,
 * Get_library_version, Alloc_mem/Free_mem, predefined attributes. */
#include "check.h"
#include <time.h>

int main(int argc, char **argv)
{
    int flag = -1, provided = -1, rank, size;

    MPI_OK(MPI_Initialized(&flag));
    if (flag != 0) {
        fprintf(stderr, "FAIL %s:%d rank -1: Initialized before Init is %d\n", __FILE__, __LINE__, flag);
        return 1;
    }
    MPI_OK(MPI_Finalized(&flag));
    if (flag != 0) {
        fprintf(stderr, "FAIL %s:%d rank -1: Finalized before Init is %d\n", __FILE__, __LINE__, flag);
        return 1;
    }
    /* version queries are allowed before Init */
    int ver = 0, sub = 0;
    MPI_OK(MPI_Get_version(&ver, &sub));

    MPI_OK(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided));
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);
    CHECK(ver == 3 && sub == 1);

    MPI_OK(MPI_Initialized(&flag));
    CHECK(flag == 1);
    MPI_OK(MPI_Finalized(&flag));
    CHECK(flag == 0);

    /* thread levels are ordered */
    CHECK(MPI_THREAD_SINGLE < MPI_THREAD_FUNNELED && MPI_THREAD_FUNNELED < MPI_THREAD_SERIALIZED &&
          MPI_THREAD_SERIALIZED < MPI_THREAD_MULTIPLE);
    CHECKF(provided >= MPI_THREAD_SINGLE && provided <= MPI_THREAD_MULTIPLE, "provided %d", provided);
    int q = -1;
    MPI_OK(MPI_Query_thread(&q));
    CHECKF(q == provided, "Query_thread %d, Init_thread provided %d", q, provided);
    MPI_OK(MPI_Is_thread_main(&flag));
    CHECK(flag == 1);

    /* version */
    ver = sub = 0;
    MPI_OK(MPI_Get_version(&ver, &sub));
    CHECKF(ver == 3 && sub == 1, "version %d.%d", ver, sub);
    CHECK(MPI_VERSION == 3 && MPI_SUBVERSION == 1);
    {
        char lib[MPI_MAX_LIBRARY_VERSION_STRING];
        int len = -1;
        MPI_OK(MPI_Get_library_version(lib, &len));
        /* Native Open MPI 4.1.4 counts the terminating NUL in resultlen
         * (87 for an 86-character string); the standard means the string's
         * length (MPICH returns strlen). Accept both. */
        CHECKF(strlen(lib) > 0 && len < MPI_MAX_LIBRARY_VERSION_STRING &&
                   ((size_t)len == strlen(lib) || (size_t)len == strlen(lib) + 1),
               "library version length %d for a string of %zu", len, strlen(lib));
    }

    /* clocks */
    {
        double tick = MPI_Wtick();
        CHECKF(tick > 0 && tick < 1.0, "Wtick %g", tick);
        double prev = MPI_Wtime();
        for (int i = 0; i < 100000; i++) {
            double t = MPI_Wtime();
            CHECKF(t >= prev, "Wtime went backwards: %.9f after %.9f", t, prev);
            prev = t;
        }
        double t0 = MPI_Wtime();
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        double dt = MPI_Wtime() - t0;
        CHECKF(dt >= 0.015 && dt < 5.0, "20 ms sleep measured as %g s", dt);
        /* Wtime is in seconds: compare with the C clock over the sleep */
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        t0 = MPI_Wtime();
        nanosleep(&ts, NULL);
        dt = MPI_Wtime() - t0;
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ref = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
        CHECKF(dt <= ref + 0.005 && dt >= ref * 0.5, "Wtime %g vs monotonic clock %g", dt, ref);
    }

    /* processor name */
    {
        char name[MPI_MAX_PROCESSOR_NAME];
        int len = -1;
        MPI_OK(MPI_Get_processor_name(name, &len));
        CHECKF(len > 0 && len < MPI_MAX_PROCESSOR_NAME && (size_t)len == strlen(name), "processor name len %d", len);
    }

    /* Alloc_mem / Free_mem */
    {
        void *p = NULL;
        MPI_OK(MPI_Alloc_mem(1 << 20, MPI_INFO_NULL, &p));
        CHECK(p != NULL);
        memset(p, 0xab, 1 << 20);
        /* usable as a communication buffer */
        int next = (rank + 1) % size, prev = (rank + size - 1) % size;
        int *ip = p;
        ip[0] = rank;
        MPI_OK(MPI_Sendrecv(ip, 1000, MPI_INT, next, 0, ip + 1000, 1000, MPI_INT, prev, 0, MPI_COMM_WORLD,
                            MPI_STATUS_IGNORE));
        CHECK(ip[1000] == prev);
        MPI_OK(MPI_Free_mem(p));
        void *z = NULL;
        MPI_OK(MPI_Alloc_mem(16, MPI_INFO_NULL, &z));
        MPI_OK(MPI_Free_mem(z));
    }

    /* predefined attributes on COMM_WORLD */
    {
        int *v;
        MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &v, &flag));
        CHECK(flag == 1);
        CHECKF(*v >= 32767, "MPI_TAG_UB %d", *v);
        MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_WTIME_IS_GLOBAL, &v, &flag));
        if (flag)
            CHECKF(*v == 0 || *v == 1, "MPI_WTIME_IS_GLOBAL %d", *v);
        MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_HOST, &v, &flag));
        if (flag)
            CHECKF(*v == MPI_PROC_NULL || (*v >= 0 && *v < size), "MPI_HOST %d", *v);
        MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_IO, &v, &flag));
        if (flag)
            CHECKF(*v == MPI_ANY_SOURCE || *v == MPI_PROC_NULL || (*v >= 0 && *v < size), "MPI_IO %d", *v);
        MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_UNIVERSE_SIZE, &v, &flag));
        /* (Open MPI reports the slot count, e.g. 2 on a 2-core machine
         * even when 4 ranks run oversubscribed, so only >= 1) */
        if (flag)
            CHECKF(*v >= 1, "MPI_UNIVERSE_SIZE %d", *v);
        MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, &v, &flag));
        if (flag)
            CHECKF(*v == 0, "MPI_APPNUM %d", *v);
        /* (MPI_TAG_UB on COMM_SELF is not asserted: the standard attaches
         * the predefined attributes to COMM_WORLD only, and native Open MPI
         * 4.1 does not set it on COMM_SELF) */
    }

    /* MPI_Abort is covered by abort_rank; MPI_Pcontrol is a no-op */
    MPI_OK(MPI_Pcontrol(0));

    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0) {
        printf("OK env\n");
        fflush(stdout);
    }
    MPI_OK(MPI_Finalize());
    /* after Finalize only these may be called; failures cannot Abort */
    flag = 0;
    MPI_Finalized(&flag);
    if (flag != 1) {
        fprintf(stderr, "FAIL %s:%d rank %d: Finalized after Finalize is %d\n", __FILE__, __LINE__, rank, flag);
        return 1;
    }
    flag = 0;
    MPI_Initialized(&flag);
    if (flag != 1) {
        fprintf(stderr, "FAIL %s:%d rank %d: Initialized after Finalize is %d\n", __FILE__, __LINE__, rank, flag);
        return 1;
    }
    return 0;
}
