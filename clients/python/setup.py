"""The package is configured in pyproject.toml; this file only adds
redis_ratelimit_client.pth to the wheel's top level (site-packages), which
pyproject.toml cannot express. The .pth makes `limits` know the
redis-ratelimit:// schemes without an import in the app (see
src/_redis_ratelimit_limits_hook.py)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "redis_ratelimit_client.pth"


class BuildWithPth(build_py):
    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, PTH), "w") as f:
            f.write("import _redis_ratelimit_limits_hook\n")

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildWithPth})
