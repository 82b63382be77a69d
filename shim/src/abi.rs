//! The Open MPI 4.1 C ABI as kawarimi sees it: handle and integer types, constants,
//! callback types, and the predefined handle objects of the libmpi the program was built
//! against.
//!
//! Nothing here is typed in from memory. `build.rs` obtains every constant by compiling and
//! running a program against the installed `mpi.h`, and re-checks each one with a C
//! `_Static_assert` in `csrc/ompi_abi.c`; the layout of [`MPI_Status`] and the sizes of the
//! integer types are checked by `const` assertions below against values from the same
//! probe. The predefined handle *addresses* are read at run time from tables of initialised
//! data in the C glue, which the dynamic linker relocates to exactly the address the
//! program passes (copy relocations included).
//!
//! # Open MPI libmpi_mpifh internals
//! Open MPI's Fortran bindings (`libmpi_mpifh.so.40`) mostly call `PMPI_*`, which the shim
//! exports, but these bindings also use libmpi internals that the shim does not (and cannot)
//! interpose (from `nm -D --undefined-only libmpi_mpifh.so.40` and a disassembly of the
//! callers). A shim that supports Fortran must export its own `mpi_*_` entry points for
//! at least these, or the call reaches an uninitialised libmpi:
//! - `ompi_attr_create_keyval_aint`/`_fint`, `ompi_attr_get_aint`/`_fint`,
//!   `ompi_attr_set_aint`/`_fint`: `MPI_COMM/TYPE/WIN_CREATE_KEYVAL`, `MPI_KEYVAL_CREATE`,
//!   `MPI_COMM/TYPE/WIN_GET_ATTR`, `MPI_ATTR_GET`, `MPI_COMM/TYPE/WIN_SET_ATTR`,
//!   `MPI_ATTR_PUT`;
//! - `ompi_errhandler_create`: `MPI_COMM/FILE/WIN_CREATE_ERRHANDLER`;
//! - `ompi_datatype_match_size` (+ `ompi_mpi_state`, `ompi_mpi_param_check`,
//!   `ompi_mpi_datatype_null`): `MPI_TYPE_MATCH_SIZE`;
//! - `ompi_errhandler_invoke` with `ompi_mpi_comm_world` (error paths, e.g. allocation
//!   failure) in many bindings; `ompi_errcodes_intern`/`ompi_errcode_intern_lastused`/
//!   `opal_uses_threads` in the string-handling ones (`MPI_COMM_SET_NAME`, `MPI_INFO_*`,
//!   `MPI_FILE_OPEN`, `MPI_ERROR_STRING`, `MPI_GET_PROCESSOR_NAME`, `MPI_PACK_EXTERNAL`, ...);
//! - `ompi_registered_datareps`, `opal_class_initialize`: `MPI_REGISTER_DATAREP`;
//! - `ompi_request_null`: `MPI_REQUEST_FREE`; `ompi_status_empty`: `MPI_WAITANY`/`TESTANY`;
//! - `ompi_fortran_string_f2c`/`_c2f`, `ompi_fortran_argv_*_f2c`, `opal_argv_free`:
//!   string and argv conversion (harmless helpers, no MPI state).
//!
//! The Fortran sentinels (`MPI_BOTTOM`, `MPI_IN_PLACE`, `MPI_STATUS_IGNORE`, ...) are
//! common blocks `mpi_fortran_*_` defined by libmpi.so itself; see [`FortranSentinel`].
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case)]

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

use kawarimi_runtime::datatype::Primitive;

// ------------------------------------------------------------------------------------
// Types

/// `MPI_Comm`: a pointer to an `ompi_communicator_t` (or a kawarimi object).
pub type MPI_Comm = *mut c_void;
/// `MPI_Datatype`.
pub type MPI_Datatype = *mut c_void;
/// `MPI_Op`.
pub type MPI_Op = *mut c_void;
/// `MPI_Group`.
pub type MPI_Group = *mut c_void;
/// `MPI_Request`.
pub type MPI_Request = *mut c_void;
/// `MPI_Errhandler`.
pub type MPI_Errhandler = *mut c_void;
/// `MPI_Info`.
pub type MPI_Info = *mut c_void;
/// `MPI_Win`.
pub type MPI_Win = *mut c_void;
/// `MPI_File`.
pub type MPI_File = *mut c_void;
/// `MPI_Message`.
pub type MPI_Message = *mut c_void;
/// `MPI_Aint` (`ptrdiff_t`).
pub type MPI_Aint = isize;
/// `MPI_Offset` (`long long`).
pub type MPI_Offset = i64;
/// `MPI_Count` (`long long`).
pub type MPI_Count = i64;
/// `MPI_Fint`: a Fortran `INTEGER`.
pub type MPI_Fint = c_int;

