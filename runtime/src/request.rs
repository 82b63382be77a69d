//! An application's request (MPI-3.1 §3.7–§3.9): what `MPI_Wait`, `MPI_Test`, `MPI_Start`,
//! `MPI_Cancel` and `MPI_Request_free` act on, one level above the engine's request.
//!
//! The engine completes a transfer. Completing the application's request does more, and it
//! is all here, so that it is tested without a C program:
//! - a receive into a type that is not contiguous was staged in kawarimi's memory, and is
//!   unpacked into the program's buffer now;
//! - a receive's source is reported as a rank of its communicator, not of the world;
//! - a truncated receive completes with its status *and* an error (§3.2.5);
//! - a nonblocking collective hands its schedule's buffers to what finishes it (`C`: unpack
//!   into the program's buffers, or make the communicator of `MPI_Comm_idup`);
//! - a persistent request goes back to inactive instead of away, keeping what `MPI_Start`
//!   posts again (`P`), and is started again only when inactive (§3.9).
//!
//! The shim owns requests in its handle table, builds them from checked arguments, and passes
//! the engine in; no method here blocks except [`Request::progress`] with `block`.

use std::sync::Arc;

use crate::comm::Comm;
use crate::core::{RecvBuf, ReqId, Status, ANY_SOURCE, ANY_TAG};
use crate::datatype::Datatype;
use crate::engine::Engine;
use crate::error::{ErrorClass, MpiError, MpiResult};

/// The status of a null or inactive request, and of a completed collective (§3.7.3).
pub fn empty_status() -> Status {
    Status { source: ANY_SOURCE, tag: ANY_TAG, len: 0, cancelled: false, error: None }
}

/// The program's memory that a staged receive is unpacked into: every byte the receive's type
/// map touches, lowest address first.
pub trait RecvMemory: Send {
    /// Runs `f` on those bytes.
    fn with_span(&mut self, f: &mut dyn FnMut(&mut [u8]) -> MpiResult<()>) -> MpiResult<()>;
}

/// The shim's receive buffers, made from the program's pointer and valid until completion.
impl RecvMemory for &'static mut [u8] {
    fn with_span(&mut self, f: &mut dyn FnMut(&mut [u8]) -> MpiResult<()>) -> MpiResult<()> {
        f(self)
    }
}

/// A receive into a type that is not contiguous: the engine fills a staging buffer, and
/// completion unpacks it into the program's memory.
pub struct Unpack {
    dt: Arc<Datatype>,
    count: usize,
    /// Where the buffer's address lies in the span (the type map may reach below it).
    origin: usize,
    into: Box<dyn RecvMemory>,
}

impl std::fmt::Debug for Unpack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unpack({} x {} B)", self.count, self.dt.size())
    }
}

/// Where a receive of `count` x `dt` lands, and what its completion still has to do.
///
/// `memory(lo, hi)` gives the program's bytes from `lo` to `hi` relative to its buffer's
/// address, valid until the receive completes (MPI's receive-buffer rule; the shim makes the
/// slice from the program's pointer, the one step that needs `unsafe`).
pub fn recv_target<C>(
    dt: &Arc<Datatype>,
    count: usize,
    memory: impl FnOnce(isize, isize) -> MpiResult<&'static mut [u8]>,
) -> MpiResult<(RecvBuf, Finish<C>)> {
    if dt.is_contiguous() {
        // Straight into the program's buffer.
        let bytes = memory(0, (count * dt.size()) as isize)?;
        return Ok((RecvBuf::Static(bytes), Finish::Nothing));
    }
    let (lo, hi) = dt.span(count);
    Ok(staged(dt, count, Box::new(memory(lo, hi)?)))
}

/// A receive of `count` x `dt` staged in kawarimi's memory and unpacked into `into` (the
/// bytes its type map spans) when it completes.
pub fn staged<C>(dt: &Arc<Datatype>, count: usize, into: Box<dyn RecvMemory>) -> (RecvBuf, Finish<C>) {
    let (lo, _) = dt.span(count);
    let staging = vec![0u8; count * dt.size()];
    (RecvBuf::Owned(staging), Finish::Unpack(Unpack { dt: dt.clone(), count, origin: (-lo) as usize, into }))
}

