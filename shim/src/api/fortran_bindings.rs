//! Fortran entry points that replace those of Open MPI's `libmpi_mpifh` which cannot work
//! over kawarimi's handles.
//!
//! Most of Open MPI 4.1's Fortran bindings (`ompi/mpi/fortran/mpif-h/*_f.c`) only convert
//! handles with `PMPI_*_f2c`/`_c2f` and call `PMPI_*`, which kawarimi answers. The ones here
//! do more, and are therefore exported again by `libkawarimi.so`, under every name
//! `libmpi_mpifh.so.40` defines for them (preloaded, ours bind first), with the same
//! signature as Open MPI's `ompi_<name>_f` (from the 4.1 sources cited at each function):
//!
//! - `MPI_GROUP_INCL`, `_EXCL`, `_RANGE_INCL`, `_RANGE_EXCL`, `_UNION`, `_INTERSECTION`,
//!   `_DIFFERENCE` return the new group as `c_newgroup->grp_f_to_c_index`, a field read
//!   through the C handle: a kawarimi group handle is no pointer, so that read crashed.
//!   Here the new handle goes through `MPI_Group_c2f`.
//! - `MPI_COMM_CREATE_KEYVAL`, `MPI_KEYVAL_CREATE`, `MPI_COMM_GET_ATTR`, `MPI_COMM_SET_ATTR` call
//!   `ompi_attr_create_keyval_aint`, `ompi_attr_get_aint` and `ompi_attr_set_aint` of the
//!   uninitialised libmpi, reading `c_comm->c_keyhash` through the handle. Here they use
//!   kawarimi's attributes through `MPI_Comm_create_keyval`/`_get_attr`/`_set_attr`.
//!   Fortran copy and delete callbacks (`MPI_COMM_DUP_FN` included, which for Fortran is
//!   libmpi's `mpi_comm_dup_fn_`) take every argument by reference; kawarimi calls C
//!   callbacks, so each Fortran keyval is registered with the C trampolines
//!   [`f_copy_trampoline`] and [`f_delete_trampoline`] and an `extra_state` pointing to a
//!   [`FortranKeyval`] that holds the Fortran functions and their `extra_state`.
//!   Predefined attributes (`MPI_TAG_UB`, ...) are pointers to `int` in C and the integer
//!   itself in Fortran (MPI-3.1 §6.7.2), as Open MPI stores them.
//! - `MPI_COMM_CREATE_ERRHANDLER`, `MPI_ERRHANDLER_CREATE` and `MPI_WIN_CREATE_ERRHANDLER`
//!   call `ompi_errhandler_create` of the uninitialised libmpi. Here the Fortran subroutine
//!   is registered with kawarimi, which calls it with the communicator (or the window) as a
//!   Fortran handle.
//! - `MPI_TYPE_CREATE_KEYVAL`, `MPI_TYPE_GET_ATTR`, `_SET_ATTR` and their `MPI_WIN_` twins
//!   call libmpi's attribute internals as the communicator ones do; here they use kawarimi's
//!   (a keyval remembers its kind of object, so its callbacks get the right Fortran handle).
//!   `MPI_TYPE_MATCH_SIZE` asks libmpi's uninitialised datatype tables.
//! - `MPI_OP_CREATE` sets a flag in the op's struct through the handle after
//!   `PMPI_Op_create` (a crash; MUMPS makes its ops so). Here the op is made as a Fortran op:
//!   its function gets the datatype as a Fortran handle.
//! - `MPI_WAIT`, `MPI_TEST` and `MPI_WAITALL/ANY/SOME`, `MPI_TESTALL/ANY/SOME` return each
//!   request as `c_req->req_f_to_c_index`: fine for a completed non-persistent request (then
//!   `MPI_REQUEST_NULL`, libmpi's own object), a crash for a persistent one. Here through
//!   `MPI_Request_c2f`.
//!
//! The f08 module (`libmpi_usempif08`) calls the `ompi_<name>_f` symbols, so it is covered
//! by the same functions. Profiling names (`pmpi_*`) are exported too.

use std::ffi::{c_int, c_void};

use crate::abi::{self, MPI_Aint, MPI_Comm, MPI_Fint, MPI_Group};
use crate::api::{comm, fortran, req};
use crate::state::AttrObject;

/// A Fortran `LOGICAL` (`ompi_fortran_logical_t`, 4 bytes in this build; OMPI_SIZEOF_FORTRAN_LOGICAL).
type FLogical = c_int;
/// `.TRUE.` as Open MPI's Fortran sees it (`OMPI_FORTRAN_VALUE_TRUE` in opal_config.h).
const F_TRUE: FLogical = 1;

/// Defines Fortran bindings. Each `fn name["lower", "UPPER", "Mixed"](args) { body }`
/// becomes `ompi_lower_f` (the implementation, a panic never crossing the boundary) plus
/// every alias `libmpi_mpifh.so.40` exports for it: `mpi_lower`, `mpi_lower_`, `mpi_lower__`,
/// `MPI_UPPER`, `MPI_Mixed_f`, `MPI_Mixed_f08` and their `pmpi_`/`PMPI_` twins.
macro_rules! fortran_binding {
    ($(
        $(#[$meta:meta])*
        fn $name:ident[$lower:literal, $upper:literal, $mixed:literal]($($arg:ident: $ty:ty),* $(,)?) $body:block
    )*) => {$(
        $(#[$meta])*
        ///
        /// # Safety
        /// Called from Fortran: every argument is a reference to a variable of the type the
        /// MPI standard's Fortran binding gives it.
        #[export_name = concat!("ompi_", $lower, "_f")]
        pub unsafe extern "C" fn $name($($arg: $ty),*) {
            crate::export::guard(concat!("MPI_", $upper), move || $body)
        }

        /// The other names of the binding, each forwarding to it.
        pub mod $name {
            fortran_binding!(@alias $name ($($arg: $ty),*) a1 = concat!("mpi_", $lower));
            fortran_binding!(@alias $name ($($arg: $ty),*) a2 = concat!("mpi_", $lower, "_"));
            fortran_binding!(@alias $name ($($arg: $ty),*) a3 = concat!("mpi_", $lower, "__"));
            fortran_binding!(@alias $name ($($arg: $ty),*) a4 = concat!("MPI_", $upper));
            fortran_binding!(@alias $name ($($arg: $ty),*) a5 = concat!("MPI_", $mixed, "_f"));
            fortran_binding!(@alias $name ($($arg: $ty),*) a6 = concat!("MPI_", $mixed, "_f08"));
            fortran_binding!(@alias $name ($($arg: $ty),*) a7 = concat!("pmpi_", $lower));
            fortran_binding!(@alias $name ($($arg: $ty),*) a8 = concat!("pmpi_", $lower, "_"));
            fortran_binding!(@alias $name ($($arg: $ty),*) a9 = concat!("pmpi_", $lower, "__"));
            fortran_binding!(@alias $name ($($arg: $ty),*) a10 = concat!("PMPI_", $upper));
            fortran_binding!(@alias $name ($($arg: $ty),*) a11 = concat!("PMPI_", $mixed, "_f"));
            fortran_binding!(@alias $name ($($arg: $ty),*) a12 = concat!("PMPI_", $mixed, "_f08"));
        }
    )*};
    (@alias $name:ident ($($arg:ident: $ty:ty),*) $m:ident = $sym:expr) => {
        pub mod $m {
            #[allow(unused_imports)]
            use super::super::*;
            /// An alias of the binding.
            ///
            /// # Safety
            /// As for the binding.
            #[export_name = $sym]
            pub unsafe extern "C" fn f($($arg: $ty),*) {
                // SAFETY: the same contract as the function it forwards to.
                unsafe { super::super::$name($($arg),*) }
            }
        }
    };
}

/// Writes `v` to a Fortran output argument unless the pointer is null (an absent `ierror`
/// in the f08 bindings).
///
/// # Safety
/// `p` is null or points to a writable `T`.
unsafe fn put<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { p.write(v) }
    }
}

