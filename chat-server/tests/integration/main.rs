//! End-to-end tests: a real server started from the library on port 0,
//! driven over real HTTP and WebSocket connections, on every storage backend.

mod accounts;
mod attachments;
mod auth;
mod authorization;
mod changes;
mod cluster;
mod conversations;
mod docs;
mod embedding;
mod hooks;
mod hostile;
mod identity;
mod interleavings;
mod limits;
mod messages;
mod moderation;
mod operations;
mod origins;
mod outage;
mod pg_server;
mod presence;
mod process;
mod proxy;
mod push;
mod redis_server;
mod replies;
mod rooms;
mod server_api;
mod support;
mod tls;
mod users;
mod webhooks;
mod websocket;
mod ws_protocol;
