/*
 * Addition and multiplication of the 16-byte floating-point formats Rust has no arithmetic
 * for, for MPI_SUM and MPI_PROD: x87 extended precision (C long double: MPI_LONG_DOUBLE,
 * MPI_C_LONG_DOUBLE_COMPLEX) and IEEE binary128 (Fortran REAL*16: MPI_REAL16,
 * MPI_COMPLEX32). The runtime's reduction engine calls them through hooks the shim installs
 * (kawarimi_runtime::op::set_wide_float_math). Operands travel as bytes, so nothing here
 * depends on their alignment.
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

void kw_q_add(const unsigned char a[16], const unsigned char b[16], unsigned char out[16]) {
    __float128 x, y, r;
    memcpy(&x, a, sizeof x);
    memcpy(&y, b, sizeof y);
    r = x + y;
    memcpy(out, &r, sizeof r);
}

void kw_q_mul(const unsigned char a[16], const unsigned char b[16], unsigned char out[16]) {
    __float128 x, y, r;
    memcpy(&x, a, sizeof x);
    memcpy(&y, b, sizeof y);
    r = x * y;
    memcpy(out, &r, sizeof r);
}
