"""Checks of user input at the API boundary: one set of checks, one message style.

Every message names the value as the user wrote it (``owner: field=value``), says what is wrong, and, where there is
one, the fix. Values may come from Python (ints, floats, tuples) or from spec strings and TOML (JSON numbers,
strings), so the checks accept both and return a normal form (``int``, ``float``, ``str``).
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch


def did_you_mean(word: Any, options: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``options``, or ``""``."""
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(field: str, owner: str, value: Any, problem: str, fix: str = "") -> ValueError:
    """``owner: field=value <problem>. <fix>``, the one message style of this module."""
    return ValueError(f"{f'{owner}: ' if owner else ''}{field}={value!r} {problem}. {fix}".rstrip())


def check_int(
    value: Any, *, field: str, owner: str = "", low: int | None = None, high: int | None = None, fix: str = ""
) -> int:
    """An integer in ``[low, high]`` (``bool`` is refused: ``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        rule = f"an integer >= {low}" if low is not None and high is None else "an integer"
        raise _fail(field, owner, value, f"must be {rule}", fix)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        rule = f">= {low}" if high is None else f"in {low}..{high}" if low is not None else f"<= {high}"
        raise _fail(field, owner, value, f"must be an integer {rule}", fix)
    return value


def check_number(
    value: Any,
    *,
    field: str,
    owner: str = "",
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    fix: str = "",
) -> float:
    """A finite real number in the interval (closed unless ``low_open``/``high_open``), returned as ``float``.

    NaN and infinities are always refused: a strategy hyperparameter or a sampling setting of ``inf`` is a typo, not
    a request.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise _fail(field, owner, value, "must be a number", fix)
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or math.isinf(value):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise _fail(field, owner, value, f"is outside {interval}", fix)
    return value


def check_bool(value: Any, *, field: str, owner: str = "") -> bool:
    """``True`` or ``False`` (no truthiness: ``"false"`` is not ``True``)."""
    if not isinstance(value, bool):
        raise _fail(field, owner, value, "must be true or false")
    return value


def check_text(text: str, *, field: str) -> str:
    """A string that is valid Unicode text: a lone surrogate (a non-UTF-8 byte of a command line or file, decoded
    with ``surrogateescape``) cannot be tokenized."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{field} {text!r:.60} is not valid UTF-8 text (character {err.start} is a stray byte); pass UTF-8 text"
        ) from None
    return text


def check_choice(value: Any, choices: Iterable[str], *, field: str, owner: str = "") -> str:
    """One of ``choices``; otherwise an error listing them, with the closest as a suggestion."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices).strip()
        raise _fail(field, owner, value, f"is not one of {', '.join(map(repr, choices))}", hint)
    return value


_TOKEN_DTYPES = (torch.long, torch.int32, torch.int16)


def _check_dense(tensor: torch.Tensor, name: str) -> None:
    """Refuse a sparse tensor, or one on the ``meta`` device (shapes only, no values), naming ``name``: both would
    fail deep inside the model (or in a check reading their values) instead of here."""
    if tensor.layout != torch.strided:
        raise TypeError(f"{name} is a {tensor.layout} tensor; pass a dense tensor ({name}.to_dense())")
    if tensor.is_meta:
        raise ValueError(
            f"{name} is on the meta device (shapes only, no values); pass a tensor on the model's device, e.g. "
            f"{name}.to('cpu') with real values"
        )


def check_token_ids(
    input_ids: Any, vocab_size: int, *, name: str = "input_ids", min_length: int = 1
) -> torch.Tensor:
    """``[batch, seq]`` integer token ids inside the vocabulary (a ``[seq]`` tensor gains a batch dimension).

    ``TypeError`` for a tensor that is not of integers or not dense; ``ValueError`` for a tensor on the meta device,
    a wrong shape, fewer than ``min_length`` positions, or an id outside ``0..vocab_size - 1``.
    """
    if isinstance(input_ids, torch.Tensor):
        _check_dense(input_ids, name)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in _TOKEN_DTYPES:
        raise TypeError(
            f"{name} must be a LongTensor of token ids (got {type(input_ids).__name__}"
            f"{' of ' + str(input_ids.dtype) if isinstance(input_ids, torch.Tensor) else ''}); tokenize text with "
            "the model's tokenizer first"
        )
    ids = input_ids[None] if input_ids.dim() == 1 else input_ids
    if ids.dim() != 2 or ids.shape[0] == 0 or ids.shape[1] < min_length:
        raise ValueError(
            f"{name} has shape {tuple(input_ids.shape)}; pass [batch, seq] token ids with seq >= {min_length}"
        )
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        raise ValueError(
            f"{name} contains token id {int(ids[bad][0])}, outside the model's vocabulary 0..{vocab_size - 1}; "
            "tokenize with this model's tokenizer"
        )
    return ids.long()


