//! End-to-end tests of the client against a real server started in-process
//! on `memory://` storage (a temporary SQLite file for the restart test).

mod attachments;
mod errors;
mod flow;
mod live;
mod proxy;
mod reauth;
mod refresh;
mod support;
