//! Request completion, probe, cancel and status queries (MPI-3.1 §3.7–§3.8, §3.2.5).

use std::ffi::c_int;

use kawarimi_runtime::core::{ReqId, Status, ANY_SOURCE, ANY_TAG};
use kawarimi_runtime::error::ErrorClass;

use std::ffi::c_void;

use crate::abi::{self, MPI_Comm, MPI_Count, MPI_Datatype, MPI_Message, MPI_Request, MPI_Status};
use kawarimi_runtime::request::empty_status;

use crate::api::greq;
use crate::api::p2p::{blocking, check_buffer, comm_of, complete_entry, received, recv_target, start, write_status};
use crate::export::{call, call_blocking};
use crate::mem::{c_array_mut, out};
use crate::state::{decode, encode, fail, request_null, Fail, Kind, Request, RequestEntry, Res, State};

/// Reads the request handle at `p`; `None` for `MPI_REQUEST_NULL`.
///
/// # Safety
/// `p` must point to a readable request handle.
unsafe fn read_request(s: &State, p: *const MPI_Request) -> Res<Option<usize>> {
    if p.is_null() {
        return fail(ErrorClass::Request, "NULL request pointer");
    }
    // SAFETY: per the contract.
    s.request_index(unsafe { *p })
}

/// A completed request: its status, and the error it completed with (a truncated receive),
/// which goes to the request's communicator's handler after the status is written.
type Completed = (Status, Option<Fail>);

/// Completes request `i` (blocking or not); on completion frees it (a persistent request
/// stays, inactive), sets the handle to `MPI_REQUEST_NULL` and returns its status.
fn complete(s: &mut State, i: usize, handle: &mut MPI_Request, block: bool) -> Res<Option<Completed>> {
    greq::before_completion(s, i, block)?;
    // A test looks at the engine's part first, with the entry left in its slot: one that finds
    // the request still in progress (most tests in a polling loop) then moves nothing.
    if let Some(id) = s.requests.get(i).expect("request index checked").req.pending().filter(|_| !block) {
        if !s.world()?.engine.test(id)? {
            return Ok(None);
        }
    }
    let mut e = s.requests.remove(i).expect("request index checked");
    let done = match complete_entry(s, &mut e, block) {
        Ok(Some(done)) => done,
        other => {
            put_back(s, i, e);
            return other;
        }
    };
    if e.req.retire() {
        put_back(s, i, e);
    } else {
        *handle = request_null();
    }
    Ok(Some(done))
}

/// Returns an entry to the slot it was taken from, so its handle stays valid.
fn put_back(s: &mut State, i: usize, e: RequestEntry) {
    let j = s.requests.insert(e).expect("slot just freed");
    debug_assert_eq!(i, j, "the table reuses the slot just freed");
}

/// `MPI_Wait`/`MPI_Test` of one request.
///
/// # Safety
/// `request` must point to a request handle; `status` must be `MPI_STATUS_IGNORE` or writable.
unsafe fn wait_or_test(s: &mut State, request: *mut MPI_Request, status: *mut MPI_Status, block: bool) -> Res<bool> {
    // SAFETY: per the contract.
    let Some(i) = (unsafe { read_request(s, request)? }) else {
        // SAFETY: per the contract.
        unsafe { write_status(status, &empty_status()) };
        return Ok(true);
    };
    // SAFETY: `request` points to the handle (checked non-null above).
    let handle = unsafe { &mut *request };
    match complete(s, i, handle, block)? {
        None => Ok(false),
        Some((st, error)) => {
            // The status is written even when the request failed, e.g. truncated (§3.2.5).
            // SAFETY: per the contract.
            unsafe { write_status(status, &st) };
            greq::query_into(s, status);
            error.map_or(Ok(true), Err)
        }
    }
}

/// The requests of an array call: handles and their table indices (`None` = null).
struct Batch<'a> {
    handles: &'a mut [MPI_Request],
    indices: Vec<Option<usize>>,
}

