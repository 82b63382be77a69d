//! Small blocking collectives through the shared-memory slots
//! ([`kawarimi_transports::shm::slots`]): on a communicator whose members all share memory
//! with each other, each member publishes its part of a barrier, broadcast, reduction,
//! allreduce, scan, reduce-scatter, gather, scatter, allgather or all-to-all in its slot, waits until every member has published, and reads the parts it
//! needs in place. One publish and one look per member replaces a tree of messages, each of
//! which costs a frame through a ring at both ends.
//!
//! Which communicators use the slots is agreed among their members at the first such
//! collective (a point-to-point allreduce of "every member shares memory with me", the slot
//! areas free here, and the epoch). "Yes, in area A" holds until the next switch, which may
//! move the members apart: they agree again at their next collective. "No" holds for good.
//! Every member must run each collective instance the same way, and a switch can fall between
//! two members' calls of one instance: an instance through the slots that a switch interrupts
//! is simply run again by every member (nobody can have finished it), so agreeing again after
//! a switch is safe; an instance already under way point-to-point cannot be taken back, so a
//! member that called it after the switch must not agree again and choose the slots. (Agreeing
//! again safely would need a point where every member is known to be in the same epoch;
//! communicators whose members come together on one host by a switch stay point-to-point.)
//!
//! Every function here returns `Ok(false)` when the slots do not apply (too large, an
//! inter-communicator, members not all on shared memory, no area left): the caller then runs
//! the point-to-point schedule of [`crate::coll`].

use kawarimi_transports::shm::slots::{CollSlots, SLOT_DATA_BYTES};

use crate::coll;
use crate::comm::Comm;
use crate::engine::Engine;
use crate::error::{ErrorClass, MpiError, MpiResult};
use crate::sched::Reducer;

/// The largest part per member a collective through the slots takes.
pub const MAX_BYTES: usize = SLOT_DATA_BYTES;

/// Agreement rounds in a row that a switch may spoil before the collective goes
/// point-to-point this once.
const AGREE_TRIES: usize = 4;

/// Whether a collective of `len` bytes per member on `comm` may use the slots at all.
fn fits(comm: &Comm, len: usize) -> bool {
    len <= MAX_BYTES && !comm.is_inter() && comm.size() > 1
}

/// `MPI_Barrier`.
pub fn barrier(e: &mut Engine, comm: &Comm) -> MpiResult<bool> {
    if !fits(comm, 0) {
        return Ok(false);
    }
    through_slots(e, comm, &[], Reads::Nothing, |_| Ok(()))
}

/// `MPI_Bcast` at the root: sends `data`.
pub fn bcast_from_root(e: &mut Engine, comm: &Comm, data: &[u8]) -> MpiResult<bool> {
    if !fits(comm, data.len()) {
        return Ok(false);
    }
    through_slots(e, comm, data, Reads::Nothing, |_| Ok(()))
}

/// `MPI_Bcast` elsewhere than at `root`: receives into `buf`.
pub fn bcast(e: &mut Engine, comm: &Comm, root: i32, buf: &mut [u8]) -> MpiResult<bool> {
    if !fits(comm, buf.len()) {
        return Ok(false);
    }
    let reads = Reads::One(world(comm, root), buf.len());
    through_slots(e, comm, &[], reads, |parts| {
        buf.copy_from_slice(parts.get(0)?);
        Ok(())
    })
}

/// `MPI_Allreduce` of `input` into the contiguous `out` (as long).
pub fn allreduce(e: &mut Engine, comm: &Comm, input: &[u8], out: &mut [u8], op: &dyn Reducer) -> MpiResult<bool> {
    if !fits(comm, input.len()) {
        return Ok(false);
    }
    through_slots(e, comm, input, Reads::Every(input.len()), |parts| fold(parts, parts.count(), 0, out, op))
}

/// `MPI_Reduce_scatter_block`: `input` holds a block for each member in rank order; `out` gets
/// the reduction of every member's block for this rank.
pub fn reduce_scatter_block(
    e: &mut Engine,
    comm: &Comm,
    input: &[u8],
    out: &mut [u8],
    op: &dyn Reducer,
) -> MpiResult<bool> {
    if !fits(comm, input.len()) {
        return Ok(false);
    }
    blocks_match(input.len(), out.len(), comm)?;
    let at = comm.rank as usize * out.len();
    through_slots(e, comm, input, Reads::Every(input.len()), |parts| fold(parts, parts.count(), at, out, op))
}

/// `MPI_Scan` of `input` into the contiguous `out` (as long): the reduction of the parts of
/// members 0 to this one.
pub fn scan(e: &mut Engine, comm: &Comm, input: &[u8], out: &mut [u8], op: &dyn Reducer) -> MpiResult<bool> {
    if !fits(comm, input.len()) {
        return Ok(false);
    }
    let upto = comm.rank as usize + 1;
    through_slots(e, comm, input, Reads::Every(input.len()), |parts| fold(parts, upto, 0, out, op))
}

