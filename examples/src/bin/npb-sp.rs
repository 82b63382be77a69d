//! NPB SP: `mpirun -np N npb-sp CLASS` (CLASS = S, W, A, B or C; N a square number leaving
//! every cell at least 3 points per axis).
fn main() {
    kawarimi_examples::npb::run_main("SP", kawarimi_examples::npb::sp::run);
}
