"""Command line: turns flags into a config and calls a recipe or tool; nothing else.

Floors inside: ``flags`` (the command registry and the flags and config builders commands share) at the bottom, the
command modules (``compare``, ``data``, ``recipes``, ``generators``) above it, ``main`` (the parser and the entry
point) on top."""

from cxrgan.cli.flags import COMMANDS
from cxrgan.cli.main import build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