/// What completing a request still has to do, besides the engine's part.
#[derive(Debug)]
pub enum Finish<C> {
    Nothing,
    Unpack(Unpack),
    /// A nonblocking collective, finished by the caller's `C` with the schedule's buffers.
    Collective(C),
}

/// How a request completed.
#[derive(Debug)]
pub enum Outcome<C> {
    /// With this status, as the application sees it.
    Done(Status),
    /// With this status and an error: a truncated receive, or a collective that failed.
    Failed(Status, MpiError),
    /// A collective whose schedule finished: `C` applies its buffers. Its status is
    /// [`empty_status`].
    Collective(C, Vec<Vec<u8>>),
}

/// One application request. `C` finishes a nonblocking collective; `P` is what `MPI_Start`
/// posts again for a persistent request.
#[derive(Debug)]
pub struct Request<C, P> {
    /// The engine's request, until this one completes.
    pending: Option<ReqId>,
    /// Set when complete without the engine (`MPI_PROC_NULL`, a buffered send).
    done: Option<Status>,
    comm: Arc<Comm>,
    is_recv: bool,
    finish: Finish<C>,
    persistent: Option<P>,
}

impl<C, P> Request<C, P> {
    /// A send or receive posted to the engine as request `id`.
    pub fn posted(id: ReqId, comm: Arc<Comm>, is_recv: bool, finish: Finish<C>) -> Self {
        Request { pending: Some(id), done: None, comm, is_recv, finish, persistent: None }
    }

    /// A request complete from the start, with `status` (a null-process transfer, §3.11; a
    /// buffered send, whose data is already kawarimi's, §3.6).
    pub fn complete(status: Status, comm: Arc<Comm>, is_recv: bool) -> Self {
        Request { pending: None, done: Some(status), comm, is_recv, finish: Finish::Nothing, persistent: None }
    }

    /// A nonblocking collective behind the engine's request `id`.
    pub fn collective(id: ReqId, comm: Arc<Comm>, finish: C) -> Self {
        Request::posted(id, comm, false, Finish::Collective(finish))
    }

    /// A persistent request, inactive until [`Request::start`].
    pub fn persistent(comm: Arc<Comm>, is_recv: bool, args: P) -> Self {
        Request { pending: None, done: None, comm, is_recv, finish: Finish::Nothing, persistent: Some(args) }
    }

    pub fn comm(&self) -> &Arc<Comm> {
        &self.comm
    }

    pub fn is_recv(&self) -> bool {
        self.is_recv
    }

    /// What `MPI_Start` posts, for a persistent request.
    pub fn persistent_args(&self) -> Option<&P> {
        self.persistent.as_ref()
    }

    /// A persistent request not started, or completed since its last start: Wait and Test
    /// treat it as a null request (§3.9).
    pub fn is_inactive(&self) -> bool {
        self.persistent.is_some() && self.pending.is_none() && self.done.is_none()
    }

    /// The engine's request this one still waits for; `None` when it is complete without the
    /// engine (or inactive), which array completions count as complete.
    pub fn pending(&self) -> Option<ReqId> {
        self.pending.filter(|_| self.done.is_none())
    }

    /// The status once complete.
    pub fn status(&self) -> Option<Status> {
        self.done
    }

