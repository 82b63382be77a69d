//! The C boundary: the `mpi_fn!` macro that exports each function as `MPI_X` and `PMPI_X`,
//! panic containment, error classes → Open MPI codes, error handlers and job abort.

use std::cell::Cell;
use std::ffi::c_int;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

use kawarimi_runtime::construct::Steps;
use kawarimi_runtime::error::{ErrorClass, MpiError, MpiResult};
use kawarimi_runtime::sched::Schedule;
use kawarimi_runtime::world::World;

use crate::abi;
use crate::state::{Fail, Handler, Res, State, STATE};

/// Defines MPI functions. Each `fn Name(args) -> ret { body }` becomes the exported symbol
/// `PMPI_Name` (the implementation) and `MPI_Name` (which calls `PMPI_Name`, so a profiling
/// tool that defines its own `MPI_Name` and calls `PMPI_Name` still reaches kawarimi). A panic
/// never crosses the C boundary: it aborts the job with a message naming the function.
///
/// `build.rs` reads the `fn Name(` lines of `src/api/*.rs` to know which of Open MPI's
/// functions are implemented; every other one is exported as an aborting stub.
macro_rules! mpi_fn {
    ($(
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block
    )*) => {$(
        entry_point! {
            [concat!("PMPI_", stringify!($name)), concat!("MPI_", stringify!($name))]
            $(#[$meta])* fn $name($($arg: $ty),*) -> $ret $body
        }
    )*};
}

/// [`mpi_fn`] for Open MPI's extensions, named `MPIX_*` (and `PMPIX_*`): `fn MPIX_Name(...)`
/// exports `PMPIX_Name` and `MPIX_Name`.
macro_rules! mpix_fn {
    ($(
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block
    )*) => {$(
        entry_point! {
            [concat!("P", stringify!($name)), stringify!($name)]
            $(#[$meta])* fn $name($($arg: $ty),*) -> $ret $body
        }
    )*};
}

/// One C entry point under its profiling name and its public name (see [`mpi_fn`]).
macro_rules! entry_point {
    (
        [$pname:expr, $cname:expr]
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// Called from C: the arguments must follow the MPI standard's rules for this call.
        #[export_name = $pname]
        #[allow(non_snake_case, clippy::missing_safety_doc)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            $crate::export::guard($cname, move || $body)
        }

        #[allow(non_snake_case)]
        pub mod $name {
            #[allow(unused_imports)]
            use super::*;
            /// The public name of the function; forwards to the profiling one.
            ///
            /// # Safety
            /// As for the profiling function.
            #[export_name = $cname]
            pub unsafe extern "C" fn mpi($($arg: $ty),*) -> $ret {
                // SAFETY: the same contract as the function it forwards to.
                unsafe { super::$name($($arg),*) }
            }
        }
    };
}

thread_local! {
    /// Set while this thread runs inside kawarimi with the state locked, to turn a re-entrant
    /// call (an MPI call from inside a user reduction) into a clear error instead of a
    /// deadlock.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into a job abort that names `name`.
pub fn guard<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            IN_CALL.with(|c| c.set(false));
            die(name, &format!("internal error (panic): {msg}"), 70)
        }
    }
}

/// The Open MPI error code of an error class (for predefined classes, code == class).
pub fn class_code(c: ErrorClass) -> c_int {
    use ErrorClass as E;
    match c {
        E::Buffer => abi::MPI_ERR_BUFFER,
        E::Count => abi::MPI_ERR_COUNT,
        E::Type => abi::MPI_ERR_TYPE,
        E::Tag => abi::MPI_ERR_TAG,
        E::Comm => abi::MPI_ERR_COMM,
        E::Rank => abi::MPI_ERR_RANK,
        E::Request => abi::MPI_ERR_REQUEST,
        E::Root => abi::MPI_ERR_ROOT,
        E::Group => abi::MPI_ERR_GROUP,
        E::Op => abi::MPI_ERR_OP,
        E::Topology => abi::MPI_ERR_TOPOLOGY,
        E::Dims => abi::MPI_ERR_DIMS,
        E::Arg => abi::MPI_ERR_ARG,
        E::Unknown => abi::MPI_ERR_UNKNOWN,
        E::Truncate => abi::MPI_ERR_TRUNCATE,
        E::Other => abi::MPI_ERR_OTHER,
        E::Intern => abi::MPI_ERR_INTERN,
        E::InStatus => abi::MPI_ERR_IN_STATUS,
        E::Pending => abi::MPI_ERR_PENDING,
        E::Keyval => abi::MPI_ERR_KEYVAL,
        E::NoMem => abi::MPI_ERR_NO_MEM,
        E::Base => abi::MPI_ERR_BASE,
        E::Unsupported => abi::MPI_ERR_UNSUPPORTED_OPERATION,
        E::Win => abi::MPI_ERR_WIN,
        E::Disp => abi::MPI_ERR_DISP,
        E::Size => abi::MPI_ERR_SIZE,
        E::Locktype => abi::MPI_ERR_LOCKTYPE,
        E::RmaRange => abi::MPI_ERR_RMA_RANGE,
        E::RmaSync => abi::MPI_ERR_RMA_SYNC,
        E::RmaFlavor => abi::MPI_ERR_RMA_FLAVOR,
        E::RmaShared => abi::MPI_ERR_RMA_SHARED,
        E::RmaAttach => abi::MPI_ERR_RMA_ATTACH,
        E::Info => abi::MPI_ERR_INFO,
        E::InfoKey => abi::MPI_ERR_INFO_KEY,
        E::InfoValue => abi::MPI_ERR_INFO_VALUE,
        E::InfoNokey => abi::MPI_ERR_INFO_NOKEY,
    }
}

