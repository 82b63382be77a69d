//! The control plane: one coordinator per job, the single place the outside world talks to
//! (`kawarimi ctl`, the VMM driver), which also serves wire-up where the launcher has no PMIx.
//!
//! - [`proto`]: the messages (JSON lines, versioned);
//! - [`coordinator`]: the coordinator's logic, sans-IO;
//! - [`server`]: the coordinator's TCP server;
//! - [`client`]: the ranks' and `ctl`'s connections;
//! - [`jobfile`]: how `ctl` finds a job (a per-user runtime directory).

pub mod client;
pub mod coordinator;
pub mod fanout;
pub mod jobfile;
pub mod proto;
pub mod relay;
pub mod server;
