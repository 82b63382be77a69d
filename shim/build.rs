//! Build script of kawarimi-shim: the Open MPI 4.1 ABI layer.
//!
//! Everything ABI-specific is derived from the installed Open MPI headers, never typed in:
//!
//! 1. **Constants.** `CONSTS` below lists the names (and C expressions) of the integer
//!    constants and sentinel pointers the shim needs; the `MPI_ERR_*` / `MPI_T_ERR_*` names
//!    are additionally read from `mpi.h`. A probe program including `mpi.h` is compiled with
//!    the C compiler the `cc` crate picks and run; it prints every value. From its output
//!    this script writes `$OUT_DIR/abi_consts.rs` (Rust `pub const`s) and
//!    `$OUT_DIR/kw_abi_consts.h` (C `_Static_assert`s on every integer constant plus a table
//!    of all values, compiled into the glue so a unit test can compare it with the Rust
//!    consts). Sizes and field offsets of `MPI_Status` and the handle/integer types come
//!    out of the same probe and are checked by `const` assertions in `src/abi.rs`.
//! 2. **Predefined handles.** `PREDEF` lists every predefined handle object libmpi exports
//!    (symbol, kind, Rust variant, MPI names). It is validated against `mpi.h` (every
//!    `#define MPI_X OMPI_PREDEFINED_GLOBAL(type, sym)` must appear, with the same object)
//!    and against `mpif-handles.h` (every Fortran handle name must appear); the Fortran
//!    integer values are taken from `mpif-handles.h`. The script writes
//!    `$OUT_DIR/kw_predef.h` (address tables, initialised data the dynamic linker relocates
//!    to the very address the program uses, copy relocations included) and
//!    `$OUT_DIR/predef.rs` (the `Predef*` enums).
//! 3. **Stubs.** `$OUT_DIR/unimplemented.rs`: for every name in `ompi-4.1-exports.txt` not
//!    implemented under `src/api/*.rs` (lines `fn Name(` / `fn Name<`), exported `MPI_Name`
//!    and `PMPI_Name` functions that call `crate::unimplemented_abort`.
//! 4. Compiles `csrc/ompi_abi.c` and links `libmpi` (search path from `mpicc --showme`, or
//!    pkg-config `ompi-c`).
//!
//! Overrides: `KAWARIMI_MPI_INCDIRS` / `KAWARIMI_MPI_LIBDIRS` (colon-separated).

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How a constant is typed on the Rust side.
#[derive(Clone, Copy, PartialEq)]
enum Ty {
    /// `c_int`; also checked by a C `_Static_assert`.
    Int,
    /// `MPI_Offset` (`i64`); also checked by a C `_Static_assert`.
    Offset,
    /// A sentinel pointer, as `usize` (`(uintptr_t)` of the macro).
    Ptr,
    /// A size or offset (`usize`) from `sizeof`/`offsetof`.
    Size,
}

