"""Limits kept in Redis, changed without a redeploy.

One hash (default key `ratelimit:policies`) holds them all:

    field                        value
    policy:<name>                a limit: CHECK's arguments after the key,
                                 `100 60 ALGORITHM TOKEN BURST 20`, and
                                 SHADOW to count without denying
    plan:<name>                  policies checked together (MCHECK), by
                                 name, space-separated: `rpm tpd`
    override:<policy>:<subject>  that subject's own limit for the policy:
                                 `500 60`
    version                      any value that changes with every change

Names of policies and plans are letters, digits, `_`, `.` and `-`;
subjects are any non-empty string. Running limiters poll `version` (one
HGET every `poll_interval_s`, 0.25 s by default) and read the whole hash
when it changed, and every `refresh_interval_s` (10 s) whatever it says,
so that an edit which left `version` alone arrives too. A change is one
command, from redis-cli:

    redis-cli HSET ratelimit:policies policy:api "500 60" version "$(date +%s%N)"

or from this package's CLI, which checks the limit first:

    redis-ratelimit policy set api "500 60"
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple, Union

from ._spec import Limit, SpecError

DEFAULT_KEY = "ratelimit:policies"
NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
MAX_PLAN_POLICIES = 16  # MCHECK's numkeys


class PolicyError(LookupError):
    """An unknown policy or plan, or one whose stored definition is invalid."""


def check_name(name: str, what: str = "policy") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise SpecError(f"a {what} name is letters, digits, '_', '.' and '-': {name!r}")
    return name


def parse_plan(text: Union[str, bytes]) -> Tuple[str, ...]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    names = tuple(text.split())
    if not names:
        raise SpecError("a plan names one policy or more")
    if len(names) > MAX_PLAN_POLICIES:
        raise SpecError(f"a plan names at most {MAX_PLAN_POLICIES} policies")
    if len(set(names)) != len(names):
        raise SpecError("a plan names each policy once")
    for name in names:
        check_name(name)
    return names


def version_now() -> str:
    """A new `version`: nanoseconds since the epoch."""
    return str(time.time_ns())


def _text(value) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class PolicySet:
    """The hash's content, parsed. A definition that does not parse is kept
    as its error, raised when that policy is used (never a silent default)."""

    version: Optional[str] = None
    policies: Mapping[str, Union[Limit, SpecError]] = field(default_factory=dict)
    plans: Mapping[str, Union[Tuple[str, ...], SpecError]] = field(default_factory=dict)
    overrides: Mapping[Tuple[str, str], Union[Limit, SpecError]] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, fields: Mapping) -> "PolicySet":
        version = None
        policies: Dict[str, Union[Limit, SpecError]] = {}
        plans: Dict[str, Union[Tuple[str, ...], SpecError]] = {}
        overrides: Dict[Tuple[str, str], Union[Limit, SpecError]] = {}
        for raw_name, raw_value in fields.items():
            name, value = _text(raw_name), _text(raw_value)
            kind, _, rest = name.partition(":")
            try:
                if name == "version":
                    version = value
                elif kind == "policy" and rest:
                    policies[rest] = _parse_limit(value)
                elif kind == "plan" and rest:
                    plans[rest] = _parse_plan_or_error(value)
                elif kind == "override":
                    policy, _, subject = rest.partition(":")
                    if policy and subject:
                        overrides[(policy, subject)] = _parse_limit(value)
            except SpecError as e:  # pragma: no cover - the parsers return errors
                raise e
        return cls(version, policies, plans, overrides)

    def limit(self, policy: str, subject: Optional[str] = None) -> Limit:
        """The limit of `policy` for `subject`: the subject's override if it
        has one, else the policy's own."""
        if subject is not None:
            found = self.overrides.get((policy, subject))
            if found is not None:
                return _ok(found, f"override of policy {policy!r} for {subject!r}")
        found = self.policies.get(policy)
        if found is None:
            raise PolicyError(f"unknown policy {policy!r}" + (
                f" (known: {', '.join(sorted(self.policies))})" if self.policies else
                " (no policies are defined)"))
        return _ok(found, f"policy {policy!r}")

    def plan(self, name: str) -> Tuple[str, ...]:
        found = self.plans.get(name)
        if found is None:
            raise PolicyError(f"unknown plan {name!r}" + (
                f" (known: {', '.join(sorted(self.plans))})" if self.plans else " (no plans are defined)"))
        return _ok(found, f"plan {name!r}")


def _parse_limit(value: str):
    try:
        return Limit.parse(value)
    except SpecError as e:
        return e


def _parse_plan_or_error(value: str):
    try:
        return parse_plan(value)
    except SpecError as e:
        return e


def _ok(found, what: str):
    if isinstance(found, SpecError):
        raise PolicyError(f"{what} is invalid in Redis: {found}")
    return found


def policy_key(prefix: str, subject: str, policy: str) -> str:
    """The key a policy counts on for a subject: `<prefix>{<subject>}:<policy>`.
    The braces are a hash tag: every policy of a subject is in one Cluster
    slot, so a plan's limits can be checked in one MCHECK."""
    return f"{prefix}{{{subject}}}:{policy}"


# What the CLI and `PolicyAdmin` write: field and value, one HSET with a
# new version.
def field_for(kind: str, name: str, subject: Optional[str] = None) -> str:
    check_name(name, "plan" if kind == "plan" else "policy")
    if kind == "override":
        if not subject:
            raise SpecError("an override names a subject")
        return f"override:{name}:{subject}"
    if kind not in ("policy", "plan"):
        raise ValueError(f"no such kind {kind!r}")
    return f"{kind}:{name}"


class PolicyAdmin:
    """Reads and writes the policy hash through a redis-py client (sync;
    a Redis or a RedisCluster). Every write is checked first, then made
    with one HSET that also sets a new `version`."""

    def __init__(self, client, key: str = DEFAULT_KEY):
        self.client = client
        self.key = key

    def _write(self, field_name: str, value: str) -> str:
        version = version_now()
        self.client.hset(self.key, mapping={field_name: value, "version": version})
        return version

    def set_policy(self, name: str, spec: str) -> Limit:
        limit = Limit.parse(spec)
        self._write(field_for("policy", name), limit.spec())
        return limit

    def set_plan(self, name: str, policies: Union[str, List[str]]) -> Tuple[str, ...]:
        names = parse_plan(policies if isinstance(policies, str) else " ".join(policies))
        self._write(field_for("plan", name), " ".join(names))
        return names

    def set_override(self, policy: str, subject: str, spec: str) -> Limit:
        limit = Limit.parse(spec)
        self._write(field_for("override", policy, subject), limit.spec())
        return limit

    def get(self, kind: str, name: str, subject: Optional[str] = None) -> Optional[str]:
        value = self.client.hget(self.key, field_for(kind, name, subject))
        return None if value is None else _text(value)

    def delete(self, kind: str, name: str, subject: Optional[str] = None) -> bool:
        field_name = field_for(kind, name, subject)
        removed = self.client.hdel(self.key, field_name)
        if removed:
            self.client.hset(self.key, "version", version_now())
        return bool(removed)

    def all(self) -> Dict[str, str]:
        return {_text(k): _text(v) for k, v in self.client.hgetall(self.key).items()}
