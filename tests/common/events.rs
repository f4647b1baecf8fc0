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

/// The messages an event on `key` fires, keyspace channel then keyevent
/// channel, as [`events_during`] sees them (database 0).
pub fn messages_of<K: AsRef<str>, E: AsRef<str>>(fired: &[(K, E)]) -> Vec<(String, String)> {
    fired
        .iter()
        .flat_map(|(key, event)| {
            let (key, event) = (key.as_ref(), event.as_ref());
            [
                (format!("__keyspace@0__:{key}"), event.to_string()),
                (format!("__keyevent@0__:{event}"), key.to_string()),
            ]
        })
        .collect()
}

/// Runs `workload` on a server of its own, started with the module option
/// `denied-events` as given and keyspace events `flags`
/// (`notify-keyspace-events`), and asserts that exactly the events it
/// returns (key, event) fire, in order.
pub fn assert_fires_exactly<K: AsRef<str>, E: AsRef<str>>(
    denied_events: bool,
    flags: &str,
    workload: impl FnOnce(&mut Connection) -> Vec<(K, E)>,
) {
    let mut builder = Server::builder();
    if denied_events {
        builder = builder.module_arg("denied-events", "yes");
    }
    let server = builder.start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", flags],
    );
    let mut fired = Vec::new();
    let events = events_during(&server, |con| fired = workload(con));
    assert_eq!(events, messages_of(&fired), "denied-events {denied_events}");
}
