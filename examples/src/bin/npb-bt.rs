//! NPB BT: `mpirun -np N npb-bt CLASS` (CLASS = S, W, A, B or C; N a square number leaving
//! every cell at least 3 points per axis).
fn main() {
    kawarimi_examples::npb::run_main("BT", kawarimi_examples::npb::bt::run);
}
