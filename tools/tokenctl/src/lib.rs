//! The parts of `tokenctl` that tests reach too: the functions, their routes and routers,
//! and the local server that merges them.

pub mod serve;
pub mod stream;
