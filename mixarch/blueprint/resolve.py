"""Resolve a blueprint into its explicit per-layer table, validating every component against its plugin."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mixarch.blueprint.load import Provenance, validate
from mixarch.blueprint.schema import Blueprint, Component, LayerEntry, ResolvedBlueprint
from mixarch.errors import BlueprintError, MixarchError
from mixarch.plugins import PluginHost, get_host
from mixarch.registry import Dims, Registry, Spec


def dims_of(model) -> Dims:
    """The :class:`Dims` of a blueprint's ``model`` section."""
    return Dims(d_model=model.d_model, n_layers=model.n_layers, vocab_size=model.vocab_size,
                dtype_bytes=model.dtype_bytes)


@dataclass
class ValidatedComponent:
    """A component reference checked against its registry: the spec and the validated params model."""

    spec: Spec
    params: BaseModel

    def entry(self) -> Component:
        return Component(type=self.spec.name, params=self.params.model_dump(mode="json"))


def check_component(ref: Component, registry: Registry, loc: tuple[str, ...], provenance: Provenance,
                    context: dict[str, Any], type_key: str = "type") -> ValidatedComponent:
    """Look ``ref.type`` up in ``registry`` and validate ``ref.params`` with the plugin's params model.

    Every params model is validated with the context ``{"dims": Dims, "role": str, "family": str}`` (the family
    of the layer's mixer), so derived defaults can depend on the model's sizes.
    """
    try:
        spec = registry.get(ref.type)
    except MixarchError as err:
        raise BlueprintError(err.message, source=provenance.source_of(loc + (type_key,)),
                             key=".".join(loc + (type_key,))) from None
    if hasattr(spec, "family"):  # a mixer's params see their own family, like positional and FFN params do
        context = {**context, "family": spec.family}
    params = validate(spec.params_model, ref.params, provenance, loc + ("params",), context=context)
    return ValidatedComponent(spec, params)


def resolve(bp: Blueprint, provenance: Provenance | None = None, host: PluginHost | None = None
            ) -> ResolvedBlueprint:
    """Validate every component of ``bp`` and assign a role to each layer; returns the explicit table."""
    host = host or get_host()
    provenance = provenance or Provenance()
    dims = dims_of(bp.model)
    n_layers = bp.model.n_layers

    roles_per_layer, info = _select(bp, host, provenance)
    unknown = sorted({r for r in roles_per_layer if r not in bp.roles})
    if unknown:
        raise BlueprintError(f"assigns role(s) {', '.join(map(repr, unknown))}, not defined under roles "
                             f"(defined: {', '.join(bp.roles)})", source=provenance.source_of(("layout",)),
                             key="layout")

    built: dict[str, tuple[ValidatedComponent, ValidatedComponent, ValidatedComponent]] = {}
    for role, spec in bp.roles.items():
        context = {"dims": dims, "role": role}
        mixer = check_component(spec.mixer, host.mixers, ("roles", role, "mixer"), provenance, context)
        pos_ref, pos_loc = (spec.positional, ("roles", role, "positional")) if spec.positional else \
            (bp.positional, ("positional",))
        ffn_ref, ffn_loc = (spec.ffn, ("roles", role, "ffn")) if spec.ffn else (bp.ffn, ("ffn",))
        context["family"] = mixer.spec.family
        positional = check_component(pos_ref, host.positionals, pos_loc, provenance, context)
        ffn = check_component(ffn_ref, host.ffns, ffn_loc, provenance, context)
        built[role] = (mixer, positional, ffn)

    layers = []
    for index in range(n_layers):
        role = roles_per_layer[index]
        mixer, positional, ffn = built[role]
        layers.append(LayerEntry(index=index, role=role, mixer=mixer.entry(), family=mixer.spec.family,
                                 positional=positional.entry(), ffn=ffn.entry(),
                                 info=info[index] if info else {}))
    return ResolvedBlueprint(name=bp.name, description=bp.description, model=bp.model, layers=layers,
                             layout=bp.layout, train=bp.train)


