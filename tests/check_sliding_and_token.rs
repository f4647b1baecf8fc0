//! RATELIMIT.CHECK's sliding window and token bucket against a real server
//! (and what every algorithm shares: looks, keys of another algorithm,
//! options).
//!
//! Every reply is compared with a model of the documented algorithm run at
//! the command's own "now", which lies between the server's `TIME` read just
//! before and just after the command: the test passes when some millisecond
//! of that interval gives exactly the reply, the stored value and the
//! absolute expiry the server shows. The models follow the contract, not the
//! module's code: the sliding window's retry time is found by trying every
//! millisecond. The only sleeps wait for instants the server named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::thread::sleep;
use std::time::Duration;

use common::{
    algorithms, check, dumped, error_of, exists, get_str, make_one_of_each, not_a_limiter,
    pexpiretime, raw, run, server_ms, timed, wrong_algorithm, Decision, Server, Timed, FIXED,
};
use redis::{Connection, Value};

/// Added to a server-given wait so that the instant has surely passed.
const MARGIN_MS: i64 = 30;

const ERR_ALGORITHM: &str = "ERR ALGORITHM must be FIXED, SLIDING or TOKEN";
const ERR_BURST_WITHOUT_TOKEN: &str = "ERR BURST is only valid with ALGORITHM TOKEN";
const ERR_BURST: &str = "ERR burst must be a positive integer (at most 1000000000000000)";
const ERR_BURST_TOO_LARGE: &str =
    "ERR burst is too large for this rate: a full bucket must refill within 1000000000 seconds";

// ---------------------------------------------------------------------------
// Running commands and comparing with a model
// ---------------------------------------------------------------------------

/// A key's value and absolute expiry, `None` when it does not exist.
type State = Option<(String, i64)>;

fn state(con: &mut Connection, key: &str) -> State {
    get_str(con, key).map(|value| (value, pexpiretime(con, key)))
}

/// One command on one key, with what was there before and after and the
/// server clock around it.
struct Step {
    before_state: State,
    timed: Timed<Decision>,
    after_state: State,
}

fn step(con: &mut Connection, key: &str, args: &[&str]) -> Step {
    let before_state = state(con, key);
    let timed = timed(con, |con| run(con, args));
    let after_state = state(con, key);
    Step {
        before_state,
        timed,
        after_state,
    }
}

/// Asserts that `model(now)` equals `actual` for some `now` in
/// `before..=after`, and returns the first such `now`.
fn assert_model<T: PartialEq + Debug>(
    what: &str,
    (before, after): (i64, i64),
    actual: &T,
    model: impl Fn(i64) -> T,
) -> i64 {
    assert!(before <= after, "{what}: clock went back");
    for now in before..=after {
        if model(now) == *actual {
            return now;
        }
    }
    panic!(
        "{what}: got {actual:?}, but the model gives {:?} at {before} (and nothing matching up to {after})",
        model(before)
    );
}

/// `a / b` rounded up, for positive `b` and non-negative `a`.
fn ceil_div(a: i128, b: i128) -> i128 {
    (a + b - 1) / b
}

/// The sliding window of the contract: windows of `period_ms` aligned to the
/// UNIX epoch, counts `S<previous>:<current>` of the window that ends one
/// period before the key's expiry.
#[derive(Clone, Copy)]
struct Sliding {
    limit: i64,
    period_ms: i64,
}

impl Sliding {
    /// (previous, current) as seen at `now`.
    fn counts(&self, stored: &State, now: i64) -> (i64, i64) {
        let Some((value, expires_at)) = stored else {
            return (0, 0);
        };
        let (previous, current) = value
            .strip_prefix('S')
            .and_then(|v| v.split_once(':'))
            .unwrap_or_else(|| panic!("not a sliding window: {value:?}"));
        let (previous, current): (i64, i64) = (previous.parse().unwrap(), current.parse().unwrap());
        assert_eq!(expires_at % self.period_ms, 0, "expiry not on a window");
        let counts_window = expires_at / self.period_ms - 2;
        match now / self.period_ms - counts_window {
            0 => (previous, current),
            1 => (current, 0),
            d if d > 1 => (0, 0),
            d => panic!("counts from a future window ({d})"),
        }
    }

    /// previous × (period − elapsed) + current × period: the estimate in
    /// unit-milliseconds.
    fn weighted(&self, (previous, current): (i64, i64), now: i64) -> i64 {
        let elapsed = now % self.period_ms;
        previous * (self.period_ms - elapsed) + current * self.period_ms
    }

    fn fits(&self, stored: &State, cost: i64, now: i64) -> bool {
        let counts = self.counts(stored, now);
        self.weighted(counts, now) + cost * self.period_ms <= self.limit * self.period_ms
    }

