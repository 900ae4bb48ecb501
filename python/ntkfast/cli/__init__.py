"""The ``ntkfast`` command line.

Each subcommand is a module of this package that exposes ``register_cli(subparsers)``, which adds its parser
and sets ``func`` (called with the parsed args; its return value is the exit code). The modules parse and
check options, call the library (kernel, learning, analyses) and print; :mod:`.common` holds what they
share. The library itself imports neither argparse nor matplotlib.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order in `ntkfast --help`.
_COMMAND_MODULES = (
    "ntkfast.cli.core",        # info, gram, bench
    "ntkfast.cli.krr",         # krr
    "ntkfast.cli.taylor",      # taylor
    "ntkfast.cli.stability",   # stability (Bietti & Mairal Fig. 1)
    "ntkfast.cli.spectrum",    # spectrum (Mercer eigenvalues on the sphere)
    "ntkfast.cli.smoothness",  # smoothness (Hölder 1/2 of the NTK)
    "ntkfast.cli.dynamics",    # dynamics (training dynamics of the infinite network, spectral bias)
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ntkfast",
        description="Exact NNGP/CKN and neural tangent kernels of convolutional ReLU networks: Gram matrices, "
                    "kernel ridge regression and the inductive-bias analyses around them.",
        epilog="Run 'ntkfast COMMAND --help' for the options of one command. Documentation: README.md and docs/ "
               "(docs/design.md: layer rules, algorithm, numerics; docs/layers.md: the layers).")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"ntkfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, NotImplementedError, MemoryError, RuntimeError) as e:
        cli_text = getattr(e, "for_cli", None)
        text = cli_text(getattr(args, "store_option", "--out")) if callable(cli_text) else str(e)
        print(f"ntkfast {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", None)
        hint = hint() if callable(hint) else hint
        print(f"ntkfast {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130