/// # Safety
/// `p` must point to `n` request handles.
unsafe fn batch<'a>(s: &State, n: c_int, p: *mut MPI_Request) -> Res<Batch<'a>> {
    if n < 0 {
        return fail(ErrorClass::Count, format!("count {n} is negative"));
    }
    // SAFETY: per the contract.
    let handles = unsafe { c_array_mut(p, n as usize)? };
    let mut indices = handles.iter().map(|&h| s.request_index(h)).collect::<Res<Vec<_>>>()?;
    // Inactive persistent requests count as null ones (§3.9).
    for idx in indices.iter_mut() {
        if idx.is_some_and(|i| s.requests.get(i).is_some_and(|e| e.req.is_inactive())) {
            *idx = None;
        }
    }
    Ok(Batch { handles, indices })
}

/// Status `k` of an array of statuses (`MPI_STATUSES_IGNORE` gives `MPI_STATUS_IGNORE`).
///
/// # Safety
/// `statuses` must be `MPI_STATUSES_IGNORE` or point to at least `k + 1` statuses.
unsafe fn status_at(statuses: *mut MPI_Status, k: usize) -> *mut MPI_Status {
    if statuses as usize == abi::MPI_STATUSES_IGNORE {
        return abi::MPI_STATUS_IGNORE as *mut MPI_Status;
    }
    // SAFETY: per the contract.
    unsafe { statuses.add(k) }
}

/// Writes status `k` of an array of statuses.
///
/// # Safety
/// `statuses` must be `MPI_STATUSES_IGNORE` or point to at least `k + 1` statuses.
unsafe fn write_status_at(statuses: *mut MPI_Status, k: usize, st: &Status, error: c_int) {
    if statuses as usize == abi::MPI_STATUSES_IGNORE {
        return;
    }
    // SAFETY: per the contract.
    let p = unsafe { statuses.add(k) };
    // SAFETY: `p` is inside the caller's array.
    unsafe {
        write_status(p, st);
        (*p).MPI_ERROR = error;
    }
}

/// The runtime requests of the shim's requests at `indices`: `None` for one the shim has
/// completed itself (a null-process or buffered send), which counts as complete.
fn pending_ids<'a>(s: &State, indices: impl Iterator<Item = &'a usize>) -> Vec<Option<ReqId>> {
    indices.map(|&i| s.requests.get(i).expect("checked").req.pending()).collect()
}

/// Completes every request of `b`, blocking or not (all-or-nothing for `Testall`).
///
/// # Safety
/// `statuses` as for [`write_status_at`], with `b.handles.len()` entries.
unsafe fn all(s: &mut State, b: Batch<'_>, statuses: *mut MPI_Status, block: bool) -> Res<bool> {
    if !block {
        // Testall completes nothing unless everything can complete (§3.7.5).
        let ids = pending_ids(s, b.indices.iter().flatten());
        if !s.world()?.engine.test_each(&ids)?.into_iter().all(|done| done) {
            return Ok(false);
        }
    }
    if block {
        greq::refuse_endless_wait(s, &b.indices.iter().flatten().copied().collect::<Vec<_>>(), true)?;
    }
    let mut first_error = None;
    for (k, idx) in b.indices.iter().enumerate() {
        match idx {
            None => {
                // SAFETY: per the contract.
                unsafe { write_status_at(statuses, k, &empty_status(), abi::MPI_SUCCESS) };
            }
            Some(i) => {
                let (st, error) = complete(s, *i, &mut b.handles[k], true)?.expect("blocking completion");
                let code = error.map_or(abi::MPI_SUCCESS, |e| {
                    let code = crate::export::class_code(e.class);
                    first_error.get_or_insert(e);
                    code
                });
                // SAFETY: per the contract.
                unsafe { write_status_at(statuses, k, &st, code) };
                // SAFETY: as above.
                greq::query_into(s, unsafe { status_at(statuses, k) });
            }
        }
    }
    in_status(first_error)?;
    Ok(true)
}

