#!/usr/bin/env node
// redis-ratelimit policy set|get|del|set-plan|del-plan|list: the policy
// hash, every limit checked before it is written. --url (default
// $REDIS_URL, else redis://localhost:6379; redis+cluster://… for a
// cluster), --key (default ratelimit:policies), --subject for an override.
// Exit status: 0 done, 1 not found, 2 refused (a bad limit or name).

import { RateLimiter } from '../lib/limiter.js';
import { DEFAULT_KEY } from '../lib/policies.js';
import { SpecError } from '../lib/spec.js';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  if (at < 0) return fallback;
  const [, value] = args.splice(at, 2);
  return value;
};
const url = option('--url', process.env.REDIS_URL ?? 'redis://localhost:6379');
const key = option('--key', DEFAULT_KEY);
const subject = option('--subject', null);
const [group, verb, name, ...rest] = args;
if (group !== 'policy' || !verb) {
  console.error('usage: redis-ratelimit [--url URL] [--key KEY] policy set|get|del NAME [SPEC] [--subject S] | set-plan NAME POLICY… | del-plan NAME | list');
  process.exit(2);
}

const limiter = new RateLimiter({ url, policyKey: key, timeoutMs: 5000, onUnavailable: 'closed' });
await limiter.connect();
const admin = limiter.policyAdmin();
const kind = subject ? 'override' : 'policy';
let status = 0;
try {
  if (verb === 'set') {
    const spec = rest.join(' ');
    const limit = subject ? await admin.setOverride(name, subject, spec) : await admin.setPolicy(name, spec);
    console.log(limit.spec());
  } else if (verb === 'set-plan') {
    console.log((await admin.setPlan(name, rest)).join(' '));
  } else if (verb === 'get') {
    const value = await admin.get(kind, name, subject);
    if (value === null) {
      console.error(`no ${kind} ${name}`);
      status = 1;
    } else console.log(value);
  } else if (verb === 'del' || verb === 'del-plan') {
    if (!(await admin.delete(verb === 'del-plan' ? 'plan' : kind, name, subject))) {
      console.error(`no ${kind} ${name}`);
      status = 1;
    }
  } else if (verb === 'list') {
    for (const [field, value] of Object.entries(await admin.all()).sort()) console.log(`${field}\t${value}`);
  } else {
    console.error(`unknown verb ${verb}`);
    status = 2;
  }
} catch (error) {
  if (!(error instanceof SpecError)) throw error;
  console.error(`refused: ${error.message}`);
  status = 2;
} finally {
  await limiter.close();
}
process.exit(status);