    /// The reply and the state after a CHECK of `cost` at `now`.
    fn check(&self, stored: &State, cost: i64, now: i64) -> (Decision, State) {
        let p = self.period_ms;
        let window = now / p;
        let (previous, current) = self.counts(stored, now);
        let fits = self.fits(stored, cost, now);
        let current_after = if fits { current + cost } else { current };
        let used = self.weighted((previous, current_after), now);
        let remaining = (self.limit * p - used).max(0) / p;
        let retry = if fits || cost > self.limit {
            -1
        } else {
            // The first millisecond at which it passes, tried one by one.
            (1..=2 * p)
                .find(|t| self.fits(stored, cost, now + t))
                .expect("never fits within two windows")
        };
        let reset = if current_after > 0 {
            (window + 2) * p - now
        } else if previous > 0 {
            (window + 1) * p - now
        } else {
            0
        };
        let after = if fits && cost > 0 {
            Some((format!("S{previous}:{current_after}"), (window + 2) * p))
        } else {
            stored.clone()
        };
        let decision = Decision {
            allowed: fits,
            remaining,
            limit: self.limit,
            retry_after_ms: retry,
            reset_after_ms: reset,
        };
        (decision, after)
    }
}

/// The token bucket of the contract: `burst` tokens refilled at `limit` per
/// `period_ms`, stored as the instant it is full again, `T<ticks>` being how
/// many ticks of 1/limit ms before the key's expiry that instant is.
#[derive(Clone, Copy)]
struct Token {
    limit: i128,
    period_ms: i128,
    burst: i128,
}

impl Token {
    /// When the bucket is full, in ticks, never before `now`.
    fn full_at(&self, stored: &State, now: i64) -> i128 {
        let now = i128::from(now) * self.limit;
        let Some((value, expires_at)) = stored else {
            return now;
        };
        let early: i128 = value
            .strip_prefix('T')
            .unwrap_or_else(|| panic!("not a token bucket: {value:?}"))
            .parse()
            .unwrap();
        assert!(early < self.limit, "{value}: more ticks than a millisecond");
        (i128::from(*expires_at) * self.limit - early).max(now)
    }

    /// The reply and the state after a CHECK of `cost` at `now`.
    fn check(&self, stored: &State, cost: i64, now: i64) -> (Decision, State) {
        let now_ticks = i128::from(now) * self.limit;
        let capacity = self.burst * self.period_ms;
        let asked = i128::from(cost) * self.period_ms;
        let full_at = self.full_at(stored, now);
        let fits = full_at - now_ticks + asked <= capacity;
        let full_after = if fits { full_at + asked } else { full_at };
        let retry = if fits || i128::from(cost) > self.burst {
            -1
        } else {
            ceil_div(full_at + asked - capacity, self.limit) - i128::from(now)
        };
        let debt = full_after - now_ticks;
        let after = if fits && cost > 0 {
            let full_ms = ceil_div(full_after, self.limit);
            let early = full_ms * self.limit - full_after;
            Some((format!("T{early}"), full_ms as i64))
        } else {
            stored.clone()
        };
        let decision = Decision {
            allowed: fits,
            remaining: ((capacity - debt) / self.period_ms) as i64,
            limit: self.limit as i64,
            retry_after_ms: retry as i64,
            reset_after_ms: ceil_div(debt, self.limit) as i64,
        };
        (decision, after)
    }
}

/// Runs `args` (a CHECK of `cost` on `key`) and compares it with `model`.
/// Returns the reply and the command's "now" as the model found it.
fn checked_step(
    con: &mut Connection,
    key: &str,
    args: &[&str],
    cost: i64,
    model: impl Fn(&State, i64, i64) -> (Decision, State),
) -> (Decision, i64) {
    let s = step(con, key, args);
    let now = assert_model(
        &args.join(" "),
        (s.timed.before, s.timed.after),
        &(s.timed.reply, s.after_state.clone()),
        |now| model(&s.before_state, cost, now),
    );
    (s.timed.reply, now)
}

/// The index of the current window of `period_ms`, waiting (by the server's
/// clock) for the next one when fewer than `room_ms` are left in it.
fn window_with_room(con: &mut Connection, period_ms: i64, room_ms: i64) -> i64 {
    let now = server_ms(con);
    let left = period_ms - now % period_ms;
    if left >= room_ms {
        return now / period_ms;
    }
    sleep(Duration::from_millis((left + 5) as u64));
    let now = server_ms(con);
    assert!(now % period_ms < period_ms - room_ms, "window too short");
    now / period_ms
}

