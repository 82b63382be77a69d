//! The Fortran MPI test programs in `tests/fortran` (`include 'mpif.h'`, `use mpi` and
//! `use mpi_f08`), each at 2, 3 and 4 ranks, natively on Open MPI (`native::*`) and with
//! kawarimi preloaded (`kawarimi::*`).
//!
//! The kawarimi tests need `libkawarimi.so` (`cargo build --release -p
//! kawarimi-shim`, or `KAWARIMI_LIB`); without it they fail and say so.

use std::path::Path;

use kawarimi_tests::{check_program_lang, Lang, ModeKind};

fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

macro_rules! program_tests {
    ($kind:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_program_lang(Lang::Fortran, stringify!($name), $kind, build_dir());
            }
        )*
    };
}

mod native {
    use super::*;
    program_tests!(ModeKind::Native; f_p2p, f_coll, f_comm, f_types, f08_basic, f_persist);
}

mod kawarimi {
    use super::*;
    program_tests!(ModeKind::Kawarimi; f_p2p, f_coll, f_comm, f_types, f08_basic, f_persist);
}

/// With shared memory between the ranks: every rank must report each peer on it.
mod kawarimi_shm {
    use super::*;
    program_tests!(ModeKind::KawarimiShm; f_p2p, f_coll, f_comm, f_types, f08_basic, f_persist);
}

mod kawarimi_shm_single_copy {
    use super::*;
    program_tests!(ModeKind::KawarimiShmSingleCopy; f_p2p, f_coll, f_comm, f_types, f08_basic, f_persist);
}

mod kawarimi_shm_two_copy {
    use super::*;
    program_tests!(ModeKind::KawarimiShmTwoCopy; f_p2p, f_coll, f_comm, f_types, f08_basic, f_persist);
}
