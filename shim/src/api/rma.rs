//! One-sided communication (MPI-3.1 chapter 11): windows on the application's memory, their
//! operations and synchronisation. The protocol is the runtime's (`kawarimi_runtime::rma`);
//! here are the handles, the arguments, the application's memory, and the access epochs
//! that say which operations are allowed when (§11.5).
//!
//! A target must apply what arrives even while its program computes without calling MPI (a
//! passive-target `Get` must not wait for the target's next MPI call): while windows exist, a
//! progress thread takes the state whenever the program is outside MPI and runs one progress
//! round, polling every 100 us after a round that did something and backing off to every 2 ms
//! when idle (a program inside MPI progresses the windows itself).
//!
//! A `Put` or `Get` whose target shares this rank's host copies straight between the two
//! processes' memories, inside the call, when the kernel lets it (`process_vm_writev` /
//! `_readv`, the permission the shared-memory transport probed at start-up): complete when it
//! returns, as Open MPI's shared-memory window component makes it, and what programs such as
//! OpenCoarrays count on (it reads a `Get`'s result before the unlock that completes it).
//! The synchronisation still orders it: a lock is granted, a start has seen the target's
//! post, and a fence has been passed before the copy touches the target's memory. Dynamic
//! windows (whose attached regions only the target knows), pair types with padding, and
//! targets on another host go as messages.
//!
//! Otherwise an operation's origin data is packed into the message, so the origin buffer is
//! free as soon as the call returns. The result of a `Get` (and of the fetching operations) is
//! received straight into the origin buffer when it is contiguous, else into a staging
//! buffer unpacked when the operation completes: at the fence, unlock or flush that
//! completes it (§11.5).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kawarimi_runtime::comm::Comm;
use kawarimi_runtime::construct::{self, Steps};
use kawarimi_runtime::core::{RecvBuf, ReqId};
use kawarimi_runtime::datatype::Datatype;
use kawarimi_runtime::error::{err, ErrorClass, MpiResult};
use kawarimi_runtime::op::PredefinedOp;
use kawarimi_runtime::request::empty_status;
use kawarimi_runtime::rma::{self, OpKind, Target, Window, WindowMemory};
use kawarimi_transports::process::{copy_pieces, Direction};
use kawarimi_transports::shm::segment::Segment;
use kawarimi_transports::PeerId;
use parking_lot::Mutex;

use super::coll::Typed;
use crate::abi::{
    self, MPI_Aint, MPI_Comm, MPI_Datatype, MPI_Errhandler, MPI_Group, MPI_Info, MPI_Op, MPI_Request, MPI_Win,
};
use crate::api::attr::{
    attrs_with_keyvals, del_attr, delete_attrs, free_keyval, get_attr, keyval_create, set_attr, AttrOwner,
};
use crate::api::env::{handler_handle, handler_of};
use crate::api::p2p::{check_buffer, comm_of, with_handler};
use crate::export::{call, call_around, call_blocking, call_constructing};
use crate::mem::out;
use crate::state::{
    decode, encode, fail, table_full, AttrObject, Attrs, ErrhandlerFn, Handler, Kind, OpEntry, Request, RequestEntry,
    Res, State, STATE,
};

/// The memory a window exposes: `len` bytes at `addr` (the program's, or what the window
/// allocated), or, in a dynamic window, the regions the program attached, where offsets are
/// addresses (§11.2.4).
enum ExposedMemory {
    Fixed { addr: usize, len: usize },
    Dynamic(Arc<Mutex<Vec<(usize, usize)>>>),
}

impl WindowMemory for ExposedMemory {
    fn with_range(&mut self, lo: usize, hi: usize, f: &mut dyn FnMut(&mut [u8]) -> MpiResult<()>) -> MpiResult<()> {
        let at = match self {
            ExposedMemory::Fixed { addr, len } if hi <= *len => *addr + lo,
            ExposedMemory::Fixed { len, .. } => {
                return err(ErrorClass::RmaRange, format!("bytes {lo}..{hi} are outside a window of {len}"))
            }
            ExposedMemory::Dynamic(regions) => {
                if !attached(&regions.lock(), lo, hi) {
                    return err(ErrorClass::RmaRange, format!("addresses {lo:#x}..{hi:#x} are not all attached"));
                }
                lo
            }
        };
        // SAFETY: `hi - lo` bytes of the window's memory, checked above to lie inside what the
        // program gave MPI_Win_create or attached (and keeps until MPI_Win_free or
        // MPI_Win_detach), or what the window allocated (§11.2). The operation reads or writes
        // only the bytes its target datatype names; the standard makes local accesses that
        // conflict with those in the same epoch erroneous. Bytes of the range it does not name
        // (the gaps of a strided type) the program may still store to meanwhile, from its own
        // thread or another process of a shared window: the slice only copies named bytes, but
        // strictly a raw-pointer walk would be the exact form (noted for the next pass).
        f(unsafe { std::slice::from_raw_parts_mut(at as *mut u8, hi - lo) })
    }
}

/// Whether attached `regions` cover `[lo, hi)`: one region, or several that adjoin (regions
/// the program attached one after the other are one stretch of its memory).
fn attached(regions: &[(usize, usize)], lo: usize, hi: usize) -> bool {
    let mut sorted = regions.to_vec();
    sorted.sort_unstable();
    let mut covered_to = lo;
    for (a, n) in sorted {
        if a <= covered_to && a + n > covered_to {
            covered_to = a + n;
            if covered_to >= hi {
                return true;
            }
        }
    }
    false
}

/// Which access epochs are open at this process as an origin (§11.5).
#[derive(Debug, Default)]
struct Epochs {
    /// Between two fences (the last one not `MPI_MODE_NOSUCCEED`).
    fence: bool,
    /// Operations were issued since the last fence: only then is its epoch real (§11.5.1:
    /// a fence starts an epoch if operations follow it), and a lock may not start.
    fence_used: bool,
    /// Targets locked, and whether the target holds a lock for it: not under
    /// `MPI_MODE_NOCHECK`, where the program promises that no conflicting lock is held or
    /// asked for (OpenCoarrays' `event wait` holds `MPI_Win_lock_all(MPI_MODE_NOCHECK)` on
    /// its own window while other images take exclusive locks on it to post).
    locked: BTreeMap<i32, bool>,
    lock_all: bool,
    /// Whether `MPI_Win_lock_all` took the targets' locks (not under `MPI_MODE_NOCHECK`).
    lock_all_taken: bool,
    /// General active target (§11.5.2): the targets of the access epoch `MPI_Win_start`
    /// opened, and the origins of the exposure epoch `MPI_Win_post` opened.
    access: Option<Vec<i32>>,
    exposure: Option<Vec<i32>>,
}

/// A result on its way to the origin: the reply's receive, its target, and, when it lands
/// in a staging buffer, where to unpack it. The reply of a request-based operation
/// (`MPI_Rget`, ...) belongs to its request, which completes it; the synchronisation only
/// waits for it to arrive.
struct Pending {
    reply: ReqId,
    target: i32,
    staged: Option<Typed>,
    of_request: bool,
    /// Bytes the reply brings when the target could apply the operation (one that could not
    /// replies with none, and reports why at its own next synchronisation).
    expected: usize,
}

/// A window and what the shim keeps with it.
pub struct WinEntry {
    /// The engine's window.
    id: usize,
    comm: Arc<Comm>,
    /// The predefined attributes (§11.2.6), at stable addresses: `MPI_Win_get_attr` hands out
    /// pointers to them.
    attrs: Box<WinAttrs>,
    /// The memory the window allocated, if it did: freed with the window and not before.
    backing: Backing,
    handler: Handler,
    name: String,
    /// Attributes the program set (§11.2.6), and the info it gave last (§11.2.7).
    user_attrs: Attrs,
    info: Vec<(String, String)>,
    epochs: Epochs,
    pending: Vec<Pending>,
    /// Each member's window address in its own process, for copies straight into its memory;
    /// `None` for a dynamic window.
    bases: Option<Vec<usize>>,
    /// Targets sent operation messages since their last synchronisation: a flush of any
    /// other has nothing to wait for (its operations were copied directly, complete at once).
    unsynced: BTreeSet<i32>,
}

/// Where a window's memory comes from.
enum Backing {
    /// The program's (`MPI_Win_create`).
    Program,
    /// `MPI_Win_allocate`'s, 16-byte aligned (held, never read: it goes with the window).
    Heap { _memory: Vec<u128> },
    /// `MPI_Win_allocate_shared`'s: one segment every member maps, member `r`'s part at
    /// `offsets[r]`. It stays mapped across a switch: it is the program's memory now.
    Shared { segment: Segment, offsets: Vec<usize>, noncontig: bool },
    /// `MPI_Win_create_dynamic`'s: the regions attached, `(address, bytes)`, shared with the
    /// engine's side of the window.
    Dynamic(Arc<Mutex<Vec<(usize, usize)>>>),
}