def check_attention_mask(
    attention_mask: Any, input_ids: torch.Tensor, *, padding: str = "any"
) -> torch.Tensor | None:
    """A ``[batch, seq]`` mask of 0/1 of ``input_ids``' shape with a token in every row (``None`` passes through).
    ``padding="left"`` also requires every row's zeros to come before its ones (what decoding needs); ``"any"``
    allows left and right padding (scoring)."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor of 0/1, got {type(attention_mask).__name__}")
    _check_dense(attention_mask, "attention_mask")
    mask = attention_mask[None] if attention_mask.dim() == 1 else attention_mask
    if mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}; "
            "pass a [batch, seq] mask of 1 (token) / 0 (padding)"
        )
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("attention_mask holds values other than 0 and 1; pass 1 for tokens, 0 for padding")
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        mask = mask.long()
    if bool((mask.sum(-1) == 0).any()):
        raise ValueError("attention_mask has a row of zeros (an empty prompt); give every row a token")
    if padding == "left" and bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError(
            "attention_mask has padding after a token (right padding); decoding appends tokens at the end of each "
            "row, so pad on the left (tokenizer.padding_side = 'left') or pass the prompts as a list of strings"
        )
    return mask.to(input_ids.device)


def check_callables(value: Any, *, field: str, example: str) -> list:
    """``None`` or a list (or other iterable, not a string) of callables, e.g. transformers' logits processors or
    stopping criteria; returned as a list."""
    if value is None:
        return []
    items = list(value) if isinstance(value, Iterable) and not isinstance(value, (str, bytes)) else None
    bad = value if items is None else next((item for item in items if not callable(item)), None)
    if items is None or bad is not None:
        raise TypeError(
            f"{field} must be a list of callables such as {example}, got {type(value).__name__}"
            f"{'' if items is None else ' holding ' + type(bad).__name__} {bad!r:.40}; pass [{example}]"
        )
    return items


def check_generator(generator: Any, device: torch.device) -> torch.Generator | None:
    """``None`` or a ``torch.Generator`` on ``device``'s type (the model's): sampling draws on the device of the
    probabilities, and a generator elsewhere (or on ``meta``) fails deep inside ``torch.multinomial``."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__} {generator!r:.40}; pass "
            "torch.Generator(device=...).manual_seed(n), or seed=n"
        )
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is on device {str(generator.device)!r} but the model is on {str(device)!r}; create it there: "
            f"torch.Generator(device={str(device)!r}), or pass seed=n"
        )
    return generator


def check_next_token_logits(logits: torch.Tensor, *, source: str) -> torch.Tensor:
    """``logits: [rows, vocab]`` must be a proper distribution per row: no NaN, no ``+inf``, not all ``-inf``
    (``source``: who produced them, for the message, e.g. the strategy's spec)."""
    bad = ~torch.isfinite(logits).any(-1) | torch.isnan(logits).any(-1) | torch.isposinf(logits).any(-1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"{source} produced next-token logits with a NaN, +inf or an all -inf row (row {row}); the inputs or "
            "the settings give no valid distribution. Check the model's outputs and the strategy's parameters, "
            "and report it with the strategy's spec if they are sound"
        )
    return logits


def _check_writable(target: Path, name: str) -> None:
    """Create a temporary file in folder ``target``, or open file ``target`` for appending (writes nothing):
    ``os.access`` says yes to root on a read-only mount and under /proc, so only a real write attempt tells."""
    try:
        tempfile.TemporaryFile(dir=target).close() if target.is_dir() else open(target, "ab").close()
    except OSError as err:
        raise ValueError(f"{name} is not writable ({err.strerror}); choose another location") from None


