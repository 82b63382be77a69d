//! NPB FT: `mpirun -np N npb-ft CLASS` (CLASS = S, W or A; N dividing ny and nz).
fn main() {
    kawarimi_examples::npb::run_main("FT", kawarimi_examples::npb::ft::run);
}