#[repr(C)]
struct WinAttrs {
    base: usize,
    size: MPI_Aint,
    disp_unit: c_int,
    flavor: c_int,
    model: c_int,
}

fn win_null() -> MPI_Win {
    abi::predefined().win_handle(abi::PredefWin::WinNull) as MPI_Win
}

fn win_index(s: &State, win: MPI_Win) -> Res<usize> {
    let addr = win as usize;
    match decode(addr, Kind::Win) {
        Some(i) if s.windows.get(i).is_some() => Ok(i),
        Some(_) => fail(ErrorClass::Win, format!("window {addr:#x} was freed")),
        None if win == win_null() => fail(ErrorClass::Win, "MPI_WIN_NULL is not a window"),
        None => fail(ErrorClass::Win, format!("{addr:#x} is not a window")),
    }
}

/// Whether the progress thread (see the module doc) runs.
static PROGRESS_THREAD: AtomicBool = AtomicBool::new(false);

/// Starts the progress thread unless it runs. Called with the state held, as the thread
/// decides to end with it held: a window made meanwhile always finds it running or starts it.
fn ensure_progress_thread() {
    if PROGRESS_THREAD.swap(true, Ordering::SeqCst) {
        return;
    }
    let spawned = std::thread::Builder::new().name("kawarimi-rma-progress".into()).spawn(progress_loop);
    if spawned.is_err() {
        // Without it, windows still progress whenever the program calls MPI.
        PROGRESS_THREAD.store(false, Ordering::SeqCst);
    }
}

fn progress_loop() {
    const BUSY: Duration = Duration::from_micros(100);
    const IDLE: Duration = Duration::from_millis(2);
    let mut pause = BUSY;
    loop {
        std::thread::sleep(pause);
        // Held by the program: it is inside MPI, which progresses the windows itself.
        let Some(mut guard) = STATE.try_lock() else {
            pause = IDLE;
            continue;
        };
        let live = guard.as_mut().filter(|s| s.windows.live() > 0).and_then(|s| s.world.as_mut());
        let Some(w) = live else {
            PROGRESS_THREAD.store(false, Ordering::SeqCst);
            return;
        };
        // A transport failure stays recorded in the engine and one applying an operation in
        // its window: the program meets either at its next call.
        let did_work = w.engine.progress_windows().unwrap_or(false);
        pause = if did_work { BUSY } else { (pause * 2).min(IDLE) };
    }
}

/// The attributes set on window `h` (for `crate::api::attr`).
pub(crate) fn win_attrs(s: &mut State, h: MPI_Win) -> Res<&mut Attrs> {
    let i = win_index(s, h)?;
    Ok(&mut entry(s, i).user_attrs)
}

/// Runs a call on window `win`; its errors go to the window's error handler (a user handler
/// receives the window).
fn win_call(name: &'static str, win: MPI_Win, f: impl FnOnce(&mut State, usize) -> Res<()>) -> c_int {
    call(name, Some(win as MPI_Comm), |s| on_window(s, win, f))
}

/// Runs `f` on window `win`'s table index; its errors go to the window's error handler.
fn on_window<R>(s: &mut State, win: MPI_Win, f: impl FnOnce(&mut State, usize) -> Res<R>) -> Res<R> {
    let i = win_index(s, win)?;
    let handler = s.windows.get(i).expect("checked").handler;
    with_handler(f(s, i), handler)
}

fn entry(s: &mut State, i: usize) -> &mut WinEntry {
    s.windows.get_mut(i).expect("window index checked")
}

/// A window size argument in bytes (§11.2: not negative).
fn window_len(size: MPI_Aint) -> MpiResult<usize> {
    usize::try_from(size).or_else(|_| err(ErrorClass::Size, format!("window size {size} is negative")))
}

/// A window constructor's arguments, checked: the window is made over `size` bytes (`len`)
/// at `base` of each member of `comm`, with `backing` behind it.
struct WindowArgs {
    comm: Arc<Comm>,
    base: usize,
    size: MPI_Aint,
    len: usize,
    disp_unit: c_int,
    flavor: c_int,
    backing: Backing,
}

impl WindowArgs {
    fn new(
        c: Arc<Comm>,
        base: usize,
        size: MPI_Aint,
        disp_unit: c_int,
        flavor: c_int,
        backing: Backing,
    ) -> MpiResult<WindowArgs> {
        if c.is_inter() {
            return err(ErrorClass::Comm, "a window needs an intra-communicator");
        }
        let len = window_len(size)?;
        if disp_unit <= 0 {
            return err(ErrorClass::Disp, format!("displacement unit {disp_unit} is not positive"));
        }
        Ok(WindowArgs { comm: c, base, size, len, disp_unit, flavor, backing })
    }
}

/// A window constructor (collective over `comm`): `args` checks its arguments under the state
/// lock, `prepare` makes what backs the window (collectively, for a shared one), then the
/// window's own communicator is made and every member's size, unit and base gathered on it —
/// both by [`Steps`] that let go of the state while they wait at `MPI_THREAD_MULTIPLE` — and
/// the window is stored and `give` writes its handle and base to the caller.
fn window_call<T>(
    name: &'static str,
    comm: MPI_Comm,
    args: impl FnOnce(&mut State) -> Res<T>,
    prepare: impl FnOnce(&mut dyn Steps, T) -> MpiResult<WindowArgs>,
    give: impl FnOnce(MPI_Win, usize) -> Res<()>,
) -> c_int {
    call_constructing(
        name,
        Some(comm),
        args,
        |st, t| {
            let a = prepare(st, t)?;
            let wc = Arc::new(construct::comm_dup(st, &a.comm)?);
            let mine: Vec<u8> =
                [a.len as u64, a.disp_unit as u64, a.base as u64].iter().flat_map(|v| v.to_le_bytes()).collect();
            let all = construct::allgather(st, &wc, &mine, &vec![24; wc.size() as usize])?;
            Ok((a, wc, all))
        },
        |s, (a, wc, all)| {
            let base = a.base;
            give(add_window(s, a, wc, &all)?, base)
        },
    )
}

/// Stores the window made of `a` on its communicator `wc`, every member's size, unit and base
/// in `all`; returns its handle.
fn add_window(s: &mut State, a: WindowArgs, wc: Arc<Comm>, all: &[Vec<u8>]) -> Res<MPI_Win> {
    let WindowArgs { base, size, len, disp_unit, flavor, backing, .. } = a;
    let w = s.world()?;
    let word = |b: &[u8], k: usize| u64::from_le_bytes(b[8 * k..8 * k + 8].try_into().expect("8 bytes")) as usize;
    let sizes = all.iter().map(|b| word(b, 0)).collect();
    let units = all.iter().map(|b| word(b, 1)).collect();
    let bases = match backing {
        Backing::Dynamic(_) => None,
        _ => Some(all.iter().map(|b| word(b, 2)).collect()),
    };
    let memory = Box::new(match &backing {
        Backing::Dynamic(regions) => ExposedMemory::Dynamic(regions.clone()),
        _ => ExposedMemory::Fixed { addr: base, len },
    });
    let id = w.engine.add_window(Window::new(wc.clone(), sizes, units, memory));
    ensure_progress_thread();
    let attrs = Box::new(WinAttrs { base, size, disp_unit, flavor, model: abi::MPI_WIN_UNIFIED });
    let e = WinEntry {
        id,
        comm: wc,
        attrs,
        backing,
        handler: Handler::Fatal,
        name: String::new(),
        user_attrs: Attrs::default(),
        info: Vec::new(),
        epochs: Epochs::default(),
        pending: Vec::new(),
        bases,
        unsynced: BTreeSet::new(),
    };
    match s.windows.insert(e) {
        Some(i) => Ok(encode(Kind::Win, i) as MPI_Win),
        None => fail(ErrorClass::NoMem, "too many windows"),
    }
}

/// The target of an operation: checked against the target's window as every member
/// announced it at creation (§11.3: `MPI_ERR_RMA_RANGE` outside it).
fn target(s: &mut State, i: usize, rank: c_int, disp: MPI_Aint, count: c_int, dt: MPI_Datatype) -> Res<Target> {
    let datatype = check_buffer(s, count, dt)?;
    let e = s.windows.get(i).expect("checked");
    let w = s.world.as_ref().expect("initialised").engine.window(e.id)?;
    let r = usize::try_from(rank).ok().filter(|&r| r < w.sizes.len());
    let Some(r) = r else {
        return fail(ErrorClass::Rank, format!("target {rank} is not in a window of {}", w.sizes.len()));
    };
    let offset = isize::try_from(w.disp_units[r]).ok().and_then(|u| disp.checked_mul(u));
    let Some(offset) = offset.and_then(|o| usize::try_from(o).ok()) else {
        return fail(ErrorClass::RmaRange, format!("displacement {disp} is outside the target's window"));
    };
    let t = Target { offset, count: count as usize, datatype };
    if e.attrs.flavor == abi::MPI_WIN_FLAVOR_DYNAMIC {
        // Only the target knows what it has attached; it checks.
        rma::span_of(&t)?;
    } else {
        rma::check_range(w.sizes[r], &t)?;
    }
    Ok(t)
}

