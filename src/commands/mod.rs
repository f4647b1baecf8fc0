//! The commands: one file each, and the dispatch they share.
//!
//! Each command parses its arguments into a request (pure, unit-tested on
//! string slices), reads the clock once, loads state, asks the algorithm,
//! saves state and returns its reply. [`dispatch`] runs it behind
//! `catch_unwind`, counts it, logs an internal error's cause and writes the
//! reply.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;

use crate::args::Arg;
use crate::config::DENIED_EVENTS;
use crate::error::Error;
use crate::limiter::Decision;
use crate::server::{self, Ctx, Handler, LogLevel, RString, Replier, WriteReply};
use crate::stats::CommandStats;

pub mod acquire;
pub mod check;
pub mod extend;
pub mod holds;
pub mod limits;
pub mod mcheck;
pub mod mpeek;
pub mod peek;
pub mod release;
pub mod renew;
pub mod reserve;
pub mod reset;
pub mod settle;
pub mod throttle;

/// A command of the module.
pub trait Command {
    /// Its INFO counters.
    const STATS: &'static CommandStats;
    /// What it replies on success.
    type Reply: WriteReply;
    /// Runs one call; `args` holds the command name first.
    fn run(ctx: Ctx, args: &[RString]) -> Result<Self::Reply, Error>;

    /// Where the keys are among `args`, for a server that asks the command
    /// itself (a command whose keys a key spec of kind
    /// [`KeySpec::Counted`](crate::metadata::KeySpec) describes: in cluster
    /// routing, and on Redis 6.2, which has no key specs); empty when the
    /// arguments name no keys the command could use. `None` for a command
    /// the server never asks.
    fn key_positions(_args: &[RString]) -> Option<KeyPositions> {
        None
    }
}

/// Where a command's keys are among its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPositions {
    /// A key at a fixed position, before the counted ones (RESERVE's and
    /// SETTLE's holds key).
    pub fixed: Option<usize>,
    /// The keys a `numkeys` counts.
    pub counted: std::ops::Range<usize>,
}

impl KeyPositions {
    /// Every position, in order.
    pub fn all(&self) -> impl Iterator<Item = usize> + '_ {
        self.fixed.into_iter().chain(self.counted.clone())
    }
}

impl<C: Command> Handler for C {
    fn handle(ctx: Ctx, args: &[RString]) {
        dispatch::<C>(ctx, args);
    }
}

/// The largest integer a reply says: 2^53 - 1, the largest that clients
/// whose numbers are IEEE doubles (JavaScript) read exactly. The accepted
/// arguments keep every computed value below it; only a state made by hand
/// can reach past it (a lease held until `+inf`), and then a wait reads as
/// this many milliseconds, about 285,000 years.
pub const MAX_REPLY_INT: u64 = (1 << 53) - 1;

/// `v` as a reply integer, at most [`MAX_REPLY_INT`].
pub fn reply_int(v: u64) -> i64 {
    i64::try_from(v.min(MAX_REPLY_INT)).unwrap_or(i64::MAX)
}

/// The five integers of a decision, in reply order; -1 stands for "no retry
/// time".
pub fn decision_fields(d: Decision) -> [i64; 5] {
    [
        i64::from(d.allowed),
        reply_int(d.remaining),
        reply_int(d.limit),
        d.retry_after_ms.map_or(-1, reply_int),
        reply_int(d.reset_after_ms),
    ]
}

/// Fires `ratelimit.denied` on `key` when the `denied-events` option is on.
fn denied_event(ctx: Ctx, key: &RString) {
    if DENIED_EVENTS.load(Relaxed) {
        server::notify(ctx, c"ratelimit.denied", key);
    }
}

/// Runs command `C` for one call and writes its reply.
///
/// A panic must never unwind into the server (it would abort it, taking
/// every client's data along), so the body runs under `catch_unwind` and a
/// panic becomes an internal error. The reply is written after the body
/// has returned, so a panic cannot leave half a reply behind. An internal
/// error's cause goes to the server log, once, with the command's name.
fn dispatch<C: Command>(ctx: Ctx, args: &[RString]) {
    // Asked only where the keys are (cluster routing; on Redis 6.2 also
    // COMMAND GETKEYS and ACL key checks), the command answers and never
    // runs, even for arguments that name no keys: there is no client then,
    // and Redis 6.2 dereferences the missing client in `RM_WrongArity`.
    if let Some(keys) = C::key_positions(args) {
        if server::is_keys_position_request(ctx) {
            keys.all()
                .for_each(|position| server::key_at(ctx, position));
            return;
        }
    }
    C::STATS.calls.bump();
    let mut out = Replier::new(ctx);
    match guarded(|| C::run(ctx, args)) {
        Ok(reply) => reply.write(&mut out),
        Err(error) => {
            C::STATS.errors.bump();
            if let Error::Internal(cause) = error {
                let name = args.first().map(Arg::bytes).unwrap_or_default();
                server::log(ctx, LogLevel::Warning, &internal_error_line(name, cause));
            }
            out.error(error);
        }
    }
}

/// The log line of an internal error in command `name`.
fn internal_error_line(name: &[u8], cause: &str) -> String {
    format!(
        "{}: internal error: {cause}",
        String::from_utf8_lossy(name).to_lowercase()
    )
}

/// Runs `body`, turning a panic into [`Error::Internal`].
fn guarded<R>(body: impl FnOnce() -> Result<R, Error>) -> Result<R, Error> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(Err(Error::Internal(
        "a panic in the command (its message is in the server's standard error)",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_fields_are_in_reply_order_with_minus_one_for_no_retry() {
        let d = Decision {
            allowed: false,
            remaining: 2,
            limit: 10,
            retry_after_ms: Some(1500),
            reset_after_ms: 1500,
        };
        assert_eq!(decision_fields(d), [0, 2, 10, 1500, 1500]);
        let d = Decision {
            allowed: true,
            retry_after_ms: None,
            ..d
        };
        assert_eq!(decision_fields(d), [1, 2, 10, -1, 1500]);
    }

    #[test]
    fn reply_integers_stop_at_two_to_the_53_less_one() {
        assert_eq!(reply_int(MAX_REPLY_INT), 9_007_199_254_740_991);
        assert_eq!(reply_int(MAX_REPLY_INT + 1), 9_007_199_254_740_991);
        assert_eq!(reply_int(u64::MAX), 9_007_199_254_740_991);
        assert_eq!(reply_int(7), 7);
    }

    #[test]
    fn a_panic_in_a_command_body_becomes_an_internal_error() {
        let result: Result<u64, Error> = guarded(|| {
            let empty: &[u64] = &[];
            // An out-of-bounds index: the kind of bug that would abort Redis.
            #[allow(clippy::indexing_slicing)]
            let value = empty[usize::from(empty.is_empty())];
            Ok(value)
        });
        assert!(matches!(result, Err(Error::Internal(_))));
    }

    #[test]
    fn an_internal_error_is_logged_with_the_command_and_its_cause() {
        assert_eq!(
            internal_error_line(b"RATELIMIT.Check", "SetAbsExpire failed"),
            "ratelimit.check: internal error: SetAbsExpire failed"
        );
    }
}