def check_lens_logits(
    lens_logits: torch.Tensor, layers: Sequence[int], *, source: str, fix: str | Callable[[], str]
) -> None:
    """Refuse ``lens_logits: [..., n_layers, vocab]`` holding NaN, ``+inf`` or a row without a finite value
    (``-inf`` alone marks an excluded token), naming ``source``, the first such layer of ``layers`` and ``fix``
    (a callable: called on failure only).
    One reduction when all is well: the row maxima, which NaN propagates to."""
    top = lens_logits.amax(dim=-1)
    if not bool((finite := (top > -math.inf) & (top < math.inf)).all()):
        broken = (~finite).reshape(-1, top.shape[-1]).any(0)
        raise ValueError(
            f"{source}: the lens logits of layer {list(layers)[int(broken.nonzero()[0])]} hold NaN or +inf (or no "
            f"finite value in a row); {fix() if callable(fix) else fix}"
        )


def check_output_file(
    path: Any, *, suffixes: Iterable[str] | None = None, field: str = "output path"
) -> Path:
    """A file path that can be written: a known extension (when ``suffixes``), not a folder, in an existing
    writable folder. Checked before any work, so that no result is lost at the end."""
    out = Path(path).expanduser()
    suffixes, name = tuple(suffixes or ()), f"{field} {str(out)!r}"
    if out.is_dir():  # first: a folder's name has no extension, and "is a folder" is the better message
        raise ValueError(f"{name} is a folder; pass a file name inside it")
    if suffixes and out.suffix.lower() not in suffixes:
        raise ValueError(f"{name} has extension {out.suffix or '(none)'!r}; use one of {', '.join(suffixes)}")
    if not out.parent.is_dir():
        problem = "is a file, not a folder" if out.parent.exists() else "does not exist; create it first"
        raise ValueError(f"{name}: folder {str(out.parent)!r} {problem}")
    _check_writable(out if out.exists() else out.parent, name)
    return out


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any] | None:
    """What identifies a tokenizer's vocabulary: its size, BOS and EOS ids, and a short SHA-256 of its tokens in id
    order (``None`` for a tokenizer without ``get_vocab``). Cached on the tokenizer while those ids and its size
    stay the same (hashing Gemma's 262k tokens takes about half a second)."""
    if not callable(getattr(tokenizer, "get_vocab", None)):
        return None
    ids = {"tokens": len(tokenizer), "bos_token_id": getattr(tokenizer, "bos_token_id", None),
           "eos_token_id": getattr(tokenizer, "eos_token_id", None)}  # fmt: skip
    cached = tokenizer.__dict__.get("_lenssample_fingerprint")
    if cached is None or any(cached[key] != value for key, value in ids.items()):
        vocab = tokenizer.get_vocab()
        digest = hashlib.sha256("\n".join(sorted(vocab, key=vocab.__getitem__)).encode()).hexdigest()[:16]
        cached = tokenizer.__dict__["_lenssample_fingerprint"] = {**ids, "vocab_sha256": digest}
    return cached


