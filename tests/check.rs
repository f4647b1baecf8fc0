//! RATELIMIT.CHECK against a real server.

mod common;

use common::{check, Server};

#[test]
fn check_counts_a_sequence_of_requests_exactly() {
    let server = Server::start();
    let mut con = server.connect();
    let first = check(&mut con, "k", 3, 60, &[]);
    assert_eq!(first[..4], [1, 2, 3, -1]);
}
