//! Keyspace events a workload fires, collected until a sentinel message
//! published after it arrives: no test waits on a timer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use redis::Connection;

use super::reply::run;
use super::server::Server;

/// How long a subscriber may wait for the sentinel that ends a workload.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// A message published to a channel the subscriber's pattern matches, after
/// the workload: its arrival ends the collection.
const SENTINEL: &str = "__keyspace@0__:end-of-workload";

/// Every message on the keyspace and keyevent channels of any database
/// published while `workload` runs, as (channel, payload), in order.
pub fn events_during(
    server: &Server,
    workload: impl FnOnce(&mut Connection),
) -> Vec<(String, String)> {
    let mut subscriber = server.connect();
    let mut pubsub = subscriber.as_pubsub();
    // Returns once the server has confirmed the subscription.
    pubsub.psubscribe("__key*__:*").unwrap();
    let mut con = server.connect();
    workload(&mut con);
    let receivers: i64 = run(&mut con, &["PUBLISH", SENTINEL, "end"]);
    assert_eq!(receivers, 1, "the subscriber is not listening");

    let deadline = Instant::now() + EVENT_DEADLINE;
    let mut events = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no sentinel in time; events: {events:?}");
        pubsub.set_read_timeout(Some(left)).unwrap();
        let message = pubsub
            .get_message()
            .unwrap_or_else(|e| panic!("no sentinel in time ({e}); events: {events:?}"));
        let channel = message.get_channel_name().to_string();
        if channel == SENTINEL {
            return events;
        }
        let payload: String = message.get_payload().unwrap();
        events.push((channel, payload));
    }
}
