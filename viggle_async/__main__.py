"""``python -m viggle_async``: the ``viggle-async`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
