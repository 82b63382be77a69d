//! kawarimi's runtime: MPI semantics over kawarimi's own transports.
//!
//! Layers, bottom up:
//! - [`core`]: the sans-IO point-to-point protocol (matching, eager, rendezvous, channels);
//! - [`engine`]: drives the core over a real transport and blocks politely;
//! - [`datatype`], [`op`]: type maps, pack/unpack, reductions;
//! - [`request`]: the application's requests: completion, unpacking, persistence;
//! - [`bsend`]: the accounting of buffered sends;
//! - [`comm`], [`coll`]: groups, communicators, topologies, collectives over point-to-point;
//! - [`launch`]: who this process is, from the launcher's environment;
//! - [`lifeline`]: a rank ends when the launcher that started it is gone;
//! - [`world`]: the process-wide MPI state the shim calls into.

pub mod bsend;
pub mod coll;
pub mod comm;
pub mod construct;
pub mod core;
pub mod ctxids;
pub mod datatype;
pub mod engine;
pub mod error;
pub mod intercoll;
pub mod launch;
pub mod lifeline;
pub mod op;
pub mod request;
pub mod rma;
pub mod sched;
pub mod slotcoll;
pub mod switch;
pub mod wireup;
pub mod world;
