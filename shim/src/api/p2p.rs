//! Point-to-point communication (MPI-3.1 chapter 3).

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use kawarimi_runtime::bsend::BsendBuffer;
use kawarimi_runtime::comm::Comm;
use kawarimi_runtime::core::{RecvBuf, SendData, Status, ANY_SOURCE, ANY_TAG};
use kawarimi_runtime::datatype::Datatype;
use kawarimi_runtime::error::{ErrorClass, MpiError};
use kawarimi_runtime::request::{self, Finish, Outcome};

use crate::abi::{self, MPI_Comm, MPI_Datatype, MPI_Request, MPI_Status};
use crate::export::call;
use crate::mem::{out, user_bytes, user_bytes_mut};
use crate::state::{fail, CollFinish, Fail, Handler, Mode, Persistent, Request, RequestEntry, Res, State, Transfer};

/// The largest tag kawarimi carries (`MPI_TAG_UB`): the wire's tag field is an i32.
pub const TAG_UB: c_int = i32::MAX;

/// The communicator behind `h` and the handler its errors go to.
pub fn comm_of(s: &State, h: MPI_Comm) -> Res<(Arc<Comm>, Handler)> {
    let e = s.comm_entry(h)?;
    Ok((e.comm.clone(), e.handler))
}

/// Checks `count` and `dt` for use in communication.
pub fn check_buffer(s: &mut State, count: c_int, dt: MPI_Datatype) -> Res<Arc<Datatype>> {
    if count < 0 {
        return fail(ErrorClass::Count, format!("count {count} is negative"));
    }
    let dt = s.datatype(dt)?;
    if !dt.is_committed() {
        return fail(ErrorClass::Type, "datatype is not committed (call MPI_Type_commit)");
    }
    Ok(dt)
}

/// The bytes a send of `count` × `dt` from `buf` puts on the wire (packed), borrowing the
/// application's buffer when the layout is contiguous.
///
/// # Safety
/// `buf` must describe `count` elements of `dt` that stay unmodified until the send completes.
pub unsafe fn send_bytes(buf: *const c_void, count: usize, dt: &Datatype) -> Res<SendData> {
    if dt.is_contiguous() {
        // SAFETY: per this function's contract.
        return Ok(SendData::Static(unsafe { user_bytes(buf, 0, (count * dt.size()) as isize)? }));
    }
    let (lo, hi) = dt.span(count);
    // SAFETY: per this function's contract; `span` covers every byte the type map touches.
    let base = unsafe { user_bytes(buf, lo, hi)? };
    let mut packed = Vec::with_capacity(count * dt.size());
    dt.pack(base, (-lo) as usize, count, &mut packed);
    Ok(SendData::Owned(packed))
}

/// Where a receive of `count` × `dt` into `buf` lands, and what remains to do at completion
/// (see [`kawarimi_runtime::request::recv_target`]).
///
/// # Safety
/// `buf` must describe `count` elements of `dt` that the application leaves alone until the
/// receive completes.
pub unsafe fn recv_target(buf: *mut c_void, count: usize, dt: &Arc<Datatype>) -> Res<(RecvBuf, Finish<CollFinish>)> {
    Ok(request::recv_target(dt, count, |lo, hi| {
        // SAFETY: the span of the receive's type map from the program's buffer, which MPI's
        // receive-buffer rule leaves to kawarimi until completion (this function's contract).
        unsafe { user_bytes_mut(buf, lo, hi) }.map_err(|f| MpiError::new(f.class, f.detail))
    })?)
}

fn check_tag(tag: c_int, recv: bool) -> Res<()> {
    // Every non-negative int is at most TAG_UB, so only the sign needs checking.
    if tag < 0 && !(recv && tag == abi::MPI_ANY_TAG) {
        return fail(ErrorClass::Tag, format!("tag {tag} is outside 0..={TAG_UB}"));
    }
    Ok(())
}

fn check_rank(comm: &Comm, r: c_int, recv: bool) -> Res<()> {
    if r == abi::MPI_PROC_NULL || (recv && r == abi::MPI_ANY_SOURCE) || (0..comm.p2p_size()).contains(&r) {
        return Ok(());
    }
    fail(ErrorClass::Rank, format!("rank {r} is not in a communicator of {}", comm.p2p_size()))
}

