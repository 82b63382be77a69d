//! Arbitrary bytes into `wire::Header::decode`, the TCP stream decoder and the auth
//! handshake; see `kawarimi_transports::fuzzing::check_input` for the properties checked.
//!
//! Run: `cd transports/fuzz && cargo +nightly fuzz run frame_decode`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kawarimi_transports::fuzzing::check_input(data);
});