/// (Rust name, C expression, type). The C expression is usually the name itself.
const CONSTS: &[(&str, &str, Ty)] = &[
    ("MPI_VERSION", "MPI_VERSION", Ty::Int),
    ("MPI_SUBVERSION", "MPI_SUBVERSION", Ty::Int),
    ("MPI_ANY_SOURCE", "MPI_ANY_SOURCE", Ty::Int),
    ("MPI_ANY_TAG", "MPI_ANY_TAG", Ty::Int),
    ("MPI_PROC_NULL", "MPI_PROC_NULL", Ty::Int),
    ("MPI_ROOT", "MPI_ROOT", Ty::Int),
    ("MPI_UNDEFINED", "MPI_UNDEFINED", Ty::Int),
    ("MPI_KEYVAL_INVALID", "MPI_KEYVAL_INVALID", Ty::Int),
    ("MPI_BSEND_OVERHEAD", "MPI_BSEND_OVERHEAD", Ty::Int),
    ("MPI_MAX_PROCESSOR_NAME", "MPI_MAX_PROCESSOR_NAME", Ty::Int),
    ("MPI_MAX_ERROR_STRING", "MPI_MAX_ERROR_STRING", Ty::Int),
    ("MPI_MAX_OBJECT_NAME", "MPI_MAX_OBJECT_NAME", Ty::Int),
    ("MPI_MAX_LIBRARY_VERSION_STRING", "MPI_MAX_LIBRARY_VERSION_STRING", Ty::Int),
    ("MPI_MAX_INFO_KEY", "MPI_MAX_INFO_KEY", Ty::Int),
    ("MPI_MAX_INFO_VAL", "MPI_MAX_INFO_VAL", Ty::Int),
    ("MPI_MAX_PORT_NAME", "MPI_MAX_PORT_NAME", Ty::Int),
    ("MPI_MAX_DATAREP_STRING", "MPI_MAX_DATAREP_STRING", Ty::Int),
    // Comparison results.
    ("MPI_IDENT", "MPI_IDENT", Ty::Int),
    ("MPI_CONGRUENT", "MPI_CONGRUENT", Ty::Int),
    ("MPI_SIMILAR", "MPI_SIMILAR", Ty::Int),
    ("MPI_UNEQUAL", "MPI_UNEQUAL", Ty::Int),
    // Topologies.
    ("MPI_CART", "MPI_CART", Ty::Int),
    ("MPI_GRAPH", "MPI_GRAPH", Ty::Int),
    ("MPI_DIST_GRAPH", "MPI_DIST_GRAPH", Ty::Int),
    // Predefined attribute keyvals.
    ("MPI_TAG_UB", "MPI_TAG_UB", Ty::Int),
    ("MPI_HOST", "MPI_HOST", Ty::Int),
    ("MPI_IO", "MPI_IO", Ty::Int),
    ("MPI_WTIME_IS_GLOBAL", "MPI_WTIME_IS_GLOBAL", Ty::Int),
    ("MPI_APPNUM", "MPI_APPNUM", Ty::Int),
    ("MPI_LASTUSEDCODE", "MPI_LASTUSEDCODE", Ty::Int),
    ("MPI_UNIVERSE_SIZE", "MPI_UNIVERSE_SIZE", Ty::Int),
    ("MPI_WIN_BASE", "MPI_WIN_BASE", Ty::Int),
    ("MPI_WIN_SIZE", "MPI_WIN_SIZE", Ty::Int),
    ("MPI_WIN_DISP_UNIT", "MPI_WIN_DISP_UNIT", Ty::Int),
    ("MPI_WIN_CREATE_FLAVOR", "MPI_WIN_CREATE_FLAVOR", Ty::Int),
    ("MPI_WIN_MODEL", "MPI_WIN_MODEL", Ty::Int),
    // Thread levels.
    ("MPI_THREAD_SINGLE", "MPI_THREAD_SINGLE", Ty::Int),
    ("MPI_THREAD_FUNNELED", "MPI_THREAD_FUNNELED", Ty::Int),
    ("MPI_THREAD_SERIALIZED", "MPI_THREAD_SERIALIZED", Ty::Int),
    ("MPI_THREAD_MULTIPLE", "MPI_THREAD_MULTIPLE", Ty::Int),
    // Communicator split types.
    ("MPI_COMM_TYPE_SHARED", "MPI_COMM_TYPE_SHARED", Ty::Int),
    ("OMPI_COMM_TYPE_HWTHREAD", "OMPI_COMM_TYPE_HWTHREAD", Ty::Int),
    ("OMPI_COMM_TYPE_CORE", "OMPI_COMM_TYPE_CORE", Ty::Int),
    ("OMPI_COMM_TYPE_L1CACHE", "OMPI_COMM_TYPE_L1CACHE", Ty::Int),
    ("OMPI_COMM_TYPE_L2CACHE", "OMPI_COMM_TYPE_L2CACHE", Ty::Int),
    ("OMPI_COMM_TYPE_L3CACHE", "OMPI_COMM_TYPE_L3CACHE", Ty::Int),
    ("OMPI_COMM_TYPE_SOCKET", "OMPI_COMM_TYPE_SOCKET", Ty::Int),
    ("OMPI_COMM_TYPE_NUMA", "OMPI_COMM_TYPE_NUMA", Ty::Int),
    ("OMPI_COMM_TYPE_BOARD", "OMPI_COMM_TYPE_BOARD", Ty::Int),
    ("OMPI_COMM_TYPE_HOST", "OMPI_COMM_TYPE_HOST", Ty::Int),
    ("OMPI_COMM_TYPE_CU", "OMPI_COMM_TYPE_CU", Ty::Int),
    ("OMPI_COMM_TYPE_CLUSTER", "OMPI_COMM_TYPE_CLUSTER", Ty::Int),
    // Array orders and distributions.
    ("MPI_ORDER_C", "MPI_ORDER_C", Ty::Int),
    ("MPI_ORDER_FORTRAN", "MPI_ORDER_FORTRAN", Ty::Int),
    ("MPI_DISTRIBUTE_BLOCK", "MPI_DISTRIBUTE_BLOCK", Ty::Int),
    ("MPI_DISTRIBUTE_CYCLIC", "MPI_DISTRIBUTE_CYCLIC", Ty::Int),
    ("MPI_DISTRIBUTE_NONE", "MPI_DISTRIBUTE_NONE", Ty::Int),
    ("MPI_DISTRIBUTE_DFLT_DARG", "MPI_DISTRIBUTE_DFLT_DARG", Ty::Int),
    // Datatype combiners. The three *_INTEGER ones are hidden by mpi.h (MPI-1 compat off)
    // but keep their slot under OMPI_WAS_* names; Fortran still uses them.
    ("MPI_COMBINER_NAMED", "MPI_COMBINER_NAMED", Ty::Int),
    ("MPI_COMBINER_DUP", "MPI_COMBINER_DUP", Ty::Int),
    ("MPI_COMBINER_CONTIGUOUS", "MPI_COMBINER_CONTIGUOUS", Ty::Int),
    ("MPI_COMBINER_VECTOR", "MPI_COMBINER_VECTOR", Ty::Int),
    ("MPI_COMBINER_HVECTOR_INTEGER", "OMPI_WAS_MPI_COMBINER_HVECTOR_INTEGER", Ty::Int),
    ("MPI_COMBINER_HVECTOR", "MPI_COMBINER_HVECTOR", Ty::Int),
    ("MPI_COMBINER_INDEXED", "MPI_COMBINER_INDEXED", Ty::Int),
    ("MPI_COMBINER_HINDEXED_INTEGER", "OMPI_WAS_MPI_COMBINER_HINDEXED_INTEGER", Ty::Int),
    ("MPI_COMBINER_HINDEXED", "MPI_COMBINER_HINDEXED", Ty::Int),
    ("MPI_COMBINER_INDEXED_BLOCK", "MPI_COMBINER_INDEXED_BLOCK", Ty::Int),
    ("MPI_COMBINER_STRUCT_INTEGER", "OMPI_WAS_MPI_COMBINER_STRUCT_INTEGER", Ty::Int),
    ("MPI_COMBINER_STRUCT", "MPI_COMBINER_STRUCT", Ty::Int),
    ("MPI_COMBINER_SUBARRAY", "MPI_COMBINER_SUBARRAY", Ty::Int),
    ("MPI_COMBINER_DARRAY", "MPI_COMBINER_DARRAY", Ty::Int),
    ("MPI_COMBINER_F90_REAL", "MPI_COMBINER_F90_REAL", Ty::Int),
    ("MPI_COMBINER_F90_COMPLEX", "MPI_COMBINER_F90_COMPLEX", Ty::Int),
    ("MPI_COMBINER_F90_INTEGER", "MPI_COMBINER_F90_INTEGER", Ty::Int),
    ("MPI_COMBINER_RESIZED", "MPI_COMBINER_RESIZED", Ty::Int),
    ("MPI_COMBINER_HINDEXED_BLOCK", "MPI_COMBINER_HINDEXED_BLOCK", Ty::Int),
    // MPI_Type_match_size classes.
    ("MPI_TYPECLASS_INTEGER", "MPI_TYPECLASS_INTEGER", Ty::Int),
    ("MPI_TYPECLASS_REAL", "MPI_TYPECLASS_REAL", Ty::Int),
    ("MPI_TYPECLASS_COMPLEX", "MPI_TYPECLASS_COMPLEX", Ty::Int),
    // File modes, seek, displacement.
    ("MPI_MODE_CREATE", "MPI_MODE_CREATE", Ty::Int),
    ("MPI_MODE_RDONLY", "MPI_MODE_RDONLY", Ty::Int),
    ("MPI_MODE_WRONLY", "MPI_MODE_WRONLY", Ty::Int),
    ("MPI_MODE_RDWR", "MPI_MODE_RDWR", Ty::Int),
    ("MPI_MODE_DELETE_ON_CLOSE", "MPI_MODE_DELETE_ON_CLOSE", Ty::Int),
    ("MPI_MODE_UNIQUE_OPEN", "MPI_MODE_UNIQUE_OPEN", Ty::Int),
    ("MPI_MODE_EXCL", "MPI_MODE_EXCL", Ty::Int),
    ("MPI_MODE_APPEND", "MPI_MODE_APPEND", Ty::Int),
    ("MPI_MODE_SEQUENTIAL", "MPI_MODE_SEQUENTIAL", Ty::Int),
    ("MPI_SEEK_SET", "MPI_SEEK_SET", Ty::Int),
    ("MPI_SEEK_CUR", "MPI_SEEK_CUR", Ty::Int),
    ("MPI_SEEK_END", "MPI_SEEK_END", Ty::Int),
    ("MPI_DISPLACEMENT_CURRENT", "MPI_DISPLACEMENT_CURRENT", Ty::Offset),
    // One-sided: assertion modes, locks, flavors, memory models.
    ("MPI_MODE_NOCHECK", "MPI_MODE_NOCHECK", Ty::Int),
    ("MPI_MODE_NOPRECEDE", "MPI_MODE_NOPRECEDE", Ty::Int),
    ("MPI_MODE_NOPUT", "MPI_MODE_NOPUT", Ty::Int),
    ("MPI_MODE_NOSTORE", "MPI_MODE_NOSTORE", Ty::Int),
    ("MPI_MODE_NOSUCCEED", "MPI_MODE_NOSUCCEED", Ty::Int),
    ("MPI_LOCK_EXCLUSIVE", "MPI_LOCK_EXCLUSIVE", Ty::Int),
    ("MPI_LOCK_SHARED", "MPI_LOCK_SHARED", Ty::Int),
    ("MPI_WIN_FLAVOR_CREATE", "MPI_WIN_FLAVOR_CREATE", Ty::Int),
    ("MPI_WIN_FLAVOR_ALLOCATE", "MPI_WIN_FLAVOR_ALLOCATE", Ty::Int),
    ("MPI_WIN_FLAVOR_DYNAMIC", "MPI_WIN_FLAVOR_DYNAMIC", Ty::Int),
    ("MPI_WIN_FLAVOR_SHARED", "MPI_WIN_FLAVOR_SHARED", Ty::Int),
    ("MPI_WIN_UNIFIED", "MPI_WIN_UNIFIED", Ty::Int),
    ("MPI_WIN_SEPARATE", "MPI_WIN_SEPARATE", Ty::Int),
    // Sentinel pointers.
    ("MPI_BOTTOM", "MPI_BOTTOM", Ty::Ptr),
    ("MPI_IN_PLACE", "MPI_IN_PLACE", Ty::Ptr),
    ("MPI_STATUS_IGNORE", "MPI_STATUS_IGNORE", Ty::Ptr),
    ("MPI_STATUSES_IGNORE", "MPI_STATUSES_IGNORE", Ty::Ptr),
    ("MPI_ERRCODES_IGNORE", "MPI_ERRCODES_IGNORE", Ty::Ptr),
    ("MPI_ARGV_NULL", "MPI_ARGV_NULL", Ty::Ptr),
    ("MPI_ARGVS_NULL", "MPI_ARGVS_NULL", Ty::Ptr),
    ("MPI_UNWEIGHTED", "MPI_UNWEIGHTED", Ty::Ptr),
    ("MPI_WEIGHTS_EMPTY", "MPI_WEIGHTS_EMPTY", Ty::Ptr),
    // Layout of the ABI types (checked by const assertions in src/abi.rs).
    ("OMPI_SIZEOF_STATUS", "sizeof(MPI_Status)", Ty::Size),
    ("OMPI_OFFSETOF_STATUS_SOURCE", "offsetof(MPI_Status, MPI_SOURCE)", Ty::Size),
    ("OMPI_OFFSETOF_STATUS_TAG", "offsetof(MPI_Status, MPI_TAG)", Ty::Size),
    ("OMPI_OFFSETOF_STATUS_ERROR", "offsetof(MPI_Status, MPI_ERROR)", Ty::Size),
    ("OMPI_OFFSETOF_STATUS_CANCELLED", "offsetof(MPI_Status, _cancelled)", Ty::Size),
    ("OMPI_OFFSETOF_STATUS_UCOUNT", "offsetof(MPI_Status, _ucount)", Ty::Size),
    ("OMPI_SIZEOF_STATUS_UCOUNT", "sizeof(((MPI_Status *)0)->_ucount)", Ty::Size),
    ("OMPI_ALIGNOF_STATUS", "_Alignof(MPI_Status)", Ty::Size),
    ("OMPI_SIZEOF_AINT", "sizeof(MPI_Aint)", Ty::Size),
    ("OMPI_SIZEOF_OFFSET", "sizeof(MPI_Offset)", Ty::Size),
    ("OMPI_SIZEOF_COUNT", "sizeof(MPI_Count)", Ty::Size),
    ("OMPI_SIZEOF_FINT", "sizeof(MPI_Fint)", Ty::Size),
    ("OMPI_SIZEOF_HANDLE", "sizeof(MPI_Comm)", Ty::Size),
    ("OMPI_AINT_IS_SIGNED", "(size_t)((MPI_Aint)-1 < 0)", Ty::Size),
    ("OMPI_OFFSET_IS_SIGNED", "(size_t)((MPI_Offset)-1 < 0)", Ty::Size),
    ("OMPI_COUNT_IS_SIGNED", "(size_t)((MPI_Count)-1 < 0)", Ty::Size),
    ("OMPI_FINT_IS_SIGNED", "(size_t)((MPI_Fint)-1 < 0)", Ty::Size),
];

