/* ARMCI-MPI (Debian's libarmci-mpi-dev, built on MPI one-sided windows; nobody here wrote it)
 * driven the way Global Arrays drives it: collective allocation, contiguous and strided put,
 * get and accumulate, non-blocking operations with handles, read-modify-write, mutexes, and
 * fences. Every value is checked; prints "OK armci" when all hold. ROUNDS rounds (argv[1],
 * default 3) so a migration can land in the middle. */
#include <armci.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 1024          /* doubles per rank in the main array */
#define ROWS 16         /* the strided patch: ROWS x COLS doubles of a ROWS x LD block */
#define COLS 8
#define LD 32

static int rank, nproc;

#define CHECK(cond, ...)                                                                     \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, "armci rank %d: check failed at line %d: ", rank, __LINE__);           \
      fprintf(stderr, __VA_ARGS__);                                                          \
      fprintf(stderr, "\n");                                                                 \
      MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
    }                                                                                        \
  } while (0)

static double value(int owner, int round, int i) { return owner * 1e6 + round * 1e4 + i; }

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 3;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nproc);
  CHECK(ARMCI_Init() == 0, "ARMCI_Init");

  void **arr = malloc(nproc * sizeof(void *));
  void **blk = malloc(nproc * sizeof(void *));
  void **ctr = malloc(nproc * sizeof(void *));
  CHECK(ARMCI_Malloc(arr, N * sizeof(double)) == 0, "ARMCI_Malloc arr");
  CHECK(ARMCI_Malloc(blk, ROWS * LD * sizeof(double)) == 0, "ARMCI_Malloc blk");
  CHECK(ARMCI_Malloc(ctr, 2 * sizeof(long)) == 0, "ARMCI_Malloc ctr");
  CHECK(ARMCI_Create_mutexes(1) == 0, "ARMCI_Create_mutexes");
  double *local = ARMCI_Malloc_local(N * sizeof(double));
  CHECK(local != NULL, "ARMCI_Malloc_local");
  int right = (rank + 1) % nproc, left = (rank + nproc - 1) % nproc;

  for (int round = 0; round < rounds; round++) {
    /* 1. Contiguous put to the right neighbour, checked by its owner after a barrier. */
    ARMCI_Access_begin(ctr[rank]);
    memset(ctr[rank], 0, 2 * sizeof(long));
    ARMCI_Access_end(ctr[rank]);
    for (int i = 0; i < N; i++) local[i] = value(rank, round, i);
    CHECK(ARMCI_Put(local, arr[right], N * sizeof(double), right) == 0, "ARMCI_Put");
    ARMCI_Fence(right);
    ARMCI_Barrier();
    ARMCI_Access_begin(arr[rank]);
    for (int i = 0; i < N; i++)
      CHECK(((double *)arr[rank])[i] == value(left, round, i), "round %d: arr[%d] = %g, want %g", round, i,
            ((double *)arr[rank])[i], value(left, round, i));
    ARMCI_Access_end(arr[rank]);

    /* 2. Contiguous get from the left neighbour's array (which holds its left's values). */
    ARMCI_Barrier();
    memset(local, 0, N * sizeof(double));
    CHECK(ARMCI_Get(arr[left], local, N * sizeof(double), left) == 0, "ARMCI_Get");
    int leftleft = (left + nproc - 1) % nproc;
    for (int i = 0; i < N; i++) CHECK(local[i] == value(leftleft, round, i), "get[%d] = %g", i, local[i]);

    /* 3. Accumulate: every rank adds (rank+1) * scale into rank 0's array; 0 checks the sum. */
    ARMCI_Barrier();
    if (rank == 0) {
      ARMCI_Access_begin(arr[0]);
      memset(arr[0], 0, N * sizeof(double));
      ARMCI_Access_end(arr[0]);
    }
    ARMCI_Barrier();
    for (int i = 0; i < N; i++) local[i] = (rank + 1) * (double)(i + round);
    double scale = 2.0;
    CHECK(ARMCI_Acc(ARMCI_ACC_DBL, &scale, local, arr[0], N * sizeof(double), 0) == 0, "ARMCI_Acc");
    ARMCI_AllFence();
    ARMCI_Barrier();
    if (rank == 0) {
      double ranks_sum = nproc * (nproc + 1) / 2.0;
      ARMCI_Access_begin(arr[0]);
      for (int i = 0; i < N; i++)
        CHECK(((double *)arr[0])[i] == 2.0 * ranks_sum * (i + round), "acc[%d] = %g", i, ((double *)arr[0])[i]);
      ARMCI_Access_end(arr[0]);
    }

    /* 4. Strided put of a ROWS x COLS patch into the right neighbour's ROWS x LD block, then a
     * strided get of it back; cells outside the patch stay untouched. */
    ARMCI_Access_begin(blk[rank]);
    for (int i = 0; i < ROWS * LD; i++) ((double *)blk[rank])[i] = -1.0;
    ARMCI_Access_end(blk[rank]);
    ARMCI_Barrier();
    double patch[ROWS][COLS];
    for (int r = 0; r < ROWS; r++)
      for (int c = 0; c < COLS; c++) patch[r][c] = value(rank, round, r * 100 + c);
    int src_stride[1] = {COLS * sizeof(double)}, dst_stride[1] = {LD * sizeof(double)};
    int count[2] = {COLS * sizeof(double), ROWS};
    double *dst = (double *)blk[right] + 3; /* column offset 3 */
    CHECK(ARMCI_PutS(patch, src_stride, dst, dst_stride, count, 1, right) == 0, "ARMCI_PutS");
    ARMCI_Fence(right);
    ARMCI_Barrier();
    ARMCI_Access_begin(blk[rank]);
    for (int r = 0; r < ROWS; r++)
      for (int c = 0; c < LD; c++) {
        double got = ((double *)blk[rank])[r * LD + c];
        double want = (c >= 3 && c < 3 + COLS) ? value(left, round, r * 100 + c - 3) : -1.0;
        CHECK(got == want, "strided blk[%d][%d] = %g, want %g", r, c, got, want);
      }
    ARMCI_Access_end(blk[rank]);
    double back[ROWS][COLS];
    memset(back, 0, sizeof back);
    CHECK(ARMCI_GetS(dst, dst_stride, back, src_stride, count, 1, right) == 0, "ARMCI_GetS");
    CHECK(memcmp(back, patch, sizeof back) == 0, "ARMCI_GetS returned another patch");

    /* 5. Non-blocking puts to every rank with handles, then waits. */
    ARMCI_Barrier();
    armci_hdl_t *h = malloc(nproc * sizeof(armci_hdl_t));
    double *mine = malloc(nproc * sizeof(double));
    for (int p = 0; p < nproc; p++) {
      mine[p] = value(rank, round, p);
      ARMCI_INIT_HANDLE(&h[p]);
      /* each rank writes its slot `rank` of every peer's array */
      CHECK(ARMCI_NbPut(&mine[p], (double *)arr[p] + rank, sizeof(double), p, &h[p]) == 0, "ARMCI_NbPut");
    }
    for (int p = 0; p < nproc; p++) CHECK(ARMCI_Wait(&h[p]) == 0, "ARMCI_Wait");
    ARMCI_AllFence();
    ARMCI_Barrier();
    ARMCI_Access_begin(arr[rank]);
    for (int p = 0; p < nproc; p++)
      CHECK(((double *)arr[rank])[p] == value(p, round, rank), "nbput slot %d = %g", p, ((double *)arr[rank])[p]);
    ARMCI_Access_end(arr[rank]);
    free(h);
    free(mine);

    /* 6. Read-modify-write: every rank fetch-and-adds 1 to rank 0's counter 10 times; the old
     * values each rank sees are distinct, and the final count is exact. */
    ARMCI_Barrier();
    long seen[10];
    for (int k = 0; k < 10; k++) {
      long old = -1;
      CHECK(ARMCI_Rmw(ARMCI_FETCH_AND_ADD_LONG, &old, ctr[0], 1, 0) == 0, "ARMCI_Rmw");
      CHECK(old >= 0 && old < 10L * nproc, "fetch-and-add returned %ld", old);
      if (k > 0) CHECK(old > seen[k - 1], "fetch-and-add went backwards: %ld after %ld", old, seen[k - 1]);
      seen[k] = old;
    }
    ARMCI_Barrier();
    long total = ARMCI_GetValueLong(ctr[0], 0);
    CHECK(total == 10L * nproc, "counter = %ld, want %d", total, 10 * nproc);

    /* 7. A mutex on rank nproc-1 guards a read-increment-write of its second counter (a
     * plain get and put, not atomic on their own): no increment is lost. */
    ARMCI_Barrier();
    int owner = nproc - 1;
    for (int k = 0; k < 5; k++) {
      ARMCI_Lock(0, owner);
      long v = ARMCI_GetValueLong((long *)ctr[owner] + 1, owner);
      CHECK(ARMCI_PutValueLong(v + 1, (long *)ctr[owner] + 1, owner) == 0, "ARMCI_PutValueLong");
      ARMCI_Fence(owner);
      ARMCI_Unlock(0, owner);
    }
    ARMCI_Barrier();
    long guarded = ARMCI_GetValueLong((long *)ctr[owner] + 1, owner);
    CHECK(guarded == 5L * nproc, "mutex-guarded counter = %ld, want %d", guarded, 5 * nproc);
    ARMCI_Barrier();
  }

  CHECK(ARMCI_Destroy_mutexes() == 0, "ARMCI_Destroy_mutexes");
  ARMCI_Free_local(local);
  CHECK(ARMCI_Free(ctr[rank]) == 0, "ARMCI_Free");
  CHECK(ARMCI_Free(blk[rank]) == 0, "ARMCI_Free");
  CHECK(ARMCI_Free(arr[rank]) == 0, "ARMCI_Free");
  free(arr);
  free(blk);
  free(ctr);
  ARMCI_Finalize();
  if (rank == 0) printf("OK armci\n");
  MPI_Finalize();
  return 0;
}
