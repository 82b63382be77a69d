//! A plain rsmpi program: run it on kawarimi by preloading (`kawarimi run -np 4 rsmpi-ring`).
fn main() {
    kawarimi_examples::main_ring();
}