/// Handle kinds: (kind, Rust enum, C struct type of the predefined objects).
const KINDS: &[(&str, &str, &str)] = &[
    ("datatype", "PredefDatatype", "ompi_predefined_datatype_t"),
    ("op", "PredefOp", "ompi_predefined_op_t"),
    ("comm", "PredefComm", "ompi_predefined_communicator_t"),
    ("group", "PredefGroup", "ompi_predefined_group_t"),
    ("request", "PredefRequest", "ompi_predefined_request_t"),
    ("errhandler", "PredefErrhandler", "ompi_predefined_errhandler_t"),
    ("info", "PredefInfo", "ompi_predefined_info_t"),
    ("win", "PredefWin", "ompi_predefined_win_t"),
    ("file", "PredefFile", "ompi_predefined_file_t"),
    ("message", "PredefMessage", "ompi_predefined_message_t"),
    // Predefined attribute callback functions (MPI_COMM_DUP_FN, ...): functions, not objects.
    ("callback", "PredefCallback", ""),
];

/// Every predefined handle object libmpi exports: (kind, Rust variant, symbol, MPI names).
/// MPI names are the C macro names in mpi.h that expand to this object and/or the Fortran
/// handle names in mpif-handles.h (both validated below). An object with no MPI name (a
/// legacy Open MPI object no header names) gets an empty list; `mpi_name()` then returns
/// the symbol.
#[rustfmt::skip]
const PREDEF: &[(&str, &str, &str, &[&str])] = &[
    // ---- datatypes: C
    ("datatype", "DatatypeNull", "ompi_mpi_datatype_null", &["MPI_DATATYPE_NULL"]),
    ("datatype", "Byte", "ompi_mpi_byte", &["MPI_BYTE"]),
    ("datatype", "Packed", "ompi_mpi_packed", &["MPI_PACKED"]),
    ("datatype", "Char", "ompi_mpi_char", &["MPI_CHAR"]),
    ("datatype", "SignedChar", "ompi_mpi_signed_char", &["MPI_SIGNED_CHAR"]),
    ("datatype", "UnsignedChar", "ompi_mpi_unsigned_char", &["MPI_UNSIGNED_CHAR"]),
    ("datatype", "Short", "ompi_mpi_short", &["MPI_SHORT"]),
    ("datatype", "UnsignedShort", "ompi_mpi_unsigned_short", &["MPI_UNSIGNED_SHORT"]),
    ("datatype", "Int", "ompi_mpi_int", &["MPI_INT"]),
    ("datatype", "Unsigned", "ompi_mpi_unsigned", &["MPI_UNSIGNED"]),
    ("datatype", "Long", "ompi_mpi_long", &["MPI_LONG"]),
    ("datatype", "UnsignedLong", "ompi_mpi_unsigned_long", &["MPI_UNSIGNED_LONG"]),
    ("datatype", "LongLongInt", "ompi_mpi_long_long_int", &["MPI_LONG_LONG_INT", "MPI_LONG_LONG"]),
    ("datatype", "UnsignedLongLong", "ompi_mpi_unsigned_long_long", &["MPI_UNSIGNED_LONG_LONG"]),
    ("datatype", "Float", "ompi_mpi_float", &["MPI_FLOAT"]),
    ("datatype", "Double", "ompi_mpi_double", &["MPI_DOUBLE"]),
    ("datatype", "LongDouble", "ompi_mpi_long_double", &["MPI_LONG_DOUBLE"]),
    ("datatype", "Wchar", "ompi_mpi_wchar", &["MPI_WCHAR"]),
    ("datatype", "CBool", "ompi_mpi_c_bool", &["MPI_C_BOOL"]),
    ("datatype", "Int8", "ompi_mpi_int8_t", &["MPI_INT8_T"]),
    ("datatype", "Uint8", "ompi_mpi_uint8_t", &["MPI_UINT8_T"]),
    ("datatype", "Int16", "ompi_mpi_int16_t", &["MPI_INT16_T"]),
    ("datatype", "Uint16", "ompi_mpi_uint16_t", &["MPI_UINT16_T"]),
    ("datatype", "Int32", "ompi_mpi_int32_t", &["MPI_INT32_T"]),
    ("datatype", "Uint32", "ompi_mpi_uint32_t", &["MPI_UINT32_T"]),
    ("datatype", "Int64", "ompi_mpi_int64_t", &["MPI_INT64_T"]),
    ("datatype", "Uint64", "ompi_mpi_uint64_t", &["MPI_UINT64_T"]),
    ("datatype", "Aint", "ompi_mpi_aint", &["MPI_AINT"]),
    ("datatype", "Offset", "ompi_mpi_offset", &["MPI_OFFSET"]),
    ("datatype", "Count", "ompi_mpi_count", &["MPI_COUNT"]),
    ("datatype", "CFloatComplex", "ompi_mpi_c_float_complex", &["MPI_C_FLOAT_COMPLEX", "MPI_C_COMPLEX"]),
    ("datatype", "CDoubleComplex", "ompi_mpi_c_double_complex", &["MPI_C_DOUBLE_COMPLEX"]),
    ("datatype", "CLongDoubleComplex", "ompi_mpi_c_long_double_complex", &["MPI_C_LONG_DOUBLE_COMPLEX"]),
    // Legacy object: named "MPI_C_COMPLEX" by MPI_Type_get_name, but mpi.h's MPI_C_COMPLEX
    // is ompi_mpi_c_float_complex. No header names it.
    ("datatype", "CComplexLegacy", "ompi_mpi_c_complex", &[]),
    ("datatype", "FloatInt", "ompi_mpi_float_int", &["MPI_FLOAT_INT"]),
    ("datatype", "DoubleInt", "ompi_mpi_double_int", &["MPI_DOUBLE_INT"]),
    ("datatype", "LongDoubleInt", "ompi_mpi_longdbl_int", &["MPI_LONG_DOUBLE_INT"]),
    ("datatype", "LongInt", "ompi_mpi_long_int", &["MPI_LONG_INT"]),
    ("datatype", "ShortInt", "ompi_mpi_short_int", &["MPI_SHORT_INT"]),
    ("datatype", "TwoInt", "ompi_mpi_2int", &["MPI_2INT"]),
    // MPI-1 bound markers: removed from mpi.h (MPI-1 compat off), still in Fortran.
    ("datatype", "Lb", "ompi_mpi_lb", &["MPI_LB"]),
    ("datatype", "Ub", "ompi_mpi_ub", &["MPI_UB"]),
    // ---- datatypes: C++
    ("datatype", "CxxBool", "ompi_mpi_cxx_bool", &["MPI_CXX_BOOL"]),
    ("datatype", "CxxFloatComplex", "ompi_mpi_cxx_cplex", &["MPI_CXX_FLOAT_COMPLEX", "MPI_CXX_COMPLEX"]),
    ("datatype", "CxxDoubleComplex", "ompi_mpi_cxx_dblcplex", &["MPI_CXX_DOUBLE_COMPLEX"]),
    ("datatype", "CxxLongDoubleComplex", "ompi_mpi_cxx_ldblcplex", &["MPI_CXX_LONG_DOUBLE_COMPLEX"]),
    // ---- datatypes: Fortran
    ("datatype", "Character", "ompi_mpi_character", &["MPI_CHARACTER"]),
    ("datatype", "Logical", "ompi_mpi_logical", &["MPI_LOGICAL"]),
    ("datatype", "Logical1", "ompi_mpi_logical1", &["MPI_LOGICAL1"]),
    ("datatype", "Logical2", "ompi_mpi_logical2", &["MPI_LOGICAL2"]),
    ("datatype", "Logical4", "ompi_mpi_logical4", &["MPI_LOGICAL4"]),
    ("datatype", "Logical8", "ompi_mpi_logical8", &["MPI_LOGICAL8"]),
    ("datatype", "Integer", "ompi_mpi_integer", &["MPI_INTEGER"]),
    ("datatype", "Integer1", "ompi_mpi_integer1", &["MPI_INTEGER1"]),
    ("datatype", "Integer2", "ompi_mpi_integer2", &["MPI_INTEGER2"]),
    ("datatype", "Integer4", "ompi_mpi_integer4", &["MPI_INTEGER4"]),
    ("datatype", "Integer8", "ompi_mpi_integer8", &["MPI_INTEGER8"]),
    ("datatype", "Integer16", "ompi_mpi_integer16", &["MPI_INTEGER16"]),
    ("datatype", "Real", "ompi_mpi_real", &["MPI_REAL"]),
    ("datatype", "Real2", "ompi_mpi_real2", &["MPI_REAL2"]),
    ("datatype", "Real4", "ompi_mpi_real4", &["MPI_REAL4"]),
    ("datatype", "Real8", "ompi_mpi_real8", &["MPI_REAL8"]),
    ("datatype", "Real16", "ompi_mpi_real16", &["MPI_REAL16"]),
    ("datatype", "DoublePrecision", "ompi_mpi_dblprec", &["MPI_DOUBLE_PRECISION"]),
    ("datatype", "Complex", "ompi_mpi_cplex", &["MPI_COMPLEX"]),
    ("datatype", "Complex8", "ompi_mpi_complex8", &["MPI_COMPLEX8"]),
    ("datatype", "Complex16", "ompi_mpi_complex16", &["MPI_COMPLEX16"]),
    ("datatype", "Complex32", "ompi_mpi_complex32", &["MPI_COMPLEX32"]),
    ("datatype", "DoubleComplex", "ompi_mpi_dblcplex", &["MPI_DOUBLE_COMPLEX"]),
    // Legacy object: named "MPI_LONG_DOUBLE_COMPLEX" by MPI_Type_get_name; no header names it.
    ("datatype", "LongDoubleComplexLegacy", "ompi_mpi_ldblcplex", &[]),
    ("datatype", "TwoReal", "ompi_mpi_2real", &["MPI_2REAL"]),
    ("datatype", "TwoDoublePrecision", "ompi_mpi_2dblprec", &["MPI_2DOUBLE_PRECISION"]),
    ("datatype", "TwoInteger", "ompi_mpi_2integer", &["MPI_2INTEGER"]),
    ("datatype", "TwoComplex", "ompi_mpi_2cplex", &["MPI_2COMPLEX"]),
    ("datatype", "TwoDoubleComplex", "ompi_mpi_2dblcplex", &["MPI_2DOUBLE_COMPLEX"]),
    // The object Open MPI uses for Fortran types this build does not support.
    ("datatype", "Unavailable", "ompi_mpi_unavailable", &[]),
    // ---- reduction operations
    ("op", "OpNull", "ompi_mpi_op_null", &["MPI_OP_NULL"]),
    ("op", "Max", "ompi_mpi_op_max", &["MPI_MAX"]),
    ("op", "Min", "ompi_mpi_op_min", &["MPI_MIN"]),
    ("op", "Sum", "ompi_mpi_op_sum", &["MPI_SUM"]),
    ("op", "Prod", "ompi_mpi_op_prod", &["MPI_PROD"]),
    ("op", "Land", "ompi_mpi_op_land", &["MPI_LAND"]),
    ("op", "Band", "ompi_mpi_op_band", &["MPI_BAND"]),
    ("op", "Lor", "ompi_mpi_op_lor", &["MPI_LOR"]),
    ("op", "Bor", "ompi_mpi_op_bor", &["MPI_BOR"]),
    ("op", "Lxor", "ompi_mpi_op_lxor", &["MPI_LXOR"]),
    ("op", "Bxor", "ompi_mpi_op_bxor", &["MPI_BXOR"]),
    ("op", "Maxloc", "ompi_mpi_op_maxloc", &["MPI_MAXLOC"]),
    ("op", "Minloc", "ompi_mpi_op_minloc", &["MPI_MINLOC"]),
    ("op", "Replace", "ompi_mpi_op_replace", &["MPI_REPLACE"]),
    ("op", "NoOp", "ompi_mpi_op_no_op", &["MPI_NO_OP"]),
    // ---- communicators
    ("comm", "World", "ompi_mpi_comm_world", &["MPI_COMM_WORLD"]),
    ("comm", "SelfComm", "ompi_mpi_comm_self", &["MPI_COMM_SELF"]),
    ("comm", "CommNull", "ompi_mpi_comm_null", &["MPI_COMM_NULL"]),
    // ---- groups
    ("group", "GroupNull", "ompi_mpi_group_null", &["MPI_GROUP_NULL"]),
    ("group", "Empty", "ompi_mpi_group_empty", &["MPI_GROUP_EMPTY"]),
    // ---- requests
    ("request", "RequestNull", "ompi_request_null", &["MPI_REQUEST_NULL"]),
    // ---- error handlers
    ("errhandler", "ErrhandlerNull", "ompi_mpi_errhandler_null", &["MPI_ERRHANDLER_NULL"]),
    ("errhandler", "ErrorsAreFatal", "ompi_mpi_errors_are_fatal", &["MPI_ERRORS_ARE_FATAL"]),
    ("errhandler", "ErrorsReturn", "ompi_mpi_errors_return", &["MPI_ERRORS_RETURN"]),
    // MPI::ERRORS_THROW_EXCEPTIONS of the C++ bindings (declared in cxx_glue.h only).
    ("errhandler", "ErrorsThrowExceptions", "ompi_mpi_errors_throw_exceptions", &[]),
    // ---- info
    ("info", "InfoNull", "ompi_mpi_info_null", &["MPI_INFO_NULL"]),
    ("info", "Env", "ompi_mpi_info_env", &["MPI_INFO_ENV"]),
    // ---- windows, files
    ("win", "WinNull", "ompi_mpi_win_null", &["MPI_WIN_NULL"]),
    ("file", "FileNull", "ompi_mpi_file_null", &["MPI_FILE_NULL"]),
    // ---- messages
    ("message", "MessageNull", "ompi_message_null", &["MPI_MESSAGE_NULL"]),
    ("message", "NoProc", "ompi_message_no_proc", &["MPI_MESSAGE_NO_PROC"]),
    // ---- predefined attribute callbacks (C), validated against `#define MPI_X OMPI_C_MPI_X`
    ("callback", "CommNullCopyFn", "OMPI_C_MPI_COMM_NULL_COPY_FN", &["MPI_COMM_NULL_COPY_FN"]),
    ("callback", "CommNullDeleteFn", "OMPI_C_MPI_COMM_NULL_DELETE_FN", &["MPI_COMM_NULL_DELETE_FN"]),
    ("callback", "CommDupFn", "OMPI_C_MPI_COMM_DUP_FN", &["MPI_COMM_DUP_FN"]),
    ("callback", "TypeNullCopyFn", "OMPI_C_MPI_TYPE_NULL_COPY_FN", &["MPI_TYPE_NULL_COPY_FN"]),
    ("callback", "TypeNullDeleteFn", "OMPI_C_MPI_TYPE_NULL_DELETE_FN", &["MPI_TYPE_NULL_DELETE_FN"]),
    ("callback", "TypeDupFn", "OMPI_C_MPI_TYPE_DUP_FN", &["MPI_TYPE_DUP_FN"]),
    ("callback", "WinNullCopyFn", "OMPI_C_MPI_WIN_NULL_COPY_FN", &["MPI_WIN_NULL_COPY_FN"]),
    ("callback", "WinNullDeleteFn", "OMPI_C_MPI_WIN_NULL_DELETE_FN", &["MPI_WIN_NULL_DELETE_FN"]),
    ("callback", "WinDupFn", "OMPI_C_MPI_WIN_DUP_FN", &["MPI_WIN_DUP_FN"]),
    ("callback", "NullCopyFn", "OMPI_C_MPI_NULL_COPY_FN", &["MPI_NULL_COPY_FN"]),
    ("callback", "NullDeleteFn", "OMPI_C_MPI_NULL_DELETE_FN", &["MPI_NULL_DELETE_FN"]),
    ("callback", "DupFn", "OMPI_C_MPI_DUP_FN", &["MPI_DUP_FN"]),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KAWARIMI_MPI_INCDIRS");
    println!("cargo:rerun-if-env-changed=KAWARIMI_MPI_LIBDIRS");

    let (incdirs, libdirs) = find_mpi();
    let mpi_h = incdirs
        .iter()
        .map(|d| d.join("mpi.h"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("kawarimi-shim: mpi.h not found in {incdirs:?}"));
    let mpi_h_text = fs::read_to_string(&mpi_h).expect("read mpi.h");
    println!("cargo:rerun-if-changed={}", mpi_h.display());
    let fhandles = mpi_h.with_file_name("mpif-handles.h");
    println!("cargo:rerun-if-changed={}", fhandles.display());
    let fhandles_text = fs::read_to_string(&fhandles)
        .unwrap_or_else(|e| panic!("kawarimi-shim: cannot read {}: {e}", fhandles.display()));

    gen_unimplemented(&manifest, &out);
    gen_consts(&out, &incdirs, &mpi_h_text);
    gen_predef(&out, &mpi_h_text, &fhandles_text);

    println!("cargo:rerun-if-changed=csrc/ompi_abi.c");
    println!("cargo:rerun-if-changed=csrc/widefloat.c");
    let mut build = cc::Build::new();
    build
        .file(manifest.join("csrc/ompi_abi.c"))
        .file(manifest.join("csrc/widefloat.c"))
        .include(&out)
        .warnings(true)
        .extra_warnings(true);
    build.flag_if_supported("-std=c11");
    for d in &incdirs {
        build.include(d);
    }
    build.compile("kawarimi_ompi_abi");

    for d in &libdirs {
        println!("cargo:rustc-link-search=native={}", d.display());
    }
    println!("cargo:rustc-link-lib=dylib=mpi");
}

/// Include and library directories of the Open MPI C bindings.
fn find_mpi() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let split =
        |s: &str| -> Vec<PathBuf> { s.split([':', ' ', '\n']).filter(|x| !x.is_empty()).map(PathBuf::from).collect() };
    let from_env = |k: &str| env::var(k).ok().map(|v| split(&v));
    let mpicc = |arg: &str| -> Option<Vec<PathBuf>> {
        let o = Command::new("mpicc").arg(arg).output().ok()?;
        o.status.success().then(|| split(&String::from_utf8_lossy(&o.stdout)))
    };
    let pkg = |arg: &str, prefix: &str| -> Option<Vec<PathBuf>> {
        let o = Command::new("pkg-config").args([arg, "ompi-c"]).output().ok()?;
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        o.status
            .success()
            .then(|| s.split_whitespace().filter_map(|t| t.strip_prefix(prefix)).map(PathBuf::from).collect())
    };
    let inc = from_env("KAWARIMI_MPI_INCDIRS")
        .or_else(|| mpicc("--showme:incdirs"))
        .or_else(|| pkg("--cflags", "-I"))
        .filter(|v| !v.is_empty())
        .expect("kawarimi-shim: cannot find Open MPI headers (mpicc --showme:incdirs, pkg-config ompi-c); install libopenmpi-dev or set KAWARIMI_MPI_INCDIRS");
    let lib = from_env("KAWARIMI_MPI_LIBDIRS")
        .or_else(|| mpicc("--showme:libdirs"))
        .or_else(|| pkg("--libs", "-L"))
        .unwrap_or_default();
    (inc, lib)
}

