"""``python -m tegula`` is the ``tegula`` command."""

import sys

from tegula.compiler.cli import main

sys.exit(main())
