"""Config files for ``maskcl run --config FILE``: YAML (needs PyYAML, ``pip install 'maskcl[yaml]'``) or JSON.

Keys are the ``maskcl run`` flags without the dashes (``batch-size`` or ``batch_size``); lists are YAML
lists or comma-separated strings. An unknown key, a value of the wrong type or out of range is a one-line
error naming the file and the key. A run folder's ``config.json`` is a valid config file.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maskcl.checkpoint import parse_json
from maskcl.errors import MaskclError
from maskcl.train import RunConfig


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON file, keys with ``-`` turned into ``_``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise MaskclError(f"cannot read config {path}: {err.strerror or err}") from None
    if path.suffix == ".json":
        values = parse_json(text, path)
    else:
        try:
            import yaml
        except ImportError:
            raise MaskclError(f"{path}: YAML config files need PyYAML: pip install 'maskcl[yaml]'") from None
        try:
            values = yaml.safe_load(text)
        except RecursionError:
            raise MaskclError(f"{path} is nested too deeply to be a maskcl config") from None
        except yaml.YAMLError as err:
            raise MaskclError(f"{path} is not valid YAML ({' '.join(str(err).split())})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise MaskclError(f"{path} must hold a mapping of option: value, not a {type(values).__name__}")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def check_value(key: str, value: Any, kind: Any) -> Any:
    """``value`` as the annotated type ``kind`` of ``key`` (int, float, bool, str, tuple[int, ...], or one
    of them or None); a one-line error naming the key otherwise."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    kind = next(k for k in options if k is not type(None))
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
    if kind is str and isinstance(value, str):
        return value
    if typing.get_origin(kind) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, list):
            try:
                return tuple(int(v) if isinstance(v, str) else check_value(key, v, int) for v in items)
            except (MaskclError, ValueError):
                pass
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    name = "a list of integers" if typing.get_origin(kind) is tuple else names[kind]
    raise MaskclError(f"{key} must be {name}, got {value!r}")


FIELD_TYPES = typing.get_type_hints(RunConfig)


def config_from_dict(
    values: Mapping[str, Any], source: str, base: RunConfig | None = None, complete: bool = False
) -> RunConfig:
    """``base`` (default: the defaults) with ``values`` applied, type-checked and validated; errors start
    with ``source`` (the file) and name the key. ``complete``: every field must be given (a run folder's
    ``config.json``, which a missing key would otherwise silently fill with today's defaults)."""
    fields = (base or RunConfig()).to_dict()
    missing = [key for key in fields if key not in values]
    if complete and missing:
        raise MaskclError(
            f"{source} lacks {', '.join(missing)} (edited by hand?): it cannot say how the run ran"
        )
    for key, value in values.items():
        if key not in FIELD_TYPES:
            raise MaskclError(f"{source}: unknown key {key!r}")
        try:
            fields[key] = check_value(key, value, FIELD_TYPES[key])
        except MaskclError as err:
            raise MaskclError(f"{source}: {err}") from None
    config = RunConfig(**fields)
    try:
        config.validate()
    except MaskclError as err:
        raise MaskclError(f"{source}: {err}") from None
    return config
