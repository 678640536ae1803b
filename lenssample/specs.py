"""One syntax names every configurable object (strategies, schedules and their parts), and one registry builds it.

A *spec* is ``name`` or ``name:key=value,key=value``::

    dola                                  DoLa with its defaults
    dola:layers=high,alpha=0.2
    ensemble:layers=20,30,weights=0.3,0.7    a comma list continues the previous value: layers=[20, 30]
    dola:layers=[2,4,6]                   brackets group a list explicitly
    early-exit:measure=max-prob,threshold=0.9,min_layer=20   parameters of a part (the measure) are flattened

Values are JSON (numbers, ``true``/``false``, ``null``, ``[lists]``, ``"quoted strings"``) or bare strings. The same
object as a mapping (a TOML table, a JSON record) is ``{"name": "dola", "layers": "high"}``. Older spellings still
parse: ``name:key=value:key=value`` (colons between assignments).

Objects are frozen, keyword-only dataclasses deriving from :class:`Spec`; each family (strategies, schedules,
confidence measures, drafts) has one :class:`Registry`. ``Spec.to_dict``/``to_spec`` and ``Registry.build`` are
inverse: ``registry.build(obj.to_spec()) == obj``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from lenssample.validation import did_you_mean

_KEY = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
_NAME = re.compile(r"\s*([A-Za-z][A-Za-z0-9_.-]*)\s*(:|$)")


def parse_value(text: str) -> Any:
    """One value: JSON (numbers, true/false, null, lists, quoted strings), a comma list, or a bare string."""
    text = text.strip()
    with contextlib.suppress(json.JSONDecodeError):
        return json.loads(text)
    parts = _split_top(text, ",")
    if len(parts) > 1:
        return [parse_value(part) for part in parts if part.strip()]
    return {"true": True, "false": False, "none": None, "null": None}.get(text.lower(), text)


def _split_top(text: str, separators: str) -> list[str]:
    """Split at ``separators`` outside brackets and double quotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted:
            depth += (char in "[{(") - (char in "]})")
        if char in separators and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"dola:layers=high,alpha=0.2"`` -> ``("dola", {"layers": "high", "alpha": 0.2})``; ``ValueError`` for an
    empty name, or a part that is neither ``key=value`` nor the continuation of a list."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"spec {text!r} is empty; write a name such as 'final' or 'dola:layers=high'")
    name, _, rest = text.strip().partition(":")
    if not name.strip():
        raise ValueError(f"spec {text!r} has no name before ':'; write e.g. 'dola:layers=high'")
    raw: dict[str, list[str]] = {}
    key = None
    for part in _assignments(rest) if rest.strip() else []:
        if _KEY.match(part):
            key, _, value = part.partition("=")
            key = key.strip()
            if key in raw:
                raise ValueError(f"spec {text!r} sets {key!r} twice; set each parameter once")
            raw[key] = [value]
        elif key is not None and part.strip():
            raw[key].append(part)  # a comma list: continues the previous value
        elif part.strip():
            raise ValueError(f"spec {text!r}: {part.strip()!r} is not key=value, as in 'dola:layers=high'")
    params = {k: parse_value(v[0]) if len(v) == 1 else [parse_value(p) for p in v] for k, v in raw.items()}
    return name.strip(), params


def _assignments(rest: str) -> list[str]:
    """The comma-separated parts of a spec's parameters; a ``:`` also separates when ``key=`` follows it."""
    parts = []
    for part in _split_top(rest, ","):
        pieces = _split_top(part, ":")
        current = pieces[0]
        for piece in pieces[1:]:
            if _KEY.match(piece):
                parts.append(current)
                current = piece
            else:
                current += ":" + piece
        parts.append(current)
    return parts


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """``["layers=high", "alpha=0.2"]`` (the CLI's repeatable ``--set``) -> ``{"layers": "high", "alpha": 0.2}``."""
    params: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r} is not of the form key=value; write e.g. --set alpha=0.1")
        if key.strip() in params:
            raise ValueError(f"--set {item!r}: {key.strip()!r} is set twice; set each parameter once")
        params[key.strip()] = parse_value(value)
    return params