/// The error of an array completion: `MPI_ERR_IN_STATUS`, raised on the handler of the first
/// request that failed (§3.7.5, §8.3).
fn in_status(first_error: Option<Fail>) -> Res<()> {
    match first_error {
        None => Ok(()),
        Some(e) => Err(Fail {
            class: ErrorClass::InStatus,
            detail: format!("a request completed with an error ({}: {}); see the statuses", e.class.name(), e.detail),
            handler: e.handler,
        }),
    }
}

/// Finds and completes one complete request of `b`; blocks for one when `block`.
/// Returns its position, or `None` if every request is null (or none is complete yet).
fn any(s: &mut State, b: &mut Batch<'_>, block: bool) -> Res<Option<(usize, Completed)>> {
    if b.indices.iter().all(Option::is_none) {
        return Ok(None);
    }
    let live: Vec<(usize, usize)> = b.indices.iter().enumerate().filter_map(|(k, idx)| idx.map(|i| (k, i))).collect();
    if block {
        greq::refuse_endless_wait(s, &live.iter().map(|&(_, i)| i).collect::<Vec<_>>(), false)?;
    }
    loop {
        let ids = pending_ids(s, live.iter().map(|(_, i)| i));
        let done = s.world()?.engine.test_each(&ids)?;
        if let Some(&(k, i)) = live.iter().zip(&done).find(|(_, &d)| d).map(|(ki, _)| ki) {
            let c = complete(s, i, &mut b.handles[k], true)?.expect("complete");
            return Ok(Some((k, c)));
        }
        if !block {
            return Ok(None);
        }
        let ids: Vec<_> = ids.into_iter().flatten().collect();
        s.world()?.engine.wait_any(&ids)?;
    }
}

