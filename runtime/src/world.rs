//! The process-wide MPI state: the engine, the predefined communicators and the creation of
//! new ones. The shim holds one [`World`] behind a lock and calls into it.

use std::sync::Arc;
use std::time::Duration;

use kawarimi_transports::Transport;

use std::collections::BTreeSet;

use crate::coll;
use crate::comm::{Comm, Group, CTX_STRIDE};
use crate::construct::{copy_of, MaxU32};
use crate::core::{Core, CoreConfig, ReqId};
use crate::engine::Engine;
use crate::error::{err, ErrorClass, MpiError, MpiResult};
use crate::intercoll;
use crate::launch::{self, ProcInfo};
use crate::sched::Slot;

/// How long the start-up wire-up may take before it fails naming what it waited for.
pub const WIREUP_TIMEOUT: Duration = Duration::from_secs(60);

/// `MPI_UNDEFINED` as a split colour, as the runtime sees it.
pub const UNDEFINED_COLOR: i32 = -32766;

/// The state of an initialised MPI process.
pub struct World {
    pub engine: Engine,
    pub proc: ProcInfo,
    pub hostname: String,
    pub world: Arc<Comm>,
    pub self_comm: Arc<Comm>,
    /// The wire-up service, the control connection and a hosted coordinator.
    pub control: Option<crate::wireup::ControlPlane>,
    /// The lowest context id this process has not used or reserved; new communicators agree
    /// on the maximum of their members' (see [`crate::construct::agree_ctx`]).
    next_ctx: u32,
    /// Context agreements in flight here (blocking constructors, which may run in several
    /// threads at once, and idups).
    agreements_in_flight: u32,
    /// Candidates agreed here and found free, each held for its agreement until every member
    /// has said whether it found it free too.
    ctx_held: BTreeSet<u32>,
    /// Ids taken while agreements were in flight: a candidate of one of them must not be one
    /// of these, although it is at or above this process's proposal.
    ctx_taken_in_flight: BTreeSet<u32>,
}

/// The first context ids belong to `MPI_COMM_WORLD`, the next to `MPI_COMM_SELF`.
const FIRST_FREE_CTX: u32 = 2 * CTX_STRIDE;

impl World {
    /// Builds the world of a process whose transport is already connected (or `None` for a
    /// job of one).
    pub fn new(proc: ProcInfo, transport: Option<Box<dyn Transport>>, config: CoreConfig) -> MpiResult<World> {
        let core = Core::new(proc.rank, proc.size, config);
        let mut engine = Engine::new(core, transport);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        engine.wait_policy = crate::engine::WaitPolicy::for_host(proc.local_size, cores);
        let world = Comm::new(0, Arc::new(Group::new((0..proc.size).collect())?), proc.rank as i32);
        let self_comm = Comm::new(CTX_STRIDE, Arc::new(Group::new(vec![proc.rank])?), 0);
        Ok(World {
            engine,
            proc,
            hostname: crate::launch::hostname(),
            world: Arc::new(world),
            self_comm: Arc::new(self_comm),
            control: None,
            next_ctx: FIRST_FREE_CTX,
            agreements_in_flight: 0,
            ctx_held: BTreeSet::new(),
            ctx_taken_in_flight: BTreeSet::new(),
        })
    }

    /// `MPI_Finalize`: ends the data path politely (every peer says goodbye), then lets go
    /// of the control plane; dropping the PMIx client tells the launcher this rank ended
    /// cleanly, and a hosted coordinator stops last.
    pub fn finalize(&mut self) -> MpiResult<()> {
        if std::env::var("KAWARIMI_REPORT").is_ok_and(|v| v != "0") {
            // One write of the whole line: the ranks' stderr meet in the launcher's, and a line
            // written in pieces (as `eprintln!` may) gets interleaved with the others'.
            let line = format!("kawarimi: rank {}: {}\n", self.engine.core.rank(), self.engine.transport_report());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        }
        self.engine.finalize()?;
        // Drop order is teardown order: the wire-up service first (dropping the PMIx client
        // tells the launcher this rank ended cleanly), then the control thread (which says
        // goodbye), then the relay this rank leads (once its group has said goodbye), then a
        // coordinator this rank hosts.
        if let Some(sw) = self.engine.switch.take() {
            sw.shared.shut_down();
        }
        if let Some(cp) = self.control.take() {
            let crate::wireup::ControlPlane { relay, hosted, .. } = cp;
            drop(relay);
            drop(hosted);
        }
        Ok(())
    }

    /// Reads this process's place from the launcher's environment.
    pub fn detect() -> MpiResult<ProcInfo> {
        launch::detect().map_err(|e| MpiError::new(ErrorClass::Other, format!("launcher environment: {e}")))
    }

