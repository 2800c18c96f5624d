"""``mixarch plugins``: list the loaded plugins, their versions and what each registered."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict


def add_parser(sub) -> None:
    p = sub.add_parser("plugins", help="list plugins and what they registered",
                       description="List every loaded plugin (built-in and installed), its version and what it "
                                   "registered. MIXARCH_LOAD_PLUGINS limits which installed plugins load.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args) -> int:
    from mixarch.plugins import get_host

    host = get_host()
    plugins = [asdict(info) for info in host.info.values()]
    if args.json:
        json.dump(plugins, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from rich.table import Table

    from mixarch.cli.format import console as make_console

    table = Table(title="mixarch plugins", title_justify="left")
    for col in ("plugin", "distribution", "version", "registered"):
        table.add_column(col)
    for p in plugins:
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p["registered"].items()) or "-"
        name = p["name"] + (" (built-in)" if p["builtin"] else "")
        table.add_row(name, p["distribution"], p["version"], registered)
    make_console().print(table)
    return 0
