/*
 * x87 extended precision arithmetic for MPI_SUM and MPI_PROD on MPI_LONG_DOUBLE and
 * MPI_C_LONG_DOUBLE_COMPLEX: Rust has no 80-bit float type, so the runtime's reduction
 * engine calls these through a hook the shim installs (kawarimi_runtime::op).
 */
#include <string.h>

void kw_ld_add(const unsigned char a[16], const unsigned char b[16], unsigned char out[16]) {
    long double x, y, r;
    memcpy(&x, a, sizeof x);
    memcpy(&y, b, sizeof y);
    r = x + y;
    memset(out, 0, 16);
    memcpy(out, &r, 10);
}

void kw_ld_mul(const unsigned char a[16], const unsigned char b[16], unsigned char out[16]) {
    long double x, y, r;
    memcpy(&x, a, sizeof x);
    memcpy(&y, b, sizeof y);
    r = x * y;
    memset(out, 0, 16);
    memcpy(out, &r, 10);
}