/// Checks that an operation on `rank` is inside an access epoch, and notes that the fence's
/// epoch, when it is the one, is used.
fn note_operation(s: &mut State, i: usize, rank: c_int, name: &str) -> Res<()> {
    check_epoch(s.windows.get(i).expect("checked"), rank, name)?;
    let ep = &mut entry(s, i).epochs;
    ep.fence_used |= ep.fence && !ep.lock_all && !ep.locked.contains_key(&rank);
    Ok(())
}

/// Copies a `Put` (`local` is its origin) or a `Get` (`local` is its result) straight between
/// this process and the target's window when this rank can reach the target's memory (see the
/// module doc); `false` when it cannot and the operation goes as a message.
fn direct(s: &mut State, i: usize, name: &str, kind: OpKind, rank: c_int, t: &Target, local: &Typed) -> Res<bool> {
    if rank == abi::MPI_PROC_NULL {
        return Ok(false);
    }
    let e = s.windows.get(i).expect("checked");
    let (Some(bases), Some(world)) = (e.bases.as_ref(), e.comm.group.world_rank(rank)) else {
        return Ok(false);
    };
    let base = bases[rank as usize];
    let Some(pid) = s.world.as_ref().and_then(|w| w.engine.peer_process(world as PeerId)) else {
        return Ok(false);
    };
    let remote = t.datatype.memory_pieces(base + t.offset, t.count, rma::MAX_TARGET_RUNS);
    let (Some(remote), Some(pieces)) = (remote, local.memory_pieces(rma::MAX_TARGET_RUNS)) else {
        return Ok(false);
    };
    note_operation(s, i, rank, name)?;
    let (have, want) = (local.packed_len(), t.count * t.datatype.size());
    if have != want {
        return fail(ErrorClass::Type, format!("{name}: {have} bytes at the origin for {want} bytes at the target"));
    }
    let direction = if kind == OpKind::Put { Direction::ToPeer } else { Direction::FromPeer };
    // SAFETY: `pieces` is the program's buffer as its triple describes it: readable for a put,
    // and for a get writable memory the program hands over for the call (§11.3); no Rust
    // reference to it exists. The kernel checks the remote pieces against the target's
    // mappings (they lie in its window, checked above).
    unsafe { copy_pieces(pid, direction, &pieces, &remote) }
        .or_else(|e| fail(ErrorClass::Other, format!("{name}: copying {want} bytes with rank {rank}'s window: {e}")))?;
    Ok(true)
}

/// Checks that an operation on `target` is inside an access epoch (§11.5).
fn check_epoch(e: &WinEntry, target: c_int, name: &str) -> Res<()> {
    let ep = &e.epochs;
    let started = ep.access.as_ref().is_some_and(|g| g.contains(&target));
    if ep.fence || ep.lock_all || started || ep.locked.contains_key(&target) {
        return Ok(());
    }
    fail(ErrorClass::RmaSync, format!("{name} outside an access epoch to rank {target} (no fence or lock opened one)"))
}

fn predefined_op(s: &State, op: MPI_Op) -> Res<PredefinedOp> {
    match s.op(op)? {
        OpEntry::Predefined(p) => Ok(p),
        OpEntry::User(_) => fail(ErrorClass::Op, "one-sided accumulates take predefined operations only (§11.3.4)"),
    }
}

/// Issues one operation: `data` is its packed origin data; `result`, where its reply lands.
#[allow(clippy::too_many_arguments)]
fn issue(
    s: &mut State,
    i: usize,
    name: &str,
    kind: OpKind,
    op: PredefinedOp,
    rank: c_int,
    t: &Target,
    data: &[u8],
    result: Option<Typed>,
    request: Option<*mut MPI_Request>,
) -> Res<()> {
    if rank == abi::MPI_PROC_NULL {
        return complete_request(s, i, request);
    }
    note_operation(s, i, rank, name)?;
    let Some(total) = t.count.checked_mul(t.datatype.size()).filter(|&n| n <= rma::MAX_OPERATION_BYTES) else {
        return fail(
            ErrorClass::Count,
            format!("{name}: {} elements of {} bytes is too much", t.count, t.datatype.size()),
        );
    };
    let want = match kind {
        OpKind::Get => 0,
        OpKind::GetAccumulate if op == PredefinedOp::NoOp => 0,
        OpKind::CompareAndSwap => 2 * total,
        _ => total,
    };
    if data.len() != want {
        return fail(
            ErrorClass::Type,
            format!("{name}: {} bytes of origin data for {want} bytes at the target", data.len()),
        );
    }
    let message = rma::encode(kind, op, Some(t), data)?;
    entry(s, i).unsynced.insert(rank);
    let Some(r) = result else {
        let id = entry(s, i).id;
        s.world()?.engine.window_op(id, rank, message, None)?;
        // The origin data is copied: a request-based operation is complete at once (§11.3.5).
        return complete_request(s, i, request);
    };
    let (have, want) = (r.packed_len(), t.count * t.datatype.size());
    if have != want {
        return fail(ErrorClass::Type, format!("{name}: a result buffer of {have} bytes for {want} at the target"));
    }
    let id = entry(s, i).id;
    let Some(req) = request else {
        // SAFETY: the program's result buffer, which it leaves alone until the operation
        // completes (§11.3).
        let (buf, is_staged) = unsafe { r.landing()? };
        let reply = s.world()?.engine.window_op(id, rank, message, Some(buf))?.expect("a reply is posted");
        let staged = is_staged.then_some(r);
        entry(s, i).pending.push(Pending { reply, target: rank, staged, of_request: false, expected: total });
        return Ok(());
    };
    // SAFETY: as above, until the request completes.
    let (buf, finish) = unsafe { r.recv_target()? };
    let reply = s.world()?.engine.window_op(id, rank, message, Some(buf))?.expect("a reply is posted");
    entry(s, i).pending.push(Pending { reply, target: rank, staged: None, of_request: true, expected: total });
    let (comm, handler) = (entry(s, i).comm.clone(), entry(s, i).handler);
    let h = s.new_request(RequestEntry { req: Request::posted(reply, comm, false, finish), handler })?;
    // SAFETY: caller's output argument.
    unsafe { out(req, h) }
}

/// Gives the program a request that is complete already, for a request-based operation
/// (`request` is where its handle goes; `None` for the other forms, which need none).
fn complete_request(s: &mut State, i: usize, request: Option<*mut MPI_Request>) -> Res<()> {
    let Some(request) = request else { return Ok(()) };
    let (comm, handler) = (entry(s, i).comm.clone(), entry(s, i).handler);
    let h = s.new_request(RequestEntry { req: Request::complete(empty_status(), comm, false), handler })?;
    // SAFETY: caller's output argument.
    unsafe { out(request, h) }
}

/// Completes the results on their way from `target` (every target for `None`): they have
/// arrived once the synchronisation that completes them has.
fn complete_pending(s: &mut State, i: usize, target: Option<c_int>) -> Res<()> {
    let (done, keep): (Vec<Pending>, Vec<Pending>) =
        std::mem::take(&mut entry(s, i).pending).into_iter().partition(|p| target.is_none_or(|t| p.target == t));
    entry(s, i).pending = keep;
    let engine = &mut s.world()?.engine;
    for p in done {
        if p.of_request {
            engine.wait_settled(p.reply)?;
            continue;
        }
        engine.wait(p.reply)?;
        let completion = engine.take_completion(p.reply);
        if completion.as_ref().is_some_and(|c| c.status.len != p.expected) {
            return fail(
                ErrorClass::RmaRange,
                format!("rank {} could not apply an operation of this process's (it reports why)", p.target),
            );
        }
        if let (Some(t), Some(c)) = (p.staged, completion) {
            if let Some(RecvBuf::Owned(bytes)) = c.recv_buf {
                // SAFETY: the program's result buffer, left alone until now (§11.3).
                unsafe { t.unpack(&bytes)? };
            }
        }
    }
    Ok(())
}

/// Sends a synchronisation message of `kind` to `target`; its reply (a lock granted, or
/// everything sent before it applied) is what the call then waits for ([`Awaiting`]).
fn sync_send(s: &mut State, i: usize, kind: OpKind, target: c_int) -> Res<ReqId> {
    let message = rma::encode(kind, PredefinedOp::NoOp, None, &[])?;
    let id = entry(s, i).id;
    let engine = &mut s.world()?.engine;
    Ok(engine.window_op(id, target, message, Some(RecvBuf::Owned(Vec::new())))?.expect("a reply is posted"))
}