mpi_fn! {
    fn Wait(request: *mut MPI_Request, status: *mut MPI_Status) -> c_int {
        // SAFETY: MPI_Wait's arguments: a request handle and a status (or IGNORE).
        call_blocking("MPI_Wait", None, |s, block| unsafe { wait_or_test(s, request, status, block) })
    }

    fn Test(request: *mut MPI_Request, flag: *mut c_int, status: *mut MPI_Status) -> c_int {
        call("MPI_Test", None, |s| {
            // SAFETY: as MPI_Wait.
            let done = unsafe { wait_or_test(s, request, status, false)? };
            // SAFETY: caller's output argument.
            unsafe { out(flag, done as c_int) }
        })
    }

    fn Waitall(count: c_int, array_of_requests: *mut MPI_Request, array_of_statuses: *mut MPI_Status) -> c_int {
        call_blocking("MPI_Waitall", None, |s, block| {
            // SAFETY: `count` handles and statuses (or IGNORE), per §3.7.5.
            let b = unsafe { batch(s, count, array_of_requests)? };
            // SAFETY: as above.
            unsafe { all(s, b, array_of_statuses, block) }
        })
    }

    fn Testall(count: c_int, array_of_requests: *mut MPI_Request, flag: *mut c_int, array_of_statuses: *mut MPI_Status) -> c_int {
        call("MPI_Testall", None, |s| {
            // SAFETY: as MPI_Waitall.
            let b = unsafe { batch(s, count, array_of_requests)? };
            // SAFETY: as MPI_Waitall.
            let done = unsafe { all(s, b, array_of_statuses, false)? };
            // SAFETY: caller's output argument.
            unsafe { out(flag, done as c_int) }
        })
    }

    fn Waitany(count: c_int, array_of_requests: *mut MPI_Request, index: *mut c_int, status: *mut MPI_Status) -> c_int {
        call_blocking("MPI_Waitany", None, |s, block| {
            // SAFETY: as MPI_Waitall.
            let mut b = unsafe { batch(s, count, array_of_requests)? };
            let all_null = b.indices.iter().all(Option::is_none);
            match any(s, &mut b, block)? {
                None if !all_null => Ok(false),
                None => {
                    // SAFETY: caller's output arguments.
                    unsafe { out(index, abi::MPI_UNDEFINED)?; write_status(status, &empty_status()) };
                    Ok(true)
                }
                Some((k, (st, error))) => {
                    // SAFETY: caller's output arguments.
                    unsafe { out(index, k as c_int)?; write_status(status, &st) };
                    greq::query_into(s, status);
                    error.map_or(Ok(true), Err)
                }
            }
        })
    }

    fn Testany(count: c_int, array_of_requests: *mut MPI_Request, index: *mut c_int, flag: *mut c_int, status: *mut MPI_Status) -> c_int {
        call("MPI_Testany", None, |s| {
            // SAFETY: as MPI_Waitall.
            let mut b = unsafe { batch(s, count, array_of_requests)? };
            let all_null = b.indices.iter().all(Option::is_none);
            match any(s, &mut b, false)? {
                None => {
                    // SAFETY: caller's output arguments.
                    unsafe {
                        out(index, abi::MPI_UNDEFINED)?;
                        out(flag, all_null as c_int)?;
                        if all_null {
                            write_status(status, &empty_status());
                        }
                    }
                    Ok(())
                }
                Some((k, (st, error))) => {
                    // SAFETY: caller's output arguments.
                    unsafe { out(index, k as c_int)?; out(flag, 1)?; write_status(status, &st) };
                    greq::query_into(s, status);
                    error.map_or(Ok(()), Err)
                }
            }
        })
    }

    fn Waitsome(incount: c_int, array_of_requests: *mut MPI_Request, outcount: *mut c_int, array_of_indices: *mut c_int, array_of_statuses: *mut MPI_Status) -> c_int {
        call_blocking("MPI_Waitsome", None, |s, block| {
            // SAFETY: as MPI_Waitall, plus `incount` indices.
            unsafe { some(s, incount, array_of_requests, outcount, array_of_indices, array_of_statuses, block) }
        })
    }

    fn Testsome(incount: c_int, array_of_requests: *mut MPI_Request, outcount: *mut c_int, array_of_indices: *mut c_int, array_of_statuses: *mut MPI_Status) -> c_int {
        call("MPI_Testsome", None, |s| {
            // SAFETY: as MPI_Waitsome.
            unsafe { some(s, incount, array_of_requests, outcount, array_of_indices, array_of_statuses, false) }.map(|_| ())
        })
    }

    fn Start(request: *mut MPI_Request) -> c_int {
        call("MPI_Start", None, |s| {
            // SAFETY: a request handle (§3.9).
            let Some(i) = (unsafe { read_request(s, request)? }) else {
                return fail(ErrorClass::Request, "MPI_Start of MPI_REQUEST_NULL");
            };
            start(s, i)
        })
    }

    fn Startall(count: c_int, array_of_requests: *mut MPI_Request) -> c_int {
        call("MPI_Startall", None, |s| {
            if count < 0 {
                return fail(ErrorClass::Count, format!("count {count} is negative"));
            }
            // SAFETY: `count` request handles (§3.9).
            let handles = unsafe { c_array_mut(array_of_requests, count as usize)? };
            for &h in handles.iter() {
                let Some(i) = s.request_index(h)? else {
                    return fail(ErrorClass::Request, "MPI_Startall of MPI_REQUEST_NULL");
                };
                start(s, i)?;
            }
            Ok(())
        })
    }

    fn Request_free(request: *mut MPI_Request) -> c_int {
        call("MPI_Request_free", None, |s| {
            // SAFETY: a request handle (§3.7.3).
            let Some(i) = (unsafe { read_request(s, request)? }) else {
                return fail(ErrorClass::Request, "MPI_REQUEST_NULL cannot be freed");
            };
            let pending = s.requests.get(i).expect("checked").req.pending();
            if greq::free(s, pending)? {
                // SAFETY: checked non-null by read_request.
                unsafe { *request = request_null() };
                return Ok(());
            }
            let e = s.requests.remove(i).expect("checked");
            if let Some(crate::state::Persistent::Collective(pc)) = e.req.persistent_args() {
                crate::api::coll::release_persistent(s, pc);
            }
            // The runtime finishes it in the background and then forgets it.
            e.req.free(&mut s.world()?.engine)?;
            // SAFETY: checked non-null by read_request.
            unsafe { *request = request_null() };
            Ok(())
        })
    }

    fn Request_get_status(request: MPI_Request, flag: *mut c_int, status: *mut MPI_Status) -> c_int {
        call("MPI_Request_get_status", None, |s| {
            let Some(i) = s.request_index(request)? else {
                // SAFETY: caller's output arguments.
                unsafe { out(flag, 1)?; write_status(status, &empty_status()) };
                return Ok(());
            };
            // Progresses in any case, as a test does, without completing the request.
            s.world()?;
            let w = s.world.as_mut().expect("checked");
            let done = s.requests.get(i).expect("checked").req.peek(&mut w.engine)?;
            // SAFETY: caller's output arguments.
            unsafe {
                out(flag, done.is_some() as c_int)?;
                if let Some(st) = done {
                    write_status(status, &st);
                }
            }
            if done.is_some() {
                greq::query_only(s, i, status);
            }
            Ok(())
        })
    }

    fn Cancel(request: *mut MPI_Request) -> c_int {
        call("MPI_Cancel", None, |s| {
            // SAFETY: a request handle (§3.8.4).
            let Some(i) = (unsafe { read_request(s, request)? }) else {
                return fail(ErrorClass::Request, "MPI_REQUEST_NULL cannot be cancelled");
            };
            if greq::cancel(s, i)? {
                return Ok(());
            }
            s.world()?;
            let w = s.world.as_mut().expect("checked");
            s.requests.get(i).expect("checked").req.cancel(&mut w.engine);
            Ok(())
        })
    }

    fn Test_cancelled(status: *const MPI_Status, flag: *mut c_int) -> c_int {
        call("MPI_Test_cancelled", None, |_| {
            if status.is_null() {
                return fail(ErrorClass::Arg, "NULL status");
            }
            // SAFETY: non-null status written by kawarimi.
            let c = unsafe { (*status)._cancelled };
            // SAFETY: caller's output argument.
            unsafe { out(flag, (c != 0) as c_int) }
        })
    }

    fn Get_count(status: *const MPI_Status, datatype: MPI_Datatype, count: *mut c_int) -> c_int {
        call("MPI_Get_count", None, |s| {
            let n = status_units(s, status, datatype, false)?;
            // SAFETY: caller's output argument.
            unsafe { out(count, as_int_count(n)) }
        })
    }

    fn Get_elements(status: *const MPI_Status, datatype: MPI_Datatype, count: *mut c_int) -> c_int {
        call("MPI_Get_elements", None, |s| {
            let n = status_units(s, status, datatype, true)?;
            // SAFETY: caller's output argument.
            unsafe { out(count, as_int_count(n)) }
        })
    }

    fn Get_elements_x(status: *const MPI_Status, datatype: MPI_Datatype, count: *mut MPI_Count) -> c_int {
        call("MPI_Get_elements_x", None, |s| {
            let n = status_units(s, status, datatype, true)?;
            let n = n.and_then(|n| MPI_Count::try_from(n).ok()).unwrap_or(abi::MPI_UNDEFINED as MPI_Count);
            // SAFETY: caller's output argument.
            unsafe { out(count, n) }
        })
    }

    fn Status_set_elements(status: *mut MPI_Status, datatype: MPI_Datatype, count: c_int) -> c_int {
        call("MPI_Status_set_elements", None, |s| set_elements(s, status, datatype, count as i64))
    }

    fn Status_set_elements_x(status: *mut MPI_Status, datatype: MPI_Datatype, count: MPI_Count) -> c_int {
        call("MPI_Status_set_elements_x", None, |s| set_elements(s, status, datatype, count))
    }

    fn Status_set_cancelled(status: *mut MPI_Status, flag: c_int) -> c_int {
        call("MPI_Status_set_cancelled", None, |_| {
            if status.is_null() || status as usize == abi::MPI_STATUS_IGNORE {
                return fail(ErrorClass::Arg, "status is NULL or MPI_STATUS_IGNORE");
            }
            // SAFETY: a writable status (§12.3).
            unsafe { (*status)._cancelled = (flag != 0) as c_int };
            Ok(())
        })
    }

    fn Improbe(source: c_int, tag: c_int, comm: MPI_Comm, flag: *mut c_int, message: *mut MPI_Message, status: *mut MPI_Status) -> c_int {
        call("MPI_Improbe", Some(comm), |s| {
            let found = matched_probe(s, source, tag, comm, false)?;
            // SAFETY: caller's output arguments.
            unsafe {
                out(flag, found.is_some() as c_int)?;
                if let Some((m, st)) = found {
                    out(message, m)?;
                    write_status(status, &st);
                }
            }
            Ok(())
        })
    }

    fn Mprobe(source: c_int, tag: c_int, comm: MPI_Comm, message: *mut MPI_Message, status: *mut MPI_Status) -> c_int {
        call_blocking("MPI_Mprobe", Some(comm), |s, block| {
            let Some((m, st)) = matched_probe(s, source, tag, comm, block)? else { return Ok(false) };
            // SAFETY: caller's output arguments.
            unsafe {
                out(message, m)?;
                write_status(status, &st);
            }
            Ok(true)
        })
    }

    fn Mrecv(buf: *mut c_void, count: c_int, datatype: MPI_Datatype, message: *mut MPI_Message, status: *mut MPI_Status) -> c_int {
        blocking(
            "MPI_Mrecv",
            None,
            // SAFETY: the receive buffer and message handle of §3.8.3, for the call.
            |s| Ok([unsafe { post_mrecv(s, buf, count, datatype, message)? }]),
            // SAFETY: the caller's status argument.
            |_, [got]| unsafe { received(status, got) },
        )
    }

    fn Imrecv(buf: *mut c_void, count: c_int, datatype: MPI_Datatype, message: *mut MPI_Message, request: *mut MPI_Request) -> c_int {
        call("MPI_Imrecv", None, |s| {
            // SAFETY: the receive buffer (until completion) and message handle of §3.8.3.
            let e = unsafe { post_mrecv(s, buf, count, datatype, message)? };
            let h = s.new_request(e)?;
            // SAFETY: caller's output argument.
            unsafe { out(request, h) }
        })
    }

    fn Iprobe(source: c_int, tag: c_int, comm: MPI_Comm, flag: *mut c_int, status: *mut MPI_Status) -> c_int {
        call("MPI_Iprobe", Some(comm), |s| {
            let found = probe(s, source, tag, comm, false)?;
            // SAFETY: caller's output arguments.
            unsafe {
                out(flag, found.is_some() as c_int)?;
                if let Some(st) = found {
                    write_status(status, &st);
                }
            }
            Ok(())
        })
    }

    fn Probe(source: c_int, tag: c_int, comm: MPI_Comm, status: *mut MPI_Status) -> c_int {
        call_blocking("MPI_Probe", Some(comm), |s, block| {
            let Some(st) = probe(s, source, tag, comm, block)? else { return Ok(false) };
            // SAFETY: caller's status argument.
            unsafe { write_status(status, &st) };
            Ok(true)
        })
    }
}

