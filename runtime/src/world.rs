//! The process-wide MPI state: the engine, the predefined communicators and the creation of
//! new ones. The shim holds one [`World`] behind a lock and calls into it.

use std::sync::Arc;
use std::time::Duration;

use kawarimi_transports::Transport;

use crate::coll::{self, Reducer};
use crate::comm::{Comm, Group, CTX_STRIDE};
use crate::core::{Core, CoreConfig, ReqId};
use crate::engine::Engine;
use crate::error::{err, ErrorClass, MpiError, MpiResult};
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
    /// The lowest context id this process has not used; new communicators agree on the
    /// maximum over their members (see [`World::alloc_ctx`]).
    next_ctx: u32,
    /// `MPI_Comm_idup`s started and not yet finished here.
    idups_pending: u32,
    /// Context ids this process took while an idup was pending: the idup's own id, agreed
    /// later, must not be one of them (see [`World::comm_idup_finish`]).
    taken_during_idup: std::collections::BTreeSet<u32>,
}

/// The first context ids belong to `MPI_COMM_WORLD`, the next to `MPI_COMM_SELF`.
const FIRST_FREE_CTX: u32 = 2 * CTX_STRIDE;

struct MaxU32;

impl Reducer for MaxU32 {
    fn reduce(&self, input: &[u8], inout: &mut [u8]) -> MpiResult<()> {
        for (i, o) in input.chunks_exact(4).zip(inout.chunks_exact_mut(4)) {
            let a = u32::from_le_bytes(i.try_into().expect("4 bytes"));
            let b = u32::from_le_bytes((&*o).try_into().expect("4 bytes"));
            o.copy_from_slice(&a.max(b).to_le_bytes());
        }
        Ok(())
    }
    fn commutative(&self) -> bool {
        true
    }
}

