"""`python -m core ...`: the command-line face of the core package."""

import sys

from core.cli import main

sys.exit(main())