/// A request that is complete from the start (`MPI_PROC_NULL`, §3.11).
fn proc_null_request(comm: Arc<Comm>, handler: Handler, is_recv: bool) -> RequestEntry {
    let st = Status { source: abi::MPI_PROC_NULL, tag: abi::MPI_ANY_TAG, len: 0, cancelled: false, error: None };
    RequestEntry { req: Request::complete(st, comm, is_recv), handler }
}

/// `r` with its error, if it has no handler of its own, going to `handler` (the object's).
pub(crate) fn with_handler<T>(r: Res<T>, handler: Handler) -> Res<T> {
    r.map_err(|mut e| {
        if e.handler == Handler::Fatal {
            e.handler = handler;
        }
        e
    })
}

/// Starts a send; the request entry describes it.
///
/// # Safety
/// As for [`send_bytes`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn post_send(
    s: &mut State,
    buf: *const c_void,
    count: c_int,
    dt: MPI_Datatype,
    dest: c_int,
    tag: c_int,
    comm: MPI_Comm,
    mode: Mode,
) -> Res<RequestEntry> {
    let (comm, handler) = comm_of(s, comm)?;
    let dt = with_handler(check_buffer(s, count, dt), handler)?;
    // SAFETY: forwarded contract.
    with_handler(unsafe { post_send_checked(s, buf, count, dt, dest, tag, comm, handler, mode) }, handler)
}

/// [`post_send`] with the communicator and datatype already found (a persistent request
/// keeps them: the program may free their handles after its `*_init` call, §3.9).
///
/// # Safety
/// As for [`send_bytes`].
#[allow(clippy::too_many_arguments)]
unsafe fn post_send_checked(
    s: &mut State,
    buf: *const c_void,
    count: c_int,
    dt: Arc<Datatype>,
    dest: c_int,
    tag: c_int,
    comm: Arc<Comm>,
    handler: Handler,
    mode: Mode,
) -> Res<RequestEntry> {
    check_tag(tag, false)?;
    check_rank(&comm, dest, false)?;
    if dest == abi::MPI_PROC_NULL {
        return Ok(proc_null_request(comm, handler, false));
    }
    // SAFETY: forwarded contract.
    let data = unsafe { send_bytes(buf, count as usize, &dt)? };
    let buffered = mode == Mode::Buffered;
    let need = count as usize * dt.size() + abi::MPI_BSEND_OVERHEAD as usize;
    let data = if buffered {
        s.world()?; // MPI is up (its error otherwise)
        let w = s.world.as_mut().expect("checked");
        let Some(b) = s.bsend_buffer.as_mut() else {
            return fail(ErrorClass::Buffer, "MPI_Bsend without an attached buffer (MPI_Buffer_attach)");
        };
        b.reserve(&mut w.engine, need)?;
        // The copy is the buffering: the application may reuse its buffer at once.
        match data {
            SendData::Static(b) => SendData::Owned(b.to_vec()),
            owned => owned,
        }
    } else {
        data
    };
    let peer = comm.peer(dest)? as i32;
    let w = s.world()?;
    // A standard send (a ready one may be one, §3.4) of an eager message is complete as its
    // frame is queued: the engine makes no request for it, and the caller's is complete.
    if matches!(mode, Mode::Standard | Mode::Ready) && w.engine.send_eager(peer, comm.ctx, tag, data.as_slice())? {
        return Ok(RequestEntry { req: Request::complete(Status::default(), comm, false), handler });
    }
    let id = w.engine.isend(peer, comm.ctx, tag, data, mode == Mode::Synchronous)?;
    if buffered {
        // The data is already in the attached buffer: the send is complete at once (§3.6),
        // and the buffer space is released when the transfer ends.
        s.bsend_buffer.as_mut().expect("reserved above").hold(id, need);
        return Ok(RequestEntry { req: Request::complete(Status::default(), comm, false), handler });
    }
    Ok(RequestEntry { req: Request::posted(id, comm, false, Finish::Nothing), handler })
}

/// Starts a receive.
///
/// # Safety
/// As for [`recv_target`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn post_recv(
    s: &mut State,
    buf: *mut c_void,
    count: c_int,
    dt: MPI_Datatype,
    source: c_int,
    tag: c_int,
    comm: MPI_Comm,
) -> Res<RequestEntry> {
    let (comm, handler) = comm_of(s, comm)?;
    let dt = with_handler(check_buffer(s, count, dt), handler)?;
    // SAFETY: forwarded contract.
    unsafe { post_recv_checked(s, buf, count, dt, source, tag, comm, handler) }
}