/// `MPI_Waitsome`/`MPI_Testsome` (§3.7.5).
///
/// # Safety
/// Arrays of `incount` requests, indices and statuses (or IGNORE); `outcount` writable.
unsafe fn some(
    s: &mut State,
    incount: c_int,
    requests: *mut MPI_Request,
    outcount: *mut c_int,
    indices: *mut c_int,
    statuses: *mut MPI_Status,
    block: bool,
) -> Res<bool> {
    // SAFETY: per the contract.
    let mut b = unsafe { batch(s, incount, requests)? };
    if b.indices.iter().all(Option::is_none) {
        // SAFETY: caller's output argument.
        return unsafe { out(outcount, abi::MPI_UNDEFINED) }.map(|_| true);
    }
    // SAFETY: per the contract.
    let idx_out = unsafe { c_array_mut(indices, incount as usize)? };
    let mut n = 0usize;
    let mut first_error = None;
    // First call may block for one; then collect every other one already complete.
    let mut blocking = block;
    while let Some((k, (st, error))) = any(s, &mut b, blocking)? {
        blocking = false;
        b.indices[k] = None;
        idx_out[n] = k as c_int;
        let code = error.map_or(abi::MPI_SUCCESS, |e| {
            let code = crate::export::class_code(e.class);
            first_error.get_or_insert(e);
            code
        });
        // SAFETY: per the contract; `n < incount`.
        unsafe { write_status_at(statuses, n, &st, code) };
        // SAFETY: as above.
        greq::query_into(s, unsafe { status_at(statuses, n) });
        n += 1;
    }
    // SAFETY: caller's output argument.
    unsafe { out(outcount, n as c_int)? };
    in_status(first_error)?;
    Ok(n > 0)
}