/// Reads a Fortran input argument (by reference).
///
/// # Safety
/// `p` points to a readable `T`.
unsafe fn get<T: Copy>(p: *const T) -> T {
    // SAFETY: the caller's contract.
    unsafe { p.read() }
}

/// Runs a C group constructor and stores the new group's Fortran handle (what Open MPI
/// reads from `grp_f_to_c_index`) through `MPI_Group_c2f`.
///
/// # Safety
/// `newgroup` and `ierr` as in the bindings below.
unsafe fn new_group(newgroup: *mut MPI_Fint, ierr: *mut MPI_Fint, make: impl FnOnce(*mut MPI_Group) -> c_int) {
    let mut g: MPI_Group = std::ptr::null_mut();
    let rc = make(&mut g);
    // SAFETY: output arguments of the binding.
    unsafe {
        put(ierr, rc);
        if rc == abi::MPI_SUCCESS {
            put(newgroup, fortran::Group_c2f(g));
        }
    }
}

// Groups: ompi/mpi/fortran/mpif-h/group_{incl,excl,range_incl,range_excl,union,
// intersection,difference}_f.c of Open MPI v4.1.4. MPI_Fint is int, so the rank arrays and
// the `ranges[][3]` triplets pass through as they are.
fortran_binding! {
    /// `MPI_GROUP_INCL(GROUP, N, RANKS, NEWGROUP, IERROR)`.
    fn ompi_group_incl_f["group_incl", "GROUP_INCL", "Group_incl"](group: *const MPI_Fint, n: *const MPI_Fint, ranks: *const MPI_Fint, newgroup: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference (the binding's contract).
        unsafe { new_group(newgroup, ierr, |g| crate::api::group::Group_incl(fortran::Group_f2c(get(group)), get(n), ranks, g)) }
    }

    /// `MPI_GROUP_EXCL(GROUP, N, RANKS, NEWGROUP, IERROR)`.
    fn ompi_group_excl_f["group_excl", "GROUP_EXCL", "Group_excl"](group: *const MPI_Fint, n: *const MPI_Fint, ranks: *const MPI_Fint, newgroup: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as above.
        unsafe { new_group(newgroup, ierr, |g| crate::api::group::Group_excl(fortran::Group_f2c(get(group)), get(n), ranks, g)) }
    }

    /// `MPI_GROUP_RANGE_INCL(GROUP, N, RANGES, NEWGROUP, IERROR)`, `RANGES(3, N)`.
    fn ompi_group_range_incl_f["group_range_incl", "GROUP_RANGE_INCL", "Group_range_incl"](group: *const MPI_Fint, n: *const MPI_Fint, ranges: *const [MPI_Fint; 3], newgroup: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as above.
        unsafe { new_group(newgroup, ierr, |g| crate::api::group::Group_range_incl(fortran::Group_f2c(get(group)), get(n), ranges, g)) }
    }

    /// `MPI_GROUP_RANGE_EXCL(GROUP, N, RANGES, NEWGROUP, IERROR)`.
    fn ompi_group_range_excl_f["group_range_excl", "GROUP_RANGE_EXCL", "Group_range_excl"](group: *const MPI_Fint, n: *const MPI_Fint, ranges: *const [MPI_Fint; 3], newgroup: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as above.
        unsafe { new_group(newgroup, ierr, |g| crate::api::group::Group_range_excl(fortran::Group_f2c(get(group)), get(n), ranges, g)) }
    }

    /// `MPI_GROUP_UNION(GROUP1, GROUP2, NEWGROUP, IERROR)`.
    fn ompi_group_union_f["group_union", "GROUP_UNION", "Group_union"](group1: *const MPI_Fint, group2: *const MPI_Fint, newgroup: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as above.
        unsafe { new_group(newgroup, ierr, |g| crate::api::group::Group_union(fortran::Group_f2c(get(group1)), fortran::Group_f2c(get(group2)), g)) }
    }

    /// `MPI_GROUP_INTERSECTION(GROUP1, GROUP2, NEWGROUP, IERROR)`.
    fn ompi_group_intersection_f["group_intersection", "GROUP_INTERSECTION", "Group_intersection"](group1: *const MPI_Fint, group2: *const MPI_Fint, newgroup: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as above.
        unsafe { new_group(newgroup, ierr, |g| crate::api::group::Group_intersection(fortran::Group_f2c(get(group1)), fortran::Group_f2c(get(group2)), g)) }
    }

    /// `MPI_GROUP_DIFFERENCE(GROUP1, GROUP2, NEWGROUP, IERROR)`.
    fn ompi_group_difference_f["group_difference", "GROUP_DIFFERENCE", "Group_difference"](group1: *const MPI_Fint, group2: *const MPI_Fint, newgroup: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as above.
        unsafe { new_group(newgroup, ierr, |g| crate::api::group::Group_difference(fortran::Group_f2c(get(group1)), fortran::Group_f2c(get(group2)), g)) }
    }
}

/// `ompi_aint_copy_attr_function` (ompi/attribute/attribute.h, v4.1.4): the MPI-2 Fortran
/// copy callback, every argument by reference.
pub type FortranCopyFn = unsafe extern "C" fn(
    oldcomm: *mut MPI_Fint,
    keyval: *mut MPI_Fint,
    extra_state: *mut MPI_Aint,
    attr_in: *mut MPI_Aint,
    attr_out: *mut MPI_Aint,
    flag: *mut FLogical,
    ierr: *mut MPI_Fint,
);
/// `ompi_aint_delete_attr_function`: note the attribute comes before `extra_state`.
pub type FortranDeleteFn = unsafe extern "C" fn(
    comm: *mut MPI_Fint,
    keyval: *mut MPI_Fint,
    attr_in: *mut MPI_Aint,
    extra_state: *mut MPI_Aint,
    ierr: *mut MPI_Fint,
);

/// `ompi_fint_copy_attr_function`: the MPI-1 Fortran copy callback (`MPI_KEYVAL_CREATE`),
/// every argument an `INTEGER` by reference.
pub type FortranIntCopyFn = unsafe extern "C" fn(
    oldcomm: *mut MPI_Fint,
    keyval: *mut MPI_Fint,
    extra_state: *mut MPI_Fint,
    attr_in: *mut MPI_Fint,
    attr_out: *mut MPI_Fint,
    flag: *mut FLogical,
    ierr: *mut MPI_Fint,
);
/// `ompi_fint_delete_attr_function`.
pub type FortranIntDeleteFn = unsafe extern "C" fn(
    comm: *mut MPI_Fint,
    keyval: *mut MPI_Fint,
    attr_in: *mut MPI_Fint,
    extra_state: *mut MPI_Fint,
    ierr: *mut MPI_Fint,
);

/// The Fortran callbacks of a keyval: MPI-2's on address-sized integers
/// (`MPI_COMM_CREATE_KEYVAL`) or MPI-1's on default integers (`MPI_KEYVAL_CREATE`).
#[derive(Debug, Clone, Copy)]
pub enum FortranCallbacks {
    Aint(Option<FortranCopyFn>, Option<FortranDeleteFn>),
    Int(Option<FortranIntCopyFn>, Option<FortranIntDeleteFn>),
}

/// What a keyval made from Fortran keeps: its callbacks and the application's
/// `extra_state`. One is allocated per keyval and never freed (a keyval's callbacks may run
/// as long as an attribute of it lives, even after `MPI_COMM_FREE_KEYVAL`, §6.7.2).
#[derive(Debug)]
pub struct FortranKeyval {
    pub callbacks: FortranCallbacks,
    pub extra_state: MPI_Aint,
    /// What its attributes are set on: the callbacks get that object as a Fortran handle.
    pub object: AttrObject,
}

/// The Fortran handle of the object an attribute callback was called for.
///
/// # Safety
/// `h` is a handle of the kind `object` names (converting reads no memory).
unsafe fn object_c2f(object: AttrObject, h: *mut c_void) -> MPI_Fint {
    // SAFETY: per the contract.
    unsafe {
        match object {
            AttrObject::Comm => fortran::Comm_c2f(h as MPI_Comm),
            AttrObject::Datatype => fortran::Type_c2f(h as abi::MPI_Datatype),
            AttrObject::Win => fortran::Win_c2f(h as abi::MPI_Win),
        }
    }
}

/// Registers a Fortran keyval with kawarimi: the C trampolines below call its callbacks.
///
/// # Safety
/// `keyval` and `ierr` as in the bindings.
unsafe fn fortran_keyval(
    object: AttrObject,
    callbacks: FortranCallbacks,
    extra_state: MPI_Aint,
    keyval: *mut MPI_Fint,
    ierr: *mut MPI_Fint,
) {
    let kv = Box::into_raw(Box::new(FortranKeyval { callbacks, extra_state, object }));
    let (copy, delete) = (Some(f_copy_trampoline as CCopyFn), Some(f_delete_trampoline as CDeleteFn));
    // SAFETY: kawarimi's own keyval constructors; the trampolines have the C callback types
    // (the same shape for every kind of object: the object is a pointer-sized handle) and
    // receive `kv` back as their extra_state.
    let rc = unsafe {
        match object {
            AttrObject::Comm => comm::Comm_create_keyval(copy, delete, keyval, kv.cast()),
            AttrObject::Datatype => crate::api::dtype::Type_create_keyval(copy, delete, keyval, kv.cast()),
            AttrObject::Win => crate::api::rma::Win_create_keyval(copy, delete, keyval, kv.cast()),
        }
    };
    if rc != abi::MPI_SUCCESS {
        // SAFETY: made above by Box::into_raw and not handed out.
        drop(unsafe { Box::from_raw(kv) });
    }
    // SAFETY: output argument of the binding.
    unsafe { put(ierr, rc) };
}

type CCopyFn = unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, *mut c_void, *mut c_void, *mut c_int) -> c_int;
type CDeleteFn = unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, *mut c_void) -> c_int;

