//! The parts of `tokenctl` that tests reach too: the local server's dispatch over every
//! function's handler.

pub mod serve;