/// [`post_recv`] with the communicator and datatype already found (see [`post_send_checked`]).
///
/// # Safety
/// As for [`recv_target`].
#[allow(clippy::too_many_arguments)]
unsafe fn post_recv_checked(
    s: &mut State,
    buf: *mut c_void,
    count: c_int,
    dt: Arc<Datatype>,
    source: c_int,
    tag: c_int,
    comm: Arc<Comm>,
    handler: Handler,
) -> Res<RequestEntry> {
    let r = (|| {
        check_tag(tag, true)?;
        check_rank(&comm, source, true)?;
        if source == abi::MPI_PROC_NULL {
            return Ok(proc_null_request(comm.clone(), handler, true));
        }
        // SAFETY: forwarded contract.
        let (target, finish) = unsafe { recv_target(buf, count as usize, &dt)? };
        let src = if source == abi::MPI_ANY_SOURCE { ANY_SOURCE } else { comm.peer(source)? as i32 };
        let tag = if tag == abi::MPI_ANY_TAG { ANY_TAG } else { tag };
        let id = s.world()?.engine.irecv(src, comm.ctx, tag, target)?;
        Ok(RequestEntry { req: Request::posted(id, comm.clone(), true, finish), handler })
    })();
    with_handler(r, handler)
}

/// Completes a request if it can (blocking when `block`), including the shim's part of a
/// collective: `None` while it is in progress; else its status, and the error it completed
/// with (a truncated receive, a failed collective), which goes to its handler.
pub fn complete_entry(s: &mut State, e: &mut RequestEntry, block: bool) -> Res<Option<(Status, Option<Fail>)>> {
    let with = |handler, err: Fail| Fail { handler, ..err };
    // An engine failure is the job's, not the request's: it goes to the fatal handler as before.
    let outcome = e.req.progress(&mut s.world()?.engine, block)?;
    Ok(outcome.map(|o| match o {
        Outcome::Done(st) => (st, None),
        Outcome::Failed(st, err) => (st, Some(with(e.handler, err.into()))),
        Outcome::Collective(finish, buffers) => {
            let st = request::empty_status();
            (st, (finish.0)(s, buffers).err().map(|err| with(e.handler, err)))
        }
    }))
}

/// A completion: its status, and the error the request completed with, if it did.
pub type Completion = (Status, Option<Fail>);

/// Completes the `N` transfers `post` starts, then hands `then` their completions in the
/// order posted; at `MPI_THREAD_MULTIPLE` without holding the state while it waits
/// ([`crate::export::call_blocking`]). Fixed-size arrays, not vectors: a blocking
/// `MPI_Send` or `MPI_Recv` allocates nothing here.
pub(crate) fn blocking<const N: usize>(
    name: &'static str,
    comm: Option<MPI_Comm>,
    post: impl FnOnce(&mut State) -> Res<[RequestEntry; N]>,
    then: impl FnOnce(&mut State, [Completion; N]) -> Res<()>,
) -> c_int {
    let (mut post, mut then) = (Some(post), Some(then));
    let mut entries: Option<[RequestEntry; N]> = None;
    let mut done: [Option<Completion>; N] = std::array::from_fn(|_| None);
    crate::export::call_blocking(name, comm, |s, block| {
        if let Some(post) = post.take() {
            entries = Some(post(s)?);
        }
        let entries = entries.as_mut().expect("posted by the first try");
        for (e, d) in entries.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                *d = complete_entry(s, e, block)?;
            }
        }
        if done.iter().any(Option::is_none) {
            return Ok(false);
        }
        let then = then.take().expect("a call completes once");
        then(s, std::mem::replace(&mut done, std::array::from_fn(|_| None)).map(|d| d.expect("checked above")))?;
        Ok(true)
    })
}

/// The completion of a receive: its status written (also when it failed, e.g. truncated,
/// §3.2.5), then its error.
///
/// # Safety
/// `status` as for [`write_status`].
pub(crate) unsafe fn received(status: *mut MPI_Status, (st, error): Completion) -> Res<()> {
    // SAFETY: per the contract.
    unsafe { write_status(status, &st) };
    error.map_or(Ok(()), Err)
}

