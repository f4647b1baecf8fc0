//! The commands: one file each, and the dispatch they share.
//!
//! Each command parses its arguments into a request (pure, unit-tested on
//! string slices), reads the clock once, loads state, asks the algorithm,
//! saves state and builds a [`Reply`]. [`dispatch`] runs it behind
//! `catch_unwind` and writes the reply.

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;

use redis_module::raw;

use crate::config::DENIED_EVENTS;
use crate::error::Error;
use crate::limiter::Decision;
use crate::server::{self, Ctx, RString};
use crate::stats::CommandStats;

// After the macro: the commands use it.
pub mod check;
pub mod peek;
pub mod reset;
pub mod throttle;

/// What a command replies on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// An array of five integers, such as a [`Decision`]'s.
    Array([i64; 5]),
    /// One integer.
    Integer(i64),
}

impl Reply {
    fn send(self, ctx: Ctx) {
        match self {
            Reply::Array(values) => server::reply_integers(ctx, &values),
            Reply::Integer(value) => server::reply_integer(ctx, value),
        }
    }
}

/// The five integers of a decision, in reply order; -1 stands for "no retry
/// time". Values are bounded far below `i64::MAX` by the accepted arguments.
pub fn decision_fields(d: Decision) -> [i64; 5] {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    [
        i64::from(d.allowed),
        int(d.remaining),
        int(d.limit),
        d.retry_after_ms.map_or(-1, int),
        int(d.reset_after_ms),
    ]
}

/// Defines `command`, the `extern "C"` function the server calls for a
/// command, which runs `$run` through [`dispatch`], counted in `$stats`.
macro_rules! entry_point {
    ($run:path, $stats:expr) => {
        /// The entry point the server calls.
        pub extern "C" fn command(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::ffi::c_int,
        ) -> std::ffi::c_int {
            $crate::commands::dispatch(ctx, argv, argc, $run, $stats)
        }
    };
}
use entry_point;

/// A command body: arguments in (the command name first), reply out.
pub type Handler = fn(Ctx, &[RString]) -> Result<Reply, Error>;

/// Fires `ratelimit.denied` on `key` when the `denied-events` option is on.
fn denied_event(ctx: Ctx, key: &RString) {
    if DENIED_EVENTS.load(Relaxed) {
        server::notify(ctx, c"ratelimit.denied", key);
    }
}

/// Runs `handler` for a command call and writes its reply.
///
/// A panic must never unwind into the server (it would abort it, taking
/// every client's data along), so the body runs under `catch_unwind` and a
/// panic becomes `ERR internal error`. The reply is written after the body
/// has returned, so a panic cannot leave half a reply behind.
pub(crate) fn dispatch(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
    stats: &CommandStats,
) -> c_int {
    let ctx = Ctx::new(ctx);
    // SAFETY: the server passes `argc` valid arguments for this call.
    let args = unsafe { server::args(argv, argc) };
    stats.calls.bump();
    match guarded(|| handler(ctx, args)) {
        Ok(reply) => reply.send(ctx),
        Err(error) => {
            stats.errors.bump();
            server::reply_error(ctx, error);
        }
    }
    // REDISMODULE_OK: the reply, error or not, has been written.
    0
}

/// Runs `body`, turning a panic into [`Error::Internal`].
fn guarded(body: impl FnOnce() -> Result<Reply, Error>) -> Result<Reply, Error> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(Err(Error::Internal))
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
    fn a_panic_in_a_command_body_becomes_an_internal_error() {
        let result = guarded(|| {
            let empty: &[u64] = &[];
            // An out-of-bounds index: the kind of bug that would abort Redis.
            #[allow(clippy::indexing_slicing)]
            let value = empty[usize::from(empty.is_empty())];
            Ok(Reply::Integer(i64::try_from(value).unwrap()))
        });
        assert_eq!(result, Err(Error::Internal));
    }
}
