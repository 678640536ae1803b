"""Everything is declared in pyproject.toml; this file only adds ``lenssample-lm-eval.pth`` to the installed files.

The ``.pth`` line imports ``_lenssample_lm_eval`` at Python start-up, which registers lenssample as lm-eval's
``--model lenssample`` (lm-eval has no plugin entry points). A regular wheel gets it from ``build_py``; an editable
install (``pip install -e``) from the editable wheel's strategy.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH_NAME = "lenssample-lm-eval.pth"
PTH_LINE = "import _lenssample_lm_eval\n"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, PTH_NAME), "w") as file:
            file.write(PTH_LINE)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH_NAME)]


class WithPth:
    """An editable-wheel strategy that also writes the ``.pth`` file into the wheel."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self.strategy.__exit__(*exc)

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        wheel.writestr(PTH_NAME, PTH_LINE)


class EditableWheelWithPth(editable_wheel):
    def _select_strategy(self, *args, **kwargs):
        return WithPth(super()._select_strategy(*args, **kwargs))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
