"""The entry point: one parser over every registered command, and ``main``, which runs one and turns every user
error into one line ``cxrgan: error: ...`` and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys

import cxrgan.cli.compare  # noqa: F401  (each command module registers its commands)
import cxrgan.cli.data  # noqa: F401
import cxrgan.cli.generators  # noqa: F401
from cxrgan import distributed
from cxrgan.cli.flags import COMMANDS, check_flag_ranges
from cxrgan.cli.recipes import register_generic_recipes
from cxrgan.errors import CxrganError, RankAgreedError

register_generic_recipes()  # after every command of its own: the recipes without one


class Parser(argparse.ArgumentParser):
    """argparse with the one error line every cxrgan error has (its default prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"cxrgan: error: {self.prog}: {message} (see {self.prog} --help)\n"
                  if distributed.env_rank() == 0 else None)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every registered command (``cxrgan.cli.flags.COMMANDS``)."""
    from cxrgan.plugins import load_plugins

    load_plugins()  # installed packages' generators and methods (entry points), before any help or choice is built
    parser = Parser(prog="cxrgan", description="Command line")
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (add_arguments, run, help_text) in COMMANDS.items():
        parts = name.split()
        target = sub
        if len(parts) == 2:  # "data prepare": a group command with its own subcommands
            if parts[0] not in groups:
                group = sub.add_parser(parts[0], help=f"{parts[0]} tools")
                groups[parts[0]] = group.add_subparsers(dest="subcommand", required=True)
            target = groups[parts[0]]
        child = target.add_parser(parts[-1], help=help_text, description=help_text.replace("%%", "%"))
        add_arguments(child)
        child.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Under torchrun every process runs it; rank 0 alone prints results and the errors that every
    process raised alike, another rank prints only an error of its own (prefixed with its rank)."""
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    rank = distributed.env_rank() if distributed.launched_by_torchrun() else 0
    prefix = f"process {rank}: " if rank else ""
    stdout = sys.stdout
    try:
        if rank:
            sys.stdout = open(os.devnull, "w")
        check_flag_ranges(args)
        distributed.setup(getattr(args, "device", "auto"))
        if hasattr(args, "device"):  # before any CUDA work: cuBLAS reads its workspace setting once
            from cxrgan.device import configure_determinism, resolve_device

            configure_determinism(resolve_device(args.device))
        args.run(args)
    except RankAgreedError as exc:
        if rank == 0:
            print(f"cxrgan: error: {exc}", file=sys.stderr)
        return 2
    except CxrganError as exc:
        print(f"cxrgan: error: {prefix}{exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave cannot be read or written: one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cxrgan: error: {prefix}{where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxrgan: interrupted; rerun with --resume RUN_DIR to continue", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
