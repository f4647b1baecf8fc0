//! `RATELIMIT.ACQUIRE`: take a lease on one of `max` slots of work in
//! flight, with a deadline.
//!
//! # Format
//! ```text
//! RATELIMIT.ACQUIRE key max lease_ms [ID id]
//! ```
//! - `max`: 1 to 100,000 leases live at once on this key.
//! - `lease_ms`: 1 to 86,400,000 (a day): the lease ends by itself then.
//! - `ID id`: 1 to 64 bytes, binary-safe. Without it the module makes an
//!   id: 32 hex digits of the server's random generator (128 bits, unique
//!   with overwhelming probability, and needing no counter that could
//!   restart). With it, a live lease of that id is renewed rather than
//!   granted a second slot, so a lost reply can be retried safely.
//!
//! Leases whose deadline has come are pruned first. A `max` below the live
//! count grants nothing until enough have ended; nothing is revoked.
//!
//! # Returns
//! An array of six elements, the first five meaning what CHECK's mean:
//! `acquired` (1/0), `remaining` (leases still available), `max`,
//! `retry_after_ms` (-1 when acquired; otherwise until a slot frees up by
//! itself), `reset_after_ms` (until the last live lease ends, 0 for none),
//! and the lease id (nil when not acquired).

use super::limits::option_keyword;
use super::{denied_event, reply_int, Command};
use crate::args::{bounded, Arg};
use crate::error::Error;
use crate::limiter::leases::{self, check_id, LEASE_MS, MAX};
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString, Replier, WriteReply};
use crate::stats::{CommandStats, STATS};
use crate::store::leases::KeyLeases;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.ACQUIRE.
pub const DOCS: CommandDocs = CommandDocs {
    summary:
        c"Takes a lease on one of max slots of work in flight, ending by itself after lease_ms",
    complexity: c"O(log N) for N live leases, plus O(log N) per lease pruned",
    since: c"0.2.0",
    arity: -4,
    keys: &[KeySpec::ONE_UPDATED],
    acl_categories: c"write fast",
    args: &[
        ArgDocs::required(c"key", ArgKind::Key),
        ArgDocs::required(c"max", ArgKind::Integer),
        ArgDocs::required(c"lease_ms", ArgKind::Integer),
        ArgDocs::option(c"id", c"ID", ArgKind::String),
    ],
};

/// The parsed arguments of one call.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a, A> {
    /// The key holding the leases.
    pub key: &'a A,
    /// Leases live at once, at most.
    pub max: u64,
    /// How long the lease lasts.
    pub lease_ms: u64,
    /// The client's id for the lease.
    pub id: Option<&'a [u8]>,
}

/// Parses `RATELIMIT.ACQUIRE key max lease_ms [ID id]`, the command name
/// included.
pub fn parse<A: Arg>(args: &[A]) -> Result<Request<'_, A>, Error> {
    let [_, key, max, lease_ms, options @ ..] = args else {
        return Err(Error::WrongArity);
    };
    let max = bounded(max, &MAX)?;
    let lease_ms = bounded(lease_ms, &LEASE_MS)?;
    let id = match options {
        [] => None,
        [option, rest @ ..] => {
            let keyword = option_keyword(option.bytes(), &["ID"])?;
            match rest {
                [] => return Err(Error::MissingValue(keyword)),
                [id] => Some(check_id(id.bytes())?),
                [_, extra, ..] => {
                    option_keyword(extra.bytes(), &["ID"])?;
                    return Err(Error::RepeatedOption(keyword));
                }
            }
        }
    };
    Ok(Request {
        key,
        max,
        lease_ms,
        id,
    })
}

/// An id for a new lease: 128 random bits from the server, in hex.
fn new_id() -> Result<Vec<u8>, Error> {
    let mut random = [0u8; 16];
    server::random_bytes(&mut random)?;
    Ok(random
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .map(|nibble| {
            b"0123456789abcdef"
                .get(usize::from(nibble))
                .copied()
                .unwrap_or(b'0')
        })
        .collect())
}

