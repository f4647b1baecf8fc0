//! The kit the integration suites share. Each concern has its module; every
//! name is also here, so a suite writes `use common::{check, Server, …}`.
//!
//! - [`server`]: the harness, a real `redis-server` per test, killed on drop.
//! - [`cluster`]: a Redis Cluster of such servers.
//! - [`reply`]: commands given as text or bytes; typed replies and errors.
//! - [`commands`]: CHECK, PEEK, THROTTLE, RESET, MCHECK, MPEEK, ACQUIRE,
//!   RELEASE, RENEW, RESERVE, SETTLE and EXTEND, called one way; calls at
//!   one instant of the server's clock.
//! - [`limiters`]: the table of every kind of limiter.
//! - [`workload`]: seeded pseudo-random workloads over limiters and leases.
//! - [`keys`]: what keys hold, down to whole databases.
//! - [`replication`], [`persistence`]: replicas, restarts and the AOF.
//! - [`abilities`], [`counters`], [`events`]: what the server can do, the
//!   module's INFO counters, keyspace events.
//! - [`fallback`]: the script fallback beside the module, and the
//!   differential runs between them (its names are used through
//!   `common::fallback::…`).
#![allow(dead_code, unused_imports)]

pub mod abilities;
pub mod cluster;
pub mod commands;
pub mod counters;
pub mod events;
pub mod fallback;
pub mod keys;
pub mod limiters;
pub mod persistence;
pub mod replication;
pub mod reply;
pub mod server;
pub mod workload;

pub use abilities::*;
pub use commands::*;
pub use counters::*;
pub use events::*;
pub use keys::*;
pub use limiters::*;
pub use persistence::*;
pub use replication::*;
pub use reply::*;
pub use server::*;
pub use workload::*;
