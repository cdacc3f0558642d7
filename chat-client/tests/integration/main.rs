//! End-to-end tests of the client against a real server started in-process
//! on `memory://` storage.

mod errors;
mod flow;
mod refresh;
mod support;