/// `MPI_Status` (`struct ompi_status_public_t`). Layout checked against mpi.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MPI_Status {
    pub MPI_SOURCE: c_int,
    pub MPI_TAG: c_int,
    pub MPI_ERROR: c_int,
    /// Open MPI internal: nonzero when the request was cancelled.
    pub _cancelled: c_int,
    /// Open MPI internal: the received size in bytes.
    pub _ucount: usize,
}

/// `MPI_User_function`: `void (*)(void *in, void *inout, int *len, MPI_Datatype *dt)`.
pub type MPI_User_function = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_int, *mut MPI_Datatype);
/// `MPI_Comm_copy_attr_function` (also MPI-1 `MPI_Copy_function`).
pub type MPI_Comm_copy_attr_function =
    unsafe extern "C" fn(MPI_Comm, c_int, *mut c_void, *mut c_void, *mut c_void, *mut c_int) -> c_int;
/// `MPI_Comm_delete_attr_function` (also MPI-1 `MPI_Delete_function`).
pub type MPI_Comm_delete_attr_function = unsafe extern "C" fn(MPI_Comm, c_int, *mut c_void, *mut c_void) -> c_int;
/// `MPI_Type_copy_attr_function`.
pub type MPI_Type_copy_attr_function =
    unsafe extern "C" fn(MPI_Datatype, c_int, *mut c_void, *mut c_void, *mut c_void, *mut c_int) -> c_int;
/// `MPI_Type_delete_attr_function`.
pub type MPI_Type_delete_attr_function = unsafe extern "C" fn(MPI_Datatype, c_int, *mut c_void, *mut c_void) -> c_int;
/// `MPI_Win_copy_attr_function`.
pub type MPI_Win_copy_attr_function =
    unsafe extern "C" fn(MPI_Win, c_int, *mut c_void, *mut c_void, *mut c_void, *mut c_int) -> c_int;
/// `MPI_Win_delete_attr_function`.
pub type MPI_Win_delete_attr_function = unsafe extern "C" fn(MPI_Win, c_int, *mut c_void, *mut c_void) -> c_int;
/// MPI-1 `MPI_Copy_function`.
pub type MPI_Copy_function = MPI_Comm_copy_attr_function;
/// MPI-1 `MPI_Delete_function`.
pub type MPI_Delete_function = MPI_Comm_delete_attr_function;
/// `MPI_Comm_errhandler_function`: `void (*)(MPI_Comm *, int *, ...)`.
pub type MPI_Comm_errhandler_function = unsafe extern "C" fn(*mut MPI_Comm, *mut c_int, ...);
/// MPI-1 `MPI_Handler_function`.
pub type MPI_Handler_function = MPI_Comm_errhandler_function;
/// `MPI_Win_errhandler_function`.
pub type MPI_Win_errhandler_function = unsafe extern "C" fn(*mut MPI_Win, *mut c_int, ...);
/// `MPI_File_errhandler_function`.
pub type MPI_File_errhandler_function = unsafe extern "C" fn(*mut MPI_File, *mut c_int, ...);
/// `MPI_Grequest_query_function`.
pub type MPI_Grequest_query_function = unsafe extern "C" fn(*mut c_void, *mut MPI_Status) -> c_int;
/// `MPI_Grequest_free_function`.
pub type MPI_Grequest_free_function = unsafe extern "C" fn(*mut c_void) -> c_int;
/// `MPI_Grequest_cancel_function`.
pub type MPI_Grequest_cancel_function = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
/// `MPI_Datarep_extent_function`.
pub type MPI_Datarep_extent_function = unsafe extern "C" fn(MPI_Datatype, *mut MPI_Aint, *mut c_void) -> c_int;
/// `MPI_Datarep_conversion_function`.
pub type MPI_Datarep_conversion_function =
    unsafe extern "C" fn(*mut c_void, MPI_Datatype, c_int, *mut c_void, MPI_Offset, *mut c_void) -> c_int;