/// Sleeps until the server's clock has reached `at_ms`.
fn sleep_until(con: &mut Connection, at_ms: i64) {
    let now = server_ms(con);
    if at_ms > now {
        sleep(Duration::from_millis((at_ms - now) as u64));
    }
}

// ---------------------------------------------------------------------------
// Sliding window
// ---------------------------------------------------------------------------

#[test]
fn check_sliding_counts_a_window_exactly() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "sliding:seq";
    let model = Sliding {
        limit: 4,
        period_ms: 10_000,
    };
    let args = |cost: &'static str| -> Vec<&'static str> {
        vec![
            "RATELIMIT.CHECK",
            "sliding:seq",
            "4",
            "10",
            "ALGORITHM",
            "SLIDING",
            "COST",
            cost,
        ]
    };
    let window = window_with_room(&mut con, 10_000, 1_000);
    let expiry = (window + 2) * 10_000;
    let checked = |con: &mut Connection, cost: &'static str| {
        checked_step(con, key, &args(cost), cost.parse().unwrap(), |s, c, n| {
            model.check(s, c, n)
        })
    };

    // Admitted one by one: the current count grows, the expiry is the start
    // of the window after next, exactly.
    for n in 1..=4 {
        let (reply, now) = checked(&mut con, "1");
        assert_eq!(
            reply,
            Decision::allowed(4 - n, 4, expiry - now),
            "request {n}"
        );
        assert_eq!(get_str(&mut con, key), Some(format!("S0:{n}")));
        assert_eq!(pexpiretime(&mut con, key), expiry);
    }
    // Denied: nothing changes; it passes once the 4 have weighed down to 3,
    // a quarter into the next window.
    for cost in ["1", "1", "2"] {
        let (reply, now) = checked(&mut con, cost);
        assert_eq!(reply.counts(), (false, 0, 4), "{reply:?}");
        assert_eq!(reply.reset_after_ms, expiry - now);
        let cost: i64 = cost.parse().unwrap();
        assert_eq!(
            reply.retry_after_ms,
            (window + 1) * 10_000 + 2_500 * cost - now
        );
        assert_eq!(get_str(&mut con, key).as_deref(), Some("S0:4"));
        assert_eq!(pexpiretime(&mut con, key), expiry);
    }
    // A look changes nothing either.
    let (look, now) = checked(&mut con, "0");
    assert_eq!(look, Decision::allowed(0, 4, expiry - now));
    assert_eq!(get_str(&mut con, key).as_deref(), Some("S0:4"));
    assert_eq!(run::<String>(&mut con, &["TYPE", key]), "string");
}

#[test]
fn check_sliding_weights_the_previous_window_across_a_boundary() {
    let server = Server::start();
    let mut con = server.connect();
    let p = 10_000;
    let model = Sliding {
        limit: 10,
        period_ms: p,
    };
    let window = window_with_room(&mut con, p, 1_000);

    // The previous window admitted the full limit, as a client bursting
    // just before the boundary would have: stored as it would be, counts of
    // window − 1 expiring at the start of window + 1.
    let key = "sliding:boundary";
    let previous_expiry = ((window + 1) * p).to_string();
    let _: () = run(&mut con, &["SET", key, "S0:10", "PXAT", &previous_expiry]);
    let args = ["RATELIMIT.CHECK", key, "10", "10", "ALGORITHM", "SLIDING"];
    let mut admitted = 0;
    loop {
        let (reply, now) = checked_step(&mut con, key, &args, 1, |s, c, n| model.check(s, c, n));
        if !reply.allowed {
            // Only what the elapsed part of this window has freed passed:
            // never a second full limit.
            let elapsed = now % p;
            assert!(admitted <= 10 * elapsed / p, "{admitted} at {elapsed} ms");
            assert!(admitted < 10, "a second burst of the full limit");
            // It passes once 10 × (1 − e) + admitted + 1 <= 10.
            assert_eq!(
                reply.retry_after_ms,
                window * p + (admitted + 1) * 1_000 - now
            );
            break;
        }
        admitted += 1;
        assert!(admitted < 10, "a second burst of the full limit");
        assert_eq!(
            get_str(&mut con, key),
            Some(format!("S10:{admitted}")),
            "the previous count moves to the front"
        );
        assert_eq!(pexpiretime(&mut con, key), (window + 2) * p);
    }

    // Counts in both windows: 6 weighted by what is left of the window,
    // plus 3.
    let both = "sliding:both";
    let expiry = ((window + 2) * p).to_string();
    let _: () = run(&mut con, &["SET", both, "S6:3", "PXAT", &expiry]);
    for cost in ["0", "1", "1", "2", "4"] {
        let args = [
            "RATELIMIT.CHECK",
            both,
            "10",
            "10",
            "algorithm",
            "sliding",
            "cost",
            cost,
        ];
        checked_step(&mut con, both, &args, cost.parse().unwrap(), |s, c, n| {
            model.check(s, c, n)
        });
    }
    // A cost of the full limit waits for both windows to empty.
    let full = [
        "RATELIMIT.CHECK",
        both,
        "10",
        "10",
        "ALGORITHM",
        "SLIDING",
        "COST",
        "10",
    ];
    let (reply, now) = checked_step(&mut con, both, &full, 10, |s, c, n| model.check(s, c, n));
    assert!(!reply.allowed);
    assert_eq!(reply.retry_after_ms, (window + 2) * p - now);
    assert_eq!(reply.retry_after_ms, reply.reset_after_ms);
}