/// The C copy callback registered for a Fortran keyval: calls the Fortran one.
unsafe extern "C" fn f_copy_trampoline(
    oldcomm: *mut c_void,
    keyval: c_int,
    extra_state: *mut c_void,
    attr_in: *mut c_void,
    attr_out: *mut c_void,
    flag: *mut c_int,
) -> c_int {
    // SAFETY: `extra_state` is the leaked FortranKeyval this keyval was registered with.
    let kv = unsafe { &*(extra_state as *const FortranKeyval) };
    // SAFETY: a handle of the keyval's kind of object.
    let mut fcomm = unsafe { object_c2f(kv.object, oldcomm) };
    let (mut k, mut fflag, mut ierr) = (keyval, 0, abi::MPI_SUCCESS);
    // The application's Fortran copy function with references to locals that outlive the
    // call, as Open MPI calls it (ompi/attribute/attribute.c, aint and fint branches).
    let vout: MPI_Aint = match kv.callbacks {
        FortranCallbacks::Aint(Some(f), _) => {
            let (mut extra, mut vin, mut vout) = (kv.extra_state, attr_in as MPI_Aint, 0);
            // SAFETY: as above.
            unsafe { f(&mut fcomm, &mut k, &mut extra, &mut vin, &mut vout, &mut fflag, &mut ierr) };
            vout
        }
        FortranCallbacks::Int(Some(f), _) => {
            // MPI-1 attributes are default integers: the stored value is one, widened.
            let (mut extra, mut vin, mut vout) = (kv.extra_state as MPI_Fint, attr_in as MPI_Aint as MPI_Fint, 0);
            // SAFETY: as above.
            unsafe { f(&mut fcomm, &mut k, &mut extra, &mut vin, &mut vout, &mut fflag, &mut ierr) };
            vout as MPI_Aint
        }
        _ => {
            // SAFETY: kawarimi's output argument.
            unsafe { put(flag, 0) };
            return abi::MPI_SUCCESS;
        }
    };
    if ierr == abi::MPI_SUCCESS {
        // SAFETY: kawarimi's output arguments (a void* slot and an int).
        unsafe {
            put(attr_out as *mut MPI_Aint, vout);
            put(flag, c_int::from(fflag != 0));
        }
    }
    ierr
}

