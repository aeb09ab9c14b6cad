"""`python -m node.stress ...` runs `blixt stress ...` (bench/ uses this)."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
