"""Core subcommands of the ``ntkfast`` command line: ``info``, ``gram`` and ``bench`` (filled in below)."""
from __future__ import annotations


def register_cli(sub):
    pass