// ------------------------------------------------------------------------------------
// Constants (values from mpi.h, see build.rs)

/// Integer constants and sentinel pointers of Open MPI's mpi.h, generated by build.rs.
pub mod consts {
    use super::MPI_Offset;
    include!(concat!(env!("OUT_DIR"), "/abi_consts.rs"));
}
pub use consts::*;

// The Rust types above, checked against mpi.h's.
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<MPI_Status>() == OMPI_SIZEOF_STATUS);
    assert!(align_of::<MPI_Status>() == OMPI_ALIGNOF_STATUS);
    assert!(offset_of!(MPI_Status, MPI_SOURCE) == OMPI_OFFSETOF_STATUS_SOURCE);
    assert!(offset_of!(MPI_Status, MPI_TAG) == OMPI_OFFSETOF_STATUS_TAG);
    assert!(offset_of!(MPI_Status, MPI_ERROR) == OMPI_OFFSETOF_STATUS_ERROR);
    assert!(offset_of!(MPI_Status, _cancelled) == OMPI_OFFSETOF_STATUS_CANCELLED);
    assert!(offset_of!(MPI_Status, _ucount) == OMPI_OFFSETOF_STATUS_UCOUNT);
    assert!(size_of::<usize>() == OMPI_SIZEOF_STATUS_UCOUNT);
    assert!(size_of::<MPI_Aint>() == OMPI_SIZEOF_AINT && OMPI_AINT_IS_SIGNED == 1);
    assert!(size_of::<MPI_Offset>() == OMPI_SIZEOF_OFFSET && OMPI_OFFSET_IS_SIGNED == 1);
    assert!(size_of::<MPI_Count>() == OMPI_SIZEOF_COUNT && OMPI_COUNT_IS_SIGNED == 1);
    assert!(size_of::<MPI_Fint>() == OMPI_SIZEOF_FINT && OMPI_FINT_IS_SIGNED == 1);
    assert!(size_of::<MPI_Comm>() == OMPI_SIZEOF_HANDLE);
    // The runtime's wildcards reach the program unchanged in the statuses of empty requests
    // and wildcard receives (kawarimi_runtime::request::empty_status).
    assert!(MPI_ANY_SOURCE == kawarimi_runtime::core::ANY_SOURCE && MPI_ANY_TAG == kawarimi_runtime::core::ANY_TAG);
};

// ------------------------------------------------------------------------------------
// Predefined handles

include!(concat!(env!("OUT_DIR"), "/predef.rs"));

/// What kawarimi does with a predefined datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PredefLayout {
    /// One element of this primitive kind.
    Prim(Primitive),
    /// Not an element type.
    Special(SpecialDatatype),
}

/// Predefined datatypes that are not one primitive element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialDatatype {
    /// `MPI_DATATYPE_NULL`.
    Null,
    /// `MPI_LB` (MPI-1 lower-bound marker, size 0; Fortran only in this Open MPI build).
    Lb,
    /// `MPI_UB` (MPI-1 upper-bound marker, size 0).
    Ub,
    /// A type kawarimi does not support: Fortran kinds this Open MPI marks unavailable
    /// (`MPI_INTEGER16`, `MPI_REAL2`: size 0), kinds without a primitive in kawarimi
    /// (`MPI_LOGICAL1/2/8`; `MPI_2COMPLEX`, `MPI_2DOUBLE_COMPLEX`), and unnamed legacy objects.
    Unsupported,
}

