"""User-facing errors: the CLI prints them as one short message and exits with status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MixarchError(Exception):
    """An error caused by the user's input (a blueprint, a CLI argument, a plugin); never a bug in mixarch.

    ``source`` names the file (or ``--set``) and ``key`` the dotted key path the message is about.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.message = message
        self.source = source
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.key) if part)
        return f"{where}: {self.message}" if where else self.message


class BlueprintError(MixarchError):
    """A blueprint cannot be loaded, validated or resolved."""


class PluginError(MixarchError):
    """A plugin could not be loaded or registered something invalid."""


class DuplicateRegistrationError(PluginError):
    """Two plugins registered the same name in one registry."""


def closest_first(name: str, available: Iterable[str]) -> list[str]:
    """``available`` sorted by similarity to ``name`` (closest first, then alphabetical)."""
    names = sorted(set(available))
    return sorted(names, key=lambda n: -difflib.SequenceMatcher(None, name.lower(), n.lower()).ratio())


def unknown_name_message(kind: str, name: str, available: Iterable[str]) -> str:
    """``unknown mixer 'atention'; available: attention, lightning, ...`` (closest first)."""
    ordered = closest_first(name, available)
    listing = ", ".join(ordered) if ordered else "(none registered)"
    return f"unknown {kind} {name!r}; available: {listing}"