/// `MPI_Reduce` of `input`, whose result lands in `out` (given at the root only).
pub fn reduce(e: &mut Engine, comm: &Comm, input: &[u8], out: Option<&mut [u8]>, op: &dyn Reducer) -> MpiResult<bool> {
    if !fits(comm, input.len()) {
        return Ok(false);
    }
    let Some(out) = out else { return through_slots(e, comm, input, Reads::Nothing, |_| Ok(())) };
    through_slots(e, comm, input, Reads::Every(input.len()), |parts| fold(parts, parts.count(), 0, out, op))
}

/// `MPI_Allgather` of this rank's block `mine` into `out`: every member's block, in rank order.
pub fn allgather(e: &mut Engine, comm: &Comm, mine: &[u8], out: &mut [u8]) -> MpiResult<bool> {
    if !fits(comm, mine.len()) {
        return Ok(false);
    }
    blocks_match(out.len(), mine.len(), comm)?;
    through_slots(e, comm, mine, Reads::Every(mine.len()), |parts| land_blocks(parts, out))
}

/// `MPI_Gather` of this rank's block `mine` towards the root, whose `out` (given there only)
/// gets every member's block in rank order.
pub fn gather(e: &mut Engine, comm: &Comm, mine: &[u8], out: Option<&mut [u8]>) -> MpiResult<bool> {
    if !fits(comm, mine.len()) {
        return Ok(false);
    }
    let Some(out) = out else { return through_slots(e, comm, mine, Reads::Nothing, |_| Ok(())) };
    blocks_match(out.len(), mine.len(), comm)?;
    through_slots(e, comm, mine, Reads::Every(mine.len()), |parts| land_blocks(parts, out))
}

/// `MPI_Scatter` at the root: `all` holds a block for each member in rank order; the root's
/// own lands in `own` (`None`: it stays where it is, `MPI_IN_PLACE`).
pub fn scatter_from_root(e: &mut Engine, comm: &Comm, all: &[u8], own: Option<&mut [u8]>) -> MpiResult<bool> {
    if !fits(comm, all.len()) {
        return Ok(false);
    }
    let block = all.len() / comm.size() as usize;
    if let Some(own) = &own {
        blocks_match(all.len(), own.len(), comm)?;
    }
    if !through_slots(e, comm, all, Reads::Nothing, |_| Ok(()))? {
        return Ok(false);
    }
    if let Some(own) = own {
        let me = comm.rank as usize;
        own.copy_from_slice(&all[me * block..(me + 1) * block]);
    }
    Ok(true)
}

/// `MPI_Scatter` elsewhere than at `root`: `out` gets this rank's block of the root's.
pub fn scatter(e: &mut Engine, comm: &Comm, root: i32, out: &mut [u8]) -> MpiResult<bool> {
    let (block, me) = (out.len(), comm.rank as usize);
    let all = block * comm.size() as usize;
    if !fits(comm, all) {
        return Ok(false);
    }
    through_slots(e, comm, &[], Reads::One(world(comm, root), all), |parts| {
        out.copy_from_slice(&parts.get(0)?[me * block..(me + 1) * block]);
        Ok(())
    })
}

/// Every member's part, one block each, in rank order into `out`.
fn land_blocks(parts: &Parts<'_>, out: &mut [u8]) -> MpiResult<()> {
    let n = parts.count();
    let block = out.len() / n;
    for i in 0..n {
        out[i * block..(i + 1) * block].copy_from_slice(parts.get(i)?);
    }
    Ok(())
}

/// That `whole` bytes are one block of `block` bytes per member: the counts and types this
/// rank passed agree with each other (otherwise an error, not a quiet fallback to another
/// algorithm than the other members').
fn blocks_match(whole: usize, block: usize, comm: &Comm) -> MpiResult<()> {
    if whole == block * comm.size() as usize {
        return Ok(());
    }
    Err(MpiError::new(
        ErrorClass::Truncate,
        format!(
            "{whole} bytes are not one block of {block} bytes for each of {} ranks: the counts or types differ",
            comm.size()
        ),
    ))
}

/// `MPI_Alltoall`: `mine` holds a block for each member in rank order; `out` gets, in rank
/// order, the block each member holds for this rank.
pub fn alltoall(e: &mut Engine, comm: &Comm, mine: &[u8], out: &mut [u8]) -> MpiResult<bool> {
    let n = comm.size() as usize;
    if !fits(comm, mine.len()) {
        return Ok(false);
    }
    if out.len() != mine.len() || !mine.len().is_multiple_of(n) {
        return Err(MpiError::new(
            ErrorClass::Truncate,
            format!(
                "all-to-all of {} bytes out and {} in among {n} ranks: the counts or types differ",
                mine.len(),
                out.len()
            ),
        ));
    }
    let (block, me) = (mine.len() / n, comm.rank as usize);
    through_slots(e, comm, mine, Reads::Every(mine.len()), |parts| {
        for (i, to) in out.chunks_exact_mut(block.max(1)).enumerate().take(n) {
            to.copy_from_slice(&parts.get(i)?[me * block..(me + 1) * block]);
        }
        Ok(())
    })
}

fn world(comm: &Comm, rank: i32) -> u32 {
    comm.group.world_rank(rank).expect("a rank of the communicator")
}