    /// Completes the request if it can (waits for it when `block`): `None` while it is still in
    /// progress. An engine failure is an `Err` and leaves no status. Call [`Request::retire`]
    /// once the outcome is handled. An inactive request completes at once with the empty
    /// status.
    pub fn progress(&mut self, engine: &mut Engine, block: bool) -> MpiResult<Option<Outcome<C>>> {
        if self.is_inactive() {
            return Ok(Some(Outcome::Done(empty_status())));
        }
        if let Some(st) = self.done {
            return Ok(Some(Outcome::Done(st)));
        }
        let id = self.pending.expect("an active request has an engine request");
        if block {
            engine.wait(id)?;
        } else if !engine.test(id)? {
            return Ok(None);
        }
        self.pending = None;
        let c = engine.take_completion(id).expect("a complete request has a completion");
        let finish = std::mem::replace(&mut self.finish, Finish::Nothing);
        if let Finish::Collective(finish) = finish {
            let st = empty_status();
            self.done = Some(st);
            return Ok(Some(match engine.take_schedule(id) {
                Some(Ok(buffers)) => Outcome::Collective(finish, buffers),
                Some(Err(e)) => Outcome::Failed(st, e),
                None => {
                    Outcome::Failed(st, MpiError::new(ErrorClass::Intern, "a finished collective lost its buffers"))
                }
            }));
        }
        let st = self.for_caller(c.status);
        self.done = Some(st);
        if let (Finish::Unpack(mut u), Some(RecvBuf::Owned(staged))) = (finish, c.recv_buf) {
            let (dt, origin, count) = (&u.dt, u.origin, u.count);
            if let Err(e) = u.into.with_span(&mut |span| dt.unpack(&staged[..st.len], span, origin, count)) {
                return Ok(Some(Outcome::Failed(st, e)));
            }
        }
        Ok(Some(match st.error {
            Some(class) => Outcome::Failed(
                st,
                MpiError::new(
                    class,
                    format!("message of more than {} bytes from rank {} tag {}", st.len, st.source, st.tag),
                ),
            ),
            None => Outcome::Done(st),
        }))
    }

    /// After the outcome: a persistent request becomes inactive and stays (`true`); any other
    /// is finished and its handle goes (`false`).
    pub fn retire(&mut self) -> bool {
        self.pending = None;
        self.done = None;
        self.finish = Finish::Nothing;
        self.persistent.is_some()
    }

    /// `MPI_Start`: this inactive persistent request becomes `fresh`, the transfer just posted
    /// from its arguments.
    pub fn start(&mut self, fresh: Request<C, P>) {
        debug_assert!(self.is_inactive(), "checked by can_start");
        self.pending = fresh.pending;
        self.done = fresh.done;
        self.finish = fresh.finish;
    }

    /// Why `MPI_Start` may not start this request, if it may not.
    pub fn can_start(&self) -> MpiResult<()> {
        if self.persistent.is_none() {
            return Err(MpiError::new(ErrorClass::Request, "MPI_Start of a request that is not persistent"));
        }
        if !self.is_inactive() {
            return Err(MpiError::new(ErrorClass::Request, "MPI_Start of a persistent request that is still active"));
        }
        Ok(())
    }

    /// `MPI_Request_get_status`: progresses once, as a test does, and says whether the
    /// request is complete, without completing it.
    pub fn peek(&self, engine: &mut Engine) -> MpiResult<Option<Status>> {
        let peeked = engine.status_now(self.pending())?;
        if self.is_inactive() {
            return Ok(Some(empty_status()));
        }
        Ok(self.done.or_else(|| peeked.map(|st| self.for_caller(st))))
    }

    /// The engine's status as the application sees it: a receive's source as a rank of the
    /// request's communicator, not of the world.
    fn for_caller(&self, mut st: Status) -> Status {
        if self.is_recv && !st.cancelled {
            st.source = self.comm.rank_of_world(st.source as u32);
        }
        st
    }

    /// `MPI_Cancel`: a receive that has not matched is cancelled; a send always completes
    /// normally, which the standard allows (the cancel "fails", §3.8.4).
    pub fn cancel(&self, engine: &mut Engine) {
        if let (true, Some(id)) = (self.is_recv, self.pending()) {
            engine.cancel_recv(id);
        }
    }

