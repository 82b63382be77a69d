/* memory_reuse: the same large buffers sent and received again and again, and between
 * rounds given back to the kernel (madvise MADV_DONTNEED on heap memory, munmap then mmap
 * MAP_FIXED on the program's bss) and written anew. A transport that keeps memory
 * registrations (kawarimi's verbs registration cache) must never let the peer read the pages
 * a send buffer had before, nor write a message into the pages a receive buffer had before:
 * every byte is checked.
 *
 * Under kawarimi it also checks that a large malloc comes from the main heap (kawarimi
 * turns off malloc's own mmap at MPI_Init, unless KAWARIMI_REG_CACHE=0, so that reused
 * buffers stay registrable).
 *
 * Ranks 0 and 1 exchange; the others only take part in the final barrier. */
#include "check.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#define N ((size_t)1 << 20)

static unsigned char bss_send[N] __attribute__((aligned(4096)));
static unsigned char bss_recv[N] __attribute__((aligned(4096)));

static unsigned char pat(size_t i, int sender, int salt)
{
    return (unsigned char)((i * 151u) ^ (i >> 9) ^ (size_t)(sender * 29 + salt * 7 + 1));
}

/* Rank 0 sends sb to rank 1, which checks it in rb, then the other way. */
static void exchange(int rank, unsigned char *sb, unsigned char *rb, int salt, const char *what)
{
    int peer = 1 - rank;
    for (int turn = 0; turn < 2; turn++) {
        if (rank == turn) {
            for (size_t i = 0; i < N; i++)
                sb[i] = pat(i, rank, salt);
            MPI_Send(sb, (int)N, MPI_BYTE, peer, salt, MPI_COMM_WORLD);
        } else {
            memset(rb, 0xee, N);
            MPI_Recv(rb, (int)N, MPI_BYTE, peer, salt, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            for (size_t i = 0; i < N; i++)
                if (rb[i] != pat(i, peer, salt))
                    CHECKF(0, "%s: byte %zu of %zu from rank %d is %u, expected %u", what, i, N,
                           peer, rb[i], pat(i, peer, salt));
        }
    }
}

/* Drops the pages of [p, p+N): they read back as zeroes, new pages. */
static void drop_pages(unsigned char *p)
{
    p[0] = 1;
    CHECKF(madvise(p, N, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
    CHECKF(p[0] == 0, "madvise(MADV_DONTNEED) left the page in place");
}

/* Unmaps [p, p+N) and maps new anonymous memory at the same address. */
static void remap(unsigned char *p)
{
    p[0] = 1;
    CHECKF(munmap(p, N) == 0, "munmap: %s", strerror(errno));
    void *q = mmap(p, N, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CHECKF(q == p, "mmap MAP_FIXED: %s", strerror(errno));
    CHECK(p[0] == 0);
}

/* Whether [p, p+n) lies on the main heap: between [heap]'s start and the break. */
static int on_main_heap(const void *p, size_t n)
{
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL);
    char line[512];
    unsigned long start = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "[heap]"))
            start = strtoul(line, NULL, 16);
    fclose(f);
    uintptr_t a = (uintptr_t)p;
    return start != 0 && a >= start && a + n <= (uintptr_t)sbrk(0);
}

int main(int argc, char **argv)
{
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECKF(size >= 2, "needs at least 2 ranks, have %d", size);

    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len;
    MPI_Get_library_version(version, &len);
    const char *cache = getenv("KAWARIMI_REG_CACHE");
    int expect_heap = strncmp(version, "kawarimi", 8) == 0 && !(cache && strcmp(cache, "0") == 0);

    void *heap_send = NULL, *heap_recv = NULL;
    CHECK(posix_memalign(&heap_send, 4096, N) == 0 && posix_memalign(&heap_recv, 4096, N) == 0);
    if (expect_heap)
        CHECKF(on_main_heap(heap_send, N) && on_main_heap(heap_recv, N),
               "a 1 MiB allocation at %p is not on the main heap under kawarimi", heap_send);

    if (rank < 2) {
        for (int i = 0; i < 6; i++)
            exchange(rank, heap_send, heap_recv, i, "heap buffers, reused");
        drop_pages(heap_send);
        drop_pages(heap_recv);
        exchange(rank, heap_send, heap_recv, 10, "heap buffers after madvise(MADV_DONTNEED)");
        for (int i = 0; i < 3; i++)
            exchange(rank, bss_send, bss_recv, 20 + i, "bss buffers, reused");
        remap(bss_send);
        remap(bss_recv);
        exchange(rank, bss_send, bss_recv, 30, "bss buffers after munmap and mmap(MAP_FIXED)");
        exchange(rank, heap_send, heap_recv, 40, "heap buffers again");
    }
    free(heap_send);
    free(heap_recv);
    finish("memory_reuse");
    return 0;
}