def _select(bp: Blueprint, host: PluginHost, provenance: Provenance) -> tuple[list[str], list[dict]]:
    n_layers = bp.model.n_layers
    if bp.layout is None:
        if len(bp.roles) != 1:
            raise BlueprintError(f"required with more than one role (roles: {', '.join(bp.roles)}); e.g. "
                                 f"`layout: {{selector: pattern, params: {{pattern: ..., symbols: ...}}}}`",
                                 source=provenance.root, key="layout")
        return [next(iter(bp.roles))] * n_layers, []
    selector = check_component(Component(type=bp.layout.selector, params=bp.layout.params), host.selectors,
                               ("layout",), provenance, {"n_layers": n_layers, "roles": list(bp.roles)},
                               type_key="selector")
    try:
        selection = selector.spec.factory(selector.params, n_layers, list(bp.roles))
    except ValueError as err:
        key, message = _split_key(str(err), "layout.params")
        raise BlueprintError(message, source=provenance.source_of(key.split(".")), key=key) from None
    if len(selection.roles) != n_layers:
        raise BlueprintError(f"selector {bp.layout.selector!r} assigned {len(selection.roles)} roles for "
                             f"{n_layers} layers (model.n_layers)", source=provenance.source_of(("layout",)),
                             key="layout")
    if selection.info and len(selection.info) != n_layers:
        raise BlueprintError(f"selector {bp.layout.selector!r} returned notes for {len(selection.info)} of "
                             f"{n_layers} layers", key="layout")
    return list(selection.roles), list(selection.info)


def _split_key(message: str, prefix: str) -> tuple[str, str]:
    """``"pattern: bad"`` -> (``"layout.params.pattern"``, ``"bad"``) when the message starts with a key."""
    m = re.match(r"([A-Za-z_][\w.]*): (.*)", message, re.S)
    if m:
        return f"{prefix}.{m.group(1)}", m.group(2)
    return prefix, message


def unused_roles(bp: Blueprint, resolved: ResolvedBlueprint) -> list[str]:
    """Roles defined in ``bp`` that no layer uses."""
    used = {layer.role for layer in resolved.layers}
    return [r for r in bp.roles if r not in used]


def revalidate(resolved: ResolvedBlueprint, provenance: Provenance | None = None,
               host: PluginHost | None = None) -> ResolvedBlueprint:
    """Check every layer of a resolved table against the registered plugins (e.g. when loading a checkpoint)."""
    host, provenance = host or get_host(), provenance or Provenance()
    dims = dims_of(resolved.model)
    if len(resolved.layers) != resolved.model.n_layers:
        raise BlueprintError(f"lists {len(resolved.layers)} layers but model.n_layers is "
                             f"{resolved.model.n_layers}", source=provenance.root, key="layers")
    for i, layer in enumerate(resolved.layers):
        if layer.index != i:
            raise BlueprintError(f"expected index {i}, got {layer.index}", source=provenance.root,
                                 key=f"layers.{i}.index")
        context = {"dims": dims, "role": layer.role}
        mixer = check_component(layer.mixer, host.mixers, ("layers", str(i), "mixer"), provenance, context)
        if mixer.spec.family != layer.family:
            raise BlueprintError(f"says family {layer.family!r} but mixer {mixer.spec.name!r} is "
                                 f"{mixer.spec.family!r}", source=provenance.root, key=f"layers.{i}.family")
        context["family"] = mixer.spec.family
        check_component(layer.positional, host.positionals, ("layers", str(i), "positional"), provenance, context)
        check_component(layer.ffn, host.ffns, ("layers", str(i), "ffn"), provenance, context)
    return resolved


def resolve_file(path, overrides=()) -> ResolvedBlueprint:
    """Load, validate and resolve a blueprint file (a ``resolved.yaml`` is re-validated as it is)."""
    from mixarch.blueprint.load import load_data

    data, provenance = load_data(path, overrides)
    if "layers" in data and "roles" not in data:
        return revalidate(validate(ResolvedBlueprint, data, provenance), provenance)
    return resolve(validate(Blueprint, data, provenance), provenance)
