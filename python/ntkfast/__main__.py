"""``python -m ntkfast``: the ``ntkfast`` command."""
import sys

from .cli import main

sys.exit(main())
