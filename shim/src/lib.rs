//! `libkawarimi.so`: the MPI C ABI of Open MPI 4.1, answered by kawarimi's runtime.
//!
//! Preloaded under an unmodified program (`LD_PRELOAD`), this library's `MPI_*` and `PMPI_*`
//! symbols take precedence over Open MPI's, so every MPI call lands here. Open MPI's
//! `libmpi.so` stays loaded (the program links it, and its predefined objects such as
//! `ompi_mpi_comm_world` are the handles the program passes) but is never initialised: it
//! would open its own transports and hold the HCA.
//!
//! - [`abi`]: Open MPI's types, constants and predefined handles, all taken from its headers.
//! - [`state`]: kawarimi's handle tables and the runtime's world.
//! - [`export`]: the C boundary (panics, error classes, error handlers, abort).
//! - [`api`]: the MPI functions, one file per chapter of the standard.
//! - [`cleanup`]: the hosted coordinator's job file, removed on a termination signal too.
//! - [`memhooks`]: `munmap` and the other calls that give memory back, logged on their way to
//!   libc for the verbs transport's registration cache.
//! - Every other function libmpi exports is a generated stub that aborts naming itself.

#[macro_use]
pub mod export;
pub mod abi;
pub mod api;
mod cleanup;
mod mem;
pub mod memhooks;
pub mod state;
mod widefloat;

include!(concat!(env!("OUT_DIR"), "/unimplemented.rs"));

/// Called by the generated stubs of the functions kawarimi does not implement: it never lets
/// such a call reach Open MPI with kawarimi's handles, and ends the job with a clear message.
pub fn unimplemented_abort(name: &str) -> ! {
    export::die(
        name,
        &format!("{name} is not implemented by kawarimi; refusing to call Open MPI with kawarimi handles"),
        1,
    )
}
