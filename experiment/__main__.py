import sys

from .cli import main

try:
    sys.exit(main())
except KeyboardInterrupt:
    print("\ninterrupted: finished steps and the last finished epoch are saved; "
          "rerun the same command to resume", file=sys.stderr)
    sys.exit(130)