/// Writes a status for the application (§3.2.5). `_ucount` holds the received byte count.
///
/// # Safety
/// `p` must be `MPI_STATUS_IGNORE` or point to a writable `MPI_Status`.
pub unsafe fn write_status(p: *mut MPI_Status, st: &Status) {
    if p as usize == abi::MPI_STATUS_IGNORE {
        return;
    }
    // SAFETY: per the contract, `p` points to a writable MPI_Status.
    let p = unsafe { &mut *p };
    p.MPI_SOURCE = st.source;
    p.MPI_TAG = st.tag;
    p._cancelled = st.cancelled as c_int;
    p._ucount = st.len;
}

/// Runs a send of any mode: blocking when `request` is `None` (it returns once the send
/// completes), else nonblocking (it stores the request handle there).
///
/// # Safety
/// As for [`send_bytes`], for the duration of the call, or until the request completes;
/// `request`, when given, must be writable.
#[allow(clippy::too_many_arguments)]
unsafe fn send(
    name: &'static str,
    buf: *const c_void,
    count: c_int,
    dt: MPI_Datatype,
    dest: c_int,
    tag: c_int,
    comm: MPI_Comm,
    mode: Mode,
    request: Option<*mut MPI_Request>,
) -> c_int {
    let post = move |s: &mut State| {
        // SAFETY: forwarded contract (for the call, or until the request completes).
        unsafe { post_send(s, buf, count, dt, dest, tag, comm, mode) }
    };
    match request {
        None => blocking(name, Some(comm), |s| Ok([post(s)?]), |_, [(_, error)]| error.map_or(Ok(()), Err)),
        Some(request) => call(name, Some(comm), |s| {
            let e = post(s)?;
            let h = s.new_request(e)?;
            // SAFETY: caller's output argument.
            unsafe { out(request, h) }
        }),
    }
}