impl PredefDatatype {
    /// How kawarimi represents one element of this type.
    pub const fn layout(self) -> PredefLayout {
        use PredefDatatype as D;
        use Primitive as P;
        use SpecialDatatype as S;
        let p = match self {
            D::DatatypeNull => return PredefLayout::Special(S::Null),
            D::Lb => return PredefLayout::Special(S::Lb),
            D::Ub => return PredefLayout::Special(S::Ub),
            D::Integer16
            | D::Real2
            | D::Logical1
            | D::Logical2
            | D::Logical8
            | D::TwoComplex
            | D::TwoDoubleComplex
            | D::LongDoubleComplexLegacy
            | D::Unavailable => return PredefLayout::Special(S::Unsupported),
            D::Byte | D::Packed | D::Character => P::Byte,
            D::Char | D::SignedChar | D::Int8 | D::Integer1 => P::I8,
            D::UnsignedChar | D::Uint8 => P::U8,
            D::Short | D::Int16 | D::Integer2 => P::I16,
            D::UnsignedShort | D::Uint16 => P::U16,
            D::Int | D::Int32 | D::Integer | D::Integer4 | D::Wchar => P::I32,
            D::Unsigned | D::Uint32 => P::U32,
            D::Long | D::LongLongInt | D::Int64 | D::Integer8 | D::Aint | D::Offset | D::Count => P::I64,
            D::UnsignedLong | D::UnsignedLongLong | D::Uint64 => P::U64,
            D::Float | D::Real | D::Real4 => P::F32,
            D::Double | D::Real8 | D::DoublePrecision => P::F64,
            D::LongDouble => P::LongDouble,
            D::Real16 => P::F128,
            D::Complex32 => P::ComplexF128,
            D::CBool | D::CxxBool => P::CBool,
            D::Logical | D::Logical4 => P::FLogical,
            D::CFloatComplex | D::CComplexLegacy | D::CxxFloatComplex | D::Complex | D::Complex8 => P::ComplexF32,
            D::CDoubleComplex | D::CxxDoubleComplex | D::DoubleComplex | D::Complex16 => P::ComplexF64,
            D::CLongDoubleComplex | D::CxxLongDoubleComplex => P::ComplexLongDouble,
            D::FloatInt => P::FloatInt,
            D::DoubleInt => P::DoubleInt,
            D::LongInt => P::LongInt,
            D::TwoInt | D::TwoInteger => P::TwoInt,
            D::ShortInt => P::ShortInt,
            D::LongDoubleInt => P::LongDoubleInt,
            D::TwoReal => P::TwoF32,
            D::TwoDoublePrecision => P::TwoF64,
        };
        PredefLayout::Prim(p)
    }
}

/// Any predefined handle, of any kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Predef {
    Datatype(PredefDatatype),
    Op(PredefOp),
    Comm(PredefComm),
    Group(PredefGroup),
    Request(PredefRequest),
    Errhandler(PredefErrhandler),
    Info(PredefInfo),
    Win(PredefWin),
    File(PredefFile),
    Message(PredefMessage),
    /// A predefined attribute callback function (`MPI_COMM_DUP_FN`, ...).
    Callback(PredefCallback),
}

/// Address ↔ variant tables of one handle kind.
struct KindTable<T: 'static> {
    /// Address of `ALL[i]`.
    by_index: Vec<usize>,
    /// (address, variant), sorted by address.
    sorted: Vec<(usize, T)>,
}

impl<T: Copy + 'static> KindTable<T> {
    fn new(all: &'static [T], addrs: &[*const c_void]) -> Self {
        assert_eq!(all.len(), addrs.len(), "kawarimi: predefined handle table length mismatch");
        let by_index: Vec<usize> = addrs.iter().map(|&p| p as usize).collect();
        let mut sorted: Vec<(usize, T)> = by_index.iter().copied().zip(all.iter().copied()).collect();
        sorted.sort_by_key(|e| e.0);
        Self { by_index, sorted }
    }
    fn find(&self, addr: usize) -> Option<T> {
        self.sorted.binary_search_by_key(&addr, |e| e.0).ok().map(|i| self.sorted[i].1)
    }
}

macro_rules! c_tables {
    ($($kind:ident: $ty:ident),* $(,)?) => {
        mod c_tables {
            #![allow(non_upper_case_globals)]
            use std::ffi::c_void;
            use super::*;
            extern "C" {
                $( pub static $kind: [*const c_void; $ty::ALL.len()]; )*
            }
        }
        mod c_lens {
            #![allow(non_upper_case_globals)]
            extern "C" {
                $(
                    #[link_name = concat!(stringify!($kind), "_len")]
                    pub static $kind: usize;
                )*
            }
        }
    };
}
c_tables! {
    kw_predef_datatype: PredefDatatype,
    kw_predef_op: PredefOp,
    kw_predef_comm: PredefComm,
    kw_predef_group: PredefGroup,
    kw_predef_request: PredefRequest,
    kw_predef_errhandler: PredefErrhandler,
    kw_predef_info: PredefInfo,
    kw_predef_win: PredefWin,
    kw_predef_file: PredefFile,
    kw_predef_message: PredefMessage,
    kw_predef_callback: PredefCallback,
}