/// The C delete callback registered for a Fortran keyval: calls the Fortran one.
unsafe extern "C" fn f_delete_trampoline(
    comm: *mut c_void,
    keyval: c_int,
    attr: *mut c_void,
    extra_state: *mut c_void,
) -> c_int {
    // SAFETY: as in f_copy_trampoline.
    let kv = unsafe { &*(extra_state as *const FortranKeyval) };
    // SAFETY: as in f_copy_trampoline.
    let mut fcomm = unsafe { object_c2f(kv.object, comm) };
    let (mut k, mut ierr) = (keyval, abi::MPI_SUCCESS);
    match kv.callbacks {
        FortranCallbacks::Aint(_, Some(f)) => {
            let (mut v, mut extra) = (attr as MPI_Aint, kv.extra_state);
            // SAFETY: the application's Fortran delete function, arguments by reference to locals.
            unsafe { f(&mut fcomm, &mut k, &mut v, &mut extra, &mut ierr) };
        }
        FortranCallbacks::Int(_, Some(f)) => {
            let (mut v, mut extra) = (attr as MPI_Aint as MPI_Fint, kv.extra_state as MPI_Fint);
            // SAFETY: as above.
            unsafe { f(&mut fcomm, &mut k, &mut v, &mut extra, &mut ierr) };
        }
        _ => {}
    }
    ierr
}

/// How a predefined attribute's C value, a pointer, reads as Fortran's integer (MPI-3.1
/// §6.7.2, §11.2.6; Open MPI stores them so): the `int` or `MPI_Aint` it points to, or for
/// `MPI_WIN_BASE` the address itself.
#[derive(Clone, Copy)]
enum Predefined {
    Int,
    Aint,
    Address,
}

fn predefined_attr(object: AttrObject, keyval: c_int) -> Option<Predefined> {
    let comm = [
        abi::MPI_TAG_UB,
        abi::MPI_HOST,
        abi::MPI_IO,
        abi::MPI_WTIME_IS_GLOBAL,
        abi::MPI_APPNUM,
        abi::MPI_UNIVERSE_SIZE,
        abi::MPI_LASTUSEDCODE,
    ];
    match object {
        AttrObject::Comm if comm.contains(&keyval) => Some(Predefined::Int),
        AttrObject::Win if keyval == abi::MPI_WIN_BASE => Some(Predefined::Address),
        AttrObject::Win if keyval == abi::MPI_WIN_SIZE => Some(Predefined::Aint),
        AttrObject::Win
            if [abi::MPI_WIN_DISP_UNIT, abi::MPI_WIN_CREATE_FLAVOR, abi::MPI_WIN_MODEL].contains(&keyval) =>
        {
            Some(Predefined::Int)
        }
        _ => None,
    }
}

/// Reads an attribute of the object of Fortran handle `handle` as Fortran sees it: a
/// predefined attribute's integer (see [`Predefined`]), else the stored `void*` value as an
/// address-sized integer.
///
/// # Safety
/// `handle` and `keyval` as in the bindings below.
unsafe fn attr_value(
    object: AttrObject,
    handle: *const MPI_Fint,
    keyval: *const MPI_Fint,
) -> (c_int, Option<MPI_Aint>) {
    // SAFETY: Fortran arguments by reference.
    let (h, k) = unsafe { (get(handle), get(keyval)) };
    let mut v: *mut c_void = std::ptr::null_mut();
    let mut flag: c_int = 0;
    let slot = &mut v as *mut *mut c_void as *mut c_void;
    // SAFETY: kawarimi's own get_attr calls with pointers to locals.
    let rc = unsafe {
        match object {
            AttrObject::Comm => comm::Comm_get_attr(fortran::Comm_f2c(h), k, slot, &mut flag),
            AttrObject::Datatype => crate::api::dtype::Type_get_attr(fortran::Type_f2c(h), k, slot, &mut flag),
            AttrObject::Win => crate::api::rma::Win_get_attr(fortran::Win_f2c(h), k, slot, &mut flag),
        }
    };
    if rc != abi::MPI_SUCCESS || flag == 0 {
        return (rc, None);
    }
    // SAFETY: kawarimi hands predefined attributes as pointers to its own values of these types.
    let val = unsafe {
        match predefined_attr(object, k) {
            Some(_) if v.is_null() => 0,
            Some(Predefined::Int) => *(v as *const c_int) as MPI_Aint,
            Some(Predefined::Aint) => *(v as *const MPI_Aint),
            Some(Predefined::Address) | None => v as MPI_Aint,
        }
    };
    (rc, Some(val))
}

/// `MPI_<OBJECT>_GET_ATTR(HANDLE, KEYVAL, ATTRIBUTE_VAL, FLAG, IERROR)`.
///
/// # Safety
/// Fortran arguments by reference.
unsafe fn get_attr_f(
    object: AttrObject,
    handle: *const MPI_Fint,
    keyval: *const MPI_Fint,
    attribute_val: *mut MPI_Aint,
    flag: *mut FLogical,
    ierr: *mut MPI_Fint,
) {
    // SAFETY: per the contract.
    unsafe {
        let (rc, v) = attr_value(object, handle, keyval);
        put(ierr, rc);
        if rc == abi::MPI_SUCCESS {
            put(flag, if v.is_some() { F_TRUE } else { 0 });
            if let Some(v) = v {
                put(attribute_val, v);
            }
        }
    }
}

/// `MPI_<OBJECT>_SET_ATTR(HANDLE, KEYVAL, ATTRIBUTE_VAL, IERROR)`: the address-sized value is
/// stored as it is.
///
/// # Safety
/// Fortran arguments by reference.
unsafe fn set_attr_f(
    object: AttrObject,
    handle: *const MPI_Fint,
    keyval: *const MPI_Fint,
    value: MPI_Aint,
    ierr: *mut MPI_Fint,
) {
    // SAFETY: per the contract; kawarimi's own set_attr calls.
    unsafe {
        let (h, k, v) = (get(handle), get(keyval), value as *mut c_void);
        let rc = match object {
            AttrObject::Comm => comm::Comm_set_attr(fortran::Comm_f2c(h), k, v),
            AttrObject::Datatype => crate::api::dtype::Type_set_attr(fortran::Type_f2c(h), k, v),
            AttrObject::Win => crate::api::rma::Win_set_attr(fortran::Win_f2c(h), k, v),
        };
        put(ierr, rc);
    }
}

