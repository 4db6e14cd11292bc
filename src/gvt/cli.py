"""`python -m gvt.cli`: the `gvt` command, defined in the top-level module `gvt_cli` (see there why)."""

import sys

from gvt_cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
