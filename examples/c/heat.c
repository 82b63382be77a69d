/*
 * kawarimi demo: explicit 1-D heat diffusion on a ring of ranks.
 *
 * Each rank owns a slab of the rod and exchanges one halo cell with each neighbour per step
 * (MPI_Sendrecv), checks the global heat with MPI_Allreduce every 100 steps, and at the end
 * gathers the rod on rank 0, which re-runs the whole computation serially and compares.
 * The program verifies itself: it prints "VERIFIED" and exits 0, or says what differs and
 * exits 1. It is plain MPI, built with Debian's mpicc; kawarimi runs it unmodified.
 *
 * Usage: heat [steps]
 */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_GLOBAL 240000
#define STEPS 2000
#define ALPHA 0.25

static double initial(int i) { return (i % 1000 < 500) ? 100.0 : 0.0; }

static void step(double *u, double *next, int n) {
    for (int i = 1; i <= n; i++) next[i] = u[i] + ALPHA * (u[i - 1] - 2.0 * u[i] + u[i + 1]);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* argv[1]: number of steps (default STEPS). */
    int steps = argc > 1 ? atoi(argv[1]) : STEPS;
    if (steps < 1) steps = STEPS;
    MPI_Bcast(&steps, 1, MPI_INT, 0, MPI_COMM_WORLD);

    int n = N_GLOBAL / size; /* N_GLOBAL is divisible by 1..6 and 8 */
    int first = rank * n;
    double *u = calloc(n + 2, sizeof(double)), *next = calloc(n + 2, sizeof(double));
    for (int i = 0; i < n; i++) u[i + 1] = initial(first + i);
    int left = (rank + size - 1) % size, right = (rank + 1) % size;

    double local = 0, total0 = 0, total = 0;
    for (int i = 1; i <= n; i++) local += u[i];
    MPI_Allreduce(&local, &total0, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int s = 0; s < steps; s++) {
        MPI_Sendrecv(&u[n], 1, MPI_DOUBLE, right, 0, &u[0], 1, MPI_DOUBLE, left, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Sendrecv(&u[1], 1, MPI_DOUBLE, left, 1, &u[n + 1], 1, MPI_DOUBLE, right, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        step(u, next, n);
        double *t = u; u = next; next = t;
        if (s % 100 == 99) {
            local = 0;
            for (int i = 1; i <= n; i++) local += u[i];
            MPI_Allreduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            /* On a ring the scheme conserves heat exactly up to rounding. */
            if (fabs(total - total0) > 1e-6 * total0) {
                if (rank == 0) fprintf(stderr, "heat not conserved at step %d: %.9g vs %.9g\n", s, total, total0);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
        }
    }
    double elapsed = MPI_Wtime() - t0;

    double *rod = rank == 0 ? malloc(sizeof(double) * N_GLOBAL) : NULL;
    MPI_Gather(&u[1], n, MPI_DOUBLE, rod, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    int ok = 1;
    if (rank == 0) {
        /* Serial reference on the same ring. */
        double *a = malloc(sizeof(double) * (N_GLOBAL + 2)), *b = malloc(sizeof(double) * (N_GLOBAL + 2));
        for (int i = 0; i < N_GLOBAL; i++) a[i + 1] = initial(i);
        for (int s = 0; s < steps; s++) {
            a[0] = a[N_GLOBAL];
            a[N_GLOBAL + 1] = a[1];
            step(a, b, N_GLOBAL);
            double *t = a; a = b; b = t;
        }
        for (int i = 0; i < N_GLOBAL && ok; i++) {
            if (rod[i] != a[i + 1]) {
                fprintf(stderr, "cell %d: parallel %.17g, serial %.17g\n", i, rod[i], a[i + 1]);
                ok = 0;
            }
        }
        free(a);
        free(b);
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("heat: %d ranks, %d cells, %d steps, %.3f s: %s\n", size, N_GLOBAL, steps, elapsed,
               ok ? "VERIFIED" : "FAILED");
    free(u);
    free(next);
    free(rod);
    MPI_Finalize();
    return ok ? 0 : 1;
}
