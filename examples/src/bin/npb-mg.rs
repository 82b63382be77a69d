//! NPB MG: `mpirun -np N npb-mg CLASS` (CLASS = S, W, A, B or C; N a power of two up to 8).
fn main() {
    kawarimi_examples::npb::run_main("MG", kawarimi_examples::npb::mg::run);
}
