//! Collective schedules: a collective algorithm written down as steps over buffers (send a
//! buffer, receive into one, wait for what is posted, reduce one into another), run by the
//! engine's progress loop. A nonblocking collective (`MPI_Ibarrier`, …) is a schedule started
//! and left to progress while the application does other work; a blocking collective is the
//! same schedule waited for at once, so each algorithm exists once.
//!
//! Traffic travels in the communicator's collective context with a tag unique to the
//! collective instance (every rank calls a communicator's collectives in the same order,
//! §5.12, so they agree on it), so that several collectives in progress at once on one
//! communicator never take each other's messages.

use crate::comm::{CollSeq, Comm};
use crate::core::{Core, RecvBuf, ReqId, SendData};
use crate::error::{err, ErrorClass, MpiError, MpiResult};

/// A reduction: predefined or user-defined, applied to packed elements.
pub trait Reducer: Send + Sync {
    /// `inout[i] = input[i] op inout[i]` (MPI-3.1 §5.9.5 argument order).
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()>;
    fn commutative(&self) -> bool;
    /// Bytes of one element it reduces: a buffer may be cut into blocks at multiples of it
    /// and each block reduced on its own. 0 (the default): never cut.
    fn elem_bytes(&self) -> usize {
        0
    }
}

/// A borrowed reducer serves a blocking collective's schedule.
impl<R: Reducer + ?Sized> Reducer for &R {
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
        (**self).reduce(input, inout)
    }
    fn commutative(&self) -> bool {
        (**self).commutative()
    }
    fn elem_bytes(&self) -> usize {
        (**self).elem_bytes()
    }
}

/// A buffer of a schedule.
pub type Slot = usize;

/// A slot whose bytes are not the schedule's own: what a send step sends as it is (the
/// application's buffer, so no staging copy is made), or where a receive step lands (the
/// application's buffer, which then holds the bytes and leaves the slot empty; later send
/// steps of the slot send them from there).
pub enum Outside {
    Send(SendData),
    Recv(RecvBuf),
}

impl Outside {
    /// Bytes it sends or takes.
    pub fn len(&self) -> usize {
        match self {
            Outside::Send(d) => d.len(),
            Outside::Recv(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Sends the current contents of `slot` to rank `to` of the communicator on `lane` (see
    /// [`Schedule::send_on`]); `moved`: the slot is not used again, so its buffer goes to the
    /// send instead of a copy.
    Send { to: i32, slot: Slot, moved: bool, lane: u8 },
    /// Receives exactly `len` bytes from rank `from` on `lane` into `slot` (replacing it).
    Recv { from: i32, slot: Slot, len: usize, lane: u8 },
    /// Waits until everything posted so far has completed.
    Wait,
    /// `slots[inout] = slots[input] op slots[inout]`; `input` may stand for outside bytes
    /// it sends.
    Reduce { input: Slot, inout: Slot },
    /// `to` takes the bytes of `from` (not used again) as a receive would: a slot standing
    /// for an outside receive buffer gets them written there (later send steps of `to` send
    /// them from there), one of the schedule's own holds them.
    Land { from: Slot, to: Slot },
    /// `slots[to]` takes the bytes of `slots[from]`, which is left with `to`'s old bytes:
    /// for a buffer that is written again before it is read (its allocation is reused then).
    Swap { from: Slot, to: Slot },
    /// `slots[to]` = slots `first..first + count` end to end.
    Join { first: Slot, count: usize, to: Slot },
}

/// The bytes of block `k` of `count` when `len` bytes of `elem`-byte elements are cut as
/// evenly as whole elements allow (the first blocks take one more element).
pub fn block_range(len: usize, elem: usize, count: usize, k: usize) -> std::ops::Range<usize> {
    let elems = len / elem.max(1);
    let (base, extra) = (elems / count, elems % count);
    let start = k * base + k.min(extra);
    let n = base + usize::from(k < extra);
    start * elem..(start + n) * elem
}

/// One collective's steps and buffers. Build with the methods below, then run it with
/// [`crate::engine::Engine::start_schedule`] (nonblocking) or [`crate::coll::run`] (blocking).
pub struct Schedule<'a> {
    ctx: u32,
    tag: i32,
    /// Where the tag comes from once the schedule starts, blocking or not (see
    /// [`crate::comm::CollSeq`]): the communicator's counters, its tag base and the kind.
    tag_source: Option<(std::sync::Arc<CollSeq>, i32, i32)>,
    /// World rank of each communicator rank: the local group's, then on an
    /// inter-communicator the remote group's (shared with the communicator, not copied).
    peers: std::sync::Arc<crate::comm::Group>,
    remote: Option<std::sync::Arc<crate::comm::Group>>,
    slots: Vec<Vec<u8>>,
    /// Per slot: memory outside the schedule that the slot stands for, if any.
    outside: Vec<Option<Outside>>,
    steps: Vec<Step>,
    next: usize,
    /// Posted and not yet completed: the request, and for a receive where it goes.
    pending: Vec<(ReqId, Option<(Slot, usize)>)>,
    op: Option<Box<dyn Reducer + 'a>>,
}

impl std::fmt::Debug for Schedule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("tag", &self.tag)
            .field("next", &self.next)
            .field("steps", &self.steps.len())
            .finish()
    }
}

/// Kinds of collective, part of the tag.
pub mod kind {
    pub const BARRIER: i32 = 1;
    pub const BCAST: i32 = 2;
    pub const REDUCE: i32 = 3;
    pub const ALLREDUCE: i32 = 4;
    pub const GATHER: i32 = 5;
    pub const SCATTER: i32 = 6;
    pub const ALLGATHER: i32 = 7;
    pub const ALLTOALL: i32 = 8;
    pub const SCAN: i32 = 9;
    /// The neighbourhood collectives (§7.6); their lane 1 travels as kind 11.
    pub const NEIGHBOR: i32 = 10;
}

impl<'a> Schedule<'a> {
    /// An empty schedule for one collective of `kind` on `comm` (takes the next instance
    /// number of `comm`).
    ///
    /// Steps name peers by index: the ranks of the (local) group, and on an
    /// inter-communicator the remote group's ranks after them (remote rank `q` is index
    /// `comm.size() + q`).
    pub fn new(comm: &Comm, kind: i32) -> Schedule<'a> {
        let mut s = Schedule::among(comm.coll_ctx(), 0, comm.group.clone());
        s.remote = comm.inter.as_ref().map(|inter| inter.remote.clone());
        s.tag_source = Some((comm.coll_seq.clone(), comm.coll_tag_base, kind));
        s
    }

