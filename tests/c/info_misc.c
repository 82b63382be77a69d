/* Info objects, datatype names and decoding, status setters. (The MPI-1 error handler names
 * are removed from Open MPI 4.1's mpi.h, so only Fortran can call them.) */
#include "check.h"

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    /* ---- info ---- */
    MPI_Info info, dup;
    MPI_OK(MPI_Info_create(&info));
    MPI_OK(MPI_Info_set(info, "alpha", "1"));
    MPI_OK(MPI_Info_set(info, "beta", "two"));
    MPI_OK(MPI_Info_set(info, "alpha", "one"));
    int nkeys, flag, len;
    MPI_OK(MPI_Info_get_nkeys(info, &nkeys));
    CHECKF(nkeys == 2, "nkeys %d", nkeys);
    char key[MPI_MAX_INFO_KEY + 1], val[MPI_MAX_INFO_VAL + 1];
    MPI_OK(MPI_Info_get_nthkey(info, 1, key));
    CHECKF(strcmp(key, "beta") == 0, "second key %s", key);
    MPI_OK(MPI_Info_get(info, "alpha", MPI_MAX_INFO_VAL, val, &flag));
    CHECK(flag && strcmp(val, "one") == 0);
    MPI_OK(MPI_Info_get_valuelen(info, "beta", &len, &flag));
    CHECK(flag && len == 3);
    MPI_OK(MPI_Info_get(info, "gamma", MPI_MAX_INFO_VAL, val, &flag));
    CHECK(!flag);
    MPI_OK(MPI_Info_dup(info, &dup));
    MPI_OK(MPI_Info_delete(info, "alpha"));
    MPI_OK(MPI_Info_get_nkeys(info, &nkeys));
    CHECK(nkeys == 1);
    MPI_OK(MPI_Info_get_nkeys(dup, &nkeys));
    CHECK(nkeys == 2);
    MPI_Comm c2;
    MPI_OK(MPI_Comm_dup_with_info(MPI_COMM_WORLD, dup, &c2));
    int sum = 0;
    MPI_OK(MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, c2));
    CHECK(sum == size * (size - 1) / 2);
    MPI_OK(MPI_Comm_free(&c2));
    MPI_OK(MPI_Info_free(&info));
    MPI_OK(MPI_Info_free(&dup));
    CHECK(info == MPI_INFO_NULL && dup == MPI_INFO_NULL);

    /* ---- datatype names and decoding ---- */
    MPI_Datatype vec, back;
    MPI_OK(MPI_Type_vector(3, 2, 5, MPI_DOUBLE, &vec));
    MPI_OK(MPI_Type_set_name(vec, "my vector"));
    char name[MPI_MAX_OBJECT_NAME];
    MPI_OK(MPI_Type_get_name(vec, name, &len));
    CHECK(strcmp(name, "my vector") == 0 && len == 9);
    MPI_OK(MPI_Type_get_name(MPI_INT, name, &len));
    CHECKF(strcmp(name, "MPI_INT") == 0, "MPI_INT is named %s", name);
    int ni, na, nd, comb;
    MPI_OK(MPI_Type_get_envelope(vec, &ni, &na, &nd, &comb));
    CHECK(comb == MPI_COMBINER_VECTOR && ni == 3 && na == 0 && nd == 1);
    int ints[3];
    MPI_Aint addrs[1];
    MPI_OK(MPI_Type_get_contents(vec, 3, 0, 1, ints, addrs, &back));
    CHECK(ints[0] == 3 && ints[1] == 2 && ints[2] == 5 && back == MPI_DOUBLE);
    MPI_OK(MPI_Type_get_envelope(MPI_INT, &ni, &na, &nd, &comb));
    CHECK(comb == MPI_COMBINER_NAMED);
    MPI_OK(MPI_Type_free(&vec));

    /* ---- status setters ---- */
    MPI_Status st;
    int count;
    MPI_OK(MPI_Status_set_elements(&st, MPI_INT, 7));
    MPI_OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(count == 7);
    MPI_OK(MPI_Status_set_cancelled(&st, 1));
    MPI_OK(MPI_Test_cancelled(&st, &flag));
    CHECK(flag);

    return finish("info_misc");
}
