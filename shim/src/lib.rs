pub mod abi;
include!(concat!(env!("OUT_DIR"), "/unimplemented.rs"));
