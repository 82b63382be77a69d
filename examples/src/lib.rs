//! Rust codes on rsmpi (the `mpi` crate) for kawarimi.
//!
//! Two ways to run them on kawarimi:
//! - **preloaded**: a plain rsmpi binary (`rsmpi-ring`) started with
//!   `kawarimi run` or `mpirun -x LD_PRELOAD=libkawarimi.so`;
//! - **linked**: a binary that adds one line, `use kawarimi as _;` (and the `kawarimi-shim`
//!   dependency), carries kawarimi's `MPI_*` symbols itself; the executable's own
//!   definitions win over Open MPI's `libmpi.so`, so no preload is needed (`rsmpi-ring-linked`).

pub mod npb;

use mpi::collective::SystemOperation;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::Communicator;
use mpi::traits::*;

/// Passes a token around the ring `rounds` times, each rank adding its rank, then checks the
/// result and an allreduce against values computed independently. Returns a line to print
/// on rank 0, or an error saying what differed.
pub fn ring_demo(rounds: u32) -> Result<Option<String>, String> {
    let universe = mpi::initialize().ok_or("MPI was already initialized")?;
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    let next = world.process_at_rank((rank + 1) % size);
    let prev = world.process_at_rank((rank + size - 1) % size);
    let mut token: u64 = 0;
    for _ in 0..rounds {
        if rank == 0 {
            next.send(&token);
            let (t, _) = prev.receive::<u64>();
            token = t + rank as u64;
        } else {
            let (t, _) = prev.receive::<u64>();
            token = t + rank as u64;
            next.send(&token);
        }
    }
    let mut total = 0u64;
    world.all_reduce_into(&(rank as u64 + 1), &mut total, SystemOperation::sum());
    let expected_total = (size as u64) * (size as u64 + 1) / 2;
    if total != expected_total {
        return Err(format!("rank {rank}: allreduce gave {total}, expected {expected_total}"));
    }
    if rank == 0 {
        let expected = rounds as u64 * (size as u64) * (size as u64 - 1) / 2;
        if token != expected {
            return Err(format!("token {token} after {rounds} rounds, expected {expected}"));
        }
        return Ok(Some(format!("OK rsmpi ring: {size} ranks, {rounds} rounds, token {token}")));
    }
    Ok(None)
}

/// Runs [`ring_demo`] as a program's `main` would: prints the result, exits 1 on failure.
pub fn main_ring() {
    match ring_demo(100) {
        Ok(Some(line)) => println!("{line}"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("FAIL {e}");
            std::process::exit(1);
        }
    }
}