/// `out` = part 0 op (part 1 op (... op part n-1)), of the bytes of each part from `at` on (as
/// many as `out` holds): the members' order, whatever the op's commutativity, so every member
/// that folds gets the same bits.
fn fold(parts: &Parts<'_>, n: usize, at: usize, out: &mut [u8], op: &dyn Reducer) -> MpiResult<()> {
    let len = out.len();
    out.copy_from_slice(&parts.get(n - 1)?[at..at + len]);
    for i in (0..n - 1).rev() {
        op.reduce(&parts.get(i)?[at..at + len], out)?;
    }
    Ok(())
}

/// Whose parts a collective through the slots reads, and how long each is.
#[derive(Debug, Clone, Copy)]
enum Reads {
    Nothing,
    /// One member's (a broadcast's root, by world rank).
    One(u32, usize),
    /// Every member's, in rank order.
    Every(usize),
}

/// The parts a finished collective reads, in the slots.
struct Parts<'a> {
    slots: &'a CollSlots,
    area: usize,
    seq: u64,
    members: &'a [u32],
    reads: Reads,
}

impl Parts<'_> {
    fn count(&self) -> usize {
        match self.reads {
            Reads::Nothing => 0,
            Reads::One(..) => 1,
            Reads::Every(_) => self.members.len(),
        }
    }

    /// Part `i` of what the collective reads.
    fn get(&self, i: usize) -> MpiResult<&[u8]> {
        let (rank, len) = match self.reads {
            Reads::One(rank, len) if i == 0 => (rank, len),
            Reads::Every(len) => (self.members[i], len),
            _ => return Err(MpiError::new(ErrorClass::Intern, format!("part {i} of {:?}", self.reads))),
        };
        self.slots.part(rank, self.area, self.seq, len).map_err(|why| MpiError::new(ErrorClass::Other, why))
    }
}

/// Runs one collective instance through the slots: publishes `mine`, waits for every member,
/// then `finish`es with the parts of `reads`. Runs it again when a switch interrupts it before
/// every member has published (see [`Engine::gather_in_slots`]), and returns `Ok(false)`
/// without running it when the members do not (or no longer) all share memory.
fn through_slots(
    e: &mut Engine,
    comm: &Comm,
    mine: &[u8],
    reads: Reads,
    mut finish: impl FnMut(&Parts<'_>) -> MpiResult<()>,
) -> MpiResult<bool> {
    loop {
        e.settle()?;
        let epoch = e.core().epoch();
        let area = match comm.coll_seq.slots(epoch) {
            Some(known) => known,
            None => agree(e, comm)?,
        };
        let Some(area) = area else { return Ok(false) };
        if e.core().epoch() != epoch || comm.coll_seq.slots(epoch).is_none() {
            // A switch came during the agreement: agree again for the new epoch.
            continue;
        }
        let seq = comm.coll_seq.next_slot_seq();
        if !e.gather_in_slots(area, seq, &comm.group, mine)? {
            continue;
        }
        let slots = e.coll_slots().ok_or_else(|| MpiError::new(ErrorClass::Intern, "the slots went away"))?;
        let parts = Parts { slots, area, seq, members: comm.group.members(), reads };
        let finished = finish(&parts);
        comm.coll_seq.slot_done();
        return finished.map(|()| true);
    }
}

/// Agrees among `comm`'s members whether its collectives use the slots in this epoch, and
/// in which area (the lowest free at every member); records it in the communicator.
fn agree(e: &mut Engine, comm: &Comm) -> MpiResult<Option<usize>> {
    for _ in 0..AGREE_TRIES {
        let epoch = e.core().epoch();
        let reach = e.coll_slots().is_some_and(|s| comm.group.members().iter().all(|&m| s.reaches(m)));
        let mine = [e.free_slot_areas(epoch), u64::from(reach), u64::from(epoch), !u64::from(epoch)];
        let bytes: Vec<u8> = mine.iter().flat_map(|w| w.to_le_bytes()).collect();
        let (schedule, slot) = coll::allreduce_schedule(comm, bytes, Box::new(BitAnd));
        let all = coll::run(e, schedule)?;
        let word = |i: usize| u64::from_le_bytes(all[slot][8 * i..8 * i + 8].try_into().expect("8 bytes"));
        let (free, reach, epoch_and, epoch_and_not) = (word(0), word(1), word(2), word(3));
        if epoch_and_not != !epoch_and {
            // The members began in different epochs (a switch came between them).
            continue;
        }
        let epoch = epoch_and as u32;
        let area = (reach == 1 && free != 0).then(|| free.trailing_zeros() as usize);
        if let Some(area) = area {
            e.claim_slot_area(epoch, area);
        }
        comm.coll_seq.set_slots(epoch, area);
        return Ok(area);
    }
    Ok(None)
}

/// Bitwise and of 64-bit words, for the agreement.
struct BitAnd;

impl Reducer for BitAnd {
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
        for (o, i) in inout.iter_mut().zip(input) {
            *o &= i;
        }
        Ok(())
    }

    fn commutative(&self) -> bool {
        true
    }
}