/// Where this process is, for messages.
fn whoami() -> String {
    let rank = std::env::var("OMPI_COMM_WORLD_RANK").unwrap_or_else(|_| "?".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("rank {rank} (pid {}, host {})", std::process::id(), host.trim())
}

/// Ends the whole job: says why on stderr, tells the peers, exits with `code` (1 for 0: an
/// error never looks like success). The launcher sees a rank exit without finalizing and
/// stops the others. A rank ended by a peer's `MPI_Abort` exits with that abort's code.
pub fn die(name: &str, msg: &str, code: c_int) -> ! {
    end_process(name, msg, code, if code == 0 { 1 } else { code }, false)
}

/// `MPI_Abort`: as [`die`], the job's exit status `errorcode` exactly, 0 included, as the
/// standard asks ("returned to the invoking environment", §8.7) and `mpirun` does natively.
pub fn abort_job(msg: &str, errorcode: c_int) -> ! {
    end_process("MPI_Abort", msg, errorcode, errorcode, true)
}

/// Ends the process after telling the peers (`code`) and the launcher; it exits with `status`.
/// `through_launcher`: the launcher's PMIx server is asked to end the job with `status`, so
/// that mpirun exits with it, as under Open MPI's `MPI_Abort` (even 0: the ranks that exit
/// unfinalised would otherwise make it exit 1).
fn end_process(name: &str, msg: &str, code: c_int, status: c_int, through_launcher: bool) -> ! {
    let mut status = status;
    // A coordinator this rank hosts goes with it: its job file must not outlive the job.
    // First, before anything that could fail or block.
    kawarimi_control::jobfile::remove_owned();
    // The process ends here either way: a stderr whose reader has gone (a launcher that was
    // killed) must fail the write, not kill the process with SIGPIPE before it tells its peers.
    // SAFETY: setting a signal's disposition to "ignore" has no other effect.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let line = format!("kawarimi: {name} on {}: {msg}\n", whoami());
    let _ = std::io::stderr().write_all(line.as_bytes());
    // The launcher first: told before the peers, it has the job's status before any of them
    // exits on this rank's word (one that exits unfinalised with 0 would make mpirun exit 1).
    // It ends every rank, this one too, usually within the wait.
    if through_launcher {
        kawarimi_transports::bootstrap::pmix_abort(status, line.trim_end(), std::time::Duration::from_secs(5));
    }
    // Best effort: a lock held by this thread (a panic inside a call) is skipped.
    if !IN_CALL.with(|c| c.get()) {
        if let Some(mut guard) = STATE.try_lock_for(std::time::Duration::from_millis(100)) {
            if let Some(w) = guard.as_mut().and_then(|s| s.world.as_mut()) {
                status = w.engine.peer_abort_code().unwrap_or(status);
                w.engine.abort(code, &line);
            }
        }
    }
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; no Rust state is used afterwards. Skipping
    // atexit handlers is deliberate: nothing of the never-initialised libmpi must run.
    unsafe { libc::_exit(status) }
}

/// Runs an MPI call: locks the state, runs `f`, and on error applies the error handler of
/// `comm` (or of `MPI_COMM_WORLD` when the error is not tied to a communicator, §8.3).
pub fn call(name: &'static str, comm: Option<abi::MPI_Comm>, f: impl FnOnce(&mut State) -> Res<()>) -> c_int {
    let result = locked(name, f);
    run_after_call(finish(name, comm, result))
}

/// Application callbacks a call queued to run once it has let go of the state, which they may
/// use (a generalized request's query, free and cancel functions, §12.2).
type AfterCall = Box<dyn FnOnce() -> c_int>;

/// Set once `MPI_Init_thread` grants `MPI_THREAD_MULTIPLE`: blocking calls then wait without
/// holding the state ([`call_polling`]).
static THREAD_MULTIPLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records that the program runs at `MPI_THREAD_MULTIPLE`.
pub fn set_thread_multiple() {
    THREAD_MULTIPLE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the program runs at `MPI_THREAD_MULTIPLE`.
pub fn thread_multiple() -> bool {
    THREAD_MULTIPLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// A blocking call at `MPI_THREAD_MULTIPLE`: `attempt` makes one non-blocking try with the
/// state locked (a progress round and a test; `true` when the call is done), and the state is
/// let go between tries, so the calls of the program's other threads run while this one waits
/// (one of them may be what it waits for). Between tries the thread yields, then sleeps from
/// 5 us doubling to at most 200 us (the latency a long wait can add, against the CPU a thread
/// blocked for long would burn).
pub fn call_polling(
    name: &'static str,
    comm: Option<abi::MPI_Comm>,
    mut attempt: impl FnMut(&mut State) -> Res<bool>,
) -> c_int {
    let mut backoff = Backoff::default();
    loop {
        let mut done = false;
        let rc = call(name, comm, |s| {
            done = attempt(s)?;
            Ok(())
        });
        if rc != abi::MPI_SUCCESS || done {
            return rc;
        }
        backoff.pause();
    }
}

/// The pause between two tries of a wait that lets go of the state: a yield for the first
/// tries, then sleeps from 5 us doubling to at most 200 us (the latency a long wait can add,
/// against the CPU a thread blocked for long would burn).
#[derive(Default)]
struct Backoff {
    tries: u32,
}

impl Backoff {
    fn pause(&mut self) {
        const YIELDS: u32 = 64;
        const LONGEST_SLEEP_US: u64 = 200;
        if self.tries < YIELDS {
            std::thread::yield_now();
        } else {
            let doublings = ((self.tries - YIELDS) / 16).min(6);
            std::thread::sleep(std::time::Duration::from_micros((5u64 << doublings).min(LONGEST_SLEEP_US)));
        }
        self.tries = self.tries.saturating_add(1);
    }
}

/// A communicator constructor's [`Steps`] at `MPI_THREAD_MULTIPLE`: each update of the state
/// takes its lock, and a collective is started under it and then polled like
/// [`call_polling`]'s waits, the state let go between tries.
pub struct Unlocked {
    name: &'static str,
}

impl Steps for Unlocked {
    fn update(&mut self, f: &mut dyn FnMut(&mut World) -> MpiResult<()>) -> MpiResult<()> {
        locked(self.name, |s| Ok(f(s.world()?)?)).map_err(|e| MpiError::new(e.class, e.detail))
    }

    fn run(&mut self, s: Schedule<'static>) -> MpiResult<Vec<Vec<u8>>> {
        let mut s = Some(s);
        let mut id = None;
        self.update(&mut |w| {
            id = Some(w.engine.start_schedule_as(s.take().expect("started once"), false)?);
            Ok(())
        })?;
        let id = id.ok_or_else(|| MpiError::new(ErrorClass::Intern, "a constructor's collective did not start"))?;
        let mut backoff = Backoff::default();
        loop {
            let mut got = None;
            self.update(&mut |w| {
                got = w.engine.try_finish_schedule(id)?;
                Ok(())
            })?;
            if let Some(bufs) = got {
                return Ok(bufs);
            }
            backoff.pause();
        }
    }
}

/// Runs a communicator constructor: `before` under the state lock (its arguments), `make`
/// through [`Steps`], then `after` under the lock (the new handle). A program with one thread
/// in MPI holds the state throughout; at `MPI_THREAD_MULTIPLE` `make` runs with [`Unlocked`]
/// steps, so that another thread's constructor over another parent, which a peer may need to
/// finish first, can run while this one waits.
pub fn call_constructing<T, U>(
    name: &'static str,
    comm: Option<abi::MPI_Comm>,
    before: impl FnOnce(&mut State) -> Res<T>,
    make: impl FnOnce(&mut dyn Steps, T) -> MpiResult<U>,
    after: impl FnOnce(&mut State, U) -> Res<()>,
) -> c_int {
    call_constructing_around(name, comm, before, make, Ok, after)
}

/// [`call_constructing`] with a step run without the state lock between `make` and `after`:
/// `outside`, which calls into the program (the attribute copy callbacks of a duplicate,
/// which may call MPI themselves).
pub fn call_constructing_around<T, U, V>(
    name: &'static str,
    comm: Option<abi::MPI_Comm>,
    before: impl FnOnce(&mut State) -> Res<T>,
    make: impl FnOnce(&mut dyn Steps, T) -> MpiResult<U>,
    outside: impl FnOnce(U) -> Res<V>,
    after: impl FnOnce(&mut State, V) -> Res<()>,
) -> c_int {
    if thread_multiple() {
        call_around(name, comm, before, |t| outside(make(&mut Unlocked { name }, t)?), after)
    } else {
        let under_lock = |s: &mut State| {
            let t = before(s)?;
            Ok(make(s.world()?, t)?)
        };
        call_around(name, comm, under_lock, outside, after)
    }
}

/// A blocking call written once for both ways of waiting: `attempt(s, block)` completes the
/// call when `block` (waiting inside it, the state held: a program with one thread in MPI), or
/// tries once without waiting and says whether it is done. At `MPI_THREAD_MULTIPLE` it is tried
/// that way with the state let go between tries ([`call_polling`]).
pub fn call_blocking(
    name: &'static str,
    comm: Option<abi::MPI_Comm>,
    mut attempt: impl FnMut(&mut State, bool) -> Res<bool>,
) -> c_int {
    if thread_multiple() {
        call_polling(name, comm, |s| attempt(s, false))
    } else {
        call(name, comm, |s| attempt(s, true).map(|_| ()))
    }
}

thread_local! {
    static AFTER_CALL: std::cell::RefCell<Vec<AfterCall>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Callbacks queued on any thread: a call checks this before the thread-local queue, so
/// calls that queued nothing pay one relaxed load.
static AFTER_CALL_QUEUED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Queues `f` to run when the current call has let go of the state; a non-zero result of
/// it becomes the call's result unless the call failed already.
pub fn after_call(f: AfterCall) {
    AFTER_CALL.with(|q| q.borrow_mut().push(f));
    AFTER_CALL_QUEUED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn run_after_call(mut rc: c_int) -> c_int {
    if AFTER_CALL_QUEUED.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        return rc;
    }
    let queued = AFTER_CALL.with(|q| std::mem::take(&mut *q.borrow_mut()));
    AFTER_CALL_QUEUED.fetch_sub(queued.len(), std::sync::atomic::Ordering::Relaxed);
    for f in queued {
        let r = f();
        if rc == abi::MPI_SUCCESS {
            rc = r;
        }
    }
    rc
}

/// Runs an MPI call whose middle part calls back into the application (attribute copy and
/// delete callbacks, §6.7.2), which may itself call MPI: `before` and `after` run under the
/// state lock, `outside` between them without it.
pub fn call_around<T, U>(
    name: &'static str,
    comm: Option<abi::MPI_Comm>,
    before: impl FnOnce(&mut State) -> Res<T>,
    outside: impl FnOnce(T) -> Res<U>,
    after: impl FnOnce(&mut State, U) -> Res<()>,
) -> c_int {
    let result = locked(name, before).and_then(outside).and_then(|u| locked(name, |s| after(s, u)));
    finish(name, comm, result)
}

/// Runs a query about datatype `h` (its size, extent, true extent). Inside a user reduction
/// function, where the calling MPI call holds the state, it is answered from what that
/// function was given (see [`crate::api::op::datatype_in_user_op`]) and an error is returned
/// as its code; elsewhere it is an ordinary call.
pub fn datatype_query(
    name: &'static str,
    h: abi::MPI_Datatype,
    f: impl FnOnce(&kawarimi_runtime::datatype::Datatype) -> Res<()>,
) -> c_int {
    if IN_CALL.with(|c| c.get()) {
        if let Some(dt) = crate::api::op::datatype_in_user_op(h) {
            return match dt.and_then(|dt| f(&dt)) {
                Ok(()) => abi::MPI_SUCCESS,
                Err(e) => class_code(e.class),
            };
        }
    }
    call(name, None, |s| f(&*s.datatype(h)?))
}

/// Runs `f` under the state's lock for a call that goes on outside it; a failure is raised
/// as the call's, and its code is the error.
pub fn locked_query<T>(name: &'static str, f: impl FnOnce(&mut State) -> Res<T>) -> Result<T, c_int> {
    locked(name, f).map_err(|e| finish(name, None, Err(e)))
}

/// Runs `f` on the state under its lock.
fn locked<R>(name: &'static str, f: impl FnOnce(&mut State) -> Res<R>) -> Res<R> {
    if IN_CALL.with(|c| c.replace(true)) {
        die(
            name,
            "called from inside a user reduction function, while the MPI call that runs it holds kawarimi's \
             state; only datatype queries (MPI_Type_size, MPI_Type_get_extent, MPI_Type_get_true_extent and \
             their _x forms) are answered there",
            1,
        );
    }
    let result = {
        let mut guard = STATE.lock();
        f(guard.get_or_insert_with(State::default))
    };
    IN_CALL.with(|c| c.set(false));
    result
}

/// The return code of a call, after applying the error handler on failure.
fn finish(name: &'static str, comm: Option<abi::MPI_Comm>, result: Res<()>) -> c_int {
    match result {
        Ok(()) => abi::MPI_SUCCESS,
        Err(e) => {
            let handler = STATE.lock().as_ref().map_or(Handler::Fatal, |s| resolve_handler(s, &e, comm));
            raise(name, e, handler, comm)
        }
    }
}

fn resolve_handler(state: &State, e: &Fail, comm: Option<abi::MPI_Comm>) -> Handler {
    if e.handler != Handler::Fatal {
        return e.handler;
    }
    let from_comm = comm.and_then(|c| state.comm_entry(c).ok()).map(|c| c.handler);
    from_comm.or_else(|| state.comms.get(crate::state::WORLD_INDEX).map(|c| c.handler)).unwrap_or(Handler::Fatal)
}

/// Applies `handler` to error `e` raised by `name`; returns the code for the application.
fn raise(name: &'static str, e: Fail, handler: Handler, comm: Option<abi::MPI_Comm>) -> c_int {
    raise_code(name, class_code(e.class), || format!("{}: {}", e.class.name(), e.detail), handler, comm)
}

/// `MPI_Comm_call_errhandler`: applies `comm`'s error handler to `code` (any code: a user
/// handler receives it as given, §8.3.5); returns what the call returns.
pub fn call_errhandler(name: &'static str, comm: abi::MPI_Comm, code: c_int) -> c_int {
    match locked(name, |s| Ok(s.comm_entry(comm)?.handler)) {
        Ok(handler) => {
            raise_code(name, code, || format!("error code {code}, raised by the application"), handler, Some(comm))
        }
        Err(e) => finish(name, Some(comm), Err(e)),
    }
}

/// `MPI_Win_call_errhandler` and the like: applies `handler`, an object's, to `code`, the
/// object's handle `object` going to a user handler; returns what the call returns.
pub fn call_handler_of(name: &'static str, object: abi::MPI_Comm, handler: Handler, code: c_int) -> c_int {
    raise_code(name, code, || format!("error code {code}, raised by the application"), handler, Some(object))
}

/// Applies `handler` to error `code` (described by `what`, made only when it is printed)
/// raised by `name`; returns the code for the application.
fn raise_code(
    name: &'static str,
    code: c_int,
    what: impl FnOnce() -> String,
    handler: Handler,
    comm: Option<abi::MPI_Comm>,
) -> c_int {
    match handler {
        Handler::Return => code,
        Handler::Fatal => die(name, &what(), code),
        Handler::User(i) => {
            let f = STATE.lock().as_ref().and_then(|s| s.errhandlers.get(i).copied());
            let Some(f) = f else { die(name, &what(), code) };
            let mut c = comm.unwrap_or_else(world_handle);
            let mut code_arg = code;
            match f {
                // SAFETY: `f` is the application's handler made with MPI_Comm_create_errhandler;
                // it receives pointers to a communicator handle and an error code that live
                // for the call, as §8.3.1 specifies. The state lock is not held, so it may
                // call MPI.
                crate::state::ErrhandlerFn::C(f) => unsafe { f(&mut c, &mut code_arg) },
                crate::state::ErrhandlerFn::Fortran(f) => {
                    let mut fc = crate::state::comm_c2f(c);
                    // SAFETY: as above, with the Fortran handle and code by reference.
                    unsafe { f(&mut fc, &mut code_arg) }
                }
                crate::state::ErrhandlerFn::FortranWin(f) => {
                    // A window's calls raise their errors with the window's handle here.
                    let mut fw = crate::state::win_c2f(c as abi::MPI_Win);
                    // SAFETY: as above, with the window's Fortran handle.
                    unsafe { f(&mut fw, &mut code_arg) }
                }
            }
            code
        }
    }
}

pub fn world_handle() -> abi::MPI_Comm {
    abi::predefined().comm_handle(abi::PredefComm::World) as abi::MPI_Comm
}