/// `MPI_Status_set_elements(_x)` (§12.3): the status then reports `count` elements of
/// `datatype` (as bytes, which is what kawarimi's statuses hold).
fn set_elements(s: &mut State, status: *mut MPI_Status, datatype: MPI_Datatype, count: i64) -> Res<()> {
    if status.is_null() || status as usize == abi::MPI_STATUS_IGNORE {
        return fail(ErrorClass::Arg, "status is NULL or MPI_STATUS_IGNORE");
    }
    if count < 0 {
        return fail(ErrorClass::Count, format!("count {count} is negative"));
    }
    let dt = s.datatype(datatype)?;
    // Elements are the type map's basic elements, in order: of a struct {char, int} three
    // are a whole copy and a char.
    let Some(bytes) = usize::try_from(count).ok().and_then(|c| dt.bytes_of_elements(c)) else {
        return fail(ErrorClass::Count, format!("{count} elements of this datatype do not fit a status"));
    };
    // SAFETY: a writable status (§12.3).
    unsafe { (*status)._ucount = bytes };
    Ok(())
}

/// A count for the `int` forms: `MPI_UNDEFINED` when there is none or it does not fit (the
/// `_x` forms give it whole).
fn as_int_count(n: Option<usize>) -> c_int {
    n.and_then(|n| c_int::try_from(n).ok()).unwrap_or(abi::MPI_UNDEFINED)
}

