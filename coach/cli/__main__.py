"""``python -m coach.cli``: the same as the ``coach`` command."""
from . import run

if __name__ == "__main__":  # recognizer processes are spawned: they must not rerun the CLI
    run()