#[test]
fn check_sliding_retry_after_is_the_first_admitting_millisecond() {
    let server = Server::start();
    let mut con = server.connect();
    let p = 1_000;
    let model = Sliding {
        limit: 10,
        period_ms: p,
    };
    let window = window_with_room(&mut con, p, 300);
    let key = "sliding:retry";
    let expiry = ((window + 2) * p).to_string();
    let _: () = run(&mut con, &["SET", key, "S0:10", "PXAT", &expiry]);
    let args = ["RATELIMIT.CHECK", key, "10", "1", "ALGORITHM", "SLIDING"];
    let check =
        |con: &mut Connection| checked_step(con, key, &args, 1, |s, c, n| model.check(s, c, n));

    // The window is full: the next one starts with 10 weighing 10 × (1 − e),
    // and 1 more fits from e = 100 ms on.
    let (denied, now) = check(&mut con);
    assert_eq!(denied.counts(), (false, 0, 10));
    let target = now + denied.retry_after_ms;
    if now / p == window {
        assert_eq!(target, (window + 1) * p + 100);
        assert_eq!(denied.reset_after_ms, (window + 2) * p - now);
    }

    // Just before: still denied, and it names the same instant.
    sleep_until(&mut con, target - 40);
    let (reply, now) = check(&mut con);
    if now < target {
        assert!(!reply.allowed, "admitted {} ms early", target - now);
        assert_eq!(now + reply.retry_after_ms, target);
    }
    // From that instant on: admitted.
    sleep_until(&mut con, target + MARGIN_MS);
    let (reply, now) = check(&mut con);
    assert!(reply.allowed, "{reply:?}");
    if now / p == window + 1 {
        assert_eq!(get_str(&mut con, key).as_deref(), Some("S10:1"));
    }
}

// ---------------------------------------------------------------------------
// Token bucket
// ---------------------------------------------------------------------------

#[test]
fn check_token_takes_the_burst_then_refills_at_the_rate() {
    let server = Server::start();
    let mut con = server.connect();

    // 1 per second, bucket of 3: three at once, then refills a token a second.
    let key = "token:seq";
    let model = Token {
        limit: 1,
        period_ms: 1_000,
        burst: 3,
    };
    let args = [
        "RATELIMIT.CHECK",
        key,
        "1",
        "1",
        "ALGORITHM",
        "TOKEN",
        "BURST",
        "3",
    ];
    let (first, start) = checked_step(&mut con, key, &args, 1, |s, c, n| model.check(s, c, n));
    assert_eq!(first, Decision::allowed(2, 1, 1_000));
    assert_eq!(get_str(&mut con, key).as_deref(), Some("T0"));
    // The key expires exactly when the bucket is full.
    assert_eq!(pexpiretime(&mut con, key), start + 1_000);
    for n in [2, 3] {
        let (reply, now) = checked_step(&mut con, key, &args, 1, |s, c, n| model.check(s, c, n));
        assert_eq!(reply.without_reset(), (true, 3 - n, 1, -1), "{reply:?}");
        assert_eq!(get_str(&mut con, key).as_deref(), Some("T0"));
        assert_eq!(pexpiretime(&mut con, key), start + n * 1_000);
        assert_eq!(pexpiretime(&mut con, key), now + reply.reset_after_ms);
    }
    let (denied, now) = checked_step(&mut con, key, &args, 1, |s, c, n| model.check(s, c, n));
    assert_eq!(denied.counts(), (false, 0, 1));
    assert_eq!(
        now + denied.retry_after_ms,
        start + 1_000,
        "the first token back"
    );
    assert_eq!(now + denied.reset_after_ms, start + 3_000, "full again");
    assert_eq!(pexpiretime(&mut con, key), start + 3_000);
    assert_eq!(get_str(&mut con, key).as_deref(), Some("T0"));

    // 3 per second: a token is 333⅓ ms, kept exactly as ticks of ⅓ ms
    // before the expiry (which is rounded up to the millisecond).
    let key = "token:thirds";
    let model = Token {
        limit: 3,
        period_ms: 1_000,
        burst: 3,
    };
    let args = ["RATELIMIT.CHECK", key, "3", "1", "ALGORITHM", "TOKEN"];
    let (first, start) = checked_step(&mut con, key, &args, 1, |s, c, n| model.check(s, c, n));
    assert_eq!(first, Decision::allowed(2, 3, 334));
    assert_eq!(get_str(&mut con, key).as_deref(), Some("T2"));
    assert_eq!(pexpiretime(&mut con, key), start + 334);
    let (_, now) = checked_step(&mut con, key, &args, 1, |s, c, n| model.check(s, c, n));
    if now - start < 300 {
        assert_eq!(get_str(&mut con, key).as_deref(), Some("T1"));
        assert_eq!(pexpiretime(&mut con, key), start + 667);
        let (_, now) = checked_step(&mut con, key, &args, 1, |s, c, n| model.check(s, c, n));
        if now - start < 300 {
            assert_eq!(get_str(&mut con, key).as_deref(), Some("T0"));
            assert_eq!(pexpiretime(&mut con, key), start + 1_000);
        }
    }
    // Empty: the first token is back at 333⅓ ms, so at 334.
    let (denied, now) = checked_step(&mut con, key, &args, 1, |s, c, n| model.check(s, c, n));
    if now - start < 300 {
        assert_eq!(denied.counts(), (false, 0, 3));
        assert_eq!(now + denied.retry_after_ms, start + 334);
    }
}

