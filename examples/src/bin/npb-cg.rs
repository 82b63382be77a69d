//! NPB CG: `mpirun -np N npb-cg CLASS` (CLASS = S, W, A, B or C; N a power of two).
fn main() {
    kawarimi_examples::npb::run_main("CG", kawarimi_examples::npb::cg::run);
}
