// Limits kept in one Redis hash (default `ratelimit:policies`):
//   policy:<name>                 "100 60 ALGORITHM TOKEN BURST 20" (SHADOW: count, never deny)
//   plan:<name>                   "rpm tpd": policies checked together (MCHECK)
//   override:<policy>:<subject>   that subject's own limit
//   version                       any value that changes with every change
// The same layout as the Python package's; see README.md.

import { Limit, SpecError } from './spec.js';

export const DEFAULT_KEY = 'ratelimit:policies';
const NAME = /^[A-Za-z0-9_.-]+$/;

/** An unknown policy or plan, or one whose stored definition is invalid. */
export class PolicyError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PolicyError';
  }
}

export function checkName(name, what = 'policy') {
  if (typeof name !== 'string' || !NAME.test(name)) throw new SpecError(`a ${what} name is letters, digits, '_', '.' and '-': '${name}'`);
  return name;
}

export function parsePlan(text) {
  const names = String(text).trim().split(/\s+/).filter(Boolean);
  if (!names.length) throw new SpecError('a plan names one policy or more');
  if (names.length > 16) throw new SpecError('a plan names at most 16 policies');
  if (new Set(names).size !== names.length) throw new SpecError('a plan names each policy once');
  names.forEach((n) => checkName(n));
  return names;
}

const attempt = (fn) => {
  try {
    return fn();
  } catch (error) {
    if (error instanceof SpecError) return error;
    throw error;
  }
};

const ok = (found, what) => {
  if (found instanceof SpecError) throw new PolicyError(`${what} is invalid in Redis: ${found.message}`);
  return found;
};

export class PolicySet {
  constructor({ version = null, policies = new Map(), plans = new Map(), overrides = new Map() } = {}) {
    Object.assign(this, { version, policies, plans, overrides });
  }

  static fromHash(fields) {
    const set = new PolicySet();
    for (const [name, value] of Object.entries(fields)) {
      const colon = name.indexOf(':');
      const kind = colon < 0 ? name : name.slice(0, colon);
      const rest = colon < 0 ? '' : name.slice(colon + 1);
      if (name === 'version') set.version = value;
      else if (kind === 'policy' && rest) set.policies.set(rest, attempt(() => Limit.parse(value)));
      else if (kind === 'plan' && rest) set.plans.set(rest, attempt(() => parsePlan(value)));
      else if (kind === 'override') {
        const at = rest.indexOf(':');
        if (at > 0 && at < rest.length - 1) set.overrides.set(`${rest.slice(0, at)}\u0000${rest.slice(at + 1)}`, attempt(() => Limit.parse(value)));
      }
    }
    return set;
  }

  /** `subject`'s override of `policy` if any, else the policy's own limit. */
  limit(policy, subject = null) {
    if (subject !== null) {
      const found = this.overrides.get(`${policy}\u0000${subject}`);
      if (found) return ok(found, `override of policy '${policy}' for '${subject}'`);
    }
    const found = this.policies.get(policy);
    if (!found) {
      const known = [...this.policies.keys()].sort();
      throw new PolicyError(`unknown policy '${policy}'${known.length ? ` (known: ${known.join(', ')})` : ' (no policies are defined)'}`);
    }
    return ok(found, `policy '${policy}'`);
  }

  plan(name) {
    const found = this.plans.get(name);
    if (!found) throw new PolicyError(`unknown plan '${name}'`);
    return ok(found, `plan '${name}'`);
  }
}

/** `<prefix>{<subject>}:<policy>`: a subject's policies share a Cluster slot. */
export function policyKey(prefix, subject, policy) {
  return `${prefix}{${subject}}:${policy}`;
}

export function fieldFor(kind, name, subject = null) {
  checkName(name, kind === 'plan' ? 'plan' : 'policy');
  if (kind === 'override') {
    if (!subject) throw new SpecError('an override names a subject');
    return `override:${name}:${subject}`;
  }
  return `${kind}:${name}`;
}

export const versionNow = () => (BigInt(Date.now()) * 1000000n + BigInt(process.hrtime()[1] % 1000000)).toString();
