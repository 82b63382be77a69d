//! NPB EP: `mpirun -np N npb-ep CLASS` (CLASS = S, W, A, B or C).
fn main() {
    kawarimi_examples::npb::run_main("EP", kawarimi_examples::npb::ep::run);
}