macro_rules! kind_table {
    ($table:ident, $ty:ident) => {{
        // SAFETY: `$table` and its length are initialised, immutable data defined in
        // csrc/ompi_abi.c (generated from the same list as `$ty::ALL`, so the declared array
        // length is right; checked against the C length here). The dynamic linker filled
        // the table before any Rust code runs.
        let (addrs, len) = unsafe { (&c_tables::$table, c_lens::$table) };
        assert_eq!(len, $ty::ALL.len(), concat!("kawarimi: ", stringify!($table), " length"));
        KindTable::new($ty::ALL, &addrs[..])
    }};
}

/// The addresses of every predefined handle object of the loaded libmpi, built once.
///
/// Lookups by address are a binary search in a sorted `Vec` of that kind (≤ 77 entries, at
/// most 7 comparisons, no allocation, no locking after the first call); lookups of the
/// address of a variant are an index.
pub struct PredefinedHandles {
    datatype: KindTable<PredefDatatype>,
    op: KindTable<PredefOp>,
    comm: KindTable<PredefComm>,
    group: KindTable<PredefGroup>,
    request: KindTable<PredefRequest>,
    errhandler: KindTable<PredefErrhandler>,
    info: KindTable<PredefInfo>,
    win: KindTable<PredefWin>,
    file: KindTable<PredefFile>,
    message: KindTable<PredefMessage>,
    callback: KindTable<PredefCallback>,
    /// Every handle of every kind, sorted by address.
    all: Vec<(usize, Predef)>,
}

macro_rules! accessors {
    ($($field:ident, $handle:ident: $ty:ident;)*) => {
        $(
            #[doc = concat!("The predefined `", stringify!($ty), "` at `addr`, if it is one. O(log n).")]
            pub fn $field(&self, addr: usize) -> Option<$ty> {
                self.$field.find(addr)
            }
            #[doc = concat!("The address a program uses for this predefined `", stringify!($ty), "`. O(1).")]
            pub fn $handle(&self, v: $ty) -> usize {
                self.$field.by_index[v.index()]
            }
        )*
    };
}

impl PredefinedHandles {
    /// The tables, built on first use (a few microseconds).
    pub fn get() -> &'static PredefinedHandles {
        static CELL: OnceLock<PredefinedHandles> = OnceLock::new();
        CELL.get_or_init(Self::build)
    }

    fn build() -> Self {
        let mut t = PredefinedHandles {
            datatype: kind_table!(kw_predef_datatype, PredefDatatype),
            op: kind_table!(kw_predef_op, PredefOp),
            comm: kind_table!(kw_predef_comm, PredefComm),
            group: kind_table!(kw_predef_group, PredefGroup),
            request: kind_table!(kw_predef_request, PredefRequest),
            errhandler: kind_table!(kw_predef_errhandler, PredefErrhandler),
            info: kind_table!(kw_predef_info, PredefInfo),
            win: kind_table!(kw_predef_win, PredefWin),
            file: kind_table!(kw_predef_file, PredefFile),
            message: kind_table!(kw_predef_message, PredefMessage),
            callback: kind_table!(kw_predef_callback, PredefCallback),
            all: Vec::new(),
        };
        let mut all = Vec::new();
        all.extend(t.datatype.sorted.iter().map(|&(a, v)| (a, Predef::Datatype(v))));
        all.extend(t.op.sorted.iter().map(|&(a, v)| (a, Predef::Op(v))));
        all.extend(t.comm.sorted.iter().map(|&(a, v)| (a, Predef::Comm(v))));
        all.extend(t.group.sorted.iter().map(|&(a, v)| (a, Predef::Group(v))));
        all.extend(t.request.sorted.iter().map(|&(a, v)| (a, Predef::Request(v))));
        all.extend(t.errhandler.sorted.iter().map(|&(a, v)| (a, Predef::Errhandler(v))));
        all.extend(t.info.sorted.iter().map(|&(a, v)| (a, Predef::Info(v))));
        all.extend(t.win.sorted.iter().map(|&(a, v)| (a, Predef::Win(v))));
        all.extend(t.file.sorted.iter().map(|&(a, v)| (a, Predef::File(v))));
        all.extend(t.message.sorted.iter().map(|&(a, v)| (a, Predef::Message(v))));
        all.extend(t.callback.sorted.iter().map(|&(a, v)| (a, Predef::Callback(v))));
        all.sort_by_key(|e| e.0);
        t.all = all;
        t
    }

    accessors! {
        datatype, datatype_handle: PredefDatatype;
        op, op_handle: PredefOp;
        comm, comm_handle: PredefComm;
        group, group_handle: PredefGroup;
        request, request_handle: PredefRequest;
        errhandler, errhandler_handle: PredefErrhandler;
        info, info_handle: PredefInfo;
        win, win_handle: PredefWin;
        file, file_handle: PredefFile;
        message, message_handle: PredefMessage;
        callback, callback_handle: PredefCallback;
    }

    /// Whatever predefined handle of any kind lives at `addr` (to report a handle of the
    /// wrong kind). O(log n) over all ~125 objects.
    pub fn classify(&self, addr: usize) -> Option<Predef> {
        self.all.binary_search_by_key(&addr, |e| e.0).ok().map(|i| self.all[i].1)
    }

    /// `MPI_REQUEST_NULL`'s address.
    pub fn request_null(&self) -> usize {
        self.request_handle(PredefRequest::RequestNull)
    }
}

