"""lenssample inside other tools: lm-evaluation-harness (:mod:`~lenssample.integrations.lm_eval`, which needs
``lm-eval`` installed and is imported on demand). transformers' ``model.generate(custom_generate=...)`` is served by
:func:`lenssample.api.decoder` (``lenssample.custom_generate``)."""
