"""Save and load models: ``resolved.yaml`` (the explicit blueprint) beside ``model.safetensors``."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from mixarch.blueprint.load import validate
from mixarch.blueprint.resolve import revalidate
from mixarch.blueprint.schema import ResolvedBlueprint
from mixarch.errors import MixarchError
from mixarch.model.hybrid import TORCH_DTYPES, HybridLM

RESOLVED_FILE = "resolved.yaml"
WEIGHTS_FILE = "model.safetensors"


def resolved_yaml(resolved: ResolvedBlueprint) -> str:
    """The resolved blueprint as YAML text."""
    from mixarch import __version__

    header = f"# resolved blueprint written by mixarch {__version__}; the per-layer table is the truth\n"
    return header + yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def write_resolved(resolved: ResolvedBlueprint, directory: str | Path) -> Path:
    path = Path(directory) / RESOLVED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(resolved_yaml(resolved), encoding="utf-8")
    return path


def save(model: HybridLM, directory: str | Path) -> Path:
    """Write ``resolved.yaml`` and ``model.safetensors`` (which also embeds the resolved blueprint)."""
    directory = Path(directory)
    write_resolved(model.resolved, directory)
    text = resolved_yaml(model.resolved)
    save_model(model, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "mixarch.resolved": text})
    return directory


def read_resolved(directory: str | Path) -> ResolvedBlueprint:
    """The validated resolved blueprint stored in ``directory``."""
    from mixarch.blueprint.load import load_data

    path = Path(directory) / RESOLVED_FILE
    if not Path(directory).is_dir():
        raise MixarchError("not a directory written by `mixarch build --out` or a training export",
                           source=str(directory))
    data, provenance = load_data(path)
    return revalidate(validate(ResolvedBlueprint, data, provenance), provenance)


def load(directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> HybridLM:
    """Load a model saved by :func:`save` (or ``mixarch build --out``)."""
    resolved = read_resolved(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise MixarchError(f"no {WEIGHTS_FILE} beside {RESOLVED_FILE}", source=str(directory))
    with safe_open(str(weights), framework="pt") as f:
        stored = (f.metadata() or {}).get("mixarch.resolved")
    if stored is not None and yaml.safe_load(stored) != resolved.model_dump(mode="json"):
        raise MixarchError(f"{RESOLVED_FILE} does not match the blueprint stored in {WEIGHTS_FILE}",
                           source=str(directory))
    with torch.device("meta"):
        model = HybridLM(resolved)
    model.materialize("cpu").to(TORCH_DTYPES[resolved.model.dtype])
    try:
        missing, unexpected = load_model(model, str(weights), strict=True)
    except RuntimeError as err:
        raise MixarchError(f"weights do not fit the blueprint: {str(err).splitlines()[0]}",
                           source=str(weights)) from None
    return model.to(device=device, dtype=dtype) if dtype else model.to(device=device)
