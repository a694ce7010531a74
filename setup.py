"""The compiled codec's extension modules, for the opt-in build (build_backend.py says how).

Everything else about the package is in pyproject.toml; without ``KUSHI_COMPILE`` this adds
nothing and the build is pure Python.
"""

from setuptools import setup

from build_backend import COMPILED_MODULES, compile_requested

ext_modules = []
if compile_requested():
    from mypyc.build import mypycify

    ext_modules = mypycify(
        # (mypy options first: the other kushi modules are read for their types, not checked)
        ["--ignore-missing-imports", "--follow-imports=silent", "--cache-dir=build/mypy_cache",
         *COMPILED_MODULES],
        opt_level="3",
        target_dir="build/mypyc",   # the generated C, in build/ (git-ignored), not the tree
        group_name="kushi_protocol",
    )

setup(ext_modules=ext_modules)
