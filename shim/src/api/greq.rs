//! Generalized requests (MPI-3.1 §12.2): requests whose operation the program carries out
//! itself, completed by `MPI_Grequest_complete`. The engine holds each as an external request;
//! its query, free and cancel functions are the program's and may call MPI (the query function
//! typically calls `MPI_Status_set_elements`), so they run after the completing call has let
//! go of the state ([`crate::export::after_call`]).
//!
//! Below `MPI_THREAD_MULTIPLE` no other thread can complete a generalized request while this
//! one waits for it: a blocking wait on one not yet completed is refused with
//! `MPI_ERR_REQUEST` instead of waiting for ever. At `MPI_THREAD_MULTIPLE` a blocking wait
//! lets the state go between tries ([`crate::export::call_blocking`]), so another thread may
//! complete it, and the wait is not refused.

use std::ffi::{c_int, c_void};

use kawarimi_runtime::error::ErrorClass;

use crate::abi::{self, MPI_Request, MPI_Status};
use crate::export::{after_call, call};
use crate::mem::out;
use crate::state::{fail, Handler, Request, RequestEntry, Res, State};

/// The program's functions of one generalized request and their argument.
#[derive(Debug, Clone, Copy)]
pub struct Greq {
    query: Option<abi::MPI_Grequest_query_function>,
    free: Option<abi::MPI_Grequest_free_function>,
    cancel: Option<abi::MPI_Grequest_cancel_function>,
    extra_state: usize,
    /// `MPI_Request_free` came before `MPI_Grequest_complete`: the free function runs then.
    /// Its table slot stays taken until then, so that `MPI_Grequest_complete` finds it by the
    /// handle the program kept and no other request is given that handle meanwhile.
    freed: bool,
}

/// Queues the query and then the free function of the generalized request the last
/// completion completed, if it was one, to fill in the status at `p` (a scratch status when
/// `p` is `MPI_STATUS_IGNORE`) once the call has let go of the state (§12.2: the query
/// function's error becomes the completing call's).
pub fn query_into(s: &mut State, p: *mut MPI_Status) {
    let Some(g) = s.completed_greq.take() else { return };
    let p = p as usize;
    after_call(Box::new(move || {
        let rc = run_query(&g, p);
        let freed = run_free(&g);
        if rc != abi::MPI_SUCCESS {
            rc
        } else {
            freed
        }
    }));
}

/// `MPI_Request_get_status` of request `i`, complete: if it is a generalized request, its
/// query function fills `p` after the call (§12.2), and the request stays (nothing is freed).
pub fn query_only(s: &State, i: usize, p: *mut MPI_Status) {
    let Some(id) = s.requests.get(i).and_then(|e| e.req.pending()) else { return };
    let Some(g) = s.greqs.get(&id).copied() else { return };
    let p = p as usize;
    after_call(Box::new(move || run_query(&g, p)));
}

/// Runs `g`'s query function on the status at address `p` (a zeroed scratch one for
/// `MPI_STATUS_IGNORE`).
fn run_query(g: &Greq, p: usize) -> c_int {
    let mut scratch = std::mem::MaybeUninit::<MPI_Status>::zeroed();
    let target = if p == abi::MPI_STATUS_IGNORE { scratch.as_mut_ptr() } else { p as *mut MPI_Status };
    // SAFETY: the program's query function with its extra state and a status to fill (its
    // own, or a zeroed scratch one), as §12.2 specifies.
    g.query.map_or(abi::MPI_SUCCESS, |q| unsafe { q(g.extra_state as *mut c_void, target) })
}

fn run_free(g: &Greq) -> c_int {
    // SAFETY: the program's free function with its extra state (§12.2).
    g.free.map_or(abi::MPI_SUCCESS, |f| unsafe { f(g.extra_state as *mut c_void) })
}

/// Whether request `i` is a generalized request that has not completed.
fn incomplete(s: &State, i: usize) -> bool {
    let id = s.requests.get(i).and_then(|e| e.req.pending());
    let world = s.world.as_ref();
    id.is_some_and(|id| s.greqs.contains_key(&id) && world.is_some_and(|w| !w.engine.core().is_complete(id)))
}

/// Refuses a blocking wait that could only end by a generalized request among `indices`
/// completing (see the module doc): `every`, a wait for all of them (`MPI_Waitall`), when any
/// is one not completed; else (`MPI_Waitany`, `MPI_Waitsome`) when all are.
pub fn refuse_endless_wait(s: &State, indices: &[usize], every: bool) -> Res<()> {
    let stuck = if every {
        indices.iter().any(|&i| incomplete(s, i))
    } else {
        !indices.is_empty() && indices.iter().all(|&i| incomplete(s, i))
    };
    if stuck {
        return fail(ErrorClass::Request, ENDLESS);
    }
    Ok(())
}