#[test]
fn check_token_retry_after_from_a_drained_bucket() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "token:drained";
    // 10 per second: a token every 100 ms; a bucket of 2.
    let model = Token {
        limit: 10,
        period_ms: 1_000,
        burst: 2,
    };
    let args = |cost: &'static str| {
        [
            "RATELIMIT.CHECK",
            "token:drained",
            "10",
            "1",
            "ALGORITHM",
            "TOKEN",
            "BURST",
            "2",
            "COST",
            cost,
        ]
    };
    let (drain, _) = checked_step(&mut con, key, &args("2"), 2, |s, c, n| model.check(s, c, n));
    assert_eq!(drain, Decision::allowed(0, 10, 200));
    let full_at = pexpiretime(&mut con, key);

    let (denied, now) = checked_step(&mut con, key, &args("1"), 1, |s, c, n| model.check(s, c, n));
    assert_eq!(denied.counts(), (false, 0, 10));
    let retry = denied.retry_after_ms;
    assert!(retry > 0 && retry <= 100, "{denied:?}");
    assert_eq!(now + retry, full_at - 100, "one token back");
    assert_eq!(now + denied.reset_after_ms, full_at);
    // Two tokens wait for the full bucket.
    let (two, now) = checked_step(&mut con, key, &args("2"), 2, |s, c, n| model.check(s, c, n));
    assert_eq!(now + two.retry_after_ms, full_at);
    // Nothing was taken by the denials.
    assert_eq!(pexpiretime(&mut con, key), full_at);

    sleep(Duration::from_millis((retry + MARGIN_MS) as u64));
    let (reply, now) = checked_step(&mut con, key, &args("1"), 1, |s, c, n| model.check(s, c, n));
    assert!(reply.allowed, "{reply:?}");
    assert_eq!(pexpiretime(&mut con, key), full_at.max(now) + 100);
}

