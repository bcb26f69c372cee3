"""Build hook: generate the gRPC stubs from the .proto files before packaging (see gen_python.py)."""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        gen = runpy.run_path(str(Path(__file__).parent / "gen_python.py"))
        gen["generate"]()
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