def split_specs(text: str, names: Sequence[str]) -> list[str]:
    """A comma-separated list of specs -> the specs: a part that is ``name:...`` or one of ``names`` starts a new
    spec, anything else continues the previous one (``"final,dola:layers=2,4"`` -> ``["final", "dola:layers=2,4"]``)."""
    specs: list[str] = []
    for part in _split_top(text, ","):
        match = _NAME.match(part)
        if not specs or (
            match and not _KEY.match(part) and (match.group(2) == ":" or match.group(1) in names)
        ):
            specs.append(part.strip())
        else:
            specs[-1] += "," + part
    return [s for s in specs if s]


def _format_value(value: Any) -> str:
    if isinstance(value, str) and value and re.fullmatch(r"[A-Za-z0-9_./~+-]+", value):
        if parse_value(value) == value:  # a bare word that reads back as itself
            return value
    return json.dumps(value, separators=(",", ":"))


def format_spec(name: str, params: Mapping[str, Any]) -> str:
    """``("dola", {"alpha": 0.2})`` -> ``"dola:alpha=0.2"`` (lists in brackets, so the result parses back)."""
    if not params:
        return name
    return name + ":" + ",".join(f"{key}={_format_value(value)}" for key, value in params.items())


def to_json(value: Any) -> Any:
    """A field value in JSON form: specs as dicts, tuples as lists, objects with ``__json__`` as that."""
    if isinstance(value, Spec):
        return value.to_dict()
    if hasattr(value, "__json__"):
        return value.__json__()
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    return value


class Registry(dict[str, type["Spec"]]):
    """Classes of one family by name (a dict), and :meth:`build` from a spec, a mapping or an object; ``kind`` is
    what the family is called in messages (``"strategy"``, ``"schedule"``)."""

    every: ClassVar[list[Registry]] = []  # every family, so that a name of one given for another is named as such

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        Registry.every.append(self)

    def register(self, cls: type[Spec]) -> type[Spec]:
        """Class decorator: make ``cls`` buildable by its ``name``."""
        if not isinstance(cls, type) or not issubclass(cls, Spec):
            raise TypeError(
                f"register_{self.kind}({cls!r}): pass a class deriving from lenssample's {self.kind} base class "
                f"(use it as a decorator: @register_{self.kind} above the class)"
            )
        if not isinstance(cls.name, str) or not cls.name or self.get(cls.name, cls) is not cls:
            raise ValueError(f"{self.kind} name {cls.name!r} is empty or already registered")
        self[cls.name] = cls
        return cls

    def lookup(self, name: Any) -> type[Spec]:
        """The class called ``name``; an unknown name raises with the closest known one."""
        if not isinstance(name, str) or name not in self:
            hint = " Pass the name alone, the parameters as keywords." if ":" in str(name) else ""
            other = next((family for family in Registry.every
                          if family is not self and isinstance(name, str) and name in family), None)  # fmt: skip
            if other is not None:
                hint += f" {name!r} is a {other.kind}: pass it as {other.kind}=... (generate, bench and eval take one)."
            raise ValueError(
                f"{self.kind}={name!r} is not {'a name (a string)' if not isinstance(name, str) else 'known'}."
                f"{did_you_mean(name, self)}{hint} Known {self.kind} names: {', '.join(sorted(self))}"
            )
        return self[name]

    def build(self, spec: Any) -> Spec:
        """An object from a spec string, a ``{"name": ...}`` mapping, or an object of this family (returned as is)."""
        if isinstance(spec, Spec) and spec.registry is self:
            return spec
        if isinstance(spec, str):
            name, params = parse_spec(spec)
        elif isinstance(spec, Mapping):
            params = dict(spec)
            if "name" not in params:
                raise ValueError(f"{self.kind} spec {dict(spec)!r} has no 'name'; add e.g. 'name': 'final'")
            name = params.pop("name")
        else:
            raise TypeError(
                f"{self.kind} must be a lenssample {self.kind} object or a spec such as "
                f"'{next(iter(self), 'name')}:key=value', got {type(spec).__name__}"
            )
        return self.lookup(name).from_params(**params)


