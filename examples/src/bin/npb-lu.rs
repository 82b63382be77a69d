//! NPB LU: `mpirun -np N npb-lu CLASS` (CLASS = S, W, A, B or C; N a power of two leaving each
//! rank at least 3x3 points of the x-y plane).
fn main() {
    kawarimi_examples::npb::run_main("LU", kawarimi_examples::npb::lu::run);
}