    /// `MPI_Request_free`: the engine finishes the transfer in the background and forgets it.
    pub fn free(self, engine: &mut Engine) -> MpiResult<()> {
        match self.pending() {
            Some(id) => engine.free_request(id),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::comm::Group;
    use crate::core::{Core, CoreConfig, SendData};
    use crate::datatype::Primitive;
    use crate::sched::Schedule;

    /// A job of one rank, whose sends to itself need no transport.
    fn engine() -> Engine {
        Engine::new(Core::new(0, 1, CoreConfig::default()), None)
    }

    /// A communicator in which this process (world rank 0) is rank 1, so that a source
    /// reported as a world rank would show.
    fn comm() -> Arc<Comm> {
        Arc::new(Comm::new(4, Arc::new(Group::new(vec![3, 0]).unwrap()), 1))
    }

    /// Three ints with a gap after each but the last: a type that is not contiguous.
    fn strided_ints() -> Arc<Datatype> {
        let int = Datatype::predefined(Primitive::I32).unwrap();
        let mut v = Datatype::vector(3, 1, 2, &int).unwrap();
        v.commit();
        Arc::new(v)
    }

    fn ints(v: &[i32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    /// Program memory the test can read after completion.
    #[derive(Clone)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl RecvMemory for Shared {
        fn with_span(&mut self, f: &mut dyn FnMut(&mut [u8]) -> MpiResult<()>) -> MpiResult<()> {
            f(&mut self.0.lock().unwrap())
        }
    }

    type Req = Request<&'static str, u32>;

    /// Posts a staged receive of one `strided_ints` into 5 ints of 0x55 bytes.
    fn post_strided_recv(engine: &mut Engine, comm: &Arc<Comm>, tag: i32) -> (Req, Shared) {
        let memory = Shared(Arc::new(Mutex::new(vec![0x55; 20])));
        let (buf, finish) = staged(&strided_ints(), 1, Box::new(memory.clone()));
        let id = engine.irecv(ANY_SOURCE, comm.ctx, tag, buf).unwrap();
        (Request::posted(id, comm.clone(), true, finish), memory)
    }

    #[test]
    fn a_staged_receive_is_unpacked_into_the_program_and_names_its_source_in_the_communicator() {
        let (mut e, c) = (engine(), comm());
        let (mut r, memory) = post_strided_recv(&mut e, &c, 7);
        assert!(r.progress(&mut e, false).unwrap().is_none(), "nothing has arrived");
        e.isend(0, c.ctx, 7, SendData::Owned(ints(&[10, 20, 30])), false).unwrap();
        let Some(Outcome::Done(st)) = r.progress(&mut e, true).unwrap() else { panic!("not done") };
        assert_eq!((st.source, st.tag, st.len, st.error), (1, 7, 12, None));
        let gap = i32::from_ne_bytes([0x55; 4]);
        assert_eq!(*memory.0.lock().unwrap(), ints(&[10, gap, 20, gap, 30]), "unpacked with the gaps untouched");
        assert_eq!(r.status(), Some(st));
        assert!(!r.retire(), "a request that is not persistent goes");
    }

    #[test]
    fn a_truncated_receive_completes_with_its_status_and_an_error() {
        let (mut e, c) = (engine(), comm());
        let (mut r, memory) = post_strided_recv(&mut e, &c, 1);
        e.isend(0, c.ctx, 1, SendData::Owned(ints(&[1, 2, 3, 4])), false).unwrap();
        let Some(Outcome::Failed(st, err)) = r.progress(&mut e, true).unwrap() else { panic!("not failed") };
        assert_eq!(err.class, ErrorClass::Truncate);
        assert!(err.detail.contains("more than 12 bytes from rank 1 tag 1"), "{err}");
        assert_eq!((st.source, st.len, st.error), (1, 12, Some(ErrorClass::Truncate)));
        // What fitted was delivered.
        assert_eq!(memory.0.lock().unwrap()[..4], ints(&[1])[..]);
    }

    #[test]
    fn a_persistent_request_is_inactive_until_started_and_again_after_each_completion() {
        let (mut e, c) = (engine(), comm());
        let mut r: Req = Request::persistent(c.clone(), true, 42);
        assert!(r.is_inactive());
        assert_eq!(r.pending(), None);
        assert_eq!(r.peek(&mut e).unwrap(), Some(empty_status()), "MPI_Request_get_status: complete, empty");
        let Some(Outcome::Done(st)) = r.progress(&mut e, true).unwrap() else { panic!() };
        assert_eq!(st, empty_status(), "an inactive request completes at once, empty");
        for round in 0..3 {
            r.can_start().unwrap();
            let (fresh, memory) = post_strided_recv(&mut e, &c, round);
            r.start(fresh);
            assert!(!r.is_inactive() && r.pending().is_some());
            let err = r.can_start().unwrap_err();
            assert!(err.detail.contains("still active"), "{err}");
            e.isend(0, c.ctx, round, SendData::Owned(ints(&[round, round, round])), false).unwrap();
            let Some(Outcome::Done(st)) = r.progress(&mut e, true).unwrap() else { panic!() };
            assert_eq!(st.tag, round);
            assert_eq!(memory.0.lock().unwrap()[8..12], ints(&[round])[..]);
            assert!(r.retire(), "a persistent request stays");
            assert!(r.is_inactive());
            assert_eq!(r.persistent_args(), Some(&42));
        }
        let plain: Req = Request::complete(empty_status(), c, false);
        assert_eq!(plain.can_start().unwrap_err().class, ErrorClass::Request);
    }

    #[test]
    fn a_collective_hands_its_buffers_to_its_finisher() {
        let (mut e, c) = (engine(), comm());
        let one = Arc::new(Comm::new(8, Arc::new(Group::new(vec![0]).unwrap()), 0));
        let mut s = Schedule::new(&one, 1);
        let from = s.slot(vec![1, 2, 3]);
        let to = s.slot(vec![0; 3]);
        s.swap(from, to);
        let id = e.start_schedule(s).unwrap();
        let mut r: Req = Request::collective(id, c, "finish me");
        let Some(Outcome::Collective(finish, buffers)) = r.progress(&mut e, true).unwrap() else { panic!() };
        assert_eq!(finish, "finish me");
        assert_eq!(buffers, vec![vec![0; 3], vec![1, 2, 3]]);
        assert_eq!(r.status(), Some(empty_status()));
    }

    #[test]
    fn peek_does_not_complete_and_cancel_ends_only_an_unmatched_receive() {
        let (mut e, c) = (engine(), comm());
        let (mut r, _memory) = post_strided_recv(&mut e, &c, 9);
        assert_eq!(r.peek(&mut e).unwrap(), None);
        r.cancel(&mut e);
        let st = r.peek(&mut e).unwrap().expect("a cancelled receive is complete");
        assert!(st.cancelled);
        let Some(Outcome::Done(st)) = r.progress(&mut e, false).unwrap() else { panic!() };
        assert!(st.cancelled && st.len == 0);

        // A send completes normally however it is cancelled.
        let id = e.isend(0, c.ctx, 2, SendData::Owned(vec![1]), false).unwrap();
        let mut send: Req = Request::posted(id, c.clone(), false, Finish::Nothing);
        send.cancel(&mut e);
        let Some(Outcome::Done(st)) = send.progress(&mut e, true).unwrap() else { panic!() };
        assert!(!st.cancelled);
    }

    #[test]
    fn a_request_complete_from_the_start_needs_no_engine_request() {
        let (mut e, c) = (engine(), comm());
        let st = Status { source: -2, tag: -1, len: 0, cancelled: false, error: None };
        let mut r: Req = Request::complete(st, c, true);
        assert_eq!(r.pending(), None);
        assert_eq!(r.peek(&mut e).unwrap(), Some(st));
        let Some(Outcome::Done(got)) = r.progress(&mut e, false).unwrap() else { panic!() };
        assert_eq!(got, st, "reported as given, not translated");
        r.free(&mut e).unwrap();
    }
}