#[test]
fn check_token_burst_defaults_to_the_limit() {
    let server = Server::start();
    let mut con = server.connect();
    let token = |burst: &[&'static str], cost: &'static str| {
        [&["ALGORITHM", "TOKEN"][..], burst, &["COST", cost]].concat()
    };

    // Without BURST the bucket holds `limit`: 4 fit at once, 5 never do.
    assert_eq!(
        check(&mut con, "burst:default", 4, 60, &token(&[], "4")),
        Decision::allowed(0, 4, 60_000)
    );
    assert_eq!(
        check(&mut con, "burst:five", 4, 60, &token(&[], "5")),
        Decision::denied(4, 4, -1, 0)
    );
    assert!(!exists(&mut con, "burst:five"));
    // BURST 4 is the same bucket.
    assert_eq!(
        check(&mut con, "burst:four", 4, 60, &token(&["BURST", "4"], "4")),
        Decision::allowed(0, 4, 60_000)
    );
    // A larger burst holds more than the limit; refilling 5 takes 75 s.
    assert_eq!(
        check(
            &mut con,
            "burst:larger",
            4,
            60,
            &["BURST", "5", "ALGORITHM", "TOKEN", "COST", "5"]
        ),
        Decision::allowed(0, 4, 75_000)
    );
    // A smaller one holds less.
    assert_eq!(
        check(
            &mut con,
            "burst:smaller",
            4,
            60,
            &["ALGORITHM", "TOKEN", "BURST", "2"]
        ),
        Decision::allowed(1, 4, 15_000)
    );
}

#[test]
fn check_token_cost_above_the_burst_is_denied_without_retry() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "token:never";
    let options = |cost| ["ALGORITHM", "TOKEN", "BURST", "3", "COST", cost];
    assert_eq!(
        check(&mut con, key, 5, 60, &options("4")),
        Decision::denied(3, 5, -1, 0)
    );
    assert!(!exists(&mut con, key));

    // On a bucket in use: its state is reported, and stays.
    let taken = timed(&mut con, |con| check(con, key, 5, 60, &options("1")));
    assert_eq!(taken.reply.without_reset(), (true, 2, 5, -1));
    let full_at = pexpiretime(&mut con, key);
    assert!((taken.before..=taken.after).contains(&(full_at - taken.reply.reset_after_ms)));
    let value = get_str(&mut con, key);
    let denied = check(&mut con, key, 5, 60, &options("1000"));
    assert_eq!(denied.without_reset(), (false, 2, 5, -1), "{denied:?}");
    assert!(
        denied.reset_after_ms > 0 && denied.reset_after_ms <= 12_000,
        "{denied:?}"
    );
    assert_eq!(get_str(&mut con, key), value);
    assert_eq!(pexpiretime(&mut con, key), full_at);
}

// ---------------------------------------------------------------------------
// Every algorithm
// ---------------------------------------------------------------------------

#[test]
fn check_cost_zero_creates_nothing_in_any_algorithm() {
    let server = Server::start();
    let mut con = server.connect();
    // The default algorithm, then each by name.
    let mut namings: Vec<Vec<&str>> = vec![vec![]];
    namings.extend(algorithms().iter().map(|k| vec!["ALGORITHM", k.name]));
    for (i, naming) in namings.iter().enumerate() {
        let key = format!("look:{i}");
        let costing = |cost| [&["COST", cost][..], naming].concat();
        let look = costing("0");
        assert_eq!(
            check(&mut con, &key, 5, 60, &look),
            Decision::allowed(5, 5, 0),
            "{look:?}"
        );
        assert!(!exists(&mut con, &key), "{look:?} created the key");

        // On a limiter in use: nothing changes, not even the encoding.
        check(&mut con, &key, 5, 60, &costing("2"));
        let before = dumped(&mut con, &key);
        let reply = check(&mut con, &key, 5, 60, &look);
        assert_eq!(reply.without_reset(), (true, 3, 5, -1), "{look:?}");
        assert_eq!(dumped(&mut con, &key), before);
    }
    assert_eq!(
        check(
            &mut con,
            "look:burst",
            5,
            60,
            &["ALGORITHM", "TOKEN", "BURST", "8", "COST", "0"]
        ),
        Decision::allowed(8, 5, 0)
    );
    assert!(!exists(&mut con, "look:burst"));
    assert_eq!(run::<i64>(&mut con, &["DBSIZE"]), 4);
}

#[test]
fn check_refuses_keys_of_another_algorithm() {
    let server = Server::start();
    let mut con = server.connect();

    // One key made by each limiter, and keys no limiter made.
    let made = make_one_of_each(&mut con, "wt");
    let mut keys: Vec<(String, Option<&str>)> = made
        .iter()
        .map(|(limiter, key)| (key.clone(), Some(limiter.kind.name)))
        .collect();
    let foreign: &[(&str, &[&str])] = &[
        ("wt:hello", &["SET", "wt:hello", "hello", "PX", "100000"]),
        ("wt:s-like", &["SET", "wt:s-like", "S1", "PX", "100000"]),
        ("wt:t-like", &["SET", "wt:t-like", "T-1"]),
        ("wt:g-like", &["SET", "wt:g-like", "Gx", "PX", "100000"]),
        ("wt:list", &["RPUSH", "wt:list", "a"]),
        ("wt:hash", &["HSET", "wt:hash", "f", "1"]),
    ];
    for (key, setup) in foreign {
        let _: Value = run(&mut con, setup);
        keys.push((key.to_string(), None));
    }
    // A counter written by hand is a fixed window, and nothing else.
    let _: () = run(&mut con, &["SET", "wt:counter", "7", "PX", "100000"]);
    keys.push(("wt:counter".to_string(), Some(FIXED.name)));

    let snapshot = |con: &mut Connection| -> Vec<(Option<Vec<u8>>, i64)> {
        keys.iter().map(|(k, _)| dumped(con, k.as_str())).collect()
    };
    let before = snapshot(&mut con);
    for (key, held) in &keys {
        for (limiter, _) in &made {
            let wanted = limiter.kind.name;
            if *held == Some(wanted) {
                continue;
            }
            let expected = match held {
                Some(held) => wrong_algorithm(held, wanted),
                None => not_a_limiter(&mut con, key),
            };
            for cost in [1, 0, 1000] {
                let args = limiter.take(key, cost);
                let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                assert_eq!(
                    error_of(raw(&mut con, &bytes)),
                    expected,
                    "{}",
                    args.join(" ")
                );
            }
        }
    }
    assert_eq!(snapshot(&mut con), before, "a refused call changed a key");
    assert_eq!(get_str(&mut con, "wt:sliding").as_deref(), Some("S0:1"));
    assert_eq!(get_str(&mut con, "wt:token").as_deref(), Some("T0"));
    assert_eq!(get_str(&mut con, "wt:throttle").as_deref(), Some("G0"));
    assert_eq!(get_str(&mut con, "wt:fixed").as_deref(), Some("1"));
}