/// What a window synchronisation waits for between its first step (checks, messages sent)
/// and its last (the epochs updated, results unpacked).
enum Awaiting {
    Nothing,
    /// The replies to synchronisation messages.
    Replies(Vec<ReqId>),
    /// Every member at the fence, with what it sent before applied.
    Fence,
    /// A post or complete marker from each of these ranks.
    Markers(OpKind, Vec<i32>),
}

/// Waits (`block`) or checks once whether what `awaiting` names has come; once it has, the
/// failures the targets sent back ahead of it are reported.
fn arrived(s: &mut State, i: usize, awaiting: &Awaiting, block: bool) -> Res<bool> {
    let id = entry(s, i).id;
    let engine = &mut s.world()?.engine;
    match awaiting {
        Awaiting::Nothing => Ok(true),
        Awaiting::Replies(replies) => {
            for &r in replies {
                if block {
                    engine.wait(r)?;
                } else if !engine.test(r)? {
                    return Ok(false);
                }
            }
            for &r in replies {
                engine.take_completion(r);
            }
            // What a target could not apply of this process's came back ahead of its reply.
            engine.window_failure(id)?;
            Ok(true)
        }
        Awaiting::Fence => Ok(engine.window_fence_wait(id, block)?),
        Awaiting::Markers(kind, ranks) => Ok(engine.window_take_markers(id, *kind, ranks, block)?),
    }
}

/// Runs a window synchronisation on `win`: `first` checks the call and sends what it needs,
/// returning what to wait for and what `last` needs; `last` runs once that has come. Written
/// so because at `MPI_THREAD_MULTIPLE` the wait lets go of the state between tries
/// ([`crate::export::call_blocking`]); below, the call blocks inside.
fn win_sync<T>(
    name: &'static str,
    win: MPI_Win,
    first: impl FnOnce(&mut State, usize) -> Res<(Awaiting, T)>,
    last: impl FnOnce(&mut State, usize, T) -> Res<()>,
) -> c_int {
    let (mut first, mut last) = (Some(first), Some(last));
    let mut waiting: Option<(Awaiting, Option<T>)> = None;
    call_blocking(name, Some(win as MPI_Comm), |s, block| {
        on_window(s, win, |s, i| {
            if let Some(first) = first.take() {
                let (awaiting, t) = first(s, i)?;
                waiting = Some((awaiting, Some(t)));
            }
            let (awaiting, t) = waiting.as_mut().expect("set by the first try");
            if !arrived(s, i, awaiting, block)? {
                return Ok(false);
            }
            let last = last.take().expect("a call completes once");
            last(s, i, t.take().expect("a call completes once"))?;
            Ok(true)
        })
    })
}

/// The messages that end the passive-target epoch at `rank`: an unlock if the target holds a
/// lock for this process, else a flush if anything went there as a message since its last
/// synchronisation, else none (what this process did there is complete).
fn unlock_send(s: &mut State, i: usize, rank: c_int, taken: bool, replies: &mut Vec<ReqId>) -> Res<()> {
    let unsynced = entry(s, i).unsynced.remove(&rank);
    if taken || unsynced {
        replies.push(sync_send(s, i, if taken { OpKind::Unlock } else { OpKind::Flush }, rank)?);
    }
    Ok(())
}

/// `MPI_Win_flush(_all)(_local)` of `rank` (every target for `None`).
fn flush(name: &'static str, win: MPI_Win, rank: Option<c_int>) -> c_int {
    let first = move |s: &mut State, i: usize| {
        if rank == Some(abi::MPI_PROC_NULL) {
            return Ok((Awaiting::Nothing, Vec::new()));
        }
        let e = s.windows.get(i).expect("checked");
        let locked = match rank {
            Some(r) => e.epochs.locked.contains_key(&r),
            None => !e.epochs.locked.is_empty(),
        };
        if !e.epochs.lock_all && !locked {
            return fail(ErrorClass::RmaSync, "a flush outside a passive-target epoch on the target");
        }
        let targets: Vec<c_int> = match rank {
            Some(r) => vec![r],
            None if e.epochs.lock_all => (0..e.comm.size()).collect(),
            None => e.epochs.locked.keys().copied().collect(),
        };
        // A target sent no message since its last synchronisation needs nothing: what this
        // process did there was copied directly and is complete.
        let targets: Vec<c_int> = targets.into_iter().filter(|t| entry(s, i).unsynced.remove(t)).collect();
        let replies = targets.iter().map(|&t| sync_send(s, i, OpKind::Flush, t)).collect::<Res<Vec<_>>>()?;
        Ok((Awaiting::Replies(replies), targets))
    };
    win_sync(name, win, first, |s, i, targets: Vec<c_int>| {
        targets.into_iter().try_for_each(|t| complete_pending(s, i, Some(t)))
    })
}

fn check_rank(s: &State, i: usize, rank: c_int) -> Res<()> {
    let size = s.windows.get(i).expect("checked").comm.size();
    if !(0..size).contains(&rank) {
        return fail(ErrorClass::Rank, format!("rank {rank} is not in a window of {size}"));
    }
    Ok(())
}