    /// Gives the schedule its instance tag as it starts; a schedule made with an explicit tag
    /// ([`Schedule::between`]) keeps it.
    pub(crate) fn start(&mut self, nonblocking: bool) {
        if let Some((seq, base, kind)) = self.tag_source.take() {
            self.tag = seq.next_tag(base, kind, nonblocking);
        }
    }

    /// The instance tag it travels with (once started).
    pub(crate) fn tag(&self) -> i32 {
        self.tag
    }

    /// Starts a schedule that goes on from one that used `tag` (a chain's next step, see
    /// [`crate::engine::Engine::start_chain`]): it takes no instance number of its own.
    pub(crate) fn continue_with_tag(&mut self, tag: i32) {
        self.tag_source = None;
        self.tag = tag;
    }

    /// An empty schedule whose messages travel in context `ctx` with `tag`, between this
    /// process and the world ranks `peers` (named by index in steps).
    pub fn between(ctx: u32, tag: i32, peers: Vec<u32>) -> MpiResult<Schedule<'a>> {
        Ok(Schedule::among(ctx, tag, std::sync::Arc::new(crate::comm::Group::new(peers)?)))
    }

    fn among(ctx: u32, tag: i32, peers: std::sync::Arc<crate::comm::Group>) -> Schedule<'a> {
        Schedule {
            ctx,
            tag,
            tag_source: None,
            peers,
            remote: None,
            slots: Vec::new(),
            outside: Vec::new(),
            // Room for the steps of the common small collectives at once, rather than growing.
            steps: Vec::with_capacity(8),
            next: 0,
            pending: Vec::new(),
            op: None,
        }
    }

    /// Adds a buffer; returns its slot.
    /// Whether the op is commutative (an op must be set).
    pub fn commutative(&self) -> bool {
        self.op.as_ref().is_some_and(|o| o.commutative())
    }

    pub fn slot(&mut self, bytes: Vec<u8>) -> Slot {
        self.slots.push(bytes);
        self.outside.push(None);
        self.slots.len() - 1
    }

    /// A slot that stands for `outside`. `Outside::Send`: send steps send it as it is (the
    /// application's contiguous buffer, [`SendData::Static`], goes to the peer without a
    /// staging copy). `Outside::Recv`: one receive step lands in it (the application's
    /// buffer, [`RecvBuf::Static`], straight from the transport where it can place it, after
    /// which send steps send from there; or a staging buffer that becomes the slot's bytes).
    /// Reduce and swap steps refuse such a slot.
    pub fn slot_outside(&mut self, outside: Outside) -> Slot {
        let slot = self.slot(Vec::new());
        self.outside[slot] = Some(outside);
        slot
    }

    /// `outside` cut into `count` blocks of whole `elem`-byte elements (see [`block_range`]),
    /// each a slot of its own, consecutive; returns the first. The application's buffers are
    /// cut where they are (each block stands for its part of them); owned bytes to send are
    /// copied into the blocks, and a staging receive buffer becomes `count` empty slots of
    /// the schedule's own.
    pub fn slots_outside_cut(&mut self, outside: Outside, count: usize, elem: usize) -> Slot {
        let first = self.slots.len();
        let len = outside.len();
        let range = |k| block_range(len, elem, count, k);
        match outside {
            Outside::Send(SendData::Static(all)) => {
                for k in 0..count {
                    self.slot_outside(Outside::Send(SendData::Static(&all[range(k)])));
                }
            }
            Outside::Send(SendData::Owned(all)) => {
                for k in 0..count {
                    self.slot(all[range(k)].to_vec());
                }
            }
            Outside::Recv(RecvBuf::Static(mut rest)) => {
                for k in 0..count {
                    let (block, tail) = std::mem::take(&mut rest).split_at_mut(range(k).len());
                    rest = tail;
                    self.slot_outside(Outside::Recv(RecvBuf::Static(block)));
                }
            }
            // A staging buffer: the blocks are the schedule's own.
            Outside::Recv(RecvBuf::Owned(_)) => {
                for _ in 0..count {
                    self.slot(Vec::new());
                }
            }
        }
        first
    }

    pub fn set_op(&mut self, op: Box<dyn Reducer + 'a>) {
        self.op = Some(op);
    }

    pub fn send(&mut self, to: i32, slot: Slot) {
        self.steps.push(Step::Send { to, slot, moved: false, lane: 0 });
    }

    /// Sends `slot` for the last time: the buffer itself goes, the slot is left empty.
    pub fn send_last(&mut self, to: i32, slot: Slot) {
        self.send_last_on(to, slot, 0);
    }

    /// [`send_last`](Self::send_last) on `lane` (0 or 1): the messages of one collective
    /// instance between two processes match in posting order within a lane, and lane 1
    /// travels with the instance's tag plus one (the next kind, which only a kind that
    /// says so may use).
    pub fn send_last_on(&mut self, to: i32, slot: Slot, lane: u8) {
        debug_assert!(lane <= 1);
        self.steps.push(Step::Send { to, slot, moved: true, lane });
    }

    pub fn recv(&mut self, from: i32, slot: Slot, len: usize) {
        self.recv_on(from, slot, len, 0);
    }

    /// [`recv`](Self::recv) on `lane` (see [`send_last_on`](Self::send_last_on)).
    pub fn recv_on(&mut self, from: i32, slot: Slot, len: usize, lane: u8) {
        debug_assert!(lane <= 1);
        self.steps.push(Step::Recv { from, slot, len, lane });
    }

    pub fn wait(&mut self) {
        self.steps.push(Step::Wait);
    }

    pub fn reduce(&mut self, input: Slot, inout: Slot) {
        self.steps.push(Step::Reduce { input, inout });
    }

    /// `to` (a slot made from an [`Outside::Recv`], or one of the schedule's own) takes the
    /// bytes of `from`, which is not used again.
    pub fn land(&mut self, from: Slot, to: Slot) {
        self.steps.push(Step::Land { from, to });
    }

    pub fn swap(&mut self, from: Slot, to: Slot) {
        self.steps.push(Step::Swap { from, to });
    }

    /// Puts slots `first..first + count` end to end into `to`.
    pub fn join(&mut self, first: Slot, count: usize, to: Slot) {
        self.steps.push(Step::Join { first, count, to });
    }

    /// The buffers, once the schedule has finished.
    pub fn into_slots(self) -> Vec<Vec<u8>> {
        self.slots
    }

    fn peer(&self, r: i32) -> MpiResult<i32> {
        let local = self.peers.members();
        let remote = self.remote.as_ref().map_or(&[][..], |g| g.members());
        let world = usize::try_from(r).ok().and_then(|i| local.get(i).or_else(|| remote.get(i - local.len())));
        match world {
            Some(&w) => Ok(w as i32),
            None => err(
                ErrorClass::Rank,
                format!("collective peer {r} is not in a communicator of {}", local.len() + remote.len()),
            ),
        }
    }

    /// Runs as far as it can without waiting. Returns whether it has finished.
    pub fn advance(&mut self, core: &mut Core) -> MpiResult<bool> {
        debug_assert!(self.tag_source.is_none(), "a schedule advanced before it started");
        loop {
            let Some(&step) = self.steps.get(self.next) else {
                // The end waits for everything still posted.
                return self.complete_pending(core);
            };
            match step {
                Step::Send { to, slot, moved, lane } => {
                    let data = self.outgoing(slot, moved)?;
                    let id = core.isend(self.peer(to)?, self.ctx, self.tag + i32::from(lane), data, false)?;
                    self.pending.push((id, None));
                }
                Step::Recv { from, slot, len, lane } => {
                    let buf = match self.outside[slot].take() {
                        Some(Outside::Recv(buf)) => buf,
                        None => {
                            // The slot's old bytes (a swap leaves some) hold the new ones.
                            let mut v = std::mem::take(&mut self.slots[slot]);
                            v.clear();
                            v.resize(len, 0);
                            RecvBuf::Owned(v)
                        }
                        Some(Outside::Send(_)) => {
                            return err(ErrorClass::Intern, "a schedule receives into a send slot")
                        }
                    };
                    let id = core.irecv(self.peer(from)?, self.ctx, self.tag + i32::from(lane), buf)?;
                    self.pending.push((id, Some((slot, len))));
                }
                Step::Wait => {
                    if !self.complete_pending(core)? {
                        return Ok(false);
                    }
                }
                Step::Reduce { .. } | Step::Swap { .. } | Step::Join { .. } if self.touches_outside(step) => {
                    return err(ErrorClass::Intern, "a schedule reduces, swaps or joins a slot it does not hold");
                }
                Step::Reduce { input, inout } => {
                    let op =
                        self.op.as_ref().ok_or_else(|| MpiError::new(ErrorClass::Intern, "schedule without an op"))?;
                    let mut acc = std::mem::take(&mut self.slots[inout]);
                    op.reduce(self.bytes_of(input)?, &mut acc)?;
                    self.slots[inout] = acc;
                }
                Step::Land { from, to } => self.land_now(from, to)?,
                Step::Swap { from, to } => self.slots.swap(from, to),
                Step::Join { first, count, to } => {
                    let mut whole = Vec::with_capacity((first..first + count).map(|k| self.slots[k].len()).sum());
                    for k in first..first + count {
                        whole.extend_from_slice(&self.slots[k]);
                    }
                    self.slots[to] = whole;
                }
            }
            self.next += 1;
        }
    }

    /// What a send step of `slot` sends: the outside data it stands for, or its bytes
    /// (moved when the slot is not used again).
    fn outgoing(&mut self, slot: Slot, moved: bool) -> MpiResult<SendData> {
        match self.outside[slot].take() {
            None if moved => Ok(SendData::Owned(std::mem::take(&mut self.slots[slot]))),
            None => Ok(SendData::Owned(self.slots[slot].clone())),
            Some(Outside::Send(SendData::Static(s))) => {
                // A reference: sending it again costs nothing.
                self.outside[slot] = Some(Outside::Send(SendData::Static(s)));
                Ok(SendData::Static(s))
            }
            Some(Outside::Send(SendData::Owned(v))) if !moved => {
                let copy = v.clone();
                self.outside[slot] = Some(Outside::Send(SendData::Owned(v)));
                Ok(SendData::Owned(copy))
            }
            Some(Outside::Send(data)) => Ok(data),
            Some(Outside::Recv(_)) => err(ErrorClass::Intern, "a schedule sends from a receive slot"),
        }
    }

    /// The bytes `slot` holds: its own, or the outside bytes it sends.
    fn bytes_of(&self, slot: Slot) -> MpiResult<&[u8]> {
        match &self.outside[slot] {
            None => Ok(&self.slots[slot]),
            Some(Outside::Send(data)) => Ok(data.as_slice()),
            Some(Outside::Recv(_)) => err(ErrorClass::Intern, "a schedule reads a receive slot before its receive"),
        }
    }

    fn land_now(&mut self, from: Slot, to: Slot) -> MpiResult<()> {
        let target = self.outside[to].take();
        let expected = match &target {
            Some(Outside::Recv(b)) => Some(b.len()),
            None => None,
            Some(Outside::Send(_)) => return err(ErrorClass::Intern, "a schedule lands bytes in a send slot"),
        };
        let given = self.bytes_of(from)?.len();
        if let Some(len) = expected.filter(|&len| len != given) {
            return err(
                ErrorClass::Truncate,
                format!(
                    "collective expected {len} bytes from this rank itself but it gave {given}: the counts or \
                     types passed do not agree"
                ),
            );
        }
        self.outside[to] = match target {
            Some(Outside::Recv(RecvBuf::Static(buf))) => {
                buf.copy_from_slice(self.bytes_of(from)?);
                Some(Outside::Send(SendData::Static(buf)))
            }
            _ => {
                self.slots[to] = match self.outside[from] {
                    None => std::mem::take(&mut self.slots[from]),
                    Some(_) => self.bytes_of(from)?.to_vec(),
                };
                None
            }
        };
        Ok(())
    }

    fn touches_outside(&self, step: Step) -> bool {
        let (a, b) = match step {
            // The input of a reduction may be bytes the slot sends.
            Step::Reduce { input, inout } if matches!(self.outside[input], Some(Outside::Send(_))) => (inout, inout),
            Step::Reduce { input, inout } => (input, inout),
            Step::Swap { from, to } => (from, to),
            Step::Join { to, .. } => (to, to),
            _ => return false,
        };
        self.outside[a].is_some() || self.outside[b].is_some()
    }

    /// Takes every posted request if all have completed, storing what receives brought.
    fn complete_pending(&mut self, core: &mut Core) -> MpiResult<bool> {
        if !self.pending.iter().all(|&(id, _)| core.is_complete(id)) {
            return Ok(false);
        }
        for (id, target) in std::mem::take(&mut self.pending) {
            let c = core.take_completion(id).expect("checked complete");
            let Some((slot, len)) = target else { continue };
            if c.status.error.is_some() || c.status.len != len {
                return err(
                    ErrorClass::Truncate,
                    format!(
                        "collective expected {len} bytes from world rank {} but the message was longer: \
                         the ranks passed inconsistent counts or types",
                        c.status.source
                    ),
                );
            }
            match c.recv_buf {
                Some(RecvBuf::Owned(mut v)) => {
                    v.truncate(len);
                    self.slots[slot] = v;
                }
                // The bytes are where the application wanted them, and are sent on from there.
                Some(RecvBuf::Static(s)) => self.outside[slot] = Some(Outside::Send(SendData::Static(s))),
                None => return err(ErrorClass::Intern, "collective receive lost its buffer"),
            }
        }
        Ok(true)
    }
}

