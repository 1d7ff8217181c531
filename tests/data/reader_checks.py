"""Checks shared by the tests of the data readers that download a missing copy."""

from pathlib import Path

import pytest

from maskcl.errors import MaskclError


def assert_not_found_offline(load, name: str, folder: str, nowhere: Path, home: Path) -> None:
    """``load(nowhere, download=False)`` fails in one line that names ``nowhere/folder`` and the cache
    below ``home``, and it writes nothing there."""
    with pytest.raises(MaskclError) as err:
        load(nowhere, download=False)
    message = str(err.value)
    cache = home / ".cache" / "maskcl" / folder
    assert message.startswith(f"{name} not found in {nowhere / folder}, {cache}; ")
    assert message.endswith("download it (needs the internet) or set MASKCL_DATA")
    assert "\n" not in message and not (home / ".cache").exists()