class Spec:
    """Base of every configurable object: a frozen, keyword-only dataclass with a registered ``name``."""

    name: ClassVar[str] = ""
    registry: ClassVar[Registry]  # the family's registry
    # Fields holding an object of another family, by field name (their parameters are flattened into the spec
    # string: ``early-exit:measure=margin,threshold=0.3``).
    nested: ClassVar[Mapping[str, Registry]] = {}
    example: ClassVar[str] = ""  # a spec shown when a required parameter is missing
    #: Named sets of parameter values (published settings): ``preset=NAME`` in a spec; given parameters win.
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def from_preset(cls, preset: str, **params: Any) -> Spec:
        """The preset's parameters, replaced by any given in ``params``."""
        if preset not in cls.presets:
            names = ", ".join(cls.presets) or "(none)"
            raise ValueError(
                f"{cls.registry.kind} {cls.name!r} has no preset {preset!r}.{did_you_mean(preset, cls.presets)} "
                f"Its presets: {names}"
            )
        return cls.from_params(**{**cls.presets[preset], **params})

    @classmethod
    def from_params(cls, **params: Any) -> Spec:
        """Build from parameters as a spec or a mapping gives them (nested objects flattened or as mappings)."""
        if "preset" in params:
            return cls.from_preset(params.pop("preset"), **params)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for field_name, registry in cls.nested.items():
            value = params.get(field_name, _default(fields[field_name]))
            if isinstance(value, Mapping) or (isinstance(value, str) and ":" in value):
                params[field_name] = registry.build(value)
                continue
            inner = registry.lookup(value) if isinstance(value, str) else type(value)
            if not dataclasses.is_dataclass(inner):
                continue  # no value and no default: the constructor says what is missing
            keys = [f.name for f in dataclasses.fields(inner) if f.name in params and f.name not in fields]
            if isinstance(value, str) or keys:
                base = {} if isinstance(value, str) else {k: getattr(value, k) for k in _field_names(inner)}
                params[field_name] = inner.from_params(**{**base, **{k: params.pop(k) for k in keys}})
        inner_keys = {k for reg in cls.nested.values() for c in reg.values() for k in _field_names(c)}
        for key in params:
            if key not in fields:
                known = list(fields) + sorted(inner_keys - set(fields))
                raise ValueError(
                    f"{cls.registry.kind} {cls.name!r} has no parameter {key!r}.{did_you_mean(key, known)} "
                    f"Its parameters: {', '.join(known) or '(none)'}"
                )
        missing = [name for name, f in fields.items() if _is_required(f) and name not in params]
        if missing:
            example = f" For example: {cls.example}" if cls.example else ""
            raise ValueError(f"{cls.registry.kind} {cls.name!r} needs {', '.join(missing)}=...{example}")
        return cls(**params)

    @classmethod
    def from_dict(cls, spec: Any) -> Spec:
        """Build any object of this family from ``{"name": ..., **parameters}`` (or a spec string)."""
        return cls.registry.build(spec)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **parameters}`` in JSON form (nested objects as their own dicts)."""
        values = {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {"name": self.name, **values}

    def to_spec(self) -> str:
        """The spec string: the name and every parameter that differs from its default (nested ones flattened)."""
        params: dict[str, Any] = {}
        for key, value in _changed(self).items():
            nested = getattr(self, key)
            params.update({key: nested.name, **_changed(nested)} if key in self.nested else {key: value})
        return format_spec(self.name, params)

    def __str__(self) -> str:
        return self.to_spec()


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _field_names(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _changed(obj: Spec) -> dict[str, Any]:
    """The parameters of ``obj`` (JSON form) that differ from its class defaults, required ones and nested objects
    always included."""
    return {
        f.name: to_json(getattr(obj, f.name))
        for f in dataclasses.fields(obj)  # type: ignore[arg-type]
        if _is_required(f) or f.name in obj.nested or to_json(getattr(obj, f.name)) != to_json(_default(f))
    }