/// `MPI_Get_count` (whole datatypes) or `MPI_Get_elements` (primitive elements) of a status;
/// `None` when the bytes are not a whole number of them.
fn status_units(
    s: &mut State,
    status: *const MPI_Status,
    datatype: MPI_Datatype,
    elements: bool,
) -> Res<Option<usize>> {
    if status.is_null() || status as usize == abi::MPI_STATUS_IGNORE {
        return fail(ErrorClass::Arg, "status is NULL or MPI_STATUS_IGNORE");
    }
    let dt = s.datatype(datatype)?;
    // SAFETY: non-null status the application passes back to us.
    let bytes = unsafe { (*status)._ucount };
    Ok(if elements { dt.elements_in(bytes) } else { dt.count_in(bytes) })
}

fn message_null() -> MPI_Message {
    abi::predefined().message_handle(abi::PredefMessage::MessageNull) as MPI_Message
}

/// `MPI_(I)mprobe`: takes the first matching message out of the queue into a message handle.
fn matched_probe(
    s: &mut State,
    source: c_int,
    tag: c_int,
    comm: MPI_Comm,
    block: bool,
) -> Res<Option<(MPI_Message, Status)>> {
    let (c, handler) = comm_of(s, comm)?;
    if source == abi::MPI_PROC_NULL {
        let no_proc = abi::predefined().message_handle(abi::PredefMessage::NoProc) as MPI_Message;
        let st = Status { source: abi::MPI_PROC_NULL, tag: abi::MPI_ANY_TAG, len: 0, cancelled: false, error: None };
        return Ok(Some((no_proc, st)));
    }
    if tag < 0 && tag != abi::MPI_ANY_TAG {
        return fail(ErrorClass::Tag, format!("tag {tag} is negative"));
    }
    let src = if source == abi::MPI_ANY_SOURCE { ANY_SOURCE } else { c.peer(source)? as i32 };
    let tag = if tag == abi::MPI_ANY_TAG { ANY_TAG } else { tag };
    let Some((id, p)) = s.world()?.engine.probe_matched(src, c.ctx, tag, block)? else { return Ok(None) };
    let st = Status { source: c.rank_of_world(p.source as u32), tag: p.tag, len: p.len, cancelled: false, error: None };
    let i = s.messages.insert((id, c, handler)).ok_or_else(|| crate::state::table_full("messages"))?;
    Ok(Some((encode(Kind::Message, i) as MPI_Message, st)))
}

