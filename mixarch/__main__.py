"""``python -m mixarch`` is the ``mixarch`` command."""

import sys

from mixarch.cli.main import main

sys.exit(main())