mpi_fn! {
    fn Send(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm) -> c_int {
        // SAFETY: MPI_Send's buffer contract, for the duration of the call.
        unsafe { send("MPI_Send", buf, count, datatype, dest, tag, comm, Mode::Standard, None) }
    }

    fn Ssend(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm) -> c_int {
        // SAFETY: as MPI_Send.
        unsafe { send("MPI_Ssend", buf, count, datatype, dest, tag, comm, Mode::Synchronous, None) }
    }

    fn Rsend(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm) -> c_int {
        // SAFETY: as MPI_Send. A ready send may be a standard send (§3.4).
        unsafe { send("MPI_Rsend", buf, count, datatype, dest, tag, comm, Mode::Ready, None) }
    }

    fn Bsend(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm) -> c_int {
        // SAFETY: as MPI_Send; the data is copied before return.
        unsafe { send("MPI_Bsend", buf, count, datatype, dest, tag, comm, Mode::Buffered, None) }
    }

    fn Isend(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        // SAFETY: MPI_Isend's buffer contract, until the request completes.
        unsafe { send("MPI_Isend", buf, count, datatype, dest, tag, comm, Mode::Standard, Some(request)) }
    }

    fn Issend(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        // SAFETY: as MPI_Isend.
        unsafe { send("MPI_Issend", buf, count, datatype, dest, tag, comm, Mode::Synchronous, Some(request)) }
    }

    fn Irsend(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        // SAFETY: as MPI_Isend.
        unsafe { send("MPI_Irsend", buf, count, datatype, dest, tag, comm, Mode::Ready, Some(request)) }
    }

    fn Ibsend(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        // SAFETY: as MPI_Isend.
        unsafe { send("MPI_Ibsend", buf, count, datatype, dest, tag, comm, Mode::Buffered, Some(request)) }
    }

    fn Recv(buf: *mut c_void, count: c_int, datatype: MPI_Datatype, source: c_int, tag: c_int, comm: MPI_Comm, status: *mut MPI_Status) -> c_int {
        blocking(
            "MPI_Recv",
            Some(comm),
            // SAFETY: MPI_Recv's buffer contract, for the duration of the call.
            |s| Ok([unsafe { post_recv(s, buf, count, datatype, source, tag, comm)? }]),
            // SAFETY: the caller's status argument.
            |_, [got]| unsafe { received(status, got) },
        )
    }

    fn Irecv(buf: *mut c_void, count: c_int, datatype: MPI_Datatype, source: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        call("MPI_Irecv", Some(comm), |s| {
            // SAFETY: MPI_Irecv's buffer contract, until the request completes.
            let e = unsafe { post_recv(s, buf, count, datatype, source, tag, comm)? };
            let h = s.new_request(e)?;
            // SAFETY: caller's output argument.
            unsafe { out(request, h) }
        })
    }

    fn Sendrecv(
        sendbuf: *const c_void, sendcount: c_int, sendtype: MPI_Datatype, dest: c_int, sendtag: c_int,
        recvbuf: *mut c_void, recvcount: c_int, recvtype: MPI_Datatype, source: c_int, recvtag: c_int,
        comm: MPI_Comm, status: *mut MPI_Status,
    ) -> c_int {
        let post = |s: &mut State| {
            // SAFETY: MPI_Sendrecv's buffer contracts, for the duration of the call.
            let r = unsafe { post_recv(s, recvbuf, recvcount, recvtype, source, recvtag, comm)? };
            // SAFETY: as above.
            let w = unsafe { post_send(s, sendbuf, sendcount, sendtype, dest, sendtag, comm, Mode::Standard)? };
            Ok([r, w])
        };
        blocking("MPI_Sendrecv", Some(comm), post, |_, [got, (_, sent_error)]| {
            sent_error.map_or(Ok(()), Err)?;
            // SAFETY: the caller's status argument.
            unsafe { received(status, got) }
        })
    }

    fn Sendrecv_replace(
        buf: *mut c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, sendtag: c_int,
        source: c_int, recvtag: c_int, comm: MPI_Comm, status: *mut MPI_Status,
    ) -> c_int {
        // The outgoing data is packed into our own memory first, so the receive may overwrite
        // the buffer. It outlives the send, which completes before `blocking` returns.
        let mut data: Vec<u8> = Vec::new();
        let post = |s: &mut State| {
            let dt = check_buffer(s, count, datatype)?;
            // SAFETY: the buffer is the caller's for the duration of the call.
            data = match unsafe { send_bytes(buf, count as usize, &dt)? } {
                SendData::Static(b) => b.to_vec(),
                SendData::Owned(v) => v,
            };
            // SAFETY: `data` outlives the send (above).
            let w = unsafe {
                post_send(s, data.as_ptr() as *const c_void, data.len() as c_int, byte_handle(), dest, sendtag, comm, Mode::Standard)?
            };
            // SAFETY: the caller's buffer, for the duration of the call.
            let r = unsafe { post_recv(s, buf, count, datatype, source, recvtag, comm)? };
            Ok([w, r])
        };
        let rc = blocking("MPI_Sendrecv_replace", Some(comm), post, |s, [(_, sent_error), got]| {
            let (_, handler) = comm_of(s, comm)?;
            with_handler(sent_error.map_or(Ok(()), Err), handler)?;
            // SAFETY: the caller's status argument.
            unsafe { received(status, got) }
        });
        drop(data);
        rc
    }

    fn Send_init(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        // SAFETY: MPI_Send_init's buffer contract.
        unsafe { persistent_init("MPI_Send_init", Some(Mode::Standard), buf, count, datatype, dest, tag, comm, request) }
    }

    fn Ssend_init(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        // SAFETY: as MPI_Send_init.
        unsafe { persistent_init("MPI_Ssend_init", Some(Mode::Synchronous), buf, count, datatype, dest, tag, comm, request) }
    }

    fn Rsend_init(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        // SAFETY: as MPI_Send_init.
        unsafe { persistent_init("MPI_Rsend_init", Some(Mode::Ready), buf, count, datatype, dest, tag, comm, request) }
    }

    fn Bsend_init(buf: *const c_void, count: c_int, datatype: MPI_Datatype, dest: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        // SAFETY: as MPI_Send_init.
        unsafe { persistent_init("MPI_Bsend_init", Some(Mode::Buffered), buf, count, datatype, dest, tag, comm, request) }
    }

    fn Recv_init(buf: *mut c_void, count: c_int, datatype: MPI_Datatype, source: c_int, tag: c_int, comm: MPI_Comm, request: *mut MPI_Request) -> c_int {
        // SAFETY: MPI_Recv_init's buffer contract.
        unsafe { persistent_init("MPI_Recv_init", None, buf, count, datatype, source, tag, comm, request) }
    }

    fn Buffer_attach(buffer: *mut c_void, size: c_int) -> c_int {
        call("MPI_Buffer_attach", None, |s| {
            if size < 0 {
                return fail(ErrorClass::Arg, format!("buffer size {size} is negative"));
            }
            if s.bsend_buffer.is_some() {
                return fail(ErrorClass::Buffer, "a buffer is already attached");
            }
            // kawarimi copies buffered messages into its own memory; the attached buffer only
            // bounds how much may be outstanding, as the standard's accounting requires.
            s.bsend_buffer = Some(BsendBuffer::new(buffer as usize, size as usize));
            Ok(())
        })
    }

    fn Buffer_detach(buffer_addr: *mut c_void, size: *mut c_int) -> c_int {
        call("MPI_Buffer_detach", None, |s| {
            // Blocks until every buffered message has been transmitted (§3.6.1).
            let Some(b) = s.bsend_buffer.take() else {
                return fail(ErrorClass::Buffer, "no buffer is attached");
            };
            let (addr, len) = b.detach(&mut s.world()?.engine)?;
            // SAFETY: `buffer_addr` is a `void**` output argument (§3.6.1).
            unsafe { out(buffer_addr as *mut *mut c_void, addr as *mut c_void)? };
            // SAFETY: caller's output argument.
            unsafe { out(size, len as c_int) }
        })
    }
}

