"""Registers the redis-ratelimit:// storage schemes with `limits` when an
application imports `limits.storage`, so that Flask-Limiter and SlowAPI
apps switch to the module by their storage URI alone, with no import of
this package in the app.

`limits` finds a storage by scheme in a registry that a storage class
joins when its module is imported; it has no plugin entry points. The
package's wheel installs `redis_ratelimit_client.pth`, which Python runs
at start-up: it imports this small module (standard library only), which
adds one finder to `sys.meta_path`. Nothing else happens until
`limits.storage` is imported; then, once that module has run,
`redis_ratelimit_client.limits_storage` is imported, which registers the
schemes. Set REDIS_RATELIMIT_NO_LIMITS_HOOK=1 to leave `limits` alone.
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys

_TARGET = "limits.storage"


class _RegisterAfterLimitsStorage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        # Once: later imports of limits.storage find it in sys.modules, and
        # the lookup below must not come back here.
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def run_then_register(module):
            run(module)
            try:
                importlib.import_module("redis_ratelimit_client.limits_storage")
            except ImportError:
                # The package's own dependencies are missing: `limits` works
                # as without it, and naming the scheme says it is unknown.
                pass

        spec.loader.exec_module = run_then_register
        return spec


def install():
    if os.environ.get("REDIS_RATELIMIT_NO_LIMITS_HOOK") == "1":
        return
    if _TARGET in sys.modules:
        # Imported after limits.storage (never so at start-up): register now.
        importlib.import_module("redis_ratelimit_client.limits_storage")
    elif not any(isinstance(f, _RegisterAfterLimitsStorage) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterLimitsStorage())


install()
