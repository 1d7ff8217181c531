"""``python -m maskcl``: the ``maskcl`` command (:mod:`maskcl.cli`), also for ``torchrun -m maskcl``."""

import sys

from maskcl.cli import main

if __name__ == "__main__":
    sys.exit(main())