    /// A context agreement ([`crate::construct::agree_ctx`] or an idup) starts here.
    pub(crate) fn ctx_agreement_begins(&mut self) {
        self.agreements_in_flight += 1;
    }

    /// A context agreement started by [`World::ctx_agreement_begins`] is over (agreed or
    /// failed); once none is in flight, the ids taken meanwhile need no more remembering.
    pub(crate) fn ctx_agreement_ends(&mut self) {
        self.agreements_in_flight = self.agreements_in_flight.saturating_sub(1);
        if self.agreements_in_flight == 0 {
            self.ctx_taken_in_flight.clear();
        }
    }

    /// This process's proposal for round `round` of an agreement: its next free id, reserved
    /// so that a concurrent agreement proposes another. A retry skips a few ids, chosen from
    /// the rank and the round, so that two agreements that clashed are unlikely to meet on
    /// the same maximum again.
    pub(crate) fn ctx_propose(&mut self, round: u32) -> MpiResult<u32> {
        let skip = if round == 0 {
            0
        } else {
            let mut x = u64::from(self.proc.rank) << 32 | u64::from(round) ^ u64::from(self.next_ctx);
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            (x % 8) as u32
        };
        let mine = self.next_ctx.saturating_add(skip * CTX_STRIDE);
        if mine > u32::MAX - 2 * CTX_STRIDE {
            return err(ErrorClass::Intern, "context ids exhausted");
        }
        self.next_ctx = mine + CTX_STRIDE;
        Ok(mine)
    }

    /// Holds the agreed candidate `ctx` for the agreement in flight, unless a concurrent one
    /// holds it or took it meanwhile (false: taken here). Any id at or above this process's
    /// proposal is otherwise free, and the candidate is at least the proposal.
    pub(crate) fn ctx_hold(&mut self, ctx: u32) -> bool {
        !self.ctx_taken_in_flight.contains(&ctx) && self.ctx_held.insert(ctx)
    }

    /// Lets go of a held candidate that another member found taken.
    pub(crate) fn ctx_release(&mut self, ctx: u32) {
        self.ctx_held.remove(&ctx);
    }

    /// Takes the held candidate `ctx` that every member found free.
    pub(crate) fn ctx_take(&mut self, ctx: u32) -> MpiResult<u32> {
        self.ctx_held.remove(&ctx);
        if ctx > u32::MAX - 2 * CTX_STRIDE {
            return err(ErrorClass::Intern, "context ids exhausted");
        }
        self.next_ctx = self.next_ctx.max(ctx + CTX_STRIDE);
        self.ctx_taken_in_flight.insert(ctx);
        Ok(ctx)
    }

    /// Starts `MPI_Comm_idup` (§6.4.2) of `parent`: the context id is agreed by a nonblocking
    /// allreduce of every member's proposal, as the first round of
    /// [`crate::construct::agree_ctx`] does (a request completes once; it cannot run the
    /// second round). Returns the request and the slot [`World::comm_idup_finish`] reads.
    pub fn comm_idup_start(&mut self, parent: &Comm) -> MpiResult<(ReqId, Slot)> {
        let mine = self.ctx_propose(0)?;
        let mine = mine.to_le_bytes().to_vec();
        let (sched, slot) = if parent.is_inter() {
            intercoll::allreduce_both_schedule(parent, mine, Box::new(MaxU32))
        } else {
            coll::allreduce_schedule(parent, mine, Box::new(MaxU32))
        };
        let id = self.engine.start_schedule(sched)?;
        self.ctx_agreement_begins();
        Ok((id, slot))
    }

    /// Makes the communicator of a completed `MPI_Comm_idup` from its schedule's buffers.
    ///
    /// Every member agreed on the id, but a member that created another communicator while
    /// the idup was pending may have been given the same id there by a group that does not
    /// include the idup's highest contributor. That is detected and reported, never used.
    pub fn comm_idup_finish(&mut self, parent: &Comm, bufs: &[Vec<u8>], slot: Slot) -> MpiResult<Comm> {
        let made = (|| {
            let raw: [u8; 4] = bufs.get(slot).and_then(|b| b.as_slice().try_into().ok()).ok_or_else(|| {
                MpiError::new(ErrorClass::Intern, "MPI_Comm_idup's context agreement lost its result")
            })?;
            let ctx = u32::from_le_bytes(raw);
            if !self.ctx_hold(ctx) {
                return err(
                    ErrorClass::Intern,
                    format!(
                        "MPI_Comm_idup agreed on context {ctx}, which this process gave another communicator \
                         created while the idup was pending; complete the idup before creating communicators over \
                         other groups"
                    ),
                );
            }
            Ok(copy_of(parent, self.ctx_take(ctx)?))
        })();
        self.ctx_agreement_ends();
        made
    }
}