// Attributes: ompi/mpi/fortran/mpif-h/{comm_create_keyval,comm_get_attr,comm_set_attr,
// attr_get,attr_put}_f.c of Open MPI v4.1.4.
fortran_binding! {
    /// `MPI_COMM_CREATE_KEYVAL(COMM_COPY_ATTR_FN, COMM_DELETE_ATTR_FN, COMM_KEYVAL,
    /// EXTRA_STATE, IERROR)`, `EXTRA_STATE` an `INTEGER(KIND=MPI_ADDRESS_KIND)`.
    fn ompi_comm_create_keyval_f["comm_create_keyval", "COMM_CREATE_KEYVAL", "Comm_create_keyval"](copy_fn: Option<FortranCopyFn>, delete_fn: Option<FortranDeleteFn>, keyval: *mut MPI_Fint, extra_state: *const MPI_Aint, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference; `keyval` and `ierr` as the helper wants.
        unsafe { fortran_keyval(AttrObject::Comm, FortranCallbacks::Aint(copy_fn, delete_fn), get(extra_state), keyval, ierr) }
    }

    /// `MPI_KEYVAL_CREATE(COPY_FN, DELETE_FN, KEYVAL, EXTRA_STATE, IERROR)` (MPI-1): default
    /// `INTEGER` values and extra state (ompi/mpi/fortran/mpif-h/keyval_create_f.c, which
    /// calls libmpi's `ompi_attr_create_keyval_fint`).
    fn ompi_keyval_create_f["keyval_create", "KEYVAL_CREATE", "Keyval_create"](copy_fn: Option<FortranIntCopyFn>, delete_fn: Option<FortranIntDeleteFn>, keyval: *mut MPI_Fint, extra_state: *const MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_COMM_CREATE_KEYVAL.
        unsafe { fortran_keyval(AttrObject::Comm, FortranCallbacks::Int(copy_fn, delete_fn), get(extra_state) as MPI_Aint, keyval, ierr) }
    }

    /// `MPI_COMM_GET_ATTR(COMM, COMM_KEYVAL, ATTRIBUTE_VAL, FLAG, IERROR)`.
    fn ompi_comm_get_attr_f["comm_get_attr", "COMM_GET_ATTR", "Comm_get_attr"](comm: *const MPI_Fint, keyval: *const MPI_Fint, attribute_val: *mut MPI_Aint, flag: *mut FLogical, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference.
        unsafe { get_attr_f(AttrObject::Comm, comm, keyval, attribute_val, flag, ierr) }
    }

    /// `MPI_COMM_SET_ATTR(COMM, COMM_KEYVAL, ATTRIBUTE_VAL, IERROR)`.
    fn ompi_comm_set_attr_f["comm_set_attr", "COMM_SET_ATTR", "Comm_set_attr"](comm: *const MPI_Fint, keyval: *const MPI_Fint, attribute_val: *const MPI_Aint, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference.
        unsafe { set_attr_f(AttrObject::Comm, comm, keyval, get(attribute_val), ierr) }
    }

    /// `MPI_TYPE_CREATE_KEYVAL(TYPE_COPY_ATTR_FN, TYPE_DELETE_ATTR_FN, TYPE_KEYVAL, EXTRA_STATE,
    /// IERROR)` (type_create_keyval_f.c calls libmpi's `ompi_attr_create_keyval_aint`).
    fn ompi_type_create_keyval_f["type_create_keyval", "TYPE_CREATE_KEYVAL", "Type_create_keyval"](copy_fn: Option<FortranCopyFn>, delete_fn: Option<FortranDeleteFn>, keyval: *mut MPI_Fint, extra_state: *const MPI_Aint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_COMM_CREATE_KEYVAL.
        unsafe { fortran_keyval(AttrObject::Datatype, FortranCallbacks::Aint(copy_fn, delete_fn), get(extra_state), keyval, ierr) }
    }

    /// `MPI_TYPE_GET_ATTR(DATATYPE, TYPE_KEYVAL, ATTRIBUTE_VAL, FLAG, IERROR)` (reads
    /// `c_type->d_keyhash` through the handle in Open MPI's).
    fn ompi_type_get_attr_f["type_get_attr", "TYPE_GET_ATTR", "Type_get_attr"](datatype: *const MPI_Fint, keyval: *const MPI_Fint, attribute_val: *mut MPI_Aint, flag: *mut FLogical, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference.
        unsafe { get_attr_f(AttrObject::Datatype, datatype, keyval, attribute_val, flag, ierr) }
    }

    /// `MPI_TYPE_SET_ATTR(DATATYPE, TYPE_KEYVAL, ATTRIBUTE_VAL, IERROR)`.
    fn ompi_type_set_attr_f["type_set_attr", "TYPE_SET_ATTR", "Type_set_attr"](datatype: *const MPI_Fint, keyval: *const MPI_Fint, attribute_val: *const MPI_Aint, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference.
        unsafe { set_attr_f(AttrObject::Datatype, datatype, keyval, get(attribute_val), ierr) }
    }

    /// `MPI_WIN_CREATE_KEYVAL(WIN_COPY_ATTR_FN, WIN_DELETE_ATTR_FN, WIN_KEYVAL, EXTRA_STATE,
    /// IERROR)`.
    fn ompi_win_create_keyval_f["win_create_keyval", "WIN_CREATE_KEYVAL", "Win_create_keyval"](copy_fn: Option<FortranCopyFn>, delete_fn: Option<FortranDeleteFn>, keyval: *mut MPI_Fint, extra_state: *const MPI_Aint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_COMM_CREATE_KEYVAL.
        unsafe { fortran_keyval(AttrObject::Win, FortranCallbacks::Aint(copy_fn, delete_fn), get(extra_state), keyval, ierr) }
    }

    /// `MPI_WIN_GET_ATTR(WIN, WIN_KEYVAL, ATTRIBUTE_VAL, FLAG, IERROR)`: the predefined
    /// window attributes are their values (`MPI_WIN_BASE` the address).
    fn ompi_win_get_attr_f["win_get_attr", "WIN_GET_ATTR", "Win_get_attr"](win: *const MPI_Fint, keyval: *const MPI_Fint, attribute_val: *mut MPI_Aint, flag: *mut FLogical, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference.
        unsafe { get_attr_f(AttrObject::Win, win, keyval, attribute_val, flag, ierr) }
    }

    /// `MPI_WIN_SET_ATTR(WIN, WIN_KEYVAL, ATTRIBUTE_VAL, IERROR)`.
    fn ompi_win_set_attr_f["win_set_attr", "WIN_SET_ATTR", "Win_set_attr"](win: *const MPI_Fint, keyval: *const MPI_Fint, attribute_val: *const MPI_Aint, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference.
        unsafe { set_attr_f(AttrObject::Win, win, keyval, get(attribute_val), ierr) }
    }

    /// MPI-1 `MPI_ATTR_GET(COMM, KEYVAL, ATTRIBUTE_VAL, FLAG, IERROR)`, an `INTEGER` value.
    fn ompi_attr_get_f["attr_get", "ATTR_GET", "Attr_get"](comm: *const MPI_Fint, keyval: *const MPI_Fint, attribute_val: *mut MPI_Fint, flag: *mut FLogical, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference.
        unsafe {
            let (rc, v) = attr_value(AttrObject::Comm, comm, keyval);
            put(ierr, rc);
            if rc == abi::MPI_SUCCESS {
                put(flag, if v.is_some() { F_TRUE } else { 0 });
                if let Some(v) = v {
                    // Open MPI's translate_to_fint: the low INTEGER of the value.
                    put(attribute_val, v as MPI_Fint);
                }
            }
        }
    }

    /// MPI-1 `MPI_ATTR_PUT(COMM, KEYVAL, ATTRIBUTE_VAL, IERROR)`.
    fn ompi_attr_put_f["attr_put", "ATTR_PUT", "Attr_put"](comm: *const MPI_Fint, keyval: *const MPI_Fint, attribute_val: *const MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_COMM_SET_ATTR; the INTEGER is widened to an address-sized value.
        unsafe { set_attr_f(AttrObject::Comm, comm, keyval, get(attribute_val) as MPI_Aint, ierr) }
    }
}

