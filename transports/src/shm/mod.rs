//! Shared memory between ranks on one host (being built, issue 16). So far:
//! - [`ring`]: the single-producer single-consumer ring that carries small frames from one
//!   co-located rank to another;
//! - [`segment`]: `/dev/shm` segments that name their owner (pid and start time), unlinked
//!   once every peer has mapped them, and reclaimed from owners that are gone.
//!
//! Next: the transport around them (a segment of inbound rings per rank, co-location
//! discovery, single-copy large messages, waking an idle receiver, drain and detach).

pub mod ring;
pub mod segment;
pub mod transport;
