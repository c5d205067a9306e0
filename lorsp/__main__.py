"""`python -m lorsp` runs the `lorsp` command line (see lorsp.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