/// Creates an inactive persistent request after checking its arguments as the call would.
///
/// # Safety
/// The buffer must obey MPI's rules from each `MPI_Start` until the request completes.
#[allow(clippy::too_many_arguments)]
unsafe fn persistent_init(
    name: &'static str,
    send_mode: Option<Mode>,
    buf: *const c_void,
    count: c_int,
    datatype: MPI_Datatype,
    peer: c_int,
    tag: c_int,
    comm: MPI_Comm,
    request: *mut MPI_Request,
) -> c_int {
    call(name, Some(comm), |s| {
        let (c, handler) = comm_of(s, comm)?;
        let checked = (|| {
            let dt = check_buffer(s, count, datatype)?;
            check_tag(tag, send_mode.is_none())?;
            check_rank(&c, peer, send_mode.is_none())?;
            Ok(dt)
        })();
        let datatype = with_handler(checked, handler)?;
        let p = Persistent::Transfer(Transfer { send_mode, buf: buf as usize, count, datatype, peer, tag });
        let e = RequestEntry { req: Request::persistent(c, send_mode.is_none(), p), handler };
        let h = s.new_request(e)?;
        // SAFETY: caller's output argument.
        unsafe { out(request, h) }
    })
}

/// `MPI_Start` of the persistent request at table index `i` (§3.9).
pub fn start(s: &mut State, i: usize) -> Res<()> {
    let e = s.requests.get(i).expect("checked index");
    e.req.can_start()?;
    let p = e.req.persistent_args().expect("checked by can_start").clone();
    let (comm, handler) = (e.req.comm().clone(), e.handler);
    let p = match p {
        Persistent::Transfer(p) => p,
        Persistent::Collective(pc) => {
            let fresh = with_handler(crate::api::coll::start_persistent(s, &pc, comm, handler), handler)?;
            s.requests.get_mut(i).expect("checked index").req.start(fresh.req);
            return Ok(());
        }
    };
    // SAFETY: the buffer given to the *_init call, under MPI's rules until completion.
    let fresh = unsafe {
        match p.send_mode {
            Some(mode) => {
                post_send_checked(s, p.buf as *const c_void, p.count, p.datatype, p.peer, p.tag, comm, handler, mode)
            }
            None => post_recv_checked(s, p.buf as *mut c_void, p.count, p.datatype, p.peer, p.tag, comm, handler),
        }
    };
    let fresh = with_handler(fresh, handler)?;
    s.requests.get_mut(i).expect("checked index").req.start(fresh.req);
    Ok(())
}

fn byte_handle() -> MPI_Datatype {
    abi::predefined().datatype_handle(abi::PredefDatatype::Byte) as MPI_Datatype
}