#[test]
fn check_rejects_bad_options_with_exact_errors() {
    let server = Server::start();
    let mut con = server.connect();
    let k = "opts";
    let cases: &[(&[&str], &str)] = &[
        (&["ALGORITHM"], "ERR syntax error: ALGORITHM needs a value"),
        (&["algorithm"], "ERR syntax error: ALGORITHM needs a value"),
        (
            &["ALGORITHM", "TOKEN", "BURST"],
            "ERR syntax error: BURST needs a value",
        ),
        (
            &["ALGORITHM", "TOKEN", "ALGORITHM", "TOKEN"],
            "ERR syntax error: ALGORITHM given twice",
        ),
        (
            &["ALGORITHM", "FIXED", "algorithm", "SLIDING"],
            "ERR syntax error: ALGORITHM given twice",
        ),
        (
            &["ALGORITHM", "TOKEN", "BURST", "5", "burst", "5"],
            "ERR syntax error: BURST given twice",
        ),
        (
            &["ALGORITHM", "TOKEN", "BURSTS", "5"],
            "ERR syntax error: unknown option 'BURSTS'",
        ),
        (
            &["ALGORITHM", "SLIDING", "WINDOW", "5"],
            "ERR syntax error: unknown option 'WINDOW'",
        ),
        (
            &["ALGORITHM", "SLIDING", "COST"],
            "ERR syntax error: COST needs a value",
        ),
        (&["ALGORITHM", "LEAKY"], ERR_ALGORITHM),
        (&["ALGORITHM", "TOKENS"], ERR_ALGORITHM),
        (&["ALGORITHM", ""], ERR_ALGORITHM),
        (&["ALGORITHM", "1"], ERR_ALGORITHM),
        (&["BURST", "5"], ERR_BURST_WITHOUT_TOKEN),
        (
            &["BURST", "5", "ALGORITHM", "SLIDING"],
            ERR_BURST_WITHOUT_TOKEN,
        ),
        (
            &["ALGORITHM", "FIXED", "BURST", "5"],
            ERR_BURST_WITHOUT_TOKEN,
        ),
        (&["ALGORITHM", "TOKEN", "BURST", "0"], ERR_BURST),
        (&["ALGORITHM", "TOKEN", "BURST", "-1"], ERR_BURST),
        (&["ALGORITHM", "TOKEN", "BURST", "x"], ERR_BURST),
        (&["ALGORITHM", "TOKEN", "BURST", "1.5"], ERR_BURST),
        (
            &["ALGORITHM", "TOKEN", "BURST", "1000000000000001"],
            ERR_BURST,
        ),
        // 10 per minute takes 1.9 million years to refill 10^14 tokens.
        (
            &["ALGORITHM", "TOKEN", "BURST", "100000000000000"],
            ERR_BURST_TOO_LARGE,
        ),
        // 10 per minute refills 166 666 667 tokens in just over 10^9 s.
        (
            &["ALGORITHM", "TOKEN", "BURST", "166666667"],
            ERR_BURST_TOO_LARGE,
        ),
    ];
    for (options, expected) in cases {
        let mut args = vec!["RATELIMIT.CHECK", k, "10", "60"];
        args.extend_from_slice(options);
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        assert_eq!(
            error_of(raw(&mut con, &bytes)),
            *expected,
            "{}",
            args.join(" ")
        );
    }
    assert!(!exists(&mut con, k), "a refused call created the key");

    // At the bound: 166 666 666 tokens refill in 999 999 996 s.
    let fits = check(
        &mut con,
        "opts:edge",
        10,
        60,
        &["ALGORITHM", "TOKEN", "BURST", "166666666"],
    );
    assert_eq!(fits, Decision::allowed(166_666_665, 10, 6_000));
    // One per 10^9 s: a bucket of 1 is the most.
    assert_eq!(
        check(
            &mut con,
            "opts:slow",
            1,
            1_000_000_000,
            &["ALGORITHM", "TOKEN"]
        ),
        Decision::allowed(0, 1, 1_000_000_000_000)
    );
    let err = error_of(raw(
        &mut con,
        &[
            b"RATELIMIT.CHECK",
            b"opts:slow2",
            b"1",
            b"1000000000",
            b"ALGORITHM",
            b"TOKEN",
            b"BURST",
            b"2",
        ],
    ));
    assert_eq!(err, ERR_BURST_TOO_LARGE);

    // Options in any order and any case.
    let orders: [&[&str]; 4] = [
        &["COST", "2", "ALGORITHM", "token", "BURST", "3"],
        &["burst", "3", "cost", "2", "algorithm", "TOKEN"],
        &["Algorithm", "Token", "Burst", "3", "Cost", "2"],
        &["BURST", "3", "ALGORITHM", "tOkEn", "COST", "2"],
    ];
    for (i, options) in orders.iter().enumerate() {
        let key = format!("opts:order:{i}");
        assert_eq!(
            check(&mut con, &key, 10, 60, options),
            Decision::allowed(1, 10, 12_000),
            "{options:?}"
        );
        assert_eq!(get_str(&mut con, &key).as_deref(), Some("T0"));
    }
    for (i, name) in ["SLIDING", "sliding", "Sliding"].iter().enumerate() {
        let key = format!("opts:sliding:{i}");
        check(&mut con, &key, 10, 60, &["COST", "3", "ALGORITHM", name]);
        assert_eq!(get_str(&mut con, &key).as_deref(), Some("S0:3"));
    }
    for (i, name) in ["FIXED", "fixed"].iter().enumerate() {
        let key = format!("opts:fixed:{i}");
        check(&mut con, &key, 10, 60, &["ALGORITHM", name]);
        assert_eq!(get_str(&mut con, &key).as_deref(), Some("1"));
    }
}

