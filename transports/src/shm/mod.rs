//! Shared memory between ranks on one host (being built; see issue 16 and docs/shm.md once
//! the transport exists). Today: the ring that will carry small frames between a pair of
//! co-located ranks ([`ring`]), with its tests. The transport around it (segments tied to the
//! job, co-location discovery, single-copy large messages, drain and detach) comes next.

pub mod ring;
