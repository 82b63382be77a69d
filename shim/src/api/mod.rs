//! The exported MPI functions, one file per chapter of the standard. Each file defines its
//! functions with `mpi_fn!`; `build.rs` reads these files to find which functions exist.

pub mod attr;
pub mod coll;
pub mod comm;
pub mod dtype;
pub mod env;
pub mod fortran;
pub mod fortran_bindings;
pub mod greq;
pub mod group;
pub mod info;
pub mod neighbor;
pub mod op;
pub mod p2p;
pub mod req;
pub mod rma;
pub mod tool;
pub mod topo;
