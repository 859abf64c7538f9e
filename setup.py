"""Ships the top-level ``configs/`` and ``sweeps/`` folders inside the wheel as ``lit_transfer/configs`` and
``lit_transfer/sweeps`` (package data), so an installed ``lit-transfer`` finds them from any directory
(:mod:`lit_transfer.configs`). They stay at the top of the repository, where configs are edited and read by
the README's commands; everything else about the package is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("configs", "sweeps")


class BuildPyWithShippedConfigs(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's folders directly
        for kind in SHIPPED:
            for src in sorted((HERE / kind).rglob("*.yaml")):
                dst = Path(self.build_lib, "lit_transfer", kind, src.relative_to(HERE / kind))
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)


setup(cmdclass={"build_py": BuildPyWithShippedConfigs})
