"""lm-eval's own command line with lenssample as a model: ``lm_eval --model lenssample ...``.

lm-evaluation-harness 0.4 finds models only in its own registry (no plugin entry points). The start-up hook that
lenssample installs (``_lenssample_lm_eval``, run by ``lenssample-lm-eval.pth``) lists this class there as
``lenssample`` when lm-eval loads its models, so the plain ``lm_eval`` command works; ``lenssample-lm-eval`` is the
same command with the model registered explicitly (for environments where start-up files do not run)::

    lm_eval --model lenssample \\
        --model_args model=smollm2-135m-instruct,strategy=dola:layers=high,lens=DIR \\
        --tasks capitals_mc --include_path examples/lm_eval_task

``--model_args``: ``model`` (an embedded model name, a folder, a .gguf file or a hub id; default the embedded
SmolLM2), ``strategy`` (a spec; lists in brackets, ``dola:layers=[20,28]``, since lm-eval splits the arguments at
top-level commas), ``lens`` (``logit`` or a tuned-lens folder), ``dtype``, and :class:`LensSampleLM`'s options
(``max_length``, ``max_gen_toks``, ``floor_log_prob``, ``excluded_value``). From Python,
``lm_eval.simple_evaluate(model="lenssample", model_args={...})`` works too.
"""

from __future__ import annotations

from typing import Any

import torch
from lm_eval.api.registry import register_model

from lenssample.integrations.lm_eval import LensSampleLM


@register_model("lenssample")
class LensSampleCommandLineLM(LensSampleLM):
    """:class:`LensSampleLM` built from lm-eval's ``--model_args`` (strings) instead of objects."""

    def __init__(
        self,
        model: str | None = None,
        strategy: str | None = None,
        lens: str | None = None,
        dtype: str = "float32",
        device: str | None = None,
        batch_size: Any = None,
        max_batch_size: Any = None,
        **options: Any,
    ) -> None:
        from lenssample.lens.tuned import load_lens
        from lenssample.model.loading import load_model
        from lenssample.strategies.base import as_strategy

        chosen = as_strategy(strategy)  # a bad spec fails before the model loads
        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            device = "cpu"  # lm-eval's default is cuda:0 whether or not the machine has one
        loaded, tokenizer = load_model(model, dtype=dtype, device=device)
        super().__init__(
            loaded, tokenizer, strategy=chosen, lens=load_lens(lens, loaded) if lens else None, **options
        )


def main() -> None:
    """The ``lenssample-lm-eval`` console script: lm-eval's ``cli_evaluate`` with ``lenssample`` registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
