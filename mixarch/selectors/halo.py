"""``halo``: HALO's layer selection (HypeNet, arXiv 2601.22156; used by MiniCPM-SALA).

Each layer l was scored with only that layer converted to its linear replacement: retrieval ``R_l`` and
commonsense ``CS_l`` (see :func:`mixarch.convert.halo.layer_swap_scores` to measure them). The importance of
keeping layer l as attention is

    importance_l = min(50, (max_j R_j - R_l) / (max_j CS_j - CS_l + 1e-10))

the retrieval lost by converting l relative to the commonsense lost. The ``keep`` most important layers (forced
layers included, as SALA forces the first and last) get ``keep_role``; the others ``other_role``. The
``jet-nemotron`` mode ranks by the retrieval drop alone, ``R_orig - R_l`` (``R_orig`` = ``max_j R_j`` unless
given).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from mixarch.hookspecs import hookimpl
from mixarch.selectors.base import Selection, normalize_index

IMPORTANCE_CAP = 50.0
EPS = 1e-10


class HaloParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    retrieval: list[float] = Field(min_length=1, description="R_l: retrieval score with only layer l converted")
    commonsense: list[float] | None = Field(None, description="CS_l: commonsense score with only layer l converted")
    keep: PositiveInt | None = Field(None, description="layers kept as attention (forced ones included)")
    keep_fraction: float | None = Field(None, gt=0, le=1)
    keep_role: str = "attention"
    other_role: str = "linear"
    force: list[int] = Field(default_factory=list, description="layer indices always kept (negative from the end)")
    mode: Literal["halo", "jet-nemotron"] = "halo"
    retrieval_original: float | None = Field(None, description="R of the unconverted model (jet-nemotron mode)")

    @model_validator(mode="after")
    def _check(self):
        if (self.keep is None) == (self.keep_fraction is None):
            raise ValueError("give exactly one of keep and keep_fraction")
        if self.mode == "halo" and self.commonsense is None:
            raise ValueError("commonsense: required in halo mode")
        if self.commonsense is not None and len(self.commonsense) != len(self.retrieval):
            raise ValueError(f"commonsense: {len(self.commonsense)} scores for {len(self.retrieval)} retrieval "
                             f"scores")
        return self


def halo_importance(retrieval: list[float], commonsense: list[float]) -> list[float]:
    """``min(50, (max R - R_l) / (max CS - CS_l + 1e-10))`` per layer."""
    r_max, cs_max = max(retrieval), max(commonsense)
    return [min(IMPORTANCE_CAP, (r_max - r) / (cs_max - cs + EPS)) for r, cs in zip(retrieval, commonsense)]


def select_halo(params: HaloParams, n_layers: int, roles: list[str]) -> Selection:
    if len(params.retrieval) != n_layers:
        raise ValueError(f"retrieval: {len(params.retrieval)} scores but model.n_layers is {n_layers}")
    if params.mode == "halo":
        importance = halo_importance(params.retrieval, params.commonsense)
    else:
        r_orig = params.retrieval_original if params.retrieval_original is not None else max(params.retrieval)
        importance = [r_orig - r for r in params.retrieval]
    keep = params.keep if params.keep is not None else round(params.keep_fraction * n_layers)
    if keep > n_layers:
        raise ValueError(f"keep: {keep} layers asked for but model.n_layers is {n_layers}")
    forced = sorted({normalize_index(i, n_layers, "force") for i in params.force})
    if len(forced) > keep:
        raise ValueError(f"force: {len(forced)} forced layers exceed keep={keep}")
    # rank the unforced layers by importance (ties: lower index first, so the result is deterministic)
    ranked = sorted((i for i in range(n_layers) if i not in forced), key=lambda i: (-importance[i], i))
    kept = set(forced) | set(ranked[: keep - len(forced)])
    rank_of = {i: r for r, i in enumerate(ranked)}
    info = [{"halo_importance": importance[i], "retrieval": params.retrieval[i],
             **({"commonsense": params.commonsense[i]} if params.commonsense is not None else {}),
             "forced": i in forced, "rank": rank_of.get(i)} for i in range(n_layers)]
    return Selection([params.keep_role if i in kept else params.other_role for i in range(n_layers)], info)


@hookimpl
def mixarch_register_selectors(register):
    register("halo", select_halo, HaloParams,
             description="HALO: keep the layers whose conversion costs most retrieval per commonsense")
