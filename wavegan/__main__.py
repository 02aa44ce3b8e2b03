"""`python -m wavegan`: the command line."""

import sys

from wavegan.cli import main

if __name__ == "__main__":
  sys.exit(main())
