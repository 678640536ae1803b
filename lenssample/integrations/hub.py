"""Hub-style decoders: a lenssample strategy as a ``custom_generate`` folder.

transformers 5 runs ``model.generate(inputs, custom_generate=REPO_OR_DIR, trust_remote_code=True)`` by importing
``custom_generate/generate.py`` from that repository or folder and calling its ``generate(model, **arguments)``
with ``generate``'s own arguments. :func:`export_decoder` writes such a folder for a strategy (or schedule): its
``generate`` builds :func:`lenssample.custom_generate` from the spec and hands everything else back to
``model.generate``, so processors, stopping criteria, streamers and ``max_new_tokens`` behave as with the callable,
and the tokens equal :func:`lenssample.generate`'s with the same settings. The folder is uploadable as is
(``custom_generate/requirements.txt`` names lenssample; transformers checks it is installed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from lenssample.lens.formats import looks_like_hub_id
from lenssample.schedules.base import as_schedule, check_pair
from lenssample.strategies.base import as_strategy
from lenssample.validation import check_output_folder

_GENERATE = '''"""lenssample decoder ({description}), written by `lenssample export-decoder`.

Use: model.generate(inputs, custom_generate=<this folder or its hub repo>, trust_remote_code=True, ...)
"""

import lenssample

STRATEGY = {strategy!r}
SCHEDULE = {schedule!r}
LENS = {lens!r}
COMPILE = {compile!r}


def generate(model, *args, **kwargs):
    """``model.generate``'s arguments, decoded with lenssample's {description}."""
    decode = lenssample.custom_generate(STRATEGY, schedule=SCHEDULE, lens=LENS, compile=COMPILE)
    return model.generate(*args, custom_generate=decode, **kwargs)
'''

_CARD = """---
library_name: transformers
tags:
- custom_generate
- lenssample
---

# lenssample decoder: {description}

Decodes from a language model's intermediate layers with lenssample (`{spec}`{lens_note}).
Written by `lenssample export-decoder`.

```python
out = model.generate(input_ids, custom_generate="THIS_FOLDER_OR_REPO", trust_remote_code=True, max_new_tokens=32)
```

Every `generate` setting (sampling, processors, stopping criteria, streamers) is honoured; the tokens equal
`lenssample.generate(model, input_ids, "{spec}")`'s with the same settings. Needs `pip install lenssample` (see
`custom_generate/requirements.txt`); models: any architecture lenssample supports.
"""


def export_decoder(
    directory: str | Path,
    strategy: object = None,
    *,
    schedule: object = None,
    lens: str | None = None,
    compile: bool = False,
) -> Path:
    """Write a ``custom_generate`` folder decoding with ``strategy`` (or ``schedule``) into ``directory``.

    Args:
        directory: the folder to write (created; its ``custom_generate/`` and ``README.md`` are replaced).
        strategy: a strategy object or spec (default ``final``).
        schedule: a schedule object or spec (with the final-layer strategy only).
        lens: ``"logit"`` (default) or a tuned-lens folder or hub id, stored as given (a folder must exist where
            the decoder runs).
        compile: decode with the compiled step.

    Returns:
        The folder's path.
    """
    chosen, plan = as_strategy(strategy), as_schedule(schedule)
    check_pair(chosen, plan)
    if lens is not None and not isinstance(lens, str):
        raise TypeError(
            f"lens must be 'logit', a tuned-lens folder or a hub id (a string), got {type(lens).__name__}"
        )
    if lens == "tuned":  # load_model's name for the cached lens means nothing inside model.generate
        raise ValueError(
            "lens='tuned' names a model's cached lens only for models from lenssample.load_model; give the folder "
            "(lenssample train-lens saves it in ~/.cache/lenssample/lenses/<model>) or a hub id"
        )
    if lens not in (None, "logit") and not looks_like_hub_id(lens) and not Path(lens).expanduser().is_dir():
        warnings.warn(
            f"lens {lens!r} is not a folder here: the decoder loads it where it runs (a folder there, or a hub id)",
            stacklevel=2,
        )
    spec = plan.to_spec() if plan is not None else chosen.to_spec()
    description = f"{'schedule' if plan is not None else 'strategy'} {spec}"
    folder = check_output_folder(directory, field="directory")
    code = folder / "custom_generate"
    code.mkdir(parents=True, exist_ok=True)
    (code / "generate.py").write_text(
        _GENERATE.format(
            description=description,
            strategy=chosen.to_spec(),
            schedule=None if plan is None else plan.to_spec(),
            lens=lens,
            compile=bool(compile),
        )
    )
    (code / "requirements.txt").write_text("lenssample\n")
    lens_note = f", lens `{lens}`" if lens else ""
    (folder / "README.md").write_text(_CARD.format(description=description, spec=spec, lens_note=lens_note))
    return folder
