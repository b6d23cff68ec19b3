"""``python -m coach.cli``: the same as the ``coach`` command."""
import sys

from . import main

if __name__ == "__main__":  # recognizer processes are spawned: they must not rerun the CLI
    sys.exit(main())
