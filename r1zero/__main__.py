import sys

from r1zero.cli import main

sys.exit(main())
