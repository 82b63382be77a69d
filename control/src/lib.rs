//! kawarimi's control plane: one coordinator per job, the single place the outside world talks
//! to (`kawarimi ctl`, the VMM driver), which also serves wire-up where the launcher has no
//! PMIx, and the relays that carry its commands to the ranks.
//!
//! It is a crate of its own because it knows nothing of MPI: it uses only the transports'
//! authentication and bootstrap, and the runtime (the ranks' side), the CLI and the tests use
//! it. Everything here that decides is sans-IO ([`coordinator`], [`fanout`], [`relay`]); the
//! servers and clients only move lines.
//!
//! - [`proto`]: the messages (JSON lines, versioned);
//! - [`coordinator`]: the coordinator's logic, sans-IO;
//! - [`server`]: the coordinator's TCP server;
//! - [`client`]: the ranks' and `ctl`'s connections;
//! - [`fanout`], [`relay`]: the control tree (see docs/control-tree.md);
//! - [`jobfile`]: how `ctl` finds a job (a per-user runtime directory), and which jobs run.

pub mod client;
pub mod coordinator;
pub mod fanout;
pub mod jobfile;
pub mod proto;
pub mod relay;
pub mod server;
