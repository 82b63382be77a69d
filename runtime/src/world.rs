//! The process-wide MPI state: the engine, the predefined communicators and the creation of
//! new ones. The shim holds one [`World`] behind a lock and calls into it.

use std::sync::Arc;
use std::time::Duration;

use kawarimi_transports::Transport;

use crate::comm::{Comm, Group, CTX_STRIDE};
use crate::construct::{self, copy_of};
use crate::core::{Core, CoreConfig, ReqId};
use crate::ctxids::{Agreement, Decision};
use crate::engine::{Engine, Next, Then};
use crate::error::{ErrorClass, MpiError, MpiResult};
use crate::launch::{self, ProcInfo};

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
}

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

    /// Starts `MPI_Comm_idup` (§6.4.2) of `parent`: the context id is agreed by the same
    /// protocol as the blocking constructors' ([`crate::ctxids::Agreement`]), each of its
    /// maxima a nonblocking allreduce, chained in the engine so that the agreement goes on
    /// while the program waits for other requests (two idups over one pair of processes, in
    /// opposite orders at the two, both complete). Returns the request; once it completes,
    /// [`World::comm_idup_finish`] makes the communicator from its buffers.
    pub fn comm_idup_start(&mut self, parent: &Arc<Comm>) -> MpiResult<ReqId> {
        let (mut agreement, first) = Agreement::start(&mut self.engine.ctx_ids, self.proc.rank)?;
        let (schedule, mut result) = construct::max_schedule(parent, first);
        let parent = parent.clone();
        let then: Then = Box::new(move |e: &mut Engine, ended| {
            let decided = ended.and_then(|bufs| {
                let max = construct::words(bufs.get(result).map_or(&[][..], Vec::as_slice))?;
                agreement.next(&mut e.ctx_ids, max)
            });
            match decided {
                Ok(Decision::Max(words)) => {
                    let (next, slot) = construct::max_schedule(&parent, words);
                    result = slot;
                    Ok(Next::Run(next))
                }
                Ok(Decision::Agreed(ctx)) => Ok(Next::Done(vec![ctx.to_le_bytes().to_vec()])),
                Err(e_) => {
                    agreement.abandon(&mut e.ctx_ids);
                    Err(e_)
                }
            }
        });
        // (A failure to start is the engine's, fatal to the rank.)
        self.engine.start_chain(schedule, then)
    }

    /// Makes the communicator of a completed `MPI_Comm_idup` from its request's buffers.
    pub fn comm_idup_finish(parent: &Comm, bufs: &[Vec<u8>]) -> MpiResult<Comm> {
        let [ctx] = bufs
            .first()
            .ok_or_else(|| MpiError::new(ErrorClass::Intern, "MPI_Comm_idup's context agreement lost its result"))
            .and_then(|b| construct::words::<1>(b))?;
        Ok(copy_of(parent, ctx))
    }
}
