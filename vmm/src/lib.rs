//! The operator's side of a kawarimi migration (`kawarimi vmm`): QEMU's machine protocol,
//! as a sans-IO core ([`qmp`]) under a blocking Unix-socket client ([`client`]), and the
//! migration plan ([`plan`]).

pub mod client;
pub mod devices;
pub mod migrate;
pub mod migration;
pub mod plan;
pub mod qmp;
pub mod testing;
