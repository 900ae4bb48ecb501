"""``python -m ntkfast.cli``: the ``ntkfast`` command."""
import sys

from . import main

sys.exit(main())
