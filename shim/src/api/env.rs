//! Environment management (MPI-3.1 chapter 8) and start-up/shut-down (§8.7).

use std::ffi::{c_char, c_double, c_int, c_void};

use kawarimi_runtime::engine::EngineSwitch;
use kawarimi_runtime::error::ErrorClass;
use kawarimi_runtime::switch::{spawn_control_thread, SwitchShared};
use kawarimi_runtime::wireup;
use kawarimi_runtime::world::{World, WIREUP_TIMEOUT};

use crate::abi::{self, MPI_Aint, MPI_Comm, MPI_Errhandler, MPI_Info};
use crate::api::attr::{attrs_with_keyvals, delete_attrs, AttrOwner};
use crate::export::{abort_job, call, call_around, die};
use crate::mem::{c_string, out};
use crate::state::{fail, CommEntry, Fail, Handler, Res, State, UserError, STATE};

/// What `MPI_Init_thread` provides: every call takes the state lock, so any thread may call at
/// any time; at `MPI_THREAD_MULTIPLE` the blocking point-to-point, completion, probe,
/// collective and window-synchronisation calls let it go while they wait
/// (`export::call_blocking`), and so do the communicator and window constructors and
/// `MPI_Win_free` (`export::call_constructing`; concurrent context agreements stay distinct,
/// see `kawarimi_runtime::construct::agree_ctx`). `MPI_Finalize` waits holding it, which the
/// standard allows: it is called by one thread once every other has finished its MPI calls.
const PROVIDED_THREAD_LEVEL: c_int = abi::MPI_THREAD_MULTIPLE;

fn init(s: &mut State, required: c_int) -> Res<()> {
    if s.initialized {
        return fail(ErrorClass::Other, "MPI is already initialized");
    }
    let proc = World::detect()?;
    // Before any transport: the verbs registration cache keeps only memory made stable here.
    crate::memhooks::install();
    let core_config = kawarimi_runtime::core::CoreConfig::from_env()?;
    let wired = wireup::wire_up(&proc, WIREUP_TIMEOUT, core_config.largest_frame_bytes())?;
    crate::cleanup::install();
    if proc.launcher != "singleton" {
        // A rank whose launcher is killed ends too, as under native Open MPI.
        kawarimi_runtime::lifeline::watch(|why| die("the launcher watch", &why, 1)).map_err(|e| Fail {
            class: ErrorClass::Other,
            detail: e,
            handler: Handler::Fatal,
        })?;
    }
    let rank = proc.rank;
    let mut world = World::new(proc, wired.transport, core_config)?;
    let shared = SwitchShared::new();
    shared.set_transport(world.engine.transport_summary());
    world.engine.switch = Some(EngineSwitch::new(shared.clone(), Box::new(wired.rewire), WIREUP_TIMEOUT));
    world.engine.refresh_waker();
    if let Some(addr) = wired.control.relay_addr {
        // The control thread takes switch commands even while the application computes.
        let host = world.hostname.clone();
        spawn_control_thread(addr, &wired.control.secret, rank, host, shared, Box::new(poke)).map_err(|e| Fail {
            class: ErrorClass::Other,
            detail: format!("control thread: {e}"),
            handler: Handler::Fatal,
        })?;
    }
    world.control = Some(wired.control);
    let world_entry = CommEntry {
        comm: world.world.clone(),
        handler: Handler::Fatal,
        name: "MPI_COMM_WORLD".into(),
        attrs: Default::default(),
    };
    let self_entry = CommEntry {
        comm: world.self_comm.clone(),
        handler: Handler::Fatal,
        name: "MPI_COMM_SELF".into(),
        attrs: Default::default(),
    };
    let w = s.comms.insert(world_entry);
    let me = s.comms.insert(self_entry);
    assert_eq!((w, me), (Some(crate::state::WORLD_INDEX), Some(crate::state::SELF_INDEX)));
    s.world = Some(world);
    s.initialized = true;
    s.thread_level = required.min(PROVIDED_THREAD_LEVEL);
    if s.thread_level == abi::MPI_THREAD_MULTIPLE {
        crate::export::set_thread_multiple();
    }
    s.main_thread = Some(std::thread::current().id());
    crate::widefloat::install();
    Ok(())
}

