//! Nanoseconds per decision of each pure algorithm, outside Redis.
//!
//! Run with `make bench` (or `cargo bench --bench decisions --features
//! system-alloc`). Each benchmark decides one request against a key's state
//! as the command would, in the common case: the request is admitted and
//! the state moves on.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use redis_ratelimit::limiter::gcra::{self, Throttle};
use redis_ratelimit::limiter::token_bucket::{self, TokenBucket};
use redis_ratelimit::limiter::{fixed_window, sliding_window, Quota};

/// A plausible "now": 2026-11-27, in UNIX ms.
const NOW_MS: u64 = 1_795_000_000_000;

fn decisions(c: &mut Criterion) {
    let quota = Quota::new(1_000, 60).expect("a valid quota");
    let bucket = TokenBucket::with_burst(quota, 2_000).expect("a valid bucket");
    let throttle = Throttle::new(1_999, 1_000, 60).expect("a valid throttle");

    let fixed = fixed_window::check(None, quota, 1, NOW_MS).store;
    c.bench_function("fixed_window::check", |b| {
        b.iter(|| fixed_window::check(black_box(fixed), black_box(quota), 1, black_box(NOW_MS)))
    });
    let sliding = sliding_window::check(None, quota, 1, NOW_MS).store;
    c.bench_function("sliding_window::check", |b| {
        b.iter(|| sliding_window::check(black_box(sliding), black_box(quota), 1, black_box(NOW_MS)))
    });
    let token = token_bucket::check(None, bucket, 1, NOW_MS).store;
    c.bench_function("token_bucket::check", |b| {
        b.iter(|| token_bucket::check(black_box(token), black_box(bucket), 1, black_box(NOW_MS)))
    });
    let cell = gcra::check(None, throttle, 1, NOW_MS).store;
    c.bench_function("gcra::check", |b| {
        b.iter(|| gcra::check(black_box(cell), black_box(throttle), 1, black_box(NOW_MS)))
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