// ------------------------------------------------------------------------------------
// 3. unimplemented stubs

fn gen_unimplemented(manifest: &Path, out: &Path) {
    let list = manifest.join("ompi-4.1-exports.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let text = fs::read_to_string(&list).expect("read ompi-4.1-exports.txt");
    let exports: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();

    // Names implemented under src/api/*.rs.
    let api = manifest.join("src/api");
    println!("cargo:rerun-if-changed={}", api.display());
    let mut implemented = BTreeSet::new();
    if let Ok(rd) = fs::read_dir(&api) {
        let mut files: Vec<PathBuf> =
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "rs")).collect();
        files.sort();
        for f in files {
            println!("cargo:rerun-if-changed={}", f.display());
            let src = fs::read_to_string(&f).unwrap_or_default();
            for line in src.lines() {
                for name in implemented_twin_names(line).into_iter().flatten().chain(implemented_fn_name(line)) {
                    // `fn Send(` implements MPI_Send; `fn MPIX_Bcast_init(` implements MPIX_Bcast_init.
                    if name.starts_with("MPIX_") {
                        implemented.insert(name.to_string());
                    }
                    implemented.insert(format!("MPI_{name}"));
                }
            }
        }
    }

    let mut s = String::new();
    s.push_str(
        "// @generated by shim/build.rs from shim/ompi-4.1-exports.txt minus the functions in shim/src/api/*.rs.\n",
    );
    s.push_str("/// Exported stand-ins for every Open MPI API function kawarimi does not implement: each one\n");
    s.push_str("/// aborts the job naming itself, so that no call reaches the real libmpi with kawarimi handles.\n");
    s.push_str(
        "#[allow(non_snake_case)]\n#[doc(hidden)]\npub mod unimplemented_stubs {\n    use std::os::raw::c_int;\n",
    );
    let mut n = 0usize;
    for name in &exports {
        if implemented.contains(*name) {
            continue;
        }
        for sym in [name.to_string(), format!("P{name}")] {
            let _ = writeln!(
                s,
                "    /// Not implemented by kawarimi: aborts the job.\n    ///\n    /// # Safety\n    /// Always safe to call; it never returns.\n    #[no_mangle]\n    pub unsafe extern \"C\" fn {sym}() -> c_int {{\n        crate::unimplemented_abort(\"{name}\")\n    }}"
            );
            n += 1;
        }
    }
    let _ = writeln!(s, "    /// Number of exported stand-ins (MPI_ and PMPI_ counted separately).\n    pub const COUNT: usize = {n};\n}}");
    write_if_changed(&out.join("unimplemented.rs"), &s);
}

