//! The MPI tool information interface (MPI-3.1 §14.3), answered honestly: kawarimi exposes
//! no control or performance variables and no categories (its own counters go to
//! `KAWARIMI_REPORT` and `kawarimi ctl status`), so every count is 0 and every index, name
//! or handle a tool asks about is refused with the interface's own error codes. Tools and
//! libraries that probe the interface (mpi4py, TAU, Score-P) then see an empty one rather
//! than a job that aborts.
//!
//! The interface works before `MPI_Init` and after `MPI_Finalize` (§14.3.4), so none of
//! this touches the MPI state: the interface's initialisation count and its sessions are
//! kept here. Errors are returned, never raised through an error handler (§14.3.9).

use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::abi::{self, MPI_Datatype};

/// `MPI_T_init_thread` calls not yet matched by `MPI_T_finalize`.
static INITIALIZED: AtomicU32 = AtomicU32::new(0);
/// Performance-variable sessions handed out and not freed, by handle value.
static SESSIONS: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());
static NEXT_SESSION: AtomicUsize = AtomicUsize::new(1);

type Session = *mut c_void;
type Handle = *mut c_void;

/// Runs `f` if the interface is initialised; its error code otherwise.
fn initialised(f: impl FnOnce() -> c_int) -> c_int {
    if INITIALIZED.load(Ordering::Acquire) == 0 {
        return abi::MPI_T_ERR_NOT_INITIALIZED;
    }
    f()
}

/// Writes `v` through `p`, or returns `MPI_T_ERR_INVALID` when `p` is NULL.
fn put<T>(p: *mut T, v: T) -> c_int {
    if p.is_null() {
        return abi::MPI_T_ERR_INVALID;
    }
    // SAFETY: a non-null output argument of the call, which the tool provides writable.
    unsafe { p.write(v) };
    abi::MPI_SUCCESS
}

