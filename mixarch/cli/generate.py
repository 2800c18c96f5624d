"""``mixarch generate``: continue text prompts with a model directory (``mixarch build --out`` or a training
export), using its ``tokenizer.json`` or the byte-level tokenizer."""

from __future__ import annotations

import argparse
import json
import sys
import time

from mixarch.cli.format import non_negative_float, positive_int, probability

DTYPES = ("float32", "bfloat16", "float16", "float64")


def add_model_args(p: argparse.ArgumentParser, devices: str = "cpu, cuda, cuda:N") -> None:
    """DIR, --device, --dtype and --prefill-chunk (shared with ``mixarch serve``)."""
    p.add_argument("directory", metavar="DIR", help="a model directory (resolved.yaml + model.safetensors, and "
                                                    "optionally tokenizer.json)")
    p.add_argument("--device", default="auto", help=f"{devices} or auto (default: cuda if available)")
    p.add_argument("--dtype", choices=DTYPES, help="run in this dtype (default: the model's)")
    p.add_argument("--prefill-chunk", type=positive_int, metavar="N",
                   help="prompt tokens per forward during prefill (default: the whole prompt at once)")


def resolve_device(name: str) -> str:
    import torch

    from mixarch.errors import MixarchError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MixarchError(f"not a device: {name!r} (cpu, cuda, cuda:N or auto)", key="--device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MixarchError("CUDA is not available here", key="--device")
    return name


def load_model(args):
    """The model (eval mode) and tokenizer of ``args.directory`` on ``--device`` in ``--dtype``."""
    import torch

    import mixarch
    from mixarch.generate import load_tokenizer

    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model = mixarch.load(args.directory, device=device, dtype=dtype).eval()
    return model, load_tokenizer(args.directory, model.resolved.model.vocab_size)


def encode_prompt(tokenizer, text: str, key: str = "--prompt") -> list[int]:
    """Token ids of a prompt; a prompt that cannot be encoded or is empty is a user error."""
    from mixarch.errors import MixarchError

    try:
        ids = tokenizer.encode(text)
    except ValueError as err:
        raise MixarchError(f"prompt {text[:20]!r}... cannot be encoded: {err}", key=key) from None
    if not ids:
        raise MixarchError("the prompt is empty (the model needs at least one token)", key=key)
    return ids


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="continue text prompts with a model directory",
                       description="Continue each --prompt with the model in DIR (greedy unless --temperature > 0). "
                                   "One prompt is streamed to stdout as it is generated; several run as one batch.")
    add_model_args(p)
    p.add_argument("--prompt", dest="prompts", action="append", required=True, metavar="TEXT",
                   help="prompt text (repeatable: the prompts are generated as one batch)")
    p.add_argument("--max-tokens", type=positive_int, default=64, metavar="N", help="tokens to generate (default 64)")
    p.add_argument("--temperature", type=non_negative_float, default=0.0, metavar="T",
                   help="sampling temperature; 0 = greedy (default)")
    p.add_argument("--top-k", type=positive_int, metavar="K", help="sample among the K most likely tokens")
    p.add_argument("--top-p", type=probability, metavar="P", help="sample from the nucleus of probability P")
    p.add_argument("--seed", type=int, help="seed of the sampling (default: random)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop at this text, which is not printed (repeatable); the end-of-text token always stops")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt instead of the text")
    p.set_defaults(run=run)


def run(args) -> int:
    from mixarch.generate import SamplingParams, stream_text

    model, tokenizer = load_model(args)
    prompts = [encode_prompt(tokenizer, text) for text in args.prompts]
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed, stop=frozenset({tokenizer.eos_id}))
    live = len(prompts) == 1 and not args.json
    texts = [""] * len(prompts)
    reasons = [""] * len(prompts)
    counts = [0] * len(prompts)
    start = time.perf_counter()
    first = None
    for deltas in stream_text(model, tokenizer, prompts, [params] * len(prompts), [args.stop] * len(prompts),
                              prefill_chunk=args.prefill_chunk):
        first = first or time.perf_counter()
        for b, d in enumerate(deltas):
            if d is None:
                continue
            texts[b] += d.text
            counts[b] = d.tokens
            reasons[b] = d.finish_reason or ""
            if live and d.text:
                sys.stdout.write(d.text)
                sys.stdout.flush()
    end = time.perf_counter()
    if args.json:
        for text, ids, out, reason, n in zip(args.prompts, prompts, texts, reasons, counts):
            json.dump({"prompt": text, "text": out, "finish_reason": reason, "prompt_tokens": len(ids),
                       "completion_tokens": n}, sys.stdout)
            sys.stdout.write("\n")
    elif live:
        sys.stdout.write("\n")
    else:
        for b, text in enumerate(texts):
            sys.stdout.write(f"[{b}] {text}\n")
    decode = (max(counts) - 1) / (end - first) if max(counts) > 1 and end > first else float("nan")
    print(f"{sum(counts)} tokens ({', '.join(sorted(set(reasons)))}); time to first token "
          f"{(first - start) * 1e3:.0f} ms; decode {decode:.1f} steps/s", file=sys.stderr)
    return 0