mpi_fn! {
    fn Win_create(base: *mut c_void, size: MPI_Aint, disp_unit: c_int, _info: MPI_Info, comm: MPI_Comm, win: *mut MPI_Win) -> c_int {
        window_call("MPI_Win_create", comm, |s| {
            if size > 0 && base.is_null() {
                return fail(ErrorClass::Arg, "a window of bytes at NULL");
            }
            let (c, _) = comm_of(s, comm)?;
            Ok(WindowArgs::new(c, base as usize, size, disp_unit, abi::MPI_WIN_FLAVOR_CREATE, Backing::Program)?)
        }, |_, a| Ok(a), |h, _| {
            // SAFETY: caller's output argument.
            unsafe { out(win, h) }
        })
    }

    fn Win_allocate(size: MPI_Aint, disp_unit: c_int, _info: MPI_Info, comm: MPI_Comm, baseptr: *mut c_void, win: *mut MPI_Win) -> c_int {
        window_call("MPI_Win_allocate", comm, |s| {
            let len = window_len(size)?;
            // A Vec, not a Box: moving it into the window keeps the pointer handed out valid.
            let mut memory = vec![0u128; len.div_ceil(16)];
            let base = memory.as_mut_ptr() as usize;
            let (c, _) = comm_of(s, comm)?;
            Ok(WindowArgs::new(c, base, size, disp_unit, abi::MPI_WIN_FLAVOR_ALLOCATE, Backing::Heap { _memory: memory })?)
        }, |_, a| Ok(a), |h, base| {
            // SAFETY: `baseptr` is a `void **` output argument (§11.2.2).
            unsafe { out(baseptr as *mut *mut c_void, base as *mut c_void)?; out(win, h) }
        })
    }

    fn Win_allocate_shared(size: MPI_Aint, disp_unit: c_int, info: MPI_Info, comm: MPI_Comm, baseptr: *mut c_void, win: *mut MPI_Win) -> c_int {
        window_call("MPI_Win_allocate_shared", comm, |s| {
            // With "alloc_shared_noncontig" an empty part has no address (NULL), as in Open MPI;
            // contiguous, it has the address where it would start.
            let noncontig = s.hints(info)?.iter().any(|(k, v)| k == "alloc_shared_noncontig" && v == "true");
            let (c, _) = comm_of(s, comm)?;
            if c.is_inter() {
                return fail(ErrorClass::Comm, "a window needs an intra-communicator");
            }
            Ok((c, window_len(size)?, noncontig))
        }, |st, (c, len, noncontig)| {
            let (segment, offsets) = shared_segment(st, &c, len)?;
            let base = if len == 0 && noncontig { 0 } else { segment.as_ptr() as usize + offsets[c.rank as usize] };
            let backing = Backing::Shared { segment, offsets, noncontig };
            WindowArgs::new(c, base, size, disp_unit, abi::MPI_WIN_FLAVOR_SHARED, backing)
        }, |h, base| {
            // SAFETY: `baseptr` is a `void **` output argument (§11.2.3).
            unsafe { out(baseptr as *mut *mut c_void, base as *mut c_void)?; out(win, h) }
        })
    }

    fn Win_create_dynamic(_info: MPI_Info, comm: MPI_Comm, win: *mut MPI_Win) -> c_int {
        window_call("MPI_Win_create_dynamic", comm, |s| {
            let backing = Backing::Dynamic(Arc::new(Mutex::new(Vec::new())));
            let (c, _) = comm_of(s, comm)?;
            Ok(WindowArgs::new(c, 0, 0, 1, abi::MPI_WIN_FLAVOR_DYNAMIC, backing)?)
        }, |_, a| Ok(a), |h, _| {
            // SAFETY: caller's output argument.
            unsafe { out(win, h) }
        })
    }

    fn Win_attach(win: MPI_Win, base: *mut c_void, size: MPI_Aint) -> c_int {
        win_call("MPI_Win_attach", win, |s, i| {
            let Backing::Dynamic(regions) = &entry(s, i).backing else {
                return fail(ErrorClass::RmaFlavor, "MPI_Win_attach to a window not made by MPI_Win_create_dynamic");
            };
            let Ok(len) = usize::try_from(size) else { return fail(ErrorClass::Size, format!("size {size} is negative")) };
            if len > 0 && base.is_null() {
                return fail(ErrorClass::Arg, "attaching bytes at NULL");
            }
            let (a, mut regions) = (base as usize, regions.lock());
            if a.checked_add(len).is_none() {
                return fail(ErrorClass::Arg, format!("{len} bytes at {a:#x} run past the end of the address space"));
            }
            if regions.iter().any(|&(b, n)| a < b + n && b < a + len) {
                return fail(ErrorClass::RmaAttach, format!("{len} bytes at {a:#x} overlap a region already attached"));
            }
            regions.push((a, len));
            Ok(())
        })
    }

    fn Win_detach(win: MPI_Win, base: *const c_void) -> c_int {
        win_call("MPI_Win_detach", win, |s, i| {
            let Backing::Dynamic(regions) = &entry(s, i).backing else {
                return fail(ErrorClass::RmaFlavor, "MPI_Win_detach from a window not made by MPI_Win_create_dynamic");
            };
            let mut regions = regions.lock();
            match regions.iter().position(|&(a, _)| a == base as usize) {
                Some(k) => {
                    regions.swap_remove(k);
                    Ok(())
                }
                None => fail(ErrorClass::RmaAttach, format!("no region attached at {:#x}", base as usize)),
            }
        })
    }

    fn Win_shared_query(win: MPI_Win, rank: c_int, size: *mut MPI_Aint, disp_unit: *mut c_int, baseptr: *mut c_void) -> c_int {
        win_call("MPI_Win_shared_query", win, |s, i| {
            let e = s.windows.get(i).expect("checked");
            let Backing::Shared { segment, offsets, noncontig } = &e.backing else {
                return fail(ErrorClass::RmaFlavor, "MPI_Win_shared_query of a window not made by MPI_Win_allocate_shared");
            };
            let w = s.world.as_ref().expect("initialised").engine.window(e.id)?;
            // MPI_PROC_NULL: the first member whose part is not empty (§11.2.3).
            let r = if rank == abi::MPI_PROC_NULL {
                w.sizes.iter().position(|&n| n > 0).unwrap_or(0)
            } else {
                match usize::try_from(rank).ok().filter(|&r| r < w.sizes.len()) {
                    Some(r) => r,
                    None => return fail(ErrorClass::Rank, format!("rank {rank} is not in a window of {}", w.sizes.len())),
                }
            };
            let (n, unit) = (w.sizes[r], w.disp_units[r]);
            let at = if n == 0 && *noncontig { 0 } else { segment.as_ptr() as usize + offsets[r] };
            // SAFETY: caller's output arguments; `baseptr` is a `void **`.
            unsafe {
                out(size, n as MPI_Aint)?;
                out(disp_unit, unit as c_int)?;
                out(baseptr as *mut *mut c_void, at as *mut c_void)
            }
        })
    }

    fn Win_free(win: *mut MPI_Win) -> c_int {
        if win.is_null() {
            return call("MPI_Win_free", None, |_| fail(ErrorClass::Arg, "NULL window pointer"));
        }
        // SAFETY: checked non-null; the caller's window handle.
        let h = unsafe { *win };
        // The attributes' delete callbacks run first, outside the lock (§11.2.6).
        let rc = call_around(
            "MPI_Win_free",
            Some(h as MPI_Comm),
            |s| attrs_with_keyvals(s, AttrOwner::Win(h)),
            |attrs| delete_attrs(AttrOwner::Win(h), attrs),
            |_, ()| Ok(()),
        );
        if rc != abi::MPI_SUCCESS {
            return rc;
        }
        // Every member's operations on this window are applied before anyone lets go: a fence,
        // waited for like MPI_Win_fence's.
        let first = |s: &mut State, i: usize| {
            let e = s.windows.get(i).expect("checked");
            let ep = &e.epochs;
            if ep.lock_all || !ep.locked.is_empty() || ep.access.is_some() || ep.exposure.is_some() {
                return fail(ErrorClass::RmaSync, "MPI_Win_free inside an epoch (a lock held, or a start or post not ended)");
            }
            let id = e.id;
            s.world()?.engine.window_fence_enter(id)?;
            Ok((Awaiting::Fence, id))
        };
        win_sync("MPI_Win_free", h, first, |s, i, id| {
            complete_pending(s, i, None)?;
            s.world()?.engine.remove_window(id);
            s.windows.remove(i);
            // SAFETY: as above.
            unsafe { *win = win_null() };
            Ok(())
        })
    }

    fn Win_set_info(win: MPI_Win, info: MPI_Info) -> c_int {
        win_call("MPI_Win_set_info", win, |s, i| {
            // No hint changes kawarimi's behaviour; they are kept for MPI_Win_get_info.
            let pairs = s.info_pairs(info)?;
            entry(s, i).info = pairs;
            Ok(())
        })
    }

    fn Win_get_info(win: MPI_Win, info_used: *mut MPI_Info) -> c_int {
        win_call("MPI_Win_get_info", win, |s, i| {
            let pairs = entry(s, i).info.clone();
            let h = s.new_info(pairs)?;
            // SAFETY: caller's output argument.
            unsafe { out(info_used, h) }
        })
    }

    fn Win_create_keyval(win_copy_attr_fn: Option<abi::MPI_Win_copy_attr_function>, win_delete_attr_fn: Option<abi::MPI_Win_delete_attr_function>, win_keyval: *mut c_int, extra_state: *mut c_void) -> c_int {
        // Windows are never duplicated, so the copy callback is kept but never called. (The
        // window callbacks have the communicator ones' type: both handles are pointers.)
        let (copy, delete) = (win_copy_attr_fn, win_delete_attr_fn);
        call("MPI_Win_create_keyval", None, |s| keyval_create(s, AttrObject::Win, copy, delete, win_keyval, extra_state))
    }

    fn Win_free_keyval(win_keyval: *mut c_int) -> c_int {
        call("MPI_Win_free_keyval", None, |s| free_keyval(s, AttrObject::Win, win_keyval))
    }

    fn Win_set_attr(win: MPI_Win, win_keyval: c_int, attribute_val: *mut c_void) -> c_int {
        set_attr("MPI_Win_set_attr", AttrOwner::Win(win), win_keyval, attribute_val as usize)
    }

    fn Win_delete_attr(win: MPI_Win, win_keyval: c_int) -> c_int {
        del_attr("MPI_Win_delete_attr", AttrOwner::Win(win), win_keyval)
    }

    fn Win_create_errhandler(win_errhandler_fn: Option<abi::MPI_Win_errhandler_function>, errhandler: *mut MPI_Errhandler) -> c_int {
        call("MPI_Win_create_errhandler", None, |s| {
            let Some(f) = win_errhandler_fn else { return fail(ErrorClass::Arg, "NULL error handler function") };
            // A window handler has a communicator handler's type (both handles are pointers);
            // kawarimi calls it with a pointer to the window's handle.
            let i = s.errhandlers.insert(ErrhandlerFn::C(f)).ok_or_else(|| table_full("error handlers"))?;
            let h = encode(Kind::Errhandler, i) as MPI_Errhandler;
            // SAFETY: caller's output argument.
            unsafe { out(errhandler, h) }
        })
    }

    fn Win_call_errhandler(win: MPI_Win, errorcode: c_int) -> c_int {
        let handler = crate::export::locked_query("MPI_Win_call_errhandler", |s| Ok(entry(s, win_index(s, win)?).handler));
        match handler {
            Ok(handler) => {
                crate::export::call_handler_of("MPI_Win_call_errhandler", win as MPI_Comm, handler, errorcode);
                abi::MPI_SUCCESS
            }
            Err(code) => code,
        }
    }

    fn Win_fence(assert: c_int, win: MPI_Win) -> c_int {
        let first = |s: &mut State, i: usize| {
            let e = s.windows.get(i).expect("checked");
            let ep = &e.epochs;
            if ep.lock_all || !ep.locked.is_empty() || ep.access.is_some() || ep.exposure.is_some() {
                return fail(ErrorClass::RmaSync, "MPI_Win_fence inside a passive-target or start/post epoch");
            }
            let id = e.id;
            s.world()?.engine.window_fence_enter(id)?;
            Ok((Awaiting::Fence, ()))
        };
        win_sync("MPI_Win_fence", win, first, |s, i, ()| {
            complete_pending(s, i, None)?;
            entry(s, i).unsynced.clear();
            let ep = &mut entry(s, i).epochs;
            ep.fence = assert & abi::MPI_MODE_NOSUCCEED == 0;
            ep.fence_used = false;
            Ok(())
        })
    }

    fn Put(origin_addr: *const c_void, origin_count: c_int, origin_datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, target_count: c_int, target_datatype: MPI_Datatype, win: MPI_Win) -> c_int {
        let at = (target_rank, target_disp, target_count, target_datatype);
        win_call("MPI_Put", win, |s, i| operation(s, i, "MPI_Put", OpKind::Put, None, Some((origin_addr, origin_count, origin_datatype)), None, at, None))
    }

    fn Rput(origin_addr: *const c_void, origin_count: c_int, origin_datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, target_count: c_int, target_datatype: MPI_Datatype, win: MPI_Win, request: *mut MPI_Request) -> c_int {
        let at = (target_rank, target_disp, target_count, target_datatype);
        win_call("MPI_Rput", win, |s, i| operation(s, i, "MPI_Rput", OpKind::Put, None, Some((origin_addr, origin_count, origin_datatype)), None, at, Some(request)))
    }

    fn Get(origin_addr: *mut c_void, origin_count: c_int, origin_datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, target_count: c_int, target_datatype: MPI_Datatype, win: MPI_Win) -> c_int {
        let at = (target_rank, target_disp, target_count, target_datatype);
        win_call("MPI_Get", win, |s, i| operation(s, i, "MPI_Get", OpKind::Get, None, None, Some((origin_addr, origin_count, origin_datatype)), at, None))
    }

    fn Rget(origin_addr: *mut c_void, origin_count: c_int, origin_datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, target_count: c_int, target_datatype: MPI_Datatype, win: MPI_Win, request: *mut MPI_Request) -> c_int {
        let at = (target_rank, target_disp, target_count, target_datatype);
        win_call("MPI_Rget", win, |s, i| operation(s, i, "MPI_Rget", OpKind::Get, None, None, Some((origin_addr, origin_count, origin_datatype)), at, Some(request)))
    }

    fn Accumulate(origin_addr: *const c_void, origin_count: c_int, origin_datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, target_count: c_int, target_datatype: MPI_Datatype, op: MPI_Op, win: MPI_Win) -> c_int {
        let at = (target_rank, target_disp, target_count, target_datatype);
        win_call("MPI_Accumulate", win, |s, i| operation(s, i, "MPI_Accumulate", OpKind::Accumulate, Some(op), Some((origin_addr, origin_count, origin_datatype)), None, at, None))
    }

    fn Raccumulate(origin_addr: *const c_void, origin_count: c_int, origin_datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, target_count: c_int, target_datatype: MPI_Datatype, op: MPI_Op, win: MPI_Win, request: *mut MPI_Request) -> c_int {
        let at = (target_rank, target_disp, target_count, target_datatype);
        win_call("MPI_Raccumulate", win, |s, i| operation(s, i, "MPI_Raccumulate", OpKind::Accumulate, Some(op), Some((origin_addr, origin_count, origin_datatype)), None, at, Some(request)))
    }

    fn Get_accumulate(origin_addr: *const c_void, origin_count: c_int, origin_datatype: MPI_Datatype, result_addr: *mut c_void, result_count: c_int, result_datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, target_count: c_int, target_datatype: MPI_Datatype, op: MPI_Op, win: MPI_Win) -> c_int {
        let (origin, result) = (Some((origin_addr, origin_count, origin_datatype)), Some((result_addr, result_count, result_datatype)));
        let at = (target_rank, target_disp, target_count, target_datatype);
        win_call("MPI_Get_accumulate", win, |s, i| operation(s, i, "MPI_Get_accumulate", OpKind::GetAccumulate, Some(op), origin, result, at, None))
    }

    fn Rget_accumulate(origin_addr: *const c_void, origin_count: c_int, origin_datatype: MPI_Datatype, result_addr: *mut c_void, result_count: c_int, result_datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, target_count: c_int, target_datatype: MPI_Datatype, op: MPI_Op, win: MPI_Win, request: *mut MPI_Request) -> c_int {
        let (origin, result) = (Some((origin_addr, origin_count, origin_datatype)), Some((result_addr, result_count, result_datatype)));
        let at = (target_rank, target_disp, target_count, target_datatype);
        win_call("MPI_Rget_accumulate", win, |s, i| operation(s, i, "MPI_Rget_accumulate", OpKind::GetAccumulate, Some(op), origin, result, at, Some(request)))
    }

    fn Fetch_and_op(origin_addr: *const c_void, result_addr: *mut c_void, datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, op: MPI_Op, win: MPI_Win) -> c_int {
        win_call("MPI_Fetch_and_op", win, |s, i| {
            let op = predefined_op(s, op)?;
            let t = target_or_null(s, i, target_rank, target_disp, 1, datatype)?;
            check_accumulate("MPI_Fetch_and_op", op, &t, None)?;
            let data = if op == PredefinedOp::NoOp {
                Vec::new()
            } else {
                // SAFETY: the program's origin buffer, read during the call.
                unsafe { Typed::new(s, origin_addr, 1, datatype)?.pack()? }
            };
            let result = Typed::new(s, result_addr, 1, datatype)?;
            issue(s, i, "MPI_Fetch_and_op", OpKind::GetAccumulate, op, target_rank, &t, &data, Some(result), None)
        })
    }

    fn Compare_and_swap(origin_addr: *const c_void, compare_addr: *const c_void, result_addr: *mut c_void, datatype: MPI_Datatype, target_rank: c_int, target_disp: MPI_Aint, win: MPI_Win) -> c_int {
        win_call("MPI_Compare_and_swap", win, |s, i| {
            let t = target_or_null(s, i, target_rank, target_disp, 1, datatype)?;
            if t.datatype.primitives().is_some_and(kawarimi_runtime::op::is_floating_point) {
                return fail(ErrorClass::Type, "MPI_Compare_and_swap of a floating-point type");
            }
            // SAFETY: the program's origin and compare buffers, read during the call.
            let mut data = unsafe { Typed::new(s, origin_addr, 1, datatype)?.pack()? };
            // SAFETY: as above.
            data.extend(unsafe { Typed::new(s, compare_addr, 1, datatype)?.pack()? });
            let result = Typed::new(s, result_addr, 1, datatype)?;
            issue(s, i, "MPI_Compare_and_swap", OpKind::CompareAndSwap, PredefinedOp::NoOp, target_rank, &t, &data, Some(result), None)
        })
    }

    fn Win_post(group: MPI_Group, _assert: c_int, win: MPI_Win) -> c_int {
        win_call("MPI_Win_post", win, |s, i| {
            if entry(s, i).epochs.exposure.is_some() {
                return fail(ErrorClass::RmaSync, "MPI_Win_post while an exposure epoch is open (no MPI_Win_wait yet)");
            }
            let ranks = group_ranks(s, i, group)?;
            let id = entry(s, i).id;
            s.world()?.engine.window_markers(id, OpKind::Post, &ranks)?;
            entry(s, i).epochs.exposure = Some(ranks);
            Ok(())
        })
    }

    fn Win_start(group: MPI_Group, _assert: c_int, win: MPI_Win) -> c_int {
        let first = |s: &mut State, i: usize| {
            let ep = &entry(s, i).epochs;
            if ep.access.is_some() || ep.fence_used || ep.lock_all || !ep.locked.is_empty() {
                return fail(ErrorClass::RmaSync, "MPI_Win_start inside another access epoch on the window");
            }
            let ranks = group_ranks(s, i, group)?;
            // Operations may go once every target has posted: before, they could reach
            // memory the target is still storing to.
            Ok((Awaiting::Markers(OpKind::Post, ranks.clone()), ranks))
        };
        win_sync("MPI_Win_start", win, first, |s, i, ranks| {
            let ep = &mut entry(s, i).epochs;
            ep.fence = false;
            ep.access = Some(ranks);
            Ok(())
        })
    }

    fn Win_complete(win: MPI_Win) -> c_int {
        win_call("MPI_Win_complete", win, |s, i| {
            let Some(ranks) = entry(s, i).epochs.access.take() else {
                return fail(ErrorClass::RmaSync, "MPI_Win_complete without MPI_Win_start");
            };
            let id = entry(s, i).id;
            s.world()?.engine.window_markers(id, OpKind::Complete, &ranks)?;
            for &r in &ranks {
                complete_pending(s, i, Some(r))?;
                entry(s, i).unsynced.remove(&r);
            }
            Ok(())
        })
    }

    fn Win_wait(win: MPI_Win) -> c_int {
        let first = |s: &mut State, i: usize| {
            let Some(ranks) = entry(s, i).epochs.exposure.take() else {
                return fail(ErrorClass::RmaSync, "MPI_Win_wait without MPI_Win_post");
            };
            Ok((Awaiting::Markers(OpKind::Complete, ranks), ()))
        };
        win_sync("MPI_Win_wait", win, first, |_, _, ()| Ok(()))
    }

    fn Win_test(win: MPI_Win, flag: *mut c_int) -> c_int {
        win_call("MPI_Win_test", win, |s, i| {
            let Some(ranks) = entry(s, i).epochs.exposure.clone() else {
                return fail(ErrorClass::RmaSync, "MPI_Win_test without MPI_Win_post");
            };
            let id = entry(s, i).id;
            let done = s.world()?.engine.window_take_markers(id, OpKind::Complete, &ranks, false)?;
            if done {
                entry(s, i).epochs.exposure = None;
            }
            // SAFETY: caller's output argument.
            unsafe { out(flag, c_int::from(done)) }
        })
    }

    fn Win_lock(lock_type: c_int, rank: c_int, assert: c_int, win: MPI_Win) -> c_int {
        let first = |s: &mut State, i: usize| {
            let exclusive = match lock_type {
                abi::MPI_LOCK_EXCLUSIVE => true,
                abi::MPI_LOCK_SHARED => false,
                other => return fail(ErrorClass::Locktype, format!("lock type {other} is neither MPI_LOCK_SHARED nor MPI_LOCK_EXCLUSIVE")),
            };
            if rank == abi::MPI_PROC_NULL {
                return Ok((Awaiting::Nothing, None));
            }
            check_rank(s, i, rank)?;
            let e = s.windows.get(i).expect("checked");
            let ep = &e.epochs;
            if ep.fence_used || ep.lock_all || ep.access.is_some() || ep.locked.contains_key(&rank) {
                return fail(ErrorClass::RmaSync, format!("MPI_Win_lock of rank {rank} inside another epoch on the window"));
            }
            let take = assert & abi::MPI_MODE_NOCHECK == 0;
            if !take {
                return Ok((Awaiting::Nothing, Some(false)));
            }
            let reply = sync_send(s, i, if exclusive { OpKind::LockExclusive } else { OpKind::LockShared }, rank)?;
            Ok((Awaiting::Replies(vec![reply]), Some(true)))
        };
        win_sync("MPI_Win_lock", win, first, |s, i, taken: Option<bool>| {
            let Some(taken) = taken else { return Ok(()) };
            // The fence before started no epoch (no operation followed it); the next
            // fence-synchronised operation needs a fence again, as in Open MPI.
            let ep = &mut entry(s, i).epochs;
            ep.fence = false;
            ep.locked.insert(rank, taken);
            Ok(())
        })
    }

    fn Win_unlock(rank: c_int, win: MPI_Win) -> c_int {
        let first = |s: &mut State, i: usize| {
            if rank == abi::MPI_PROC_NULL {
                return Ok((Awaiting::Nothing, false));
            }
            let Some(taken) = entry(s, i).epochs.locked.remove(&rank) else {
                return fail(ErrorClass::RmaSync, format!("MPI_Win_unlock of rank {rank}, which this process has not locked"));
            };
            let mut replies = Vec::new();
            unlock_send(s, i, rank, taken, &mut replies)?;
            Ok((Awaiting::Replies(replies), true))
        };
        win_sync("MPI_Win_unlock", win, first, |s, i, locked| if locked { complete_pending(s, i, Some(rank)) } else { Ok(()) })
    }

    fn Win_lock_all(assert: c_int, win: MPI_Win) -> c_int {
        let first = |s: &mut State, i: usize| {
            let e = s.windows.get(i).expect("checked");
            if e.epochs.fence_used || e.epochs.lock_all || !e.epochs.locked.is_empty() {
                return fail(ErrorClass::RmaSync, "MPI_Win_lock_all inside another epoch on the window");
            }
            let take = assert & abi::MPI_MODE_NOCHECK == 0;
            let ranks = if take { 0..e.comm.size() } else { 0..0 };
            let replies = ranks.map(|r| sync_send(s, i, OpKind::LockShared, r)).collect::<Res<Vec<_>>>()?;
            Ok((Awaiting::Replies(replies), take))
        };
        win_sync("MPI_Win_lock_all", win, first, |s, i, take| {
            let ep = &mut entry(s, i).epochs;
            ep.fence = false;
            ep.lock_all = true;
            ep.lock_all_taken = take;
            Ok(())
        })
    }

    fn Win_unlock_all(win: MPI_Win) -> c_int {
        let first = |s: &mut State, i: usize| {
            if !std::mem::take(&mut entry(s, i).epochs.lock_all) {
                return fail(ErrorClass::RmaSync, "MPI_Win_unlock_all without MPI_Win_lock_all");
            }
            // Every target is released even if one fails: a lock left held would stop its
            // other origins for good. The first failure is the call's.
            let taken = entry(s, i).epochs.lock_all_taken;
            let mut replies = Vec::new();
            let mut failed = Ok(());
            for r in 0..entry(s, i).comm.size() {
                let sent = unlock_send(s, i, r, taken, &mut replies);
                if failed.is_ok() {
                    failed = sent;
                }
            }
            failed.map(|_| (Awaiting::Replies(replies), ()))
        };
        win_sync("MPI_Win_unlock_all", win, first, |s, i, ()| complete_pending(s, i, None))
    }

    fn Win_flush(rank: c_int, win: MPI_Win) -> c_int {
        flush("MPI_Win_flush", win, Some(rank))
    }

    fn Win_flush_local(rank: c_int, win: MPI_Win) -> c_int {
        // Origin data is copied when an operation is issued; a local completion is the
        // arrival of its results, as for a flush.
        flush("MPI_Win_flush_local", win, Some(rank))
    }

    fn Win_flush_all(win: MPI_Win) -> c_int {
        flush("MPI_Win_flush_all", win, None)
    }

    fn Win_flush_local_all(win: MPI_Win) -> c_int {
        flush("MPI_Win_flush_local_all", win, None)
    }

    fn Win_sync(win: MPI_Win) -> c_int {
        // The unified memory model (§11.4): public and private copies are one; only the
        // compiler and the processor must not keep stores back.
        win_call("MPI_Win_sync", win, |_, _| {
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
    }

    fn Win_get_group(win: MPI_Win, group: *mut MPI_Group) -> c_int {
        win_call("MPI_Win_get_group", win, |s, i| {
            let g = (*entry(s, i).comm.group).clone();
            let h = s.new_group(g)?;
            // SAFETY: caller's output argument.
            unsafe { out(group, h) }
        })
    }

    fn Win_get_attr(win: MPI_Win, win_keyval: c_int, attribute_val: *mut c_void, flag: *mut c_int) -> c_int {
        win_call("MPI_Win_get_attr", win, |s, i| {
            let a = &*entry(s, i).attrs;
            let value: Option<*mut c_void> = match win_keyval {
                abi::MPI_WIN_BASE => Some(a.base as *mut c_void),
                abi::MPI_WIN_SIZE => Some(&a.size as *const MPI_Aint as *mut c_void),
                abi::MPI_WIN_DISP_UNIT => Some(&a.disp_unit as *const c_int as *mut c_void),
                abi::MPI_WIN_CREATE_FLAVOR => Some(&a.flavor as *const c_int as *mut c_void),
                abi::MPI_WIN_MODEL => Some(&a.model as *const c_int as *mut c_void),
                // SAFETY: §11.2.6's output arguments.
                _ => return unsafe { get_attr(s, AttrOwner::Win(win), win_keyval, attribute_val, flag) },
            };
            // SAFETY: caller's output arguments: `attribute_val` is a `void **` (§6.7.2).
            unsafe {
                if let Some(v) = value {
                    out(attribute_val as *mut *mut c_void, v)?;
                }
                out(flag, c_int::from(value.is_some()))
            }
        })
    }

    fn Win_set_name(win: MPI_Win, win_name: *const c_char) -> c_int {
        win_call("MPI_Win_set_name", win, |s, i| {
            if win_name.is_null() {
                return fail(ErrorClass::Arg, "NULL name");
            }
            // SAFETY: a NUL-terminated string (§6.8).
            let name = unsafe { std::ffi::CStr::from_ptr(win_name) }.to_string_lossy();
            entry(s, i).name = name.chars().take(abi::MPI_MAX_OBJECT_NAME as usize - 1).collect();
            Ok(())
        })
    }

    fn Win_get_name(win: MPI_Win, win_name: *mut c_char, resultlen: *mut c_int) -> c_int {
        win_call("MPI_Win_get_name", win, |s, i| {
            let name = entry(s, i).name.clone();
            // SAFETY: the buffer has MPI_MAX_OBJECT_NAME bytes (§6.8).
            let n = unsafe { crate::mem::c_string(win_name, abi::MPI_MAX_OBJECT_NAME as usize, &name)? };
            // SAFETY: caller's output argument.
            unsafe { out(resultlen, n) }
        })
    }

    fn Win_set_errhandler(win: MPI_Win, errhandler: MPI_Errhandler) -> c_int {
        win_call("MPI_Win_set_errhandler", win, |s, i| {
            entry(s, i).handler = handler_of(s, errhandler)?;
            Ok(())
        })
    }

    fn Win_get_errhandler(win: MPI_Win, errhandler: *mut MPI_Errhandler) -> c_int {
        win_call("MPI_Win_get_errhandler", win, |s, i| {
            let h = handler_handle(entry(s, i).handler);
            // SAFETY: caller's output argument.
            unsafe { out(errhandler, h) }
        })
    }
}

/// The shared segment of `MPI_Win_allocate_shared` (collective over `comm`): every member's
/// part back to back in rank order (the standard's default contiguous layout), created by
/// rank 0, mapped by the others, and its name removed once all have it. Refused with
/// MPI_ERR_RMA_SHARED unless every member is on this host.
fn shared_segment(st: &mut dyn Steps, c: &Comm, len: usize) -> MpiResult<(Segment, Vec<usize>)> {
    if construct::host_colours(st, c)?.iter().any(|&h| h != 0) {
        return err(
            ErrorClass::RmaShared,
            "MPI_Win_allocate_shared needs every process of the communicator on one host",
        );
    }
    let n = c.size() as usize;
    let lens = construct::allgather(st, c, &(len as u64).to_le_bytes(), &vec![8; n])?;
    let mut offsets = Vec::with_capacity(n);
    let mut total = 0usize;
    for l in &lens {
        offsets.push(total);
        total += u64::from_le_bytes(l[..8].try_into().expect("8 bytes")) as usize;
    }
    // Rank 0 names the segment (or why it could not make one) to everyone.
    let mut made = None;
    let mut name = [0u8; 256];
    if c.rank == 0 {
        // Named by a count of this process's shared windows: two threads may make one each at
        // once (the name's other parts are the process's).
        static SHARED_WINDOWS_MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nth = SHARED_WINDOWS_MADE.fetch_add(1, Ordering::Relaxed);
        let text = match Segment::create(&format!("win{nth}"), total.max(1)) {
            Ok(seg) => {
                let t = format!("ok {}", seg.name());
                made = Some(seg);
                t
            }
            Err(e) => format!("error {e}"),
        };
        let b = text.as_bytes();
        name[..b.len().min(255)].copy_from_slice(&b[..b.len().min(255)]);
    }
    construct::bcast(st, c, 0, &mut name)?;
    let text = String::from_utf8_lossy(&name).trim_end_matches('\0').to_string();
    let opened = match (made, text.strip_prefix("ok ")) {
        (Some(seg), _) => Ok(seg),
        (None, Some(seg_name)) => Segment::open(seg_name, total.max(1)).map_err(|e| e.to_string()),
        (None, None) => Err(text.clone()),
    };
    // Everyone says whether it has the segment: all go on, or all fail.
    let flag = [u8::from(opened.is_ok())];
    let flags = construct::allgather(st, c, &flag, &vec![1; n])?;
    let mut segment = match opened {
        Ok(seg) if flags.iter().all(|f| f[0] == 1) => seg,
        Ok(_) => return err(ErrorClass::RmaShared, "another process could not map the shared window's segment"),
        Err(e) => return err(ErrorClass::RmaShared, format!("the shared window's segment: {e}")),
    };
    segment
        .unlink()
        .or_else(|e| err(ErrorClass::RmaShared, format!("removing the shared window segment's name: {e}")))?;
    Ok((segment, offsets))
}

/// The ranks in the window of the members of `group` (§11.5.2's groups are groups of the
/// window's processes).
fn group_ranks(s: &State, i: usize, group: MPI_Group) -> Res<Vec<i32>> {
    let g = s.group(group)?;
    let comm = &s.windows.get(i).expect("checked").comm;
    g.members()
        .iter()
        .map(|&w| match comm.group.rank_of(w) {
            Some(r) => Ok(r),
            None => fail(ErrorClass::Group, format!("world rank {w} of the group is not in the window")),
        })
        .collect()
}

/// An origin or result argument triple: address, count, datatype.
type Triple<P> = (P, c_int, MPI_Datatype);

/// One operation as its call gives it: the origin data it sends (not read for a `Get` or an
/// `MPI_NO_OP`), the result buffer its reply lands in, the target `(rank, displacement,
/// count, datatype)`, and for the request-based forms the request to return.
#[allow(clippy::too_many_arguments)]
fn operation(
    s: &mut State,
    i: usize,
    name: &str,
    kind: OpKind,
    op: Option<MPI_Op>,
    origin: Option<Triple<*const c_void>>,
    result: Option<Triple<*mut c_void>>,
    (rank, disp, count, dt): (c_int, MPI_Aint, c_int, MPI_Datatype),
    request: Option<*mut MPI_Request>,
) -> Res<()> {
    let op = match op {
        Some(op) => predefined_op(s, op)?,
        None => PredefinedOp::NoOp,
    };
    let t = target_or_null(s, i, rank, disp, count, dt)?;
    if matches!(kind, OpKind::Accumulate | OpKind::GetAccumulate) {
        let origin_dt = match origin {
            Some((_, n, odt)) if op != PredefinedOp::NoOp => Some(check_buffer(s, n, odt)?),
            _ => None,
        };
        check_accumulate(name, op, &t, origin_dt.as_deref())?;
    }
    let origin = match origin {
        Some((addr, n, odt)) if kind != OpKind::GetAccumulate || op != PredefinedOp::NoOp => {
            Some(Typed::new(s, addr, n, odt)?)
        }
        _ => None,
    };
    let result = match result {
        Some((addr, n, rdt)) => Some(Typed::new(s, addr, n, rdt)?),
        None => None,
    };
    let local = match kind {
        OpKind::Put => origin.as_ref(),
        OpKind::Get => result.as_ref(),
        _ => None,
    };
    if let Some(local) = local {
        if direct(s, i, name, kind, rank, &t, local)? {
            return complete_request(s, i, request);
        }
    }
    let data = match &origin {
        // SAFETY: the program's origin buffer, read during the call.
        Some(o) => unsafe { o.pack()? },
        None => Vec::new(),
    };
    issue(s, i, name, kind, op, rank, &t, &data, result, request)
}

/// The rules of §11.3.4 an accumulate's origin can check: the target datatype made of one
/// predefined type that the op applies to, and the origin's of the same one.
fn check_accumulate(name: &str, op: PredefinedOp, t: &Target, origin: Option<&Datatype>) -> Res<()> {
    if t.count == 0 || t.datatype.size() == 0 {
        return Ok(());
    }
    let Some(prim) = t.datatype.primitives() else {
        return fail(ErrorClass::Type, format!("{name}: the target datatype must be made of one predefined type"));
    };
    kawarimi_runtime::op::check(op, prim)?;
    if let Some(o) = origin.filter(|o| o.size() > 0) {
        if o.primitives() != Some(prim) {
            return fail(
                ErrorClass::Type,
                format!("{name}: origin and target datatypes are not made of the same predefined type"),
            );
        }
    }
    Ok(())
}

/// [`target`], or an unchecked empty one for `MPI_PROC_NULL` (the operation does nothing).
fn target_or_null(s: &mut State, i: usize, rank: c_int, disp: MPI_Aint, count: c_int, dt: MPI_Datatype) -> Res<Target> {
    if rank == abi::MPI_PROC_NULL {
        let datatype = check_buffer(s, count, dt)?;
        return Ok(Target { offset: 0, count: 0, datatype });
    }
    check_rank(s, i, rank)?;
    target(s, i, rank, disp, count, dt)
}

#[cfg(test)]
mod tests {
    use super::attached;

    #[test]
    fn attached_regions_cover_a_range_alone_or_adjoining() {
        let regions = [(200, 50), (100, 100), (400, 10)];
        assert!(attached(&regions, 120, 180), "inside one region");
        assert!(attached(&regions, 150, 240), "across two that adjoin");
        assert!(!attached(&regions, 240, 260), "past the end of the adjoining pair");
        assert!(!attached(&regions, 90, 110), "starts before any region");
        assert!(!attached(&regions, 240, 405), "spans a gap");
        assert!(attached(&regions, 400, 410));
    }
}
