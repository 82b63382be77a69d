/*
 * kawarimi's PMIx glue: a flat C surface over the PMIx client API so the Rust side needs no
 * bindings to PMIx's structures (pmix_value_t, pmix_info_t are unions/macros-heavy).
 *
 * A rank uses it to wire up through the launcher's PMIx server (Open MPI's mpirun/orted,
 * Slurm's srun --mpi=pmix) WITHOUT initialising the MPI library. Every function returns a
 * pmix_status_t (PMIX_SUCCESS == 0); kw_pmix_error_string() names it.
 */
#include <pmix.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static pmix_proc_t kw_me;
static int kw_initialized = 0;

const char *kw_pmix_error_string(int status) { return PMIx_Error_string((pmix_status_t)status); }

int kw_pmix_init(char *nspace_out, size_t nspace_cap, uint32_t *rank, uint32_t *size,
                 uint32_t *local_rank, uint32_t *local_size) {
    pmix_status_t rc = PMIx_Init(&kw_me, NULL, 0);
    if (rc != PMIX_SUCCESS) return rc;
    kw_initialized = 1;
    if (nspace_out && nspace_cap > 0) {
        strncpy(nspace_out, kw_me.nspace, nspace_cap - 1);
        nspace_out[nspace_cap - 1] = '\0';
    }
    *rank = (uint32_t)kw_me.rank;

    pmix_proc_t wild;
    PMIX_PROC_CONSTRUCT(&wild);
    PMIX_LOAD_PROCID(&wild, kw_me.nspace, PMIX_RANK_WILDCARD);
    pmix_value_t *val = NULL;
    rc = PMIx_Get(&wild, PMIX_JOB_SIZE, NULL, 0, &val);
    if (rc != PMIX_SUCCESS) return rc;
    if (val->type == PMIX_UINT32) *size = val->data.uint32;
    else { PMIX_VALUE_RELEASE(val); return PMIX_ERR_TYPE_MISMATCH; }
    PMIX_VALUE_RELEASE(val);

    /* Local rank and local size are optional: UINT32_MAX when the server does not say. */
    *local_rank = UINT32_MAX;
    *local_size = UINT32_MAX;
    val = NULL;
    if (PMIx_Get(&kw_me, PMIX_LOCAL_RANK, NULL, 0, &val) == PMIX_SUCCESS && val) {
        if (val->type == PMIX_UINT16) *local_rank = val->data.uint16;
        PMIX_VALUE_RELEASE(val);
    }
    val = NULL;
    if (PMIx_Get(&wild, PMIX_LOCAL_SIZE, NULL, 0, &val) == PMIX_SUCCESS && val) {
        if (val->type == PMIX_UINT32) *local_size = val->data.uint32;
        PMIX_VALUE_RELEASE(val);
    }
    return PMIX_SUCCESS;
}

int kw_pmix_put(const char *key, const uint8_t *bytes, size_t len) {
    pmix_value_t v;
    PMIX_VALUE_CONSTRUCT(&v);
    v.type = PMIX_BYTE_OBJECT;
    v.data.bo.bytes = (char *)bytes; /* PMIx_Put copies the value */
    v.data.bo.size = len;
    return PMIx_Put(PMIX_GLOBAL, key, &v);
}

int kw_pmix_commit(void) { return PMIx_Commit(); }

int kw_pmix_fence(int timeout_s) {
    pmix_info_t info[2];
    bool collect = true;
    PMIX_INFO_CONSTRUCT(&info[0]);
    PMIX_INFO_CONSTRUCT(&info[1]);
    PMIX_INFO_LOAD(&info[0], PMIX_COLLECT_DATA, &collect, PMIX_BOOL);
    size_t ninfo = 1;
    if (timeout_s > 0) {
        PMIX_INFO_LOAD(&info[1], PMIX_TIMEOUT, &timeout_s, PMIX_INT);
        ninfo = 2;
    }
    /* NULL procs == every process of our namespace */
    pmix_status_t rc = PMIx_Fence(NULL, 0, info, ninfo);
    PMIX_INFO_DESTRUCT(&info[0]);
    PMIX_INFO_DESTRUCT(&info[1]);
    return rc;
}

/* On success *out is a malloc'd copy of the value (free with kw_pmix_free), *len its size. */
int kw_pmix_get(uint32_t rank, const char *key, int timeout_s, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    pmix_proc_t p;
    PMIX_PROC_CONSTRUCT(&p);
    PMIX_LOAD_PROCID(&p, kw_me.nspace, (pmix_rank_t)rank);
    pmix_info_t info;
    PMIX_INFO_CONSTRUCT(&info);
    size_t ninfo = 0;
    if (timeout_s > 0) {
        PMIX_INFO_LOAD(&info, PMIX_TIMEOUT, &timeout_s, PMIX_INT);
        ninfo = 1;
    }
    pmix_value_t *val = NULL;
    pmix_status_t rc = PMIx_Get(&p, key, ninfo ? &info : NULL, ninfo, &val);
    PMIX_INFO_DESTRUCT(&info);
    if (rc != PMIX_SUCCESS) return rc;
    if (val == NULL) return PMIX_ERR_NOT_FOUND;
    if (val->type != PMIX_BYTE_OBJECT) { PMIX_VALUE_RELEASE(val); return PMIX_ERR_TYPE_MISMATCH; }
    size_t n = val->data.bo.size;
    uint8_t *copy = malloc(n > 0 ? n : 1);
    if (copy == NULL) { PMIX_VALUE_RELEASE(val); return PMIX_ERR_NOMEM; }
    if (n > 0) memcpy(copy, val->data.bo.bytes, n);
    PMIX_VALUE_RELEASE(val);
    *out = copy;
    *len = n;
    return PMIX_SUCCESS;
}

void kw_pmix_free(void *p) { free(p); }

int kw_pmix_finalize(void) {
    if (!kw_initialized) return PMIX_SUCCESS;
    kw_initialized = 0;
    return PMIx_Finalize(NULL, 0);
}

/* PMIx_Abort: asks the launcher to end the whole job with `status`, which mpirun then exits
 * with (as Open MPI's MPI_Abort does). Refused when PMIx is not initialised. */
int kw_pmix_abort(int status, const char *msg) {
    if (!kw_initialized) return PMIX_ERR_INIT;
    return PMIx_Abort(status, msg, NULL, 0);
}
