//! NPB IS: `mpirun -np N npb-is CLASS` (CLASS = S, W, A, B or C; N a power of two).
fn main() {
    kawarimi_examples::npb::run_main("IS", kawarimi_examples::npb::is::run);
}