def check_tokenizer(model: Any, tokenizer: Any, vocab_size: int | None = None) -> None:
    """Refuse a ``tokenizer`` (``None`` passes) that does not belong to ``model``: more tokens than its vocabulary
    (``vocab_size``, default the unembedding's rows), a BOS/EOS/PAD/UNK id outside it, or, for a model from
    :func:`lenssample.load_model`, a fingerprint (:func:`tokenizer_fingerprint`) other than its own tokenizer's.

    A tokenizer with fewer tokens than the vocabulary passes: many models pad their embedding (to a multiple of
    64 or 128, or further), so only the fingerprint tells two models of different vocabularies apart.
    """
    if tokenizer is None:
        return
    if isinstance(tokenizer, (str, bytes, Path)):  # a name or folder where the object belongs
        raise TypeError(
            f"tokenizer must be a tokenizer object (the one lenssample.load_model(...) returned with the model), "
            f"got {type(tokenizer).__name__} {tokenizer!r:.40}"
        )
    vocab_size = vocab_size or int(model.get_output_embeddings().weight.shape[0])
    fix = "pass the tokenizer that lenssample.load_model(...) returned with the model"
    apart = f"they do not belong together; {fix}"
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else 0
    if size > vocab_size:
        raise ValueError(f"tokenizer has {size} tokens but the model's vocabulary has {vocab_size}: {apart}")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if is_int(value) and not 0 <= value < vocab_size:
            raise ValueError(f"tokenizer's {name}={value} is outside the model's vocabulary 0..{vocab_size - 1}: "
                             f"{apart}")  # fmt: skip
    recorded = getattr(model, "lenssample_tokenizer", None)
    actual = tokenizer_fingerprint(tokenizer) if recorded else None
    if actual is not None and actual != recorded:
        key = next(k for k in recorded if recorded[k] != actual.get(k))
        raise ValueError(
            f"tokenizer does not belong to this model: it has {key}={actual.get(key)!r}, but the model was loaded "
            f"with a tokenizer of {key}={recorded[key]!r}; {fix}"
        )


def check_output_folder(path: Any, *, field: str = "output folder") -> Path:
    """A folder that exists or can be created (not created here): every existing part of the path a folder, the
    deepest existing one writable. Checked before any work, so that no result is lost at the end."""
    out = Path(path).expanduser()
    name, existing = f"{field} {str(out)!r}", next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == out else f": {str(existing)!r}"
        raise ValueError(f"{name}{where} is a file, not a folder; pass a folder path")
    _check_writable(existing, name)
    return out


def check_threads(value: Any, *, field: str = "threads") -> int:
    """A torch thread count: an integer from 1 to 4x this machine's CPU cores (``os.cpu_count()``; more threads than
    cores only slow a run down, and thousands exhaust the process's memory and end it without a message). A config
    written for a bigger machine still runs here."""
    cores = os.cpu_count() or 1
    fix = f"This machine has {cores} CPU cores; use at most {4 * cores} threads, best {cores}."
    return check_int(value, field=field, low=1, high=4 * cores, fix=fix)


def check_device(device: Any, *, field: str = "device") -> torch.device:
    """A torch device that exists on this machine (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise _fail(field, "", device, "is not a torch device", "Use e.g. cpu or cuda") from None
    if dev.type == "meta":
        raise _fail(field, "", device, "holds no data (shapes only); nothing can run there", "Use cpu or cuda")
    backend = getattr(torch, dev.type, None)
    count = backend.device_count() if dev.type != "cpu" and hasattr(backend, "device_count") else None
    if count is not None and (dev.index or 0) >= count:
        raise _fail(
            field, "", device, f"is not available: torch sees {count} {dev.type} device(s) here", "Use cpu"
        )
    return dev


def check_length(model: Any, length: int, max_new_tokens: int = 0, *, window: int | None = None) -> None:
    """Refuse ``length`` positions (plus ``max_new_tokens`` to generate) past the model's maximum positions
    (``config.max_position_embeddings``), before any model work; with ``window`` (a text read in windows), only a
    window larger than the model's positions is refused."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if window is not None and isinstance(limit, int) and min(window, length) > limit:
        raise ValueError(f"window={window} is more than this model's {limit} positions (max_position_embeddings); "
                         f"pass window <= {limit}")  # fmt: skip
    if not isinstance(limit, int) or window is not None or length + max_new_tokens <= limit:
        return
    if max_new_tokens and length < limit:
        raise ValueError(
            f"the prompt ({length} tokens) plus max_new_tokens={max_new_tokens} exceeds this model's "
            f"{limit} positions; shorten the prompt or pass max_new_tokens <= {limit - length}"
        )
    if max_new_tokens:
        raise ValueError(
            f"the prompt has {length} tokens, at least this model's {limit} positions (max_position_embeddings), "
            f"leaving none to generate; shorten it to at most {limit - 1} tokens"
        )
    raise ValueError(
        f"the input has {length} tokens, more than this model's {limit} positions (max_position_embeddings); "
        f"split it, or read it in windows of at most {limit} tokens (window= of score, trajectory and "
        "layer_statistics)"
    )