/// Runs one switch step for the control thread when the application is not inside MPI
/// (when it is, its own wait loop runs the step and this gives up after a moment).
fn poke() {
    if let Some(mut guard) = STATE.try_lock_for(std::time::Duration::from_millis(2)) {
        if let Some(w) = guard.as_mut().and_then(|s| s.world.as_mut()) {
            // A failure is recorded by the engine and reported by the control thread; the
            // application meets it at its next MPI call.
            let _ = w.engine.switch_step();
        }
    }
}

mpi_fn! {
    fn Init(_argc: *mut c_int, _argv: *mut *mut *mut c_char) -> c_int {
        call("MPI_Init", None, |s| init(s, abi::MPI_THREAD_SINGLE))
    }

    fn Init_thread(_argc: *mut c_int, _argv: *mut *mut *mut c_char, required: c_int, provided: *mut c_int) -> c_int {
        call("MPI_Init_thread", None, |s| {
            init(s, required)?;
            // SAFETY: `provided` is the caller's output argument.
            unsafe { out(provided, s.thread_level) }
        })
    }

    fn Initialized(flag: *mut c_int) -> c_int {
        let v = STATE.lock().as_ref().is_some_and(|s| s.initialized);
        // SAFETY: `flag` is the caller's output argument. Callable before MPI_Init (§8.7).
        match unsafe { out(flag, v as c_int) } {
            Ok(()) => abi::MPI_SUCCESS,
            Err(_) => abi::MPI_ERR_ARG,
        }
    }

    fn Finalized(flag: *mut c_int) -> c_int {
        let v = STATE.lock().as_ref().is_some_and(|s| s.finalized);
        // SAFETY: `flag` is the caller's output argument. Callable after MPI_Finalize.
        match unsafe { out(flag, v as c_int) } {
            Ok(()) => abi::MPI_SUCCESS,
            Err(_) => abi::MPI_ERR_ARG,
        }
    }

    fn Finalize() -> c_int {
        // MPI_Finalize first deletes the attributes of MPI_COMM_SELF, in the reverse order of
        // their setting, running their delete callbacks (§8.7.1), which libraries use as a
        // finalize hook and which may call MPI.
        let self_comm = abi::predefined().comm_handle(abi::PredefComm::SelfComm) as MPI_Comm;
        call_around(
            "MPI_Finalize",
            None,
            |s| {
                s.world()?;
                attrs_with_keyvals(s, AttrOwner::Comm(self_comm))
            },
            // Newest setting first.
            |attrs| delete_attrs(AttrOwner::Comm(self_comm), attrs),
            |s, ()| {
                s.comms.get_mut(crate::state::SELF_INDEX).expect("MPI_COMM_SELF").attrs.clear();
                s.world()?.finalize()?;
                s.world = None;
                s.finalized = true;
                Ok(())
            },
        )
    }

    fn Query_thread(provided: *mut c_int) -> c_int {
        call("MPI_Query_thread", None, |s| {
            s.world()?;
            // SAFETY: caller's output argument.
            unsafe { out(provided, s.thread_level) }
        })
    }

    fn Is_thread_main(flag: *mut c_int) -> c_int {
        call("MPI_Is_thread_main", None, |s| {
            s.world()?;
            let main = s.main_thread == Some(std::thread::current().id());
            // SAFETY: caller's output argument.
            unsafe { out(flag, main as c_int) }
        })
    }

    fn Abort(comm: MPI_Comm, errorcode: c_int) -> c_int {
        let _ = comm;
        abort_job(&format!("the application called MPI_Abort with error code {errorcode}"), errorcode)
    }

    fn Wtime() -> c_double {
        wtime()
    }

    fn Pcontrol(_level: c_int) -> c_int {
        // Profiling control (§14.2.4): kawarimi has no profiling levels, so this is the
        // standard's "no effect".
        abi::MPI_SUCCESS
    }

    fn Wtick() -> c_double {
        1e-9
    }

    fn Get_processor_name(name: *mut c_char, resultlen: *mut c_int) -> c_int {
        call("MPI_Get_processor_name", None, |_| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            // SAFETY: `name` has MPI_MAX_PROCESSOR_NAME bytes (§8.1.1).
            let n = unsafe { c_string(name, abi::MPI_MAX_PROCESSOR_NAME as usize, host.trim())? };
            // SAFETY: caller's output argument.
            unsafe { out(resultlen, n) }
        })
    }

    fn Get_version(version: *mut c_int, subversion: *mut c_int) -> c_int {
        // SAFETY: caller's output arguments; callable at any time (§8.1.1).
        let r = unsafe { out(version, abi::MPI_VERSION).and_then(|_| out(subversion, abi::MPI_SUBVERSION)) };
        if r.is_ok() { abi::MPI_SUCCESS } else { abi::MPI_ERR_ARG }
    }

    fn Get_library_version(version: *mut c_char, resultlen: *mut c_int) -> c_int {
        let text = format!("kawarimi {} (MPI {}.{} over Open MPI 4.1 ABI)", env!("CARGO_PKG_VERSION"), abi::MPI_VERSION, abi::MPI_SUBVERSION);
        // SAFETY: `version` has MPI_MAX_LIBRARY_VERSION_STRING bytes (§8.1.1).
        let r = unsafe { c_string(version, abi::MPI_MAX_LIBRARY_VERSION_STRING as usize, &text) }
            // SAFETY: caller's output argument.
            .and_then(|n| unsafe { out(resultlen, n) });
        if r.is_ok() { abi::MPI_SUCCESS } else { abi::MPI_ERR_ARG }
    }

    fn Error_class(errorcode: c_int, errorclass: *mut c_int) -> c_int {
        call("MPI_Error_class", None, |s| {
            let class = match (user_error(s, errorcode), predefined_error(errorcode)) {
                (Some(u), _) => u.class,
                (None, Some((class, _))) => class,
                (None, None) => return fail(ErrorClass::Arg, format!("{errorcode} is not an error code")),
            };
            // SAFETY: caller's output argument.
            unsafe { out(errorclass, class) }
        })
    }

    fn Error_string(errorcode: c_int, string: *mut c_char, resultlen: *mut c_int) -> c_int {
        call("MPI_Error_string", None, |s| {
            let text = match (user_error(s, errorcode), predefined_error(errorcode)) {
                // No string added: the empty string (§8.5), as Open MPI and MPICH give.
                (Some(u), _) => u.string.clone().unwrap_or_default(),
                (None, Some((_, text))) => text,
                (None, None) => return fail(ErrorClass::Arg, format!("{errorcode} is not an error code")),
            };
            // SAFETY: `string` has MPI_MAX_ERROR_STRING bytes (§8.3.5).
            let n = unsafe { c_string(string, abi::MPI_MAX_ERROR_STRING as usize, &text)? };
            // SAFETY: caller's output argument.
            unsafe { out(resultlen, n) }
        })
    }

    fn Add_error_class(errorclass: *mut c_int) -> c_int {
        call("MPI_Add_error_class", None, |s| {
            let code = add_user_error(s, None)?;
            // SAFETY: caller's output argument.
            unsafe { out(errorclass, code) }
        })
    }

    fn Add_error_code(errorclass: c_int, errorcode: *mut c_int) -> c_int {
        call("MPI_Add_error_code", None, |s| {
            let valid = (1..PREDEFINED_ERRORS.len() as c_int).contains(&errorclass)
                || user_error(s, errorclass).is_some_and(|u| u.class == errorclass);
            if !valid {
                return fail(ErrorClass::Arg, format!("{errorclass} is not an error class"));
            }
            let code = add_user_error(s, Some(errorclass))?;
            // SAFETY: caller's output argument.
            unsafe { out(errorcode, code) }
        })
    }

    fn Add_error_string(errorcode: c_int, string: *const c_char) -> c_int {
        call("MPI_Add_error_string", None, |s| {
            if string.is_null() {
                return fail(ErrorClass::Arg, "NULL string");
            }
            // SAFETY: a NUL-terminated string (§8.5).
            let text = unsafe { std::ffi::CStr::from_ptr(string) }.to_string_lossy().into_owned();
            let Some(i) = user_error_index(s, errorcode) else {
                return fail(ErrorClass::Arg, format!("{errorcode} is not a user-defined error code"));
            };
            s.user_errors[i].string = Some(text.chars().take(abi::MPI_MAX_ERROR_STRING as usize - 1).collect());
            Ok(())
        })
    }

    fn Comm_create_errhandler(function: Option<abi::MPI_Comm_errhandler_function>, errhandler: *mut MPI_Errhandler) -> c_int {
        call("MPI_Comm_create_errhandler", None, |s| {
            let Some(f) = function else { return fail(ErrorClass::Arg, "NULL error handler function") };
            let i = s.errhandlers.insert(crate::state::ErrhandlerFn::C(f)).ok_or_else(|| crate::state::table_full("error handlers"))?;
            let h = crate::state::encode(crate::state::Kind::Errhandler, i) as MPI_Errhandler;
            // SAFETY: caller's output argument.
            unsafe { out(errhandler, h) }
        })
    }

    fn Comm_set_errhandler(comm: MPI_Comm, errhandler: MPI_Errhandler) -> c_int {
        call("MPI_Comm_set_errhandler", Some(comm), |s| {
            let h = handler_of(s, errhandler)?;
            let i = s.comm_index(comm)?;
            s.comms.get_mut(i).expect("valid index").handler = h;
            Ok(())
        })
    }

    fn Errhandler_create(function: Option<abi::MPI_Comm_errhandler_function>, errhandler: *mut MPI_Errhandler) -> c_int {
        // SAFETY: MPI-1 name of MPI_Comm_create_errhandler, same contract.
        unsafe { Comm_create_errhandler(function, errhandler) }
    }

    fn Errhandler_get(comm: MPI_Comm, errhandler: *mut MPI_Errhandler) -> c_int {
        // SAFETY: MPI-1 name of MPI_Comm_get_errhandler, same contract.
        unsafe { Comm_get_errhandler(comm, errhandler) }
    }

    fn Errhandler_set(comm: MPI_Comm, errhandler: MPI_Errhandler) -> c_int {
        // SAFETY: MPI-1 name of MPI_Comm_set_errhandler, same contract.
        unsafe { Comm_set_errhandler(comm, errhandler) }
    }

    fn Comm_get_errhandler(comm: MPI_Comm, errhandler: *mut MPI_Errhandler) -> c_int {
        call("MPI_Comm_get_errhandler", Some(comm), |s| {
            let h = handler_handle(s.comm_entry(comm)?.handler);
            // SAFETY: caller's output argument.
            unsafe { out(errhandler, h) }
        })
    }

    fn Errhandler_free(errhandler: *mut MPI_Errhandler) -> c_int {
        call("MPI_Errhandler_free", None, |_| {
            // SAFETY: caller's in/out argument, read only if not NULL.
            if errhandler.is_null() || abi::predefined().errhandler(unsafe { *errhandler } as usize) == Some(abi::PredefErrhandler::ErrhandlerNull) {
                return fail(ErrorClass::Arg, "MPI_ERRHANDLER_NULL cannot be freed");
            }
            // Handlers stay valid while a communicator uses them (§8.3.4), and they are a few
            // bytes each, so freeing only resets the caller's handle.
            // SAFETY: caller's in/out argument.
            unsafe { out(errhandler, abi::predefined().errhandler_handle(abi::PredefErrhandler::ErrhandlerNull) as MPI_Errhandler) }
        })
    }

    fn Comm_call_errhandler(comm: MPI_Comm, errorcode: c_int) -> c_int {
        // The handler's own result is the call's only when it returns (§8.3.5): then this
        // call succeeded.
        crate::export::call_errhandler("MPI_Comm_call_errhandler", comm, errorcode);
        abi::MPI_SUCCESS
    }

    fn Alloc_mem(size: MPI_Aint, _info: MPI_Info, baseptr: *mut c_void) -> c_int {
        call("MPI_Alloc_mem", None, |_| {
            if size < 0 {
                return fail(ErrorClass::Arg, format!("size {size} is negative"));
            }
            // SAFETY: malloc of a non-negative size; a NULL result is reported below.
            let p = unsafe { libc::malloc((size as usize).max(1)) };
            if p.is_null() {
                return fail(ErrorClass::NoMem, format!("cannot allocate {size} bytes"));
            }
            // SAFETY: `baseptr` is a `void**` output argument (§8.2).
            unsafe { out(baseptr as *mut *mut c_void, p) }
        })
    }

    fn Free_mem(base: *mut c_void) -> c_int {
        // SAFETY: `base` came from MPI_Alloc_mem, i.e. from malloc (or is NULL).
        unsafe { libc::free(base) };
        abi::MPI_SUCCESS
    }
}

