"""maskcl's version (one place: the package, its run folders and its packaging read it here)."""

__version__ = "0.2.0"