/// The steps of a binomial-tree broadcast of `data` (`len` bytes) from `root` among the
/// schedule's peers `0..n`, as seen by peer `rank`.
pub(crate) fn bcast_steps(s: &mut Schedule<'_>, n: i32, rank: i32, root: i32, data: Slot, len: usize) {
    let rel = (rank - root + n) % n;
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            s.recv((rel - mask + root) % n, data, len);
            s.wait();
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if rel + mask < n {
            s.send((rel + mask + root) % n, data);
        }
        mask >>= 1;
    }
}

/// The steps of a binomial-tree reduction of `acc` (`len` bytes; the schedule's op) among
/// the schedule's peers `0..n` towards `tree_root`, as seen by peer `rank`. Towards peer 0
/// every subtree covers a contiguous range of peers, so a non-commutative op keeps its
/// order. The result ends up in `acc` at `tree_root`; elsewhere `acc` is spent.
pub(crate) fn reduce_steps(s: &mut Schedule<'_>, n: i32, rank: i32, tree_root: i32, acc: Slot, len: usize) {
    let rel = (rank - tree_root + n) % n;
    let theirs = s.slot(Vec::new());
    let mut mask = 1;
    while mask < n {
        if rel & mask == 0 {
            let src = rel | mask;
            if src < n {
                s.recv((src + tree_root) % n, theirs, len);
                s.wait();
                // `theirs` covers higher ranks: acc = acc op theirs.
                s.reduce(acc, theirs);
                s.swap(theirs, acc);
            }
        } else {
            // A rank that sends its partial result up is done with it.
            s.send_last(((rel & !mask) + tree_root) % n, acc);
            s.wait();
            break;
        }
        mask <<= 1;
    }
}