/// Most error classes and codes an application may add.
const USER_ERROR_LIMIT: usize = 1 << 16;

fn user_error_index(s: &State, code: c_int) -> Option<usize> {
    let i = usize::try_from(code.checked_sub(abi::MPI_ERR_LASTCODE + 1)?).ok()?;
    (i < s.user_errors.len()).then_some(i)
}

fn user_error(s: &State, code: c_int) -> Option<&UserError> {
    user_error_index(s, code).map(|i| &s.user_errors[i])
}

/// Adds a code of `class`, or a new class when `None` (a class is its own code).
fn add_user_error(s: &mut State, class: Option<c_int>) -> Res<c_int> {
    if s.user_errors.len() >= USER_ERROR_LIMIT {
        return fail(ErrorClass::Intern, format!("more than {USER_ERROR_LIMIT} user error codes"));
    }
    let code = abi::MPI_ERR_LASTCODE + 1 + s.user_errors.len() as c_int;
    s.user_errors.push(UserError { class: class.unwrap_or(code), string: None });
    crate::api::attr::set_last_used_code(code);
    Ok(code)
}

/// The handle of an error handler.
pub(crate) fn handler_handle(h: Handler) -> MPI_Errhandler {
    let p = abi::predefined();
    (match h {
        Handler::Fatal => p.errhandler_handle(abi::PredefErrhandler::ErrorsAreFatal),
        Handler::Return => p.errhandler_handle(abi::PredefErrhandler::ErrorsReturn),
        Handler::User(i) => crate::state::encode(crate::state::Kind::Errhandler, i),
    }) as MPI_Errhandler
}