/// Stores a completed request's new Fortran handle and its status, as Open MPI's
/// `wait_f.c`/`test_f.c` do, but through `MPI_Request_c2f`: Open MPI reads
/// `c_req->req_f_to_c_index`, which crashed for a persistent request (a kawarimi handle
/// that stays allocated after completion, §3.9). A Fortran `MPI_STATUS_IGNORE` (the address
/// of the common block `mpi_fortran_status_ignore_`) gets no status.
///
/// # Safety
/// `request` and `status` as in the bindings below.
unsafe fn complete(c_req: abi::MPI_Request, c_status: &abi::MPI_Status, request: *mut MPI_Fint, status: *mut MPI_Fint) {
    // SAFETY: output arguments of the binding; converting a handle reads no memory.
    unsafe {
        put(request, fortran::Request_c2f(c_req));
        if abi::FortranSentinel::from_address(status as usize) != Some(abi::FortranSentinel::StatusIgnore) {
            fortran::Status_c2f(c_status, status);
        }
    }
}

// Completion: ompi/mpi/fortran/mpif-h/{wait,test}_f.c of Open MPI v4.1.4.
fortran_binding! {
    /// `MPI_WAIT(REQUEST, STATUS, IERROR)`.
    fn ompi_wait_f["wait", "WAIT", "Wait"](request: *mut MPI_Fint, status: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference; kawarimi's own MPI_Wait with locals.
        unsafe {
            let mut c_req = fortran::Request_f2c(get(request));
            let mut c_status = abi::MPI_Status::default();
            let rc = req::Wait(&mut c_req, &mut c_status);
            put(ierr, rc);
            if rc == abi::MPI_SUCCESS {
                complete(c_req, &c_status, request, status);
            }
        }
    }

    /// `MPI_TEST(REQUEST, FLAG, STATUS, IERROR)`.
    fn ompi_test_f["test", "TEST", "Test"](request: *mut MPI_Fint, flag: *mut FLogical, status: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_WAIT.
        unsafe {
            let mut c_req = fortran::Request_f2c(get(request));
            let mut c_status = abi::MPI_Status::default();
            let mut c_flag: c_int = 0;
            let rc = req::Test(&mut c_req, &mut c_flag, &mut c_status);
            put(ierr, rc);
            put(flag, if c_flag != 0 { F_TRUE } else { 0 });
            if rc == abi::MPI_SUCCESS && c_flag != 0 {
                complete(c_req, &c_status, request, status);
            }
        }
    }
}

/// The C requests of a Fortran array of `count` request handles.
///
/// # Safety
/// `requests` points to `count` Fortran integers.
unsafe fn c_requests(count: *const MPI_Fint, requests: *const MPI_Fint) -> Vec<abi::MPI_Request> {
    // SAFETY: per the contract.
    let n = unsafe { get(count) }.max(0) as usize;
    // SAFETY: per the contract; converting a handle reads no memory.
    (0..n).map(|i| unsafe { fortran::Request_f2c(get(requests.add(i))) }).collect()
}

/// Writes the requests back as Fortran handles (completed ones are `MPI_REQUEST_NULL` now,
/// persistent ones keep their handle) and statuses `which` (indices into both arrays),
/// unless the statuses argument is `MPI_STATUSES_IGNORE`.
///
/// # Safety
/// `requests` holds `c_req.len()` Fortran integers; `statuses` is the Fortran sentinel or
/// holds `c_req.len()` statuses.
unsafe fn put_back_all(
    c_req: &[abi::MPI_Request],
    c_status: &[abi::MPI_Status],
    which: impl Iterator<Item = usize>,
    requests: *mut MPI_Fint,
    statuses: *mut MPI_Fint,
) {
    let ignore = abi::FortranSentinel::from_address(statuses as usize) == Some(abi::FortranSentinel::StatusesIgnore);
    // SAFETY: per the contract; converting a handle reads no memory.
    unsafe {
        for (i, &r) in c_req.iter().enumerate() {
            put(requests.add(i), fortran::Request_c2f(r));
        }
        if !ignore && !statuses.is_null() {
            for i in which {
                fortran::Status_c2f(&c_status[i], statuses.add(i * fortran::STATUS_INTS));
            }
        }
    }
}