// ---------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------

/// 16 connections sending 50 `RATELIMIT.CHECK key limit period options…`
/// each at once: every reply.
fn hammer(
    server: &Server,
    key: &str,
    limit: u64,
    period_s: u64,
    options: &[&str],
) -> Vec<Decision> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                scope.spawn(|| {
                    let mut con = server.connect();
                    (0..50)
                        .map(|_| check(&mut con, key, limit, period_s, options))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Asserts that exactly 100 were admitted, each seeing its own `remaining`.
fn assert_exactly_100(replies: &[Decision]) {
    let admitted: Vec<i64> = replies
        .iter()
        .filter(|r| r.allowed)
        .map(|r| r.remaining)
        .collect();
    assert_eq!(admitted.len(), 100);
    let remaining: BTreeSet<i64> = admitted.iter().copied().collect();
    assert_eq!(remaining, (0..100).collect::<BTreeSet<i64>>());
}

#[test]
fn check_sliding_admits_exactly_the_limit_under_concurrency() {
    let server = Server::start();
    let mut con = server.connect();
    // A run that straddles a window boundary would see the first window's
    // count weighed down; it is run again on a fresh key (in one window).
    for attempt in 0..2 {
        let key = format!("conc:sliding:{attempt}");
        let before = server_ms(&mut con);
        let replies = hammer(&server, &key, 100, 60, &["ALGORITHM", "SLIDING"]);
        let after = server_ms(&mut con);
        if before / 60_000 != after / 60_000 {
            continue;
        }
        assert_exactly_100(&replies);
        assert_eq!(get_str(&mut con, &key).as_deref(), Some("S0:100"));
        assert_eq!(pexpiretime(&mut con, &key), (before / 60_000 + 2) * 60_000);
        return;
    }
    panic!("two runs straddled a window boundary");
}

#[test]
fn check_token_admits_exactly_the_burst_under_concurrency() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "conc:token";
    // One token an hour: nothing refills during the test.
    let before = server_ms(&mut con);
    let replies = hammer(
        &server,
        key,
        1,
        3600,
        &["ALGORITHM", "TOKEN", "BURST", "100"],
    );
    let after = server_ms(&mut con);
    assert_exactly_100(&replies);
    assert_eq!(get_str(&mut con, key).as_deref(), Some("T0"));
    // Empty: full again 100 hours after the first admitted request.
    let full_at = pexpiretime(&mut con, key);
    let first = full_at - 100 * 3_600_000;
    assert!(
        (before..=after).contains(&first),
        "{first} not in [{before}, {after}]"
    );
}