const ENDLESS: &str = "waiting for a generalized request that MPI_Grequest_complete has not completed: below \
                       MPI_THREAD_MULTIPLE no other thread may call MPI meanwhile, so it would wait for ever";

/// What completing request `i` needs from its generalized request, if it is one: refuses a
/// blocking wait on one not completed yet (see the module doc), and otherwise takes it out so
/// that the caller runs its query ([`query_into`]) once it has the status.
pub fn before_completion(s: &mut State, i: usize, block: bool) -> Res<()> {
    let Some(id) = s.requests.get(i).and_then(|e| e.req.pending()) else { return Ok(()) };
    if !s.greqs.contains_key(&id) {
        return Ok(());
    }
    if incomplete(s, i) {
        return if block { fail(ErrorClass::Request, ENDLESS) } else { Ok(()) };
    }
    s.completed_greq = s.greqs.remove(&id);
    Ok(())
}

/// `MPI_Cancel` of request `i` if it is a generalized one: its cancel function runs after the
/// call, told whether it has completed. Returns whether it was one.
pub fn cancel(s: &mut State, i: usize) -> Res<bool> {
    let Some(id) = s.requests.get(i).and_then(|e| e.req.pending()) else { return Ok(false) };
    let Some(g) = s.greqs.get(&id).copied() else { return Ok(false) };
    let complete = c_int::from(s.world()?.engine.core().is_complete(id));
    after_call(Box::new(move || {
        // SAFETY: the program's cancel function with its extra state (§12.2).
        g.cancel.map_or(abi::MPI_SUCCESS, |f| unsafe { f(g.extra_state as *mut c_void, complete) })
    }));
    Ok(true)
}

/// `MPI_Request_free` of engine request `id` if it is a generalized one: its free function
/// runs now if it has completed, else when `MPI_Grequest_complete` comes. Returns whether the
/// request keeps its table slot until then (see [`Greq::freed`]).
pub fn free(s: &mut State, id: Option<kawarimi_runtime::core::ReqId>) -> Res<bool> {
    let Some(id) = id else { return Ok(false) };
    let complete = s.world()?.engine.core().is_complete(id);
    Ok(match s.greqs.get_mut(&id) {
        Some(g) if complete => {
            let g = *g;
            s.greqs.remove(&id);
            after_call(Box::new(move || run_free(&g)));
            false
        }
        Some(g) => {
            g.freed = true;
            true
        }
        None => false,
    })
}

mpi_fn! {
    fn Grequest_start(query_fn: Option<abi::MPI_Grequest_query_function>, free_fn: Option<abi::MPI_Grequest_free_function>, cancel_fn: Option<abi::MPI_Grequest_cancel_function>, extra_state: *mut c_void, request: *mut MPI_Request) -> c_int {
        call("MPI_Grequest_start", None, |s| {
            let comm = s.comm_entry(crate::export::world_handle())?.comm.clone();
            let id = s.world()?.engine.new_external();
            let req = Request::posted(id, comm, false, kawarimi_runtime::request::Finish::Nothing);
            let h = s.new_request(RequestEntry { req, handler: Handler::Fatal })?;
            let g = Greq { query: query_fn, free: free_fn, cancel: cancel_fn, extra_state: extra_state as usize, freed: false };
            s.greqs.insert(id, g);
            // SAFETY: caller's output argument.
            unsafe { out(request, h) }
        })
    }

    fn Grequest_complete(request: MPI_Request) -> c_int {
        call("MPI_Grequest_complete", None, |s| {
            let i = s.request_index(request)?;
            let id = i.and_then(|i| s.requests.get(i)).and_then(|e| e.req.pending());
            let (Some(i), Some(id)) = (i, id.filter(|id| s.greqs.contains_key(id))) else {
                return fail(ErrorClass::Request, "MPI_Grequest_complete of a request that is not a pending generalized request");
            };
            s.world()?.engine.complete_external(id);
            // Freed by the program already: nobody waits for it, so it goes now.
            if s.greqs.get(&id).is_some_and(|g| g.freed) {
                s.world()?.engine.take_completion(id);
                s.requests.remove(i);
                let g = s.greqs.remove(&id).expect("checked");
                after_call(Box::new(move || run_free(&g)));
            }
            Ok(())
        })
    }
}
