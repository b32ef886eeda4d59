import sys

from disncl.cli import main

sys.exit(main())