/// Shorthand for [`PredefinedHandles::get`].
pub fn predefined() -> &'static PredefinedHandles {
    PredefinedHandles::get()
}

// ------------------------------------------------------------------------------------
// Fortran

/// The Fortran sentinels: common blocks (`common/mpi_fortran_bottom/MPI_BOTTOM`, ...,
/// mpif-sentinels.h) whose *addresses* Fortran code passes. Open MPI 4.1 defines them in
/// libmpi.so itself (nm type B), under gfortran's mangling only (`name_`; no `name`,
/// `name__` or upper-case variants exist), plus the function `mpi_conversion_fn_null_`.
/// A Fortran executable may hold its own copy of a common block; resolving the name with
/// `dlsym(RTLD_DEFAULT, ...)` finds the same definition the program's references bind to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FortranSentinel {
    /// `MPI_BOTTOM` (`mpi_fortran_bottom_`).
    Bottom,
    /// `MPI_IN_PLACE` (`mpi_fortran_in_place_`).
    InPlace,
    /// `MPI_STATUS_IGNORE` (`mpi_fortran_status_ignore_`).
    StatusIgnore,
    /// `MPI_STATUSES_IGNORE` (`mpi_fortran_statuses_ignore_`).
    StatusesIgnore,
    /// `MPI_ERRCODES_IGNORE` (`mpi_fortran_errcodes_ignore_`).
    ErrcodesIgnore,
    /// `MPI_ARGV_NULL` (`mpi_fortran_argv_null_`).
    ArgvNull,
    /// `MPI_ARGVS_NULL` (`mpi_fortran_argvs_null_`).
    ArgvsNull,
    /// `MPI_UNWEIGHTED` (`mpi_fortran_unweighted_`).
    Unweighted,
    /// `MPI_WEIGHTS_EMPTY` (`mpi_fortran_weights_empty_`).
    WeightsEmpty,
    /// `MPI_CONVERSION_FN_NULL` (the function `mpi_conversion_fn_null_`).
    ConversionFnNull,
}