/// Writes one status unless `status` is Fortran's `MPI_STATUS_IGNORE`.
///
/// # Safety
/// `status` is the sentinel or a writable Fortran status.
unsafe fn put_status(c_status: &abi::MPI_Status, status: *mut MPI_Fint) {
    if abi::FortranSentinel::from_address(status as usize) != Some(abi::FortranSentinel::StatusIgnore)
        && !status.is_null()
    {
        // SAFETY: per the contract.
        unsafe { fortran::Status_c2f(c_status, status) };
    }
}

/// A Fortran index: one-based, `MPI_UNDEFINED` as it is.
fn f_index(i: c_int) -> MPI_Fint {
    if i == abi::MPI_UNDEFINED {
        i
    } else {
        i + 1
    }
}

// Completion of several requests: ompi/mpi/fortran/mpif-h/{wait,test}{all,any,some}_f.c of
// Open MPI v4.1.4, which convert the array, call PMPI and read `req_f_to_c_index` back.
fortran_binding! {
    /// `MPI_WAITALL(COUNT, ARRAY_OF_REQUESTS, ARRAY_OF_STATUSES, IERROR)`.
    fn ompi_waitall_f["waitall", "WAITALL", "Waitall"](count: *const MPI_Fint, requests: *mut MPI_Fint, statuses: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference; kawarimi's own MPI_Waitall on local arrays.
        unsafe {
            let mut c_req = c_requests(count, requests);
            let mut c_status = vec![abi::MPI_Status::default(); c_req.len()];
            let rc = req::Waitall(c_req.len() as c_int, c_req.as_mut_ptr(), c_status.as_mut_ptr());
            put(ierr, rc);
            if rc == abi::MPI_SUCCESS || rc == abi::MPI_ERR_IN_STATUS {
                put_back_all(&c_req, &c_status, 0..c_req.len(), requests, statuses);
            }
        }
    }

    /// `MPI_TESTALL(COUNT, ARRAY_OF_REQUESTS, FLAG, ARRAY_OF_STATUSES, IERROR)`.
    fn ompi_testall_f["testall", "TESTALL", "Testall"](count: *const MPI_Fint, requests: *mut MPI_Fint, flag: *mut FLogical, statuses: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_WAITALL.
        unsafe {
            let mut c_req = c_requests(count, requests);
            let mut c_status = vec![abi::MPI_Status::default(); c_req.len()];
            let mut c_flag: c_int = 0;
            let rc = req::Testall(c_req.len() as c_int, c_req.as_mut_ptr(), &mut c_flag, c_status.as_mut_ptr());
            put(ierr, rc);
            put(flag, if c_flag != 0 { F_TRUE } else { 0 });
            if (rc == abi::MPI_SUCCESS || rc == abi::MPI_ERR_IN_STATUS) && c_flag != 0 {
                put_back_all(&c_req, &c_status, 0..c_req.len(), requests, statuses);
            }
        }
    }

    /// `MPI_WAITANY(COUNT, ARRAY_OF_REQUESTS, INDEX, STATUS, IERROR)`.
    fn ompi_waitany_f["waitany", "WAITANY", "Waitany"](count: *const MPI_Fint, requests: *mut MPI_Fint, index: *mut MPI_Fint, status: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_WAITALL.
        unsafe {
            let mut c_req = c_requests(count, requests);
            let mut c_status = abi::MPI_Status::default();
            let mut c_index: c_int = abi::MPI_UNDEFINED;
            let rc = req::Waitany(c_req.len() as c_int, c_req.as_mut_ptr(), &mut c_index, &mut c_status);
            put(ierr, rc);
            if rc == abi::MPI_SUCCESS {
                put(index, f_index(c_index));
                if c_index != abi::MPI_UNDEFINED {
                    let i = c_index as usize;
                    put(requests.add(i), fortran::Request_c2f(c_req[i]));
                }
                put_status(&c_status, status);
            }
        }
    }

    /// `MPI_TESTANY(COUNT, ARRAY_OF_REQUESTS, INDEX, FLAG, STATUS, IERROR)`.
    fn ompi_testany_f["testany", "TESTANY", "Testany"](count: *const MPI_Fint, requests: *mut MPI_Fint, index: *mut MPI_Fint, flag: *mut FLogical, status: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_WAITALL.
        unsafe {
            let mut c_req = c_requests(count, requests);
            let mut c_status = abi::MPI_Status::default();
            let mut c_index: c_int = abi::MPI_UNDEFINED;
            let mut c_flag: c_int = 0;
            let rc = req::Testany(c_req.len() as c_int, c_req.as_mut_ptr(), &mut c_index, &mut c_flag, &mut c_status);
            put(ierr, rc);
            put(flag, if c_flag != 0 { F_TRUE } else { 0 });
            if rc == abi::MPI_SUCCESS {
                put(index, f_index(c_index));
                if c_flag != 0 && c_index != abi::MPI_UNDEFINED {
                    let i = c_index as usize;
                    put(requests.add(i), fortran::Request_c2f(c_req[i]));
                }
                if c_flag != 0 {
                    put_status(&c_status, status);
                }
            }
        }
    }

    /// `MPI_WAITSOME(INCOUNT, ARRAY_OF_REQUESTS, OUTCOUNT, ARRAY_OF_INDICES, ARRAY_OF_STATUSES, IERROR)`.
    fn ompi_waitsome_f["waitsome", "WAITSOME", "Waitsome"](incount: *const MPI_Fint, requests: *mut MPI_Fint, outcount: *mut MPI_Fint, indices: *mut MPI_Fint, statuses: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_WAITALL.
        unsafe { some(incount, requests, outcount, indices, statuses, ierr, true) }
    }

    /// `MPI_TESTSOME(INCOUNT, ARRAY_OF_REQUESTS, OUTCOUNT, ARRAY_OF_INDICES, ARRAY_OF_STATUSES, IERROR)`.
    fn ompi_testsome_f["testsome", "TESTSOME", "Testsome"](incount: *const MPI_Fint, requests: *mut MPI_Fint, outcount: *mut MPI_Fint, indices: *mut MPI_Fint, statuses: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as in MPI_WAITALL.
        unsafe { some(incount, requests, outcount, indices, statuses, ierr, false) }
    }
}

