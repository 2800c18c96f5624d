"""``mixarch build``: validate and resolve a blueprint, instantiate it on the meta device, report
the layer table, parameters and decode-cache memory (optionally materialize and save the model)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from mixarch.cli.format import console as make_console
from mixarch.cli.format import human_bytes, human_count, length_label, parse_length

DEFAULT_SEQ_LENS = (4096, 131072, 1048576)


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="validate, resolve and size a blueprint",
                       description="Validate and resolve BLUEPRINT, instantiate it on the meta device and print "
                                   "its layer table, parameter count and decode-cache memory.")
    p.add_argument("blueprint", metavar="BLUEPRINT", help="a blueprint YAML file (or a resolved.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a blueprint key, e.g. --set model.n_layers=8 (repeatable)")
    p.add_argument("--seq-len", dest="seq_lens", action="append", type=str, metavar="N",
                   help="sequence length for cache sizes, e.g. 4K, 128K, 1M (repeatable; default 4K 128K 1M)")
    p.add_argument("--out", metavar="DIR", help="materialize the model (seeded init) and write resolved.yaml and "
                                                 "model.safetensors to DIR")
    p.add_argument("--seed", type=int, default=0, help="init seed for --out (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    p.set_defaults(run=run)


def report(resolved, seq_lens: list[int]) -> dict:
    """The build report as a JSON-ready dict."""
    import torch

    from mixarch.model.hybrid import HybridLM
    from mixarch.model.memory import full_attention_twin, layer_cache_bytes

    with torch.device("meta"):
        model = HybridLM(resolved)
    per_layer = [sum(p.numel() for p in block.parameters()) for block in model.blocks]
    caches = layer_cache_bytes(resolved, seq_lens)
    twin, twin_how = full_attention_twin(resolved, seq_lens)
    embedding = model.embed.weight.numel()
    head = 0 if resolved.model.tie_embeddings else model.lm_head.weight.numel()
    labels = [block.mixer.positional.label if hasattr(block.mixer, "positional") and
              hasattr(block.mixer.positional, "label") else layer.positional.type
              for block, layer in zip(model.blocks, resolved.layers)]
    by_role: dict[str, dict] = defaultdict(lambda: {"layers": 0, "bytes": {str(n): 0 for n in seq_lens}})
    for c in caches:
        entry = by_role[c.role]
        entry.update(mixer=c.mixer, family=c.family, holds=list(c.holds))
        entry["layers"] += 1
        for n in seq_lens:
            entry["bytes"][str(n)] += c.bytes_at[n]
    return {
        "name": resolved.name,
        "description": resolved.description,
        "n_layers": resolved.model.n_layers,
        "d_model": resolved.model.d_model,
        "dtype": resolved.model.dtype,
        "params": model.num_parameters(),
        "params_embedding": embedding + head,
        "weight_bytes": model.num_parameters() * resolved.model.dtype_bytes,
        "layers": [
            {"index": layer.index, "role": layer.role, "mixer": layer.mixer.type, "family": layer.family,
             "positional": layer.positional.type, "positional_label": label, "ffn": layer.ffn.type,
             "params": n, "mixer_params": layer.mixer.params, "info": layer.info}
            for layer, n, label in zip(resolved.layers, per_layer, labels)
        ],
        "seq_lens": seq_lens,
        "cache_bytes": {str(n): sum(c.bytes_at[n] for c in caches) for n in seq_lens},
        "cache_bytes_per_token": sum(c.bytes_per_token for c in caches),
        "cache_fixed_bytes": sum(c.fixed_bytes for c in caches),
        "cache_bytes_by_role": dict(by_role),
        "full_attention_cache_bytes": {str(n): b for n, b in twin.items()} if twin else None,
        "full_attention_twin": twin_how,
    }


def run(args) -> int:
    from mixarch.blueprint.load import load_data, validate
    from mixarch.blueprint.resolve import resolve, revalidate, unused_roles
    from mixarch.blueprint.schema import Blueprint, ResolvedBlueprint

    seq_lens = [parse_length(s) for s in args.seq_lens] if args.seq_lens else list(DEFAULT_SEQ_LENS)
    data, provenance = load_data(args.blueprint, args.overrides)
    warnings = []
    if "layers" in data and "roles" not in data:
        resolved = revalidate(validate(ResolvedBlueprint, data, provenance), provenance)
    else:
        bp = validate(Blueprint, data, provenance)
        resolved = resolve(bp, provenance)
        warnings = [f"role {r!r} is defined but no layer uses it" for r in unused_roles(bp, resolved)]
    rep = report(resolved, seq_lens)
    rep["warnings"] = warnings
    if args.out:
        from mixarch.model.hybrid import build_model
        from mixarch.model.io import save

        save(build_model(resolved, seed=args.seed), args.out)
        rep["out"] = str(args.out)
    if args.json:
        json.dump(rep, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(rep, source=args.blueprint)
    return 0


def print_report(rep: dict, source: str) -> None:
    from rich.table import Table

    console = make_console()
    console.print(f"[bold]{rep['name']}[/bold]  ({source})" + (f"\n{rep['description']}" if rep["description"] else ""))
    layers = Table(title="layers", title_justify="left")
    for col, justify in (("#", "right"), ("role", "left"), ("mixer", "left"), ("family", "left"),
                         ("positional", "left"), ("ffn", "left"), ("params", "right")):
        layers.add_column(col, justify=justify)
    for layer in rep["layers"]:
        layers.add_row(str(layer["index"]), layer["role"], layer["mixer"], layer["family"],
                       layer["positional_label"], layer["ffn"], human_count(layer["params"]))
    console.print(layers)
    total, emb = rep["params"], rep["params_embedding"]
    console.print(f"parameters: [bold]{total:,}[/bold] ({human_count(total)}; embeddings and head "
                  f"{human_count(emb)}, layers {human_count(total - emb)}); weights "
                  f"{human_bytes(rep['weight_bytes'])} in {rep['dtype']}")
    cache = Table(title="decode cache of one sequence", title_justify="left")
    cache.add_column("role")
    cache.add_column("layers", justify="right")
    cache.add_column("mixer")
    cache.add_column("holds")
    for n in rep["seq_lens"]:
        cache.add_column(length_label(n), justify="right")
    for role, entry in rep["cache_bytes_by_role"].items():
        cache.add_row(role, str(entry["layers"]), f"{entry['mixer']} ({entry['family']})",
                      ", ".join(entry["holds"]) or "-",
                      *(human_bytes(entry["bytes"][str(n)]) for n in rep["seq_lens"]))
    cache.add_row("[bold]total[/bold]", str(rep["n_layers"]), "", "",
                  *(f"[bold]{human_bytes(rep['cache_bytes'][str(n)])}[/bold]" for n in rep["seq_lens"]))
    twin = rep["full_attention_cache_bytes"]
    if twin:
        cache.add_row("all full attention", str(rep["n_layers"]), "", "",
                      *(human_bytes(twin[str(n)]) for n in rep["seq_lens"]))
        cache.add_row("ratio", "", "", "", *(f"{twin[str(n)] / max(rep['cache_bytes'][str(n)], 1):.1f}x"
                                             for n in rep["seq_lens"]))
    console.print(cache)
    console.print(f"cache per token: {human_bytes(rep['cache_bytes_per_token'])} (plus any compressed keys); "
                  f"fixed per sequence: {human_bytes(rep['cache_fixed_bytes'])}")
    console.print(f"full-attention twin: {rep['full_attention_twin']}")
    for warning in rep.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if rep.get("out"):
        console.print(f"wrote {rep['out']}/resolved.yaml and {rep['out']}/model.safetensors")
