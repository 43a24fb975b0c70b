import sys

from r1zero.cli import main

if __name__ == "__main__":  # guarded: spawned reward workers re-import the main module
    sys.exit(main())
