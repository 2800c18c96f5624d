"""Blueprints: the YAML language that declares a hybrid model (load -> validate -> resolve)."""

from mixarch.blueprint.load import load_blueprint, load_data
from mixarch.blueprint.resolve import dims_of, resolve, resolve_file, revalidate, unused_roles
from mixarch.blueprint.schema import Blueprint, Component, LayerEntry, ResolvedBlueprint, RoleSpec

__all__ = ["Blueprint", "Component", "LayerEntry", "ResolvedBlueprint", "RoleSpec", "dims_of", "load_blueprint",
           "load_data", "resolve", "resolve_file", "revalidate", "unused_roles"]
