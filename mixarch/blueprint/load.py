"""Load a blueprint file: YAML through OmegaConf (``base:`` inheritance, ``${...}`` interpolation,
``--set a.b=c`` overrides), then pydantic validation with errors that name the file and the key path.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from mixarch.blueprint.schema import Blueprint, ResolvedBlueprint
from mixarch.errors import BlueprintError, closest_first

OVERRIDE_SOURCE = "--set"


class Provenance:
    """Which file (or ``--set``) last defined each key path of a merged configuration."""

    def __init__(self) -> None:
        self._where: dict[tuple[str, ...], str] = {}
        self.root = "<blueprint>"

    def record(self, data: Any, source: str, prefix: tuple[str, ...] = ()) -> None:
        self._where[prefix] = source
        if isinstance(data, dict):
            for key, value in data.items():
                self.record(value, source, prefix + (str(key),))

    def source_of(self, loc: Sequence[Any]) -> str:
        """The source of the longest recorded prefix of ``loc``."""
        path = tuple(str(p) for p in loc)
        for n in range(len(path), -1, -1):
            if path[:n] in self._where:
                return self._where[path[:n]]
        return self.root


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise BlueprintError("file not found", source=str(path))
    if not path.is_file():
        raise BlueprintError("not a file", source=str(path))
    empty = BlueprintError("file is empty; expected a YAML mapping with at least `name`, `model` and `roles`",
                           source=str(path))
    if not path.read_text(encoding="utf-8").strip():
        raise empty
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BlueprintError(f"YAML syntax error: {problem}", source=where) from None
    except OmegaConfBaseException as err:
        raise BlueprintError(f"cannot load: {err}", source=str(path)) from None
    if not isinstance(cfg, DictConfig):
        raise BlueprintError("the top level must be a mapping of keys to values", source=str(path))
    if len(cfg) == 0:
        raise empty
    return OmegaConf.to_container(cfg, resolve=False)


def _load_chain(path: Path, provenance: Provenance, stack: tuple[Path, ...]) -> DictConfig:
    resolved = path.resolve()
    if resolved in stack:
        cycle = " -> ".join(str(p) for p in (*stack, resolved))
        raise BlueprintError(f"cyclic `base:` chain: {cycle}", source=str(path), key="base")
    data = _read_yaml(path)
    base = data.pop("base", None)
    merged = OmegaConf.create({})
    if base is not None:
        if not isinstance(base, str) or not base:
            raise BlueprintError("expected the path of another blueprint file (relative to this one)",
                                 source=str(path), key="base")
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        merged = _load_chain(base_path, provenance, (*stack, resolved))
    provenance.record(data, str(path))
    try:
        base_data = OmegaConf.to_container(merged, resolve=False)
        _drop_params_of_retyped(base_data, data)
        return OmegaConf.merge(OmegaConf.create(base_data), OmegaConf.create(data))
    except OmegaConfBaseException as err:
        raise BlueprintError(f"cannot merge onto base {base}: {err}", source=str(path)) from None


def _drop_params_of_retyped(base: dict, child: dict) -> None:
    """Where ``child`` gives a component another ``type`` than ``base`` does, the base's ``params`` belonged to
    the old type: drop them instead of merging them into the new type's (in place, in ``base``)."""
    for key, value in child.items():
        old = base.get(key)
        if not (isinstance(value, dict) and isinstance(old, dict)):
            continue
        if "type" in value and "type" in old and value["type"] != old["type"]:
            old.pop("params", None)
        _drop_params_of_retyped(old, value)


def _apply_overrides(cfg: DictConfig, overrides: Sequence[str], provenance: Provenance) -> DictConfig:
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise BlueprintError(f"expected KEY=VALUE (e.g. model.d_model=512), got {item!r}",
                                 source=OVERRIDE_SOURCE)
        key = item.split("=", 1)[0].strip()
        try:
            patch = OmegaConf.from_dotlist([item])
            cfg = OmegaConf.merge(cfg, patch)
        except OmegaConfBaseException as err:
            raise BlueprintError(f"cannot apply override {item!r}: {str(err).splitlines()[0]}",
                                 source=OVERRIDE_SOURCE, key=key) from None
        provenance.record(OmegaConf.to_container(patch, resolve=False), f"{OVERRIDE_SOURCE} {item}")
    return cfg


def load_data(path: str | Path, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], Provenance]:
    """The merged, interpolated plain-dict content of a blueprint file, and where each key came from."""
    path = Path(path)
    provenance = Provenance()
    provenance.root = str(path)
    cfg = _load_chain(path, provenance, ())
    cfg = _apply_overrides(cfg, overrides, provenance)
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        msg = str(err).splitlines()[0]
        raise BlueprintError(f"cannot resolve: {msg}", source=provenance.source_of(key.split(".") if key else ()),
                             key=key or None) from None
    return data, provenance


def load_blueprint(path: str | Path, overrides: Sequence[str] = ()) -> Blueprint | ResolvedBlueprint:
    """Load and validate a blueprint file, or a resolved one (``resolved.yaml``, which has ``layers``)."""
    data, provenance = load_data(path, overrides)
    cls = ResolvedBlueprint if "layers" in data and "roles" not in data else Blueprint
    return validate(cls, data, provenance)


def validate(cls: type[BaseModel], data: Any, provenance: Provenance, prefix: tuple[Any, ...] = (),
             context: dict[str, Any] | None = None) -> Any:
    """``cls.model_validate(data)`` with failures turned into a :class:`BlueprintError` naming file and key."""
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as err:
        raise validation_error(err, cls, provenance, prefix) from None


def validation_error(err: ValidationError, cls: type[BaseModel], provenance: Provenance,
                     prefix: tuple[Any, ...] = ()) -> BlueprintError:
    lines = []
    for e in err.errors(include_url=False)[:6]:
        loc = tuple(prefix) + tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        source = provenance.source_of(loc)
        lines.append(f"{source}: {key}: {_describe(e, cls, tuple(e['loc']))}")
    if err.error_count() > 6:
        lines.append(f"... and {err.error_count() - 6} more errors")
    return BlueprintError("\n".join(lines))


def _describe(e: dict[str, Any], cls: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind = e["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(cls, loc[:-1])
        hint = f"; expected one of: {', '.join(closest_first(str(loc[-1]), allowed))}" if allowed else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in e and kind not in ("model_type", "dict_type") and not isinstance(e["input"], (dict, list)):
        msg += f" (got {e['input']!r})"
    return msg


def _fields_at(cls: Any, loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the pydantic model reached by following ``loc`` from ``cls`` (None if unknown)."""
    tp: Any = cls
    items = list(loc)
    while True:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            models = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(models) != 1:
                return None
            tp = models[0]
            continue
        if origin in (dict, list):  # one location step for the key / index; the values' type is the last arg
            if not items:
                return None
            items.pop(0)
            tp = typing.get_args(tp)[-1]
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not items:
                return list(tp.model_fields)
            name = items.pop(0)
            if name not in tp.model_fields:
                return None
            tp = tp.model_fields[name].annotation
            continue
        return None
