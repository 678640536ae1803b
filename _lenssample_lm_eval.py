"""Makes ``lm_eval --model lenssample ...`` work: lenssample's entry in lm-eval's model table.

lm-evaluation-harness 0.4 finds models only in its own table (``lm_eval.models``) and has no plugin entry points.
Python runs this module at start-up (the one line of ``lenssample-lm-eval.pth``, installed with lenssample, like
setuptools' ``distutils-precedence.pth``). It imports nothing but the standard library and does nothing until
``lm_eval.models`` is imported; then it adds ``lenssample`` to lm-eval's registry as a lazy entry, the way lm-eval
lists its own models, so lenssample itself is imported only when an ``lm_eval`` run asks for it.

Set ``LENSSAMPLE_LM_EVAL_HOOK=0`` to turn it off; ``lenssample-lm-eval`` does the same registration explicitly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

MODELS_MODULE = "lm_eval.models"
MODEL_NAME = "lenssample"
MODEL_CLASS = "lenssample.integrations.lm_eval_cli:LensSampleCommandLineLM"


def register() -> None:
    """Add ``lenssample`` to lm-eval's model registry (after ``lm_eval.models`` has run)."""
    try:
        from lm_eval.api import registry

        table = getattr(registry, "model_registry", None)
        if table is None:  # lm-eval before the lazy registry: the class registers itself when imported
            importlib.import_module(MODEL_CLASS.partition(":")[0])
        elif MODEL_NAME not in table:
            table.register(MODEL_NAME, target=MODEL_CLASS)
    except Exception as error:  # never break lm-eval's own models
        warnings.warn(f"lenssample could not add itself to lm-eval's models ({error!r}); "
                      "use the `lenssample-lm-eval` command instead", stacklevel=2)  # fmt: skip


class RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of ``lm_eval.models`` so :func:`register` runs after it."""

    def find_spec(self, name, path=None, target=None):  # noqa: D102 (importlib's protocol)
        if name != MODELS_MODULE:
            return None
        sys.meta_path.remove(self)  # once per process; the real finders locate the module
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def run_then_register(module) -> None:
            run_module(module)
            register()

        spec.loader.exec_module = run_then_register
        return spec


def install() -> None:
    """Put the import hook in place (unless turned off or lm-eval's models are already imported)."""
    if os.environ.get("LENSSAMPLE_LM_EVAL_HOOK", "1") == "0":
        return
    if MODELS_MODULE in sys.modules:
        register()
    elif not any(isinstance(finder, RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, RegisterAfterImport())


install()