/// `MPI_WAITSOME` (`block`) and `MPI_TESTSOME`: the completed requests' indices (one-based)
/// and statuses go to the first `outcount` places of the Fortran arrays.
///
/// # Safety
/// The Fortran arguments of those bindings.
unsafe fn some(
    incount: *const MPI_Fint,
    requests: *mut MPI_Fint,
    outcount: *mut MPI_Fint,
    indices: *mut MPI_Fint,
    statuses: *mut MPI_Fint,
    ierr: *mut MPI_Fint,
    block: bool,
) {
    // SAFETY: per the contract.
    unsafe {
        let mut c_req = c_requests(incount, requests);
        let n = c_req.len();
        let mut c_status = vec![abi::MPI_Status::default(); n];
        let mut c_indices = vec![0 as c_int; n];
        let mut c_out: c_int = 0;
        let rc = if block {
            req::Waitsome(n as c_int, c_req.as_mut_ptr(), &mut c_out, c_indices.as_mut_ptr(), c_status.as_mut_ptr())
        } else {
            req::Testsome(n as c_int, c_req.as_mut_ptr(), &mut c_out, c_indices.as_mut_ptr(), c_status.as_mut_ptr())
        };
        put(ierr, rc);
        if rc != abi::MPI_SUCCESS && rc != abi::MPI_ERR_IN_STATUS {
            return;
        }
        put(outcount, c_out);
        let done = if c_out == abi::MPI_UNDEFINED { 0 } else { c_out as usize };
        for (k, &i) in c_indices[..done].iter().enumerate() {
            put(indices.add(k), f_index(i));
        }
        // The k-th completed request's status is the k-th of the arrays (§3.7.5).
        put_back_all(&c_req, &c_status, 0..done, requests, statuses);
    }
}

/// `SUBROUTINE HANDLER(COMM, ERROR_CODE)`: a Fortran error handler.
pub type FortranErrhandlerFn = unsafe extern "C" fn(*mut MPI_Fint, *mut MPI_Fint);

/// Registers a Fortran error handler for communicators (`for_windows`: for windows) and
/// returns its Fortran handle.
///
/// # Safety
/// `errhandler` and `ierr` as in the bindings below.
unsafe fn fortran_errhandler(
    function: Option<FortranErrhandlerFn>,
    for_windows: bool,
    errhandler: *mut MPI_Fint,
    ierr: *mut MPI_Fint,
) {
    let name = if for_windows { "MPI_Win_create_errhandler" } else { "MPI_Comm_create_errhandler" };
    let rc = crate::export::call(name, None, |s| {
        let Some(f) = function else {
            return crate::state::fail(kawarimi_runtime::error::ErrorClass::Arg, "NULL error handler");
        };
        let handler = if for_windows {
            crate::state::ErrhandlerFn::FortranWin(f)
        } else {
            crate::state::ErrhandlerFn::Fortran(f)
        };
        let i = s.errhandlers.insert(handler).ok_or_else(|| crate::state::table_full("error handlers"))?;
        let h = crate::state::encode(crate::state::Kind::Errhandler, i) as abi::MPI_Errhandler;
        // SAFETY: output argument of the binding; converting a handle reads no memory.
        unsafe { put(errhandler, fortran::Errhandler_c2f(h)) };
        Ok(())
    });
    // SAFETY: output argument of the binding.
    unsafe { put(ierr, rc) };
}

// Error handlers: ompi/mpi/fortran/mpif-h/{comm_create_errhandler,errhandler_create}_f.c of
// Open MPI v4.1.4.
fortran_binding! {
    /// `MPI_OP_CREATE(USER_FN, COMMUTE, OP, IERROR)` (ompi/mpi/fortran/mpif-h/op_create_f.c,
    /// v4.1.4, which after `PMPI_Op_create` sets a flag in the op's struct, through the
    /// handle: a crash on kawarimi's, as MUMPS met). The function is called with the datatype
    /// as a Fortran handle.
    fn ompi_op_create_f["op_create", "OP_CREATE", "Op_create"](function: Option<abi::MPI_User_function>, commute: *const FLogical, op: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        let mut c_op: abi::MPI_Op = std::ptr::null_mut();
        // SAFETY: Fortran arguments by reference; kawarimi's own op constructor writes `c_op`.
        unsafe {
            let rc = crate::api::op::create_op("MPI_OP_CREATE", function, get(commute) != 0, true, &mut c_op);
            if rc == abi::MPI_SUCCESS {
                put(op, fortran::Op_c2f(c_op));
            }
            put(ierr, rc);
        }
    }

    /// `MPI_TYPE_MATCH_SIZE(TYPECLASS, SIZE, DATATYPE, IERROR)` (type_match_size_f.c asks
    /// libmpi's own datatype tables, which were never initialised): kawarimi's answer, the
    /// Fortran type of that class and size, as a Fortran handle (`MPI_DATATYPE_NULL`'s on an
    /// error, as Open MPI's).
    fn ompi_type_match_size_f["type_match_size", "TYPE_MATCH_SIZE", "Type_match_size"](typeclass: *const MPI_Fint, size: *const MPI_Fint, datatype: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        let mut t = abi::predefined().datatype_handle(abi::PredefDatatype::DatatypeNull) as abi::MPI_Datatype;
        // SAFETY: Fortran arguments by reference; kawarimi's own MPI_Type_match_size writes `t`.
        unsafe {
            let rc = crate::api::dtype::Type_match_size(get(typeclass), get(size), &mut t);
            put(datatype, fortran::Type_c2f(t));
            put(ierr, rc);
        }
    }

    /// `MPI_COMM_CREATE_ERRHANDLER(FUNCTION, ERRHANDLER, IERROR)`.
    fn ompi_comm_create_errhandler_f["comm_create_errhandler", "COMM_CREATE_ERRHANDLER", "Comm_create_errhandler"](function: Option<FortranErrhandlerFn>, errhandler: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: Fortran arguments by reference.
        unsafe { fortran_errhandler(function, false, errhandler, ierr) }
    }

    /// `MPI_ERRHANDLER_CREATE(FUNCTION, ERRHANDLER, IERROR)` (MPI-1 name).
    fn ompi_errhandler_create_f["errhandler_create", "ERRHANDLER_CREATE", "Errhandler_create"](function: Option<FortranErrhandlerFn>, errhandler: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as above.
        unsafe { fortran_errhandler(function, false, errhandler, ierr) }
    }

    /// `MPI_WIN_CREATE_ERRHANDLER(FUNCTION, ERRHANDLER, IERROR)` (win_create_errhandler_f.c
    /// makes an Open MPI error handler object, which kawarimi's windows know nothing of): the
    /// handler is called with the window's Fortran handle.
    fn ompi_win_create_errhandler_f["win_create_errhandler", "WIN_CREATE_ERRHANDLER", "Win_create_errhandler"](function: Option<FortranErrhandlerFn>, errhandler: *mut MPI_Fint, ierr: *mut MPI_Fint) {
        // SAFETY: as above.
        unsafe { fortran_errhandler(function, true, errhandler, ierr) }
    }
}