fn read_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
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
            hostname: read_hostname(),
            world: Arc::new(world),
            self_comm: Arc::new(self_comm),
            control: None,
            next_ctx: FIRST_FREE_CTX,
            idups_pending: 0,
            taken_during_idup: Default::default(),
        })
    }

    /// `MPI_Finalize`: ends the data path politely (every peer says goodbye), then lets go
    /// of the control plane; dropping the PMIx client tells the launcher this rank ended
    /// cleanly, and a hosted coordinator stops last.
    pub fn finalize(&mut self) -> MpiResult<()> {
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

    /// Agrees on a context id for a new communicator over `parent`: the maximum of every
    /// member's next free id. Collective over `parent`.
    pub fn alloc_ctx(&mut self, parent: &Comm) -> MpiResult<u32> {
        let mut buf = self.next_ctx.to_le_bytes();
        coll::allreduce(&mut self.engine, parent, &mut buf, &MaxU32)?;
        let ctx = u32::from_le_bytes(buf);
        if ctx > u32::MAX - 2 * CTX_STRIDE {
            return err(ErrorClass::Intern, "context ids exhausted");
        }
        self.next_ctx = ctx + CTX_STRIDE;
        if self.idups_pending > 0 {
            self.taken_during_idup.insert(ctx);
        }
        Ok(ctx)
    }

    /// Starts `MPI_Comm_idup` (§6.4.2) of `parent`: the context id is agreed by a nonblocking
    /// allreduce of every member's next free id, as [`World::alloc_ctx`] does. This process's
    /// candidate is reserved at once, so communicators it creates before the idup completes
    /// contribute higher ids. Returns the request and the slot [`World::comm_idup_finish`]
    /// reads.
    pub fn comm_idup_start(&mut self, parent: &Comm) -> MpiResult<(ReqId, Slot)> {
        let mine = self.next_ctx;
        if mine > u32::MAX - 2 * CTX_STRIDE {
            return err(ErrorClass::Intern, "context ids exhausted");
        }
        self.next_ctx = mine + CTX_STRIDE;
        let (sched, slot) = coll::allreduce_schedule(parent, mine.to_le_bytes().to_vec(), Box::new(MaxU32));
        let id = self.engine.start_schedule(sched)?;
        self.idups_pending += 1;
        Ok((id, slot))
    }

    /// Makes the communicator of a completed `MPI_Comm_idup` from its schedule's buffers.
    ///
    /// Every member agreed on the id, but a member that created another communicator while
    /// the idup was pending may have been given the same id there by a group that does not
    /// include the idup's highest contributor. That is detected and reported, never used.
    pub fn comm_idup_finish(&mut self, parent: &Comm, bufs: &[Vec<u8>], slot: Slot) -> MpiResult<Comm> {
        self.idups_pending = self.idups_pending.saturating_sub(1);
        let raw: [u8; 4] = bufs
            .get(slot)
            .and_then(|b| b.as_slice().try_into().ok())
            .ok_or_else(|| MpiError::new(ErrorClass::Intern, "MPI_Comm_idup's context agreement lost its result"))?;
        let ctx = u32::from_le_bytes(raw);
        let clash = self.taken_during_idup.contains(&ctx);
        if self.idups_pending == 0 {
            self.taken_during_idup.clear();
        }
        if clash {
            return err(
                ErrorClass::Intern,
                format!(
                    "MPI_Comm_idup agreed on context {ctx}, which this process gave another communicator created \
                     while the idup was pending; complete the idup before creating communicators over other groups"
                ),
            );
        }
        self.next_ctx = self.next_ctx.max(ctx + CTX_STRIDE);
        Ok(Comm { cart: parent.cart.clone(), ..Comm::new(ctx, parent.group.clone(), parent.rank) })
    }

    /// `MPI_Comm_dup` (§6.4.2).
    pub fn comm_dup(&mut self, parent: &Comm) -> MpiResult<Comm> {
        let ctx = self.alloc_ctx(parent)?;
        Ok(Comm { cart: parent.cart.clone(), ..Comm::new(ctx, parent.group.clone(), parent.rank) })
    }

    /// `MPI_Comm_split` (§6.4.2): ranks with the same `color` form a communicator ordered by
    /// `(key, rank in parent)`; `UNDEFINED_COLOR` gets `None`.
    pub fn comm_split(&mut self, parent: &Comm, color: i32, key: i32) -> MpiResult<Option<Comm>> {
        if color < 0 && color != UNDEFINED_COLOR {
            return err(ErrorClass::Arg, format!("split colour {color} is negative"));
        }
        let n = parent.size() as usize;
        let mut mine = color.to_le_bytes().to_vec();
        mine.extend_from_slice(&key.to_le_bytes());
        let all = coll::allgatherv(&mut self.engine, parent, &mine, &vec![8; n])?;
        let ctx = self.alloc_ctx(parent)?;
        if color == UNDEFINED_COLOR {
            return Ok(None);
        }
        let mut members: Vec<(i32, i32)> = all
            .iter()
            .enumerate()
            .filter_map(|(r, b)| {
                let c = i32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
                let k = i32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
                (c == color).then_some((k, r as i32))
            })
            .collect();
        members.sort_unstable();
        let world_ranks = members.iter().map(|&(_, r)| parent.peer(r)).collect::<MpiResult<Vec<u32>>>()?;
        let group = Group::new(world_ranks)?;
        let rank = group.rank_of(parent.peer(parent.rank)?).expect("this process has the colour");
        Ok(Some(Comm::new(ctx, Arc::new(group), rank)))
    }

    /// `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)` (§6.4.2): one communicator per host.
    /// A process that passed `MPI_UNDEFINED` takes part with `participate == false` and gets
    /// `None`: every member must run the same collectives.
    pub fn comm_split_shared(&mut self, parent: &Comm, key: i32, participate: bool) -> MpiResult<Option<Comm>> {
        let n = parent.size() as usize;
        let mut name = [0u8; 256];
        let h = self.hostname.as_bytes();
        let len = h.len().min(name.len());
        name[..len].copy_from_slice(&h[..len]);
        let all = coll::allgatherv(&mut self.engine, parent, &name, &vec![name.len(); n])?;
        // The colour is the parent rank of the first process on the same host.
        let color = all.iter().position(|b| b[..] == name[..]).expect("own name is present") as i32;
        self.comm_split(parent, if participate { color } else { UNDEFINED_COLOR }, key)
    }

    /// `MPI_Comm_create_group` (§6.4.2): collective over the members of `group` only, which
    /// agree on a context id among themselves, in `parent`'s group-creation context and
    /// tagged with `tag` so that concurrent creations with other tags stay apart.
    pub fn comm_create_group(&mut self, parent: &Comm, group: &Group, tag: i32) -> MpiResult<Comm> {
        let me = parent.peer(parent.rank)?;
        let Some(rank) = group.rank_of(me) else {
            return err(ErrorClass::Group, "the calling process is not in the group");
        };
        for &w in group.members() {
            if parent.group.rank_of(w).is_none() {
                return err(ErrorClass::Group, format!("process {w} of the group is not in the communicator"));
            }
        }
        let group = Arc::new(group.clone());
        // A transient communicator whose collective context is `parent.ctx + 2`.
        let transient =
            Comm { coll_tag_base: (tag & 0x07FF_FFFF) << 4, ..Comm::new(parent.ctx + 1, group.clone(), rank) };
        let ctx = self.alloc_ctx(&transient)?;
        Ok(Comm::new(ctx, group, rank))
    }

    /// `MPI_Comm_create` (§6.4.2): collective over `parent`; members of `group` get the new
    /// communicator, the others `None`.
    pub fn comm_create(&mut self, parent: &Comm, group: &Group) -> MpiResult<Option<Comm>> {
        for &w in group.members() {
            if parent.group.rank_of(w).is_none() {
                return err(ErrorClass::Group, format!("process {w} of the group is not in the communicator"));
            }
        }
        let ctx = self.alloc_ctx(parent)?;
        let me = parent.peer(parent.rank)?;
        Ok(group.rank_of(me).map(|rank| Comm::new(ctx, Arc::new(group.clone()), rank)))
    }
}

/// Reads a byte count from `var`, if set.
fn env_bytes(var: &str) -> MpiResult<Option<usize>> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| MpiError::new(ErrorClass::Arg, format!("{var}={v:?} is not a byte count"))),
    }
}

/// The protocol's tunables, with the environment's overrides:
/// `KAWARIMI_EAGER_LIMIT_BYTES`, `KAWARIMI_CHUNK_BYTES`, `KAWARIMI_UNEXPECTED_LIMIT_BYTES`.
pub fn config_from_env() -> MpiResult<CoreConfig> {
    let mut c = CoreConfig::default();
    if let Some(v) = env_bytes("KAWARIMI_EAGER_LIMIT_BYTES")? {
        c.eager_limit_bytes = v;
    }
    if let Some(v) = env_bytes("KAWARIMI_CHUNK_BYTES")? {
        c.chunk_bytes = v;
    }
    if let Some(v) = env_bytes("KAWARIMI_UNEXPECTED_LIMIT_BYTES")? {
        c.unexpected_limit_bytes = v;
    }
    let max = kawarimi_transports::wire::MAX_PAYLOAD_LEN as usize;
    if c.chunk_bytes == 0 || c.chunk_bytes > max || c.eager_limit_bytes > max {
        return err(ErrorClass::Arg, format!("eager limit and chunk size must be in 1..={max} bytes"));
    }
    Ok(c)
}