pub(crate) fn handler_of(s: &State, h: MPI_Errhandler) -> Res<Handler> {
    let addr = h as usize;
    match abi::predefined().errhandler(addr) {
        Some(abi::PredefErrhandler::ErrorsAreFatal) => Ok(Handler::Fatal),
        Some(abi::PredefErrhandler::ErrorsReturn) => Ok(Handler::Return),
        Some(other) => fail(ErrorClass::Arg, format!("{other:?} cannot be set on a communicator")),
        None => match crate::state::decode(addr, crate::state::Kind::Errhandler) {
            Some(i) if s.errhandlers.get(i).is_some() => Ok(Handler::User(i)),
            _ => fail(ErrorClass::Arg, format!("{addr:#x} is not an error handler")),
        },
    }
}

/// Open MPI 4.1's predefined error classes, by code: each is its own class. The numbers
/// are its ABI (`mpi.h`); codes after these up to `MPI_ERR_LASTCODE` are unused there.
const PREDEFINED_ERRORS: [(&str, &str); 74] = [
    ("MPI_SUCCESS", "no errors"),
    ("MPI_ERR_BUFFER", "invalid buffer pointer"),
    ("MPI_ERR_COUNT", "invalid count argument"),
    ("MPI_ERR_TYPE", "invalid datatype"),
    ("MPI_ERR_TAG", "invalid tag"),
    ("MPI_ERR_COMM", "invalid communicator"),
    ("MPI_ERR_RANK", "invalid rank"),
    ("MPI_ERR_REQUEST", "invalid request"),
    ("MPI_ERR_ROOT", "invalid root"),
    ("MPI_ERR_GROUP", "invalid group"),
    ("MPI_ERR_OP", "invalid reduce operation"),
    ("MPI_ERR_TOPOLOGY", "invalid communicator topology"),
    ("MPI_ERR_DIMS", "invalid topology dimension"),
    ("MPI_ERR_ARG", "invalid argument of some other kind"),
    ("MPI_ERR_UNKNOWN", "unknown error"),
    ("MPI_ERR_TRUNCATE", "message truncated"),
    ("MPI_ERR_OTHER", "known error not in list"),
    ("MPI_ERR_INTERN", "internal error"),
    ("MPI_ERR_IN_STATUS", "error code in status"),
    ("MPI_ERR_PENDING", "pending request"),
    ("MPI_ERR_ACCESS", "invalid access mode"),
    ("MPI_ERR_AMODE", "invalid amode argument"),
    ("MPI_ERR_ASSERT", "invalid assert argument"),
    ("MPI_ERR_BAD_FILE", "bad file"),
    ("MPI_ERR_BASE", "invalid base"),
    ("MPI_ERR_CONVERSION", "error in data conversion"),
    ("MPI_ERR_DISP", "invalid displacement"),
    ("MPI_ERR_DUP_DATAREP", "error duplicating data representation"),
    ("MPI_ERR_FILE_EXISTS", "file exists already"),
    ("MPI_ERR_FILE_IN_USE", "file already in use"),
    ("MPI_ERR_FILE", "invalid file"),
    ("MPI_ERR_INFO_KEY", "invalid key argument for info object"),
    ("MPI_ERR_INFO_NOKEY", "unknown key for given info object"),
    ("MPI_ERR_INFO_VALUE", "invalid value argument for info object"),
    ("MPI_ERR_INFO", "invalid info object"),
    ("MPI_ERR_IO", "input/output error"),
    ("MPI_ERR_KEYVAL", "invalid key value"),
    ("MPI_ERR_LOCKTYPE", "invalid lock"),
    ("MPI_ERR_NAME", "invalid name argument"),
    ("MPI_ERR_NO_MEM", "out of memory"),
    ("MPI_ERR_NOT_SAME", "objects are not identical"),
    ("MPI_ERR_NO_SPACE", "no space left on device"),
    ("MPI_ERR_NO_SUCH_FILE", "no such file or directory"),
    ("MPI_ERR_PORT", "invalid port"),
    ("MPI_ERR_QUOTA", "out of quota"),
    ("MPI_ERR_READ_ONLY", "file is read only"),
    ("MPI_ERR_RMA_CONFLICT", "rma conflict during operation"),
    ("MPI_ERR_RMA_SYNC", "error executing rma sync"),
    ("MPI_ERR_SERVICE", "unknown service name"),
    ("MPI_ERR_SIZE", "invalid size"),
    ("MPI_ERR_SPAWN", "could not spawn processes"),
    ("MPI_ERR_UNSUPPORTED_DATAREP", "data representation not supported"),
    ("MPI_ERR_UNSUPPORTED_OPERATION", "operation not supported"),
    ("MPI_ERR_WIN", "invalid window"),
    ("MPI_T_ERR_MEMORY", "out of memory"),
    ("MPI_T_ERR_NOT_INITIALIZED", "interface not initialized"),
    ("MPI_T_ERR_CANNOT_INIT", "interface not in the state to be initialized"),
    ("MPI_T_ERR_INVALID_INDEX", "invalid index"),
    ("MPI_T_ERR_INVALID_ITEM", "the item index queried is out of range"),
    ("MPI_T_ERR_INVALID_HANDLE", "the handle is invalid"),
    ("MPI_T_ERR_OUT_OF_HANDLES", "no more handles available"),
    ("MPI_T_ERR_OUT_OF_SESSIONS", "no more sessions available"),
    ("MPI_T_ERR_INVALID_SESSION", "session argument is not a valid session"),
    ("MPI_T_ERR_CVAR_SET_NOT_NOW", "variable cannot be set at this moment"),
    ("MPI_T_ERR_CVAR_SET_NEVER", "variable cannot be set until end of execution"),
    ("MPI_T_ERR_PVAR_NO_STARTSTOP", "variable cannot be started or stopped"),
    ("MPI_T_ERR_PVAR_NO_WRITE", "variable cannot be written or reset"),
    ("MPI_T_ERR_PVAR_NO_ATOMIC", "variable cannot be read and written atomically"),
    ("MPI_ERR_RMA_RANGE", "invalid RMA address range"),
    ("MPI_ERR_RMA_ATTACH", "could not attach RMA segment"),
    ("MPI_ERR_RMA_FLAVOR", "invalid type of window"),
    ("MPI_ERR_RMA_SHARED", "memory cannot be shared"),
    ("MPI_T_ERR_INVALID", "invalid use of the interface or bad parameter value(s)"),
    ("MPI_T_ERR_INVALID_NAME", "the variable or category name is invalid"),
];

