"""``python -m w2s_generate.cli``: the same as the ``w2s-generate`` console script."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