mpi_fn! {
    fn T_init_thread(required: c_int, provided: *mut c_int) -> c_int {
        let granted = required.clamp(abi::MPI_THREAD_SINGLE, abi::MPI_THREAD_FUNNELED);
        let rc = put(provided, granted);
        if rc == abi::MPI_SUCCESS {
            INITIALIZED.fetch_add(1, Ordering::AcqRel);
        }
        rc
    }

    fn T_finalize() -> c_int {
        match INITIALIZED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
            Ok(_) => abi::MPI_SUCCESS,
            Err(_) => abi::MPI_T_ERR_NOT_INITIALIZED,
        }
    }

    fn T_cvar_get_num(num_cvar: *mut c_int) -> c_int {
        initialised(|| put(num_cvar, 0))
    }

    fn T_cvar_get_info(_cvar_index: c_int, _name: *mut c_char, _name_len: *mut c_int, _verbosity: *mut c_int, _datatype: *mut MPI_Datatype, _enumtype: *mut Handle, _desc: *mut c_char, _desc_len: *mut c_int, _bind: *mut c_int, _scope: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_INDEX)
    }

    fn T_cvar_get_index(_name: *const c_char, _cvar_index: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_NAME)
    }

    fn T_cvar_handle_alloc(_cvar_index: c_int, _obj_handle: *mut c_void, _handle: *mut Handle, _count: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_INDEX)
    }

    fn T_cvar_handle_free(_handle: *mut Handle) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_HANDLE)
    }

    fn T_cvar_read(_handle: Handle, _buf: *mut c_void) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_HANDLE)
    }

    fn T_cvar_write(_handle: Handle, _buf: *const c_void) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_HANDLE)
    }

    fn T_category_get_num(num_cat: *mut c_int) -> c_int {
        initialised(|| put(num_cat, 0))
    }

    fn T_category_get_info(_cat_index: c_int, _name: *mut c_char, _name_len: *mut c_int, _desc: *mut c_char, _desc_len: *mut c_int, _num_cvars: *mut c_int, _num_pvars: *mut c_int, _num_categories: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_INDEX)
    }

    fn T_category_get_index(_name: *const c_char, _category_index: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_NAME)
    }

    fn T_category_get_cvars(_cat_index: c_int, _len: c_int, _indices: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_INDEX)
    }

    fn T_category_get_pvars(_cat_index: c_int, _len: c_int, _indices: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_INDEX)
    }

    fn T_category_get_categories(_cat_index: c_int, _len: c_int, _indices: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_INDEX)
    }

    fn T_category_changed(stamp: *mut c_int) -> c_int {
        // The (empty) set of categories never changes.
        initialised(|| put(stamp, 0))
    }

    fn T_pvar_get_num(num_pvar: *mut c_int) -> c_int {
        initialised(|| put(num_pvar, 0))
    }

    fn T_pvar_get_info(_pvar_index: c_int, _name: *mut c_char, _name_len: *mut c_int, _verbosity: *mut c_int, _var_class: *mut c_int, _datatype: *mut MPI_Datatype, _enumtype: *mut Handle, _desc: *mut c_char, _desc_len: *mut c_int, _bind: *mut c_int, _readonly: *mut c_int, _continuous: *mut c_int, _atomic: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_INDEX)
    }

    fn T_pvar_get_index(_name: *const c_char, _var_class: c_int, _pvar_index: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_NAME)
    }

    fn T_pvar_session_create(session: *mut Session) -> c_int {
        initialised(|| {
            let s = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
            let rc = put(session, s as Session);
            if rc == abi::MPI_SUCCESS {
                SESSIONS.lock().insert(s);
            }
            rc
        })
    }

    fn T_pvar_session_free(session: *mut Session) -> c_int {
        initialised(|| {
            if session.is_null() {
                return abi::MPI_T_ERR_INVALID;
            }
            // SAFETY: non-null in/out argument.
            let s = unsafe { *session } as usize;
            if !SESSIONS.lock().remove(&s) {
                return abi::MPI_T_ERR_INVALID_SESSION;
            }
            // MPI_T_PVAR_SESSION_NULL.
            put(session, std::ptr::null_mut())
        })
    }

    fn T_pvar_handle_alloc(session: Session, _pvar_index: c_int, _obj_handle: *mut c_void, _handle: *mut Handle, _count: *mut c_int) -> c_int {
        initialised(|| if SESSIONS.lock().contains(&(session as usize)) { abi::MPI_T_ERR_INVALID_INDEX } else { abi::MPI_T_ERR_INVALID_SESSION })
    }

    fn T_pvar_handle_free(session: Session, _handle: *mut Handle) -> c_int {
        initialised(|| pvar_handle_error(session))
    }

    fn T_pvar_start(session: Session, _handle: Handle) -> c_int {
        initialised(|| pvar_handle_error(session))
    }

    fn T_pvar_stop(session: Session, _handle: Handle) -> c_int {
        initialised(|| pvar_handle_error(session))
    }

    fn T_pvar_read(session: Session, _handle: Handle, _buf: *mut c_void) -> c_int {
        initialised(|| pvar_handle_error(session))
    }

    fn T_pvar_write(session: Session, _handle: Handle, _buf: *const c_void) -> c_int {
        initialised(|| pvar_handle_error(session))
    }

    fn T_pvar_reset(session: Session, _handle: Handle) -> c_int {
        initialised(|| pvar_handle_error(session))
    }

    fn T_pvar_readreset(session: Session, _handle: Handle, _buf: *mut c_void) -> c_int {
        initialised(|| pvar_handle_error(session))
    }

    fn T_enum_get_info(_enumtype: Handle, _num: *mut c_int, _name: *mut c_char, _name_len: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_HANDLE)
    }

    fn T_enum_get_item(_enumtype: Handle, _index: c_int, _value: *mut c_int, _name: *mut c_char, _name_len: *mut c_int) -> c_int {
        initialised(|| abi::MPI_T_ERR_INVALID_HANDLE)
    }
}

/// A performance-variable handle can only be invalid (none is ever allocated); a session
/// that was never created, or was freed, is named as such first.
fn pvar_handle_error(session: Session) -> c_int {
    if SESSIONS.lock().contains(&(session as usize)) {
        abi::MPI_T_ERR_INVALID_HANDLE
    } else {
        abi::MPI_T_ERR_INVALID_SESSION
    }
}
