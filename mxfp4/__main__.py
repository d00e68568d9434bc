"""``python -m mxfp4`` and the ``mxfp4`` console script: see :mod:`mxfp4.cli`."""

from __future__ import annotations

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
