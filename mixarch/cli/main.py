"""``mixarch`` entry point: dispatches subcommands; user errors exit with status 2 and one short message."""

from __future__ import annotations

import argparse
import os
import sys

from mixarch.errors import MixarchError

EXIT_USAGE = 2
TRAIN_VERBS = ("fit", "validate", "test", "predict")  # LightningCLI verbs, dispatched to mixarch.train.cli


class ArgumentParser(argparse.ArgumentParser):
    """argparse with errors raised as :class:`MixarchError` (so every bad input ends the same way)."""

    def error(self, message: str):
        raise MixarchError(f"{message}\n{self.format_usage().strip()}", source=self.prog)


def make_parser() -> argparse.ArgumentParser:
    from mixarch import __version__
    from mixarch.cli import build, generate, plugins, serve

    parser = ArgumentParser(prog="mixarch", description="Compose hybrid attention language models from plug-ins.")
    parser.add_argument("--version", action="version", version=f"mixarch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for module in (build, plugins, generate, serve):
        module.add_parser(sub)
    for verb in TRAIN_VERBS:  # listed for --help; `main` hands these to the LightningCLI before argparse
        sub.add_parser(verb, help=f"{verb} a blueprint's model with Lightning (mixarch {verb} -c BLUEPRINT --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in TRAIN_VERBS:
            from mixarch.train.cli import run  # imports Lightning: only for the training verbs

            return run(argv)
        parser = make_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return int(args.run(args) or 0)
    except MixarchError as err:
        if os.environ.get("MIXARCH_DEBUG"):
            raise
        print(f"mixarch: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
