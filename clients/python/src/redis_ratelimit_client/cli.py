"""redis-ratelimit policy set|get|del|list: the policy hash, edited with
every limit checked before it is written.

    redis-ratelimit policy set api "100 60 ALGORITHM TOKEN BURST 20"
    redis-ratelimit policy set api "500 60" --subject customer-42   # an override
    redis-ratelimit policy set-plan pro rpm tpd
    redis-ratelimit policy get api
    redis-ratelimit policy del api [--subject customer-42]
    redis-ratelimit policy del-plan pro
    redis-ratelimit policy list

--url (default: $REDIS_URL, else redis://localhost:6379; redis+cluster://
for a cluster) and --key (default ratelimit:policies) choose the hash.
Exit status: 0 done, 1 not found, 2 refused (a bad limit or name).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from ._spec import SpecError
from .client import connect
from .policies import DEFAULT_KEY, PolicyAdmin


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="redis-ratelimit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://localhost:6379"))
    parser.add_argument("--key", default=DEFAULT_KEY, help="the policy hash (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default %(default)s)")
    groups = parser.add_subparsers(dest="group", required=True)
    policy = groups.add_parser("policy", help="named limits, plans and overrides")
    verbs = policy.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("set", help="set a policy, or a subject's override of it")
    p.add_argument("name")
    p.add_argument("spec", nargs="+", help='limit period [ALGORITHM …] [BURST …] [SHADOW], e.g. "100 60"')
    p.add_argument("--subject")
    p = verbs.add_parser("get", help="print a policy (or an override)")
    p.add_argument("name")
    p.add_argument("--subject")
    p = verbs.add_parser("del", help="delete a policy (or an override)")
    p.add_argument("name")
    p.add_argument("--subject")
    p = verbs.add_parser("set-plan", help="set a plan: policies checked together")
    p.add_argument("name")
    p.add_argument("policies", nargs="+")
    p = verbs.add_parser("del-plan", help="delete a plan")
    p.add_argument("name")
    verbs.add_parser("list", help="print every field of the hash")
    args = parser.parse_args(argv)

    client = connect(args.url, args.timeout)
    admin = PolicyAdmin(client, args.key)
    kind = "override" if getattr(args, "subject", None) else "policy"
    try:
        if args.verb == "set":
            if kind == "override":
                limit = admin.set_override(args.name, args.subject, " ".join(args.spec))
            else:
                limit = admin.set_policy(args.name, " ".join(args.spec))
            print(limit.spec())
        elif args.verb == "set-plan":
            print(" ".join(admin.set_plan(args.name, args.policies)))
        elif args.verb == "get":
            value = admin.get(kind, args.name, args.subject)
            if value is None:
                print(f"no {kind} {args.name}" + (f" for {args.subject}" if args.subject else ""), file=sys.stderr)
                return 1
            print(value)
        elif args.verb in ("del", "del-plan"):
            kind = "plan" if args.verb == "del-plan" else kind
            if not admin.delete(kind, args.name, getattr(args, "subject", None)):
                print(f"no {kind} {args.name}", file=sys.stderr)
                return 1
        elif args.verb == "list":
            for field, value in sorted(admin.all().items()):
                print(f"{field}\t{value}")
    except SpecError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 2
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
