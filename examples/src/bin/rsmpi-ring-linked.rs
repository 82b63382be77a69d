//! The same program linked with kawarimi: this one line is the whole difference, and no
//! LD_PRELOAD is needed (`mpirun -np 4 rsmpi-ring-linked`).
use kawarimi as _;

fn main() {
    kawarimi_examples::main_ring();
}