/// Starts the receive of a matched message, setting the caller's handle to
/// `MPI_MESSAGE_NULL` (§3.8.3).
///
/// # Safety
/// `buf` must obey the receive-buffer rule until completion; `message` must point to a
/// message handle.
unsafe fn post_mrecv(
    s: &mut State,
    buf: *mut c_void,
    count: c_int,
    datatype: MPI_Datatype,
    message: *mut MPI_Message,
) -> Res<RequestEntry> {
    if message.is_null() {
        return fail(ErrorClass::Arg, "NULL message pointer");
    }
    // SAFETY: non-null, per the contract.
    let h = unsafe { *message } as usize;
    let dt = check_buffer(s, count, datatype)?;
    if abi::predefined().message(h) == Some(abi::PredefMessage::NoProc) {
        // SAFETY: as above.
        unsafe { *message = message_null() };
        let st = Status { source: abi::MPI_PROC_NULL, tag: abi::MPI_ANY_TAG, len: 0, cancelled: false, error: None };
        let world = s.world()?.world.clone();
        return Ok(RequestEntry { req: Request::complete(st, world, true), handler: crate::state::Handler::Fatal });
    }
    let Some(i) = decode(h, Kind::Message) else {
        return fail(ErrorClass::Request, format!("{h:#x} is not a message handle"));
    };
    let Some((id, comm, handler)) = s.messages.remove(i) else {
        return fail(ErrorClass::Request, "message was already received");
    };
    // SAFETY: per the contract.
    let (target, finish) = unsafe { recv_target(buf, count as usize, &dt)? };
    let core_id = s.world()?.engine.mrecv(id, target)?;
    // SAFETY: as above.
    unsafe { *message = message_null() };
    Ok(RequestEntry { req: Request::posted(core_id, comm, true, finish), handler })
}

fn probe(s: &mut State, source: c_int, tag: c_int, comm: MPI_Comm, block: bool) -> Res<Option<Status>> {
    let (comm, _) = comm_of(s, comm)?;
    if source == abi::MPI_PROC_NULL {
        return Ok(Some(Status {
            source: abi::MPI_PROC_NULL,
            tag: abi::MPI_ANY_TAG,
            len: 0,
            cancelled: false,
            error: None,
        }));
    }
    if tag < 0 && tag != abi::MPI_ANY_TAG {
        return fail(ErrorClass::Tag, format!("tag {tag} is negative"));
    }
    let src = if source == abi::MPI_ANY_SOURCE { ANY_SOURCE } else { comm.peer(source)? as i32 };
    let tag = if tag == abi::MPI_ANY_TAG { ANY_TAG } else { tag };
    let found = s.world()?.engine.probe(src, comm.ctx, tag, block)?;
    Ok(found.map(|p| Status {
        source: comm.rank_of_world(p.source as u32),
        tag: p.tag,
        len: p.len,
        cancelled: false,
        error: None,
    }))
}
