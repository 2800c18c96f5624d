"""Parameter groups by layer family / role / index / name, with freezing (e.g. HALO stage 1: train only the
linear layers), turned into AdamW parameter groups."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from mixarch.errors import MixarchError
from mixarch.train.schema import OptimizerConfig, ParamGroup


@dataclass(frozen=True)
class ParamInfo:
    """Where a parameter sits: its name, and the block's index / role / family (None outside the blocks)."""

    name: str
    layer: int | None
    role: str | None
    family: str | None


def describe(model: nn.Module) -> list[tuple[ParamInfo, nn.Parameter]]:
    """Every parameter of a HybridLM (tied weights once) with its :class:`ParamInfo`."""
    out = []
    for name, param in model.named_parameters():
        parts = name.split(".")
        if parts[0] == "blocks":
            ctx = model.blocks[int(parts[1])].ctx
            out.append((ParamInfo(name, ctx.index, ctx.role, ctx.family), param))
        else:
            out.append((ParamInfo(name, None, None, None), param))
    return out


def matches(group: ParamGroup, info: ParamInfo) -> bool:
    return ((group.family is None or info.family in group.family)
            and (group.role is None or info.role in group.role)
            and (group.layers is None or info.layer in group.layers)
            and (group.name is None or fnmatchcase(info.name, group.name)))


def assign(model: nn.Module, groups: list[ParamGroup]) -> list[list[tuple[ParamInfo, nn.Parameter]]]:
    """Parameters per group (first match wins; the extra last list holds the unmatched ones). A group that
    matches nothing, or names a family / role / layer the model lacks, is an error."""
    params = describe(model)
    members: list[list] = [[] for _ in range(len(groups) + 1)]
    for info, param in params:
        index = next((i for i, g in enumerate(groups) if matches(g, info)), len(groups))
        members[index].append((info, param))
    for i, group in enumerate(groups):
        if not any(matches(group, info) for info, _ in params):
            raise MixarchError(f"matches no parameter ({why_empty(params)})", key=f"model.param_groups[{i}]")
    return members


def why_empty(params: list[tuple[ParamInfo, nn.Parameter]]) -> str:
    """What a selector could have matched."""
    families = sorted({i.family for i, _ in params if i.family is not None})
    roles = sorted({i.role for i, _ in params if i.role is not None})
    n_layers = 1 + max((i.layer for i, _ in params if i.layer is not None), default=-1)
    return (f"the model has families {', '.join(families)}; roles {', '.join(roles)}; layers 0..{n_layers - 1}; "
            f"names such as {params[0][0].name!r}")


def optimizer_groups(model: nn.Module, groups: list[ParamGroup], opt: OptimizerConfig) -> list[dict]:
    """Freeze what the groups say and return AdamW groups: per group, matrices with weight decay and vectors
    without; each dict has ``params``, ``lr``, ``weight_decay`` and ``name``."""
    out = []
    for i, members in enumerate(assign(model, groups)):
        group = groups[i] if i < len(groups) else ParamGroup()
        name = f"group{i}" if i < len(groups) else "default"
        if group.freeze:
            for _, param in members:
                param.requires_grad_(False)
            continue
        wd = opt.weight_decay if group.weight_decay is None else group.weight_decay
        for suffix, decay, chosen in (("decay", wd, [p for _, p in members if p.ndim >= 2]),
                                      ("no_decay", 0.0, [p for _, p in members if p.ndim < 2])):
            if chosen:
                out.append({"params": chosen, "lr": opt.lr * group.lr_scale, "weight_decay": decay,
                            "name": f"{name}/{suffix}"})
    if not out:
        raise MixarchError("every parameter is frozen; nothing to train", key="model.param_groups")
    return out