/// `^\s*fn A / B( / C)?\[`: a blocking collective, its nonblocking twin and, when named, its
/// persistent form (`MPIX_Name_init`), defined together by `coll_twins!` in src/api/coll.rs.
fn implemented_twin_names(line: &str) -> Option<Vec<&str>> {
    let rest = line.trim_start().strip_prefix("fn ")?;
    let (names, _) = rest.split_once('[')?;
    let names: Vec<&str> = names.split(" / ").collect();
    let is_name = |n: &str| {
        n.starts_with(|c: char| c.is_ascii_uppercase()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (matches!(names.len(), 2 | 3) && names.iter().all(|n| is_name(n))).then_some(names)
}

/// `^\s*(pub\s+)?fn ([A-Z][A-Za-z0-9_]*)\s*[(<]`, without a regex crate.
fn implemented_fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if let Some(r) = rest.strip_prefix("pub") {
        if !r.starts_with(char::is_whitespace) {
            return None;
        }
        rest = r.trim_start();
    }
    let rest = rest.strip_prefix("fn")?;
    let rest = rest.strip_prefix(' ')?;
    if !rest.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    let (name, after) = rest.split_at(end);
    after.trim_start().starts_with(['(', '<']).then_some(name)
}

// ------------------------------------------------------------------------------------
// 1. constants

fn gen_consts(out: &Path, incdirs: &[PathBuf], mpi_h: &str) {
    let mut consts: Vec<(String, String, Ty)> =
        CONSTS.iter().map(|&(n, e, t)| (n.to_string(), e.to_string(), t)).collect();
    // Every error class of mpi.h: `#define MPI_ERR_X <n>` / `#define MPI_T_ERR_X <n>`, plus MPI_SUCCESS.
    let mut errs = vec!["MPI_SUCCESS".to_string()];
    for line in mpi_h.lines() {
        let mut w = line.split_whitespace();
        if w.next() == Some("#define") {
            if let Some(name) = w.next() {
                if (name.starts_with("MPI_ERR_") || name.starts_with("MPI_T_ERR_")) && !errs.iter().any(|e| e == name) {
                    errs.push(name.to_string());
                }
            }
        }
    }
    assert!(errs.iter().any(|e| e == "MPI_ERR_LASTCODE"), "kawarimi-shim: MPI_ERR_LASTCODE not found in mpi.h");
    for e in errs {
        consts.push((e.clone(), e, Ty::Int));
    }

    // The probe.
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <mpi.h>\nint main(void) {\n",
    );
    for (name, expr, ty) in &consts {
        let line = match ty {
            Ty::Int | Ty::Offset => format!("    printf(\"%s %lld\\n\", \"{name}\", (long long)({expr}));\n"),
            Ty::Ptr => format!("    printf(\"%s %llu\\n\", \"{name}\", (unsigned long long)(uintptr_t)({expr}));\n"),
            Ty::Size => format!("    printf(\"%s %llu\\n\", \"{name}\", (unsigned long long)({expr}));\n"),
        };
        c.push_str(&line);
    }
    c.push_str("    return 0;\n}\n");
    let src = out.join("kw_abi_probe.c");
    let exe = out.join("kw_abi_probe");
    fs::write(&src, c).expect("write probe");
    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    let mut cmd = compiler.to_command();
    for d in incdirs {
        cmd.arg("-I").arg(d);
    }
    cmd.arg(&src).arg("-o").arg(&exe);
    let st = cmd.output().expect("run C compiler for the ABI probe");
    assert!(
        st.status.success(),
        "kawarimi-shim: compiling the mpi.h probe failed:\n{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let run = Command::new(&exe).output().expect("run the ABI probe (building for another target is not supported)");
    assert!(run.status.success(), "kawarimi-shim: the mpi.h probe failed");
    let values: BTreeMap<String, String> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect();

    let mut rs = String::from(
        "// @generated by shim/build.rs: values printed by a program compiled against the installed mpi.h.\n",
    );
    let mut h = String::from(
        "/* @generated by shim/build.rs: the values of src/abi.rs's constants, re-checked by the compiler. */\n",
    );
    let mut table = String::from("const long long kw_abi_const_values[] = {\n");
    for (name, expr, ty) in &consts {
        let v = &values[name];
        let (rty, doc) = match ty {
            Ty::Int => ("::std::os::raw::c_int", expr.clone()),
            Ty::Offset => ("MPI_Offset", expr.clone()),
            Ty::Ptr => ("usize", format!("(uintptr_t){expr}")),
            Ty::Size => ("usize", expr.clone()),
        };
        let _ = writeln!(rs, "/// `{doc}` in Open MPI's mpi.h.\npub const {name}: {rty} = {v};");
        match ty {
            Ty::Int => {
                let _ = writeln!(h, "_Static_assert(({expr}) == ({v}), \"{name} changed\");");
                let _ =
                    writeln!(h, "_Static_assert(({expr}) >= INT_MIN && ({expr}) <= INT_MAX, \"{name} fits an int\");");
            }
            Ty::Offset => {
                let _ = writeln!(h, "_Static_assert(({expr}) == ({v}LL), \"{name} changed\");");
            }
            Ty::Size => {
                let _ = writeln!(h, "_Static_assert(({expr}) == ({v}ULL), \"{name} changed\");");
            }
            Ty::Ptr => {}
        }
        let cval = match ty {
            Ty::Ptr => format!("(long long)(uintptr_t)({expr})"),
            _ => format!("(long long)({expr})"),
        };
        let _ = writeln!(table, "    {cval}, /* {name} */");
    }
    table.push_str(
        "};\nconst size_t kw_abi_const_count = sizeof kw_abi_const_values / sizeof kw_abi_const_values[0];\n",
    );
    h.push_str(&table);
    // The same list, in the same order, for the Rust-side comparison.
    rs.push_str("/// Every constant above with its name, in the order of the C glue's `kw_abi_const_values`.\n");
    rs.push_str("pub const ALL_CONSTS: &[(&str, i128)] = &[\n");
    for (name, _, _) in &consts {
        let _ = writeln!(rs, "    (\"{name}\", {name} as i128),");
    }
    rs.push_str("];\n");
    write_if_changed(&out.join("abi_consts.rs"), &rs);
    write_if_changed(&out.join("kw_abi_consts.h"), &h);
}

// ------------------------------------------------------------------------------------
// 2. predefined handles

fn gen_predef(out: &Path, mpi_h: &str, fhandles: &str) {
    // mpi.h: `#define MPI_X OMPI_PREDEFINED_GLOBAL(type, sym)` and `#define MPI_X OMPI_C_MPI_X`.
    let mut macros: BTreeMap<String, String> = BTreeMap::new();
    for line in mpi_h.lines() {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix('#') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix("define") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let Some(name) = it.next() else { continue };
        let body: String = it.collect::<Vec<_>>().join(" ");
        if let Some(args) = body.strip_prefix("OMPI_PREDEFINED_GLOBAL") {
            let args = args.trim().trim_start_matches('(').trim_end_matches(')');
            if let Some((_, sym)) = args.split_once(',') {
                macros.insert(name.to_string(), sym.trim().to_string());
            }
        } else if body.starts_with("OMPI_C_MPI_") && name.ends_with("_FN") && !body.contains(' ') {
            macros.insert(name.to_string(), body);
        }
    }
    // mpif-handles.h: `parameter (MPI_X=n)`.
    let mut fvals: BTreeMap<String, i32> = BTreeMap::new();
    for line in fhandles.lines() {
        let t = line.trim();
        if t.starts_with('!') {
            continue;
        }
        if let Some(rest) = t.strip_prefix("parameter") {
            let inner = rest.trim().trim_start_matches('(').trim_end_matches(')');
            if let Some((n, v)) = inner.split_once('=') {
                let v: i32 = v.trim().parse().unwrap_or_else(|_| panic!("mpif-handles.h: bad value in {t}"));
                fvals.insert(n.trim().to_uppercase(), v);
            }
        }
    }
    assert!(!macros.is_empty() && !fvals.is_empty(), "kawarimi-shim: failed to parse mpi.h / mpif-handles.h");

    // Validate PREDEF against both headers.
    let mut seen_syms = BTreeSet::new();
    let mut table_names: BTreeMap<&str, &str> = BTreeMap::new();
    for &(kind, _, sym, names) in PREDEF {
        assert!(KINDS.iter().any(|k| k.0 == kind), "unknown kind {kind}");
        assert!(seen_syms.insert(sym), "kawarimi-shim: {sym} listed twice");
        for &n in names {
            assert!(table_names.insert(n, sym).is_none(), "kawarimi-shim: {n} listed twice");
            match macros.get(n) {
                Some(s) => assert_eq!(s, sym, "kawarimi-shim: mpi.h defines {n} as {s}, PREDEF says {sym}"),
                None => assert!(
                    fvals.contains_key(n),
                    "kawarimi-shim: {n} is neither an mpi.h handle macro nor an mpif-handles.h name"
                ),
            }
        }
    }
    for (n, s) in &macros {
        assert_eq!(
            table_names.get(n.as_str()),
            Some(&s.as_str()),
            "kawarimi-shim: mpi.h's {n} ({s}) is missing from PREDEF in build.rs"
        );
    }
    for n in fvals.keys() {
        assert!(
            table_names.contains_key(n.as_str()),
            "kawarimi-shim: mpif-handles.h's {n} is missing from PREDEF in build.rs"
        );
    }

    let mut h = String::from("/* @generated by shim/build.rs: addresses of Open MPI's predefined handle objects. */\n");
    let mut rs = String::from(
        "// @generated by shim/build.rs from its PREDEF table, validated against mpi.h and mpif-handles.h.\n",
    );
    for &(kind, ename, cty) in KINDS {
        let rows: Vec<_> = PREDEF.iter().filter(|r| r.0 == kind).collect();
        // C: declarations (compatible redeclarations of mpi.h's, plus the objects mpi.h hides).
        if !cty.is_empty() {
            for r in &rows {
                let _ = writeln!(h, "extern struct {cty} {};", r.2);
            }
        }
        let _ = writeln!(h, "const void *const kw_predef_{kind}[] = {{");
        for r in &rows {
            let _ = writeln!(h, "    (const void *)&{}, /* {} */", r.2, r.3.first().copied().unwrap_or(r.2));
        }
        let _ = writeln!(h, "}};\nconst size_t kw_predef_{kind}_len = {};", rows.len());

        // Rust enum.
        let _ = writeln!(rs, "\n/// Open MPI's predefined {kind} handles, one variant per object libmpi exports.");
        let _ = writeln!(
            rs,
            "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[repr(u8)]\npub enum {ename} {{"
        );
        for r in &rows {
            let names = if r.3.is_empty() { "(no MPI name)".to_string() } else { r.3.join(", ") };
            let _ = writeln!(rs, "    /// {names} — Open MPI object `{}`.\n    {},", r.2, r.1);
        }
        rs.push_str("}\n");
        let _ = writeln!(rs, "impl {ename} {{");
        let _ = writeln!(rs, "    /// Every variant, in the order of the C glue's `kw_predef_{kind}` table.\n    pub const ALL: &'static [{ename}] = &[{}];", rows.iter().map(|r| format!("{ename}::{}", r.1)).collect::<Vec<_>>().join(", "));
        let _ = writeln!(rs, "    /// Position in [`Self::ALL`] and in the C table.\n    pub const fn index(self) -> usize {{ self as usize }}");
        let _ = writeln!(rs, "    /// The symbol of the object in libmpi.so.\n    pub const fn symbol(self) -> &'static str {{\n        match self {{");
        for r in &rows {
            let _ = writeln!(rs, "            {ename}::{} => \"{}\",", r.1, r.2);
        }
        rs.push_str("        }\n    }\n");
        let _ = writeln!(rs, "    /// Every MPI name of this object (C macros of mpi.h and Fortran names), primary first;\n    /// empty for legacy objects no header names.\n    pub const fn mpi_names(self) -> &'static [&'static str] {{\n        match self {{");
        for r in &rows {
            let _ = writeln!(
                rs,
                "            {ename}::{} => &[{}],",
                r.1,
                r.3.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
            );
        }
        rs.push_str("        }\n    }\n");
        let _ = writeln!(rs, "    /// The primary MPI name (`MPI_INT`), or the Open MPI symbol when no header names it.\n    pub const fn mpi_name(self) -> &'static str {{\n        match self {{");
        for r in &rows {
            let _ = writeln!(rs, "            {ename}::{} => \"{}\",", r.1, r.3.first().copied().unwrap_or(r.2));
        }
        rs.push_str("        }\n    }\n");
        let _ = writeln!(rs, "    /// The Fortran handle (an `INTEGER`, the object's index in Open MPI's f2c table) from\n    /// mpif-handles.h; `None` for objects Fortran cannot name.\n    pub const fn fortran_handle(self) -> Option<::std::os::raw::c_int> {{\n        match self {{");
        for r in &rows {
            let vals: BTreeSet<i32> = r.3.iter().filter_map(|n| fvals.get(*n).copied()).collect();
            assert!(vals.len() <= 1, "kawarimi-shim: names of {} have different Fortran values {vals:?}", r.2);
            match vals.first() {
                Some(v) => {
                    let _ = writeln!(rs, "            {ename}::{} => Some({v}),", r.1);
                }
                None => {
                    let _ = writeln!(rs, "            {ename}::{} => None,", r.1);
                }
            }
        }
        rs.push_str("        }\n    }\n");
        let _ = writeln!(rs, "    /// The predefined object a Fortran handle value names, if any. Linear scan of [`Self::ALL`].\n    pub fn from_fortran(f: ::std::os::raw::c_int) -> Option<Self> {{\n        Self::ALL.iter().copied().find(|v| v.fortran_handle() == Some(f))\n    }}");
        let _ = writeln!(rs, "    /// The variant whose primary or alias MPI name (or symbol) is `name`.\n    pub fn from_mpi_name(name: &str) -> Option<Self> {{\n        Self::ALL.iter().copied().find(|v| v.symbol() == name || v.mpi_names().contains(&name))\n    }}");
        rs.push_str("}\n");
    }
    write_if_changed(&out.join("kw_predef.h"), &h);
    write_if_changed(&out.join("predef.rs"), &rs);
}

fn write_if_changed(path: &Path, content: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(content) {
        fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