impl FortranSentinel {
    /// Every sentinel.
    pub const ALL: &'static [FortranSentinel] = &[
        Self::Bottom,
        Self::InPlace,
        Self::StatusIgnore,
        Self::StatusesIgnore,
        Self::ErrcodesIgnore,
        Self::ArgvNull,
        Self::ArgvsNull,
        Self::Unweighted,
        Self::WeightsEmpty,
        Self::ConversionFnNull,
    ];

    /// The dynamic symbol, NUL-terminated.
    const fn symbol_c(self) -> &'static [u8] {
        match self {
            Self::Bottom => b"mpi_fortran_bottom_\0",
            Self::InPlace => b"mpi_fortran_in_place_\0",
            Self::StatusIgnore => b"mpi_fortran_status_ignore_\0",
            Self::StatusesIgnore => b"mpi_fortran_statuses_ignore_\0",
            Self::ErrcodesIgnore => b"mpi_fortran_errcodes_ignore_\0",
            Self::ArgvNull => b"mpi_fortran_argv_null_\0",
            Self::ArgvsNull => b"mpi_fortran_argvs_null_\0",
            Self::Unweighted => b"mpi_fortran_unweighted_\0",
            Self::WeightsEmpty => b"mpi_fortran_weights_empty_\0",
            Self::ConversionFnNull => b"mpi_conversion_fn_null_\0",
        }
    }

    /// The dynamic symbol (`mpi_fortran_bottom_`).
    pub fn symbol(self) -> &'static str {
        let b = self.symbol_c();
        std::str::from_utf8(&b[..b.len() - 1]).unwrap_or("")
    }

    /// The address Fortran code passes for this sentinel, resolved on first use with
    /// `dlsym(RTLD_DEFAULT, symbol)`; `None` when no loaded object defines it.
    pub fn address(self) -> Option<usize> {
        static CELL: OnceLock<Vec<Option<usize>>> = OnceLock::new();
        CELL.get_or_init(|| {
            Self::ALL
                .iter()
                .map(|s| {
                    let name = s.symbol_c();
                    // SAFETY: `name` is a NUL-terminated static string; dlsym with
                    // RTLD_DEFAULT only searches the loaded objects and returns an address
                    // or null, never dereferencing anything of ours.
                    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast::<c_char>()) };
                    (!p.is_null()).then_some(p as usize)
                })
                .collect()
        })[self as usize]
    }

    /// The sentinel at `addr`, if any (linear over 10 entries, after the first resolution).
    pub fn from_address(addr: usize) -> Option<FortranSentinel> {
        Self::ALL.iter().copied().find(|s| s.address() == Some(addr))
    }
}

extern "C" {
    fn kw_f_status_ignore() -> *const c_void;
    fn kw_f_statuses_ignore() -> *const c_void;
}

/// The value of C's `MPI_F_STATUS_IGNORE` (a pointer variable of libmpi; for
/// `MPI_Status_f2c`/`MPI_Status_c2f` callers).
pub fn f_status_ignore() -> usize {
    // SAFETY: a C function with no arguments that reads a pointer variable of libmpi.
    unsafe { kw_f_status_ignore() as usize }
}

/// The value of C's `MPI_F_STATUSES_IGNORE`.
pub fn f_statuses_ignore() -> usize {
    // SAFETY: a C function with no arguments that reads a pointer variable of libmpi.
    unsafe { kw_f_statuses_ignore() as usize }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        static kw_abi_const_values: [i64; consts::ALL_CONSTS.len()];
        static kw_abi_const_count: usize;
    }

    #[test]
    fn rust_consts_equal_c_glue_values() {
        // SAFETY: immutable initialised data in the C glue, generated from the same list
        // (length checked against the C count).
        let (vals, n) = unsafe { (&kw_abi_const_values, kw_abi_const_count) };
        assert_eq!(n, consts::ALL_CONSTS.len());
        for (i, (name, v)) in consts::ALL_CONSTS.iter().enumerate() {
            assert_eq!(i128::from(vals[i]), *v, "{name}");
        }
    }

    #[test]
    fn some_well_known_values() {
        assert_eq!(MPI_SUCCESS, 0);
        assert_eq!(MPI_IN_PLACE, 1);
        assert_eq!(MPI_STATUS_IGNORE, 0);
        const { assert!(MPI_ERR_LASTCODE >= MPI_ERR_WIN) };
        const { assert!(MPI_ANY_SOURCE < 0 && MPI_PROC_NULL < 0) };
    }

    #[test]
    fn predefined_lookup_roundtrip() {
        let p = predefined();
        for &d in PredefDatatype::ALL {
            let a = p.datatype_handle(d);
            assert_ne!(a, 0);
            assert_eq!(p.datatype(a), Some(d));
            assert_eq!(p.classify(a), Some(Predef::Datatype(d)));
        }
        for &c in PredefComm::ALL {
            assert_eq!(p.comm(p.comm_handle(c)), Some(c));
        }
        assert_eq!(p.datatype(p.comm_handle(PredefComm::World)), None);
        assert_eq!(PredefComm::World.fortran_handle(), Some(0));
        assert_eq!(PredefDatatype::from_mpi_name("MPI_LONG_LONG"), Some(PredefDatatype::LongLongInt));
    }

    #[test]
    fn fortran_sentinels_resolve() {
        // libmpi.so is linked, and it defines the sentinels.
        for &s in FortranSentinel::ALL {
            let a = s.address().unwrap_or_else(|| panic!("{} not found", s.symbol()));
            assert_eq!(FortranSentinel::from_address(a), Some(s));
        }
        assert_ne!(f_status_ignore(), 0);
    }
}