/// ACQUIRE's reply: CHECK's five integers and the lease id.
pub struct LeaseReply {
    fields: [i64; 5],
    id: Option<Vec<u8>>,
}

impl WriteReply for LeaseReply {
    fn write(&self, out: &mut Replier) {
        out.array(6);
        for value in self.fields {
            out.integer(value);
        }
        match &self.id {
            Some(id) => out.bulk(id),
            None => out.null(),
        }
    }
}

/// RATELIMIT.ACQUIRE.
pub struct Acquire;

impl Command for Acquire {
    const STATS: &'static CommandStats = &STATS.acquire;
    type Reply = LeaseReply;

    fn run(ctx: Ctx, args: &[RString]) -> Result<LeaseReply, Error> {
        let request = parse(args)?;
        let now_ms = server::now_ms()?;
        let mut key = Key::open(ctx, request.key, Access::ReadWrite)?;
        let (acquired, id) = KeyLeases::change(ctx, &mut key, |set| {
            leases::acquire(
                set,
                request.max,
                request.lease_ms,
                request.id,
                new_id,
                now_ms,
            )
        })?;
        STATS.leases_expired.add(acquired.pruned);
        if acquired.granted.is_some() {
            if acquired.renewed {
                STATS.leases_renewed.bump();
            } else {
                STATS.leases_acquired.bump();
            }
            server::notify(ctx, c"ratelimit.acquire", key.name());
        } else {
            STATS.leases_denied.bump();
            denied_event(ctx, key.name());
        }
        Ok(LeaseReply {
            fields: [
                i64::from(acquired.granted.is_some()),
                reply_int(acquired.remaining),
                reply_int(acquired.max),
                acquired.retry_after_ms.map_or(-1, reply_int),
                reply_int(acquired.reset_after_ms),
            ],
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs<'a>(args: &'a [&'a str]) -> Result<Request<'a, &'a str>, Error> {
        parse(args)
    }

    use crate::error::Word;

    #[test]
    fn parses_with_and_without_an_id() {
        let r = parse_strs(&["RATELIMIT.ACQUIRE", "k", "5", "30000"]).unwrap();
        assert_eq!((r.max, r.lease_ms, r.id), (5, 30_000, None));
        let r = parse_strs(&["RATELIMIT.ACQUIRE", "k", "5", "30000", "id", "job-7"]).unwrap();
        assert_eq!(r.id, Some(&b"job-7"[..]));
    }

    #[test]
    fn rejects_bad_arguments_with_the_right_error() {
        let long = format!("k 1 1 ID {}", "x".repeat(65));
        // The arguments after the command name, split at spaces.
        #[rustfmt::skip]
        let cases: &[(&str, Error)] = &[
            ("k 5", Error::WrongArity),
            ("k 0 1", Error::InvalidMaxLeases),
            ("k 100001 1", Error::InvalidMaxLeases),
            ("k 1 0", Error::InvalidLeaseMs),
            ("k 1 86400001", Error::InvalidLeaseMs),
            ("k 1 1 ID", Error::MissingValue("ID")),
            ("k 1 1 NAME x", Error::UnknownOption(Word::of(b"NAME"))),
            ("k 1 1 ID a ID b", Error::RepeatedOption("ID")),
            ("k 1 1 ID a extra", Error::UnknownOption(Word::of(b"extra"))),
            (&long, Error::InvalidLeaseId),
        ];
        for (args, expected) in cases {
            let args: Vec<&str> = std::iter::once("RATELIMIT.ACQUIRE")
                .chain(args.split_whitespace())
                .collect();
            assert_eq!(parse_strs(&args).err(), Some(*expected), "{args:?}");
        }
        let empty_id = ["RATELIMIT.ACQUIRE", "k", "1", "1", "ID", ""];
        assert_eq!(parse_strs(&empty_id).err(), Some(Error::InvalidLeaseId));
        let max = parse_strs(&["RATELIMIT.ACQUIRE", "k", "100000", "86400000"]).unwrap();
        assert_eq!((max.max, max.lease_ms), (100_000, 86_400_000));
    }
}