/// The class and the string of a code below the user-defined ones: a predefined class, or
/// a code Open MPI leaves unused (class `MPI_ERR_UNKNOWN`, as there). `None` above
/// `MPI_ERR_LASTCODE` and below 0.
fn predefined_error(code: c_int) -> Option<(c_int, String)> {
    if let Some((name, what)) = usize::try_from(code).ok().and_then(|i| PREDEFINED_ERRORS.get(i)) {
        return Some((code, format!("{name}: {what}")));
    }
    (0..=abi::MPI_ERR_LASTCODE)
        .contains(&code)
        .then(|| (abi::MPI_ERR_UNKNOWN, format!("MPI_ERR_UNKNOWN: error code {code} is not used")))
}

/// Seconds since an arbitrary fixed point in the past (CLOCK_MONOTONIC), as `MPI_Wtime`.
pub fn wtime() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_table_agrees_with_the_classes_kawarimi_raises() {
        use kawarimi_runtime::error::ErrorClass as E;
        for c in [E::Buffer, E::Count, E::Type, E::Tag, E::Comm, E::Rank, E::Request, E::Root, E::Group, E::Op]
            .into_iter()
            .chain([E::Topology, E::Dims, E::Arg, E::Unknown, E::Truncate, E::Other, E::Intern, E::InStatus])
            .chain([E::Pending, E::Keyval, E::NoMem, E::Base, E::Unsupported])
        {
            let code = crate::export::class_code(c);
            assert_eq!(PREDEFINED_ERRORS[code as usize].0, c.name(), "code {code}");
            assert_eq!(predefined_error(code).map(|(class, _)| class), Some(code));
        }
        assert_eq!(PREDEFINED_ERRORS.len() as c_int, abi::MPI_ERR_WIN + 21, "MPI_T_ERR_INVALID_NAME is the last");
        assert_eq!(predefined_error(abi::MPI_ERR_LASTCODE).map(|(class, _)| class), Some(abi::MPI_ERR_UNKNOWN));
        assert_eq!(predefined_error(abi::MPI_ERR_LASTCODE + 1), None);
        assert_eq!(predefined_error(-1), None);
    }
}
