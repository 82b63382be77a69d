/*
 * kawarimi-shim: C glue for the Open MPI 4.1 ABI.
 *
 * Compiled against the installed mpi.h by shim/build.rs (cc crate). It holds:
 *   - kw_abi_consts.h (generated): _Static_asserts re-checking, in the compiler that builds
 *     the shim, every integer constant and layout value the Rust side uses, and the table
 *     kw_abi_const_values[] that a unit test compares with the Rust consts;
 *   - kw_predef.h (generated): kw_predef_<kind>[] tables of the ADDRESSES of Open MPI's
 *     predefined handle objects (MPI_COMM_WORLD is &ompi_mpi_comm_world, ...). They are
 *     initialised data, so the dynamic linker fills them with the same address the program
 *     itself uses, including when an mpicc-built executable holds a copy relocation of the
 *     object: ld.so binds every reference, ours included, to the executable's copy;
 *   - a few accessors for values that only exist at run time (MPI_F_STATUS_IGNORE).
 *
 * Nothing here calls into libmpi: the library is loaded (it defines the objects) but
 * never initialised.
 */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <mpi.h>

/* Open MPI 4.1 handles are pointers to (incomplete) structs. */
_Static_assert(sizeof(MPI_Comm) == sizeof(void *), "MPI_Comm is a pointer");
_Static_assert(sizeof(MPI_Datatype) == sizeof(void *), "MPI_Datatype is a pointer");
_Static_assert(sizeof(MPI_Op) == sizeof(void *), "MPI_Op is a pointer");
_Static_assert(sizeof(MPI_Group) == sizeof(void *), "MPI_Group is a pointer");
_Static_assert(sizeof(MPI_Request) == sizeof(void *), "MPI_Request is a pointer");
_Static_assert(sizeof(MPI_Errhandler) == sizeof(void *), "MPI_Errhandler is a pointer");
_Static_assert(sizeof(MPI_Info) == sizeof(void *), "MPI_Info is a pointer");
_Static_assert(sizeof(MPI_Win) == sizeof(void *), "MPI_Win is a pointer");
_Static_assert(sizeof(MPI_File) == sizeof(void *), "MPI_File is a pointer");
_Static_assert(sizeof(MPI_Message) == sizeof(void *), "MPI_Message is a pointer");

/* MPI_Status as src/abi.rs declares it: five fields, in this order, these types. */
_Static_assert(offsetof(MPI_Status, MPI_SOURCE) == 0, "MPI_Status.MPI_SOURCE");
_Static_assert(offsetof(MPI_Status, MPI_TAG) == sizeof(int), "MPI_Status.MPI_TAG");
_Static_assert(offsetof(MPI_Status, MPI_ERROR) == 2 * sizeof(int), "MPI_Status.MPI_ERROR");
_Static_assert(offsetof(MPI_Status, _cancelled) == 3 * sizeof(int), "MPI_Status._cancelled");
_Static_assert(sizeof(((MPI_Status *)0)->_ucount) == sizeof(size_t), "MPI_Status._ucount is size_t");
_Static_assert(sizeof(MPI_Status) == 4 * sizeof(int) + sizeof(size_t), "MPI_Status size");

#include "kw_abi_consts.h"
/* MPI_DUP_FN, MPI_NULL_COPY_FN and MPI_NULL_DELETE_FN are declared deprecated; taking
 * their addresses is what recognising them requires. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include "kw_predef.h"
#pragma GCC diagnostic pop

/* MPI_F_STATUS_IGNORE / MPI_F_STATUSES_IGNORE: pointer variables of libmpi (they point
 * at the Fortran sentinel common blocks), so read at run time, not at build time. */
const void *kw_f_status_ignore(void) { return (const void *)MPI_F_STATUS_IGNORE; }
const void *kw_f_statuses_ignore(void) { return (const void *)MPI_F_STATUSES_IGNORE; }
