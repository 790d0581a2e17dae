"""Options from a TOML or YAML file (``aquant-onnx quantize --config FILE``).

A file holds flat options named like the command-line flags (dashes or underscores)::

    method = "aquant"
    w-bits = 4
    iters = 2000
    calib = "calib/"

or the nested form of :meth:`QuantConfig.to_dict` (``[recon]``, ``[border]``, ``[export]``
tables), or both. :func:`read_config_file` flattens it to option names with underscores:
``recon.iters`` becomes ``iters``, ``border.shape`` becomes ``border``, ``border.granularity``
becomes ``border_granularity``, ``export.border_op`` becomes ``border_op`` (the names
``with_options`` and the flags use). Which top-level names are allowed is the caller's
business (the CLI accepts its flag names).

TOML is read with the standard library (``tomli`` on Python 3.10); YAML needs PyYAML (``pip install aquant-onnx[yaml]``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI
    import tomli as tomllib

# flat option name -> (section, field), the mapping with_options applies
from .config import NESTED_OPTIONS
from .errors import ConfigError

# section -> {field: flat option name}, e.g. "border" -> {"shape": "border", "granularity": "border_granularity", ...}
SECTIONS = {
    section: {field: flat for flat, (owner, field) in NESTED_OPTIONS.items() if owner == section}
    for section in {section for section, _ in NESTED_OPTIONS.values()}
}


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Flat options from a ``.toml``, ``.yaml`` or ``.yml`` file; see the module docstring.

    Raises:
        ConfigError: missing or unparsable file, unknown extension, unknown nested key, or
            a key given twice (flat and nested).
    """
    path = os.fspath(path)
    data = _parse(path)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of options, not {type(data).__name__}.")
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in SECTIONS and isinstance(value, dict):
            for nested, nested_value in value.items():
                flat = SECTIONS[name].get(str(nested).replace("-", "_"))
                if flat is None:
                    known = ", ".join(sorted(SECTIONS[name]))
                    raise ConfigError(f"unknown key '{name}.{nested}' in config file {path}; [{name}] takes {known}.")
                _put(options, flat, nested_value, path)
        else:
            _put(options, name, value, path)
    return options


def _put(options: dict[str, Any], name: str, value: Any, path: str) -> None:
    if name in options:
        raise ConfigError(f"option '{name}' is given twice in config file {path}.")
    options[name] = value


def _parse(path: str) -> Any:
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"config file {path} must end in .toml, .yaml or .yml.")
    try:
        with open(path, "rb") as stream:
            text = stream.read().decode("utf-8", errors="replace")  # a bad byte then shows in the parse error
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}.") from None
    if extension == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}.") from None
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            f"reading {path} needs PyYAML: pip install pyyaml (or aquant-onnx[yaml]), or use a .toml file."
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"config file {path} is not valid YAML: {first_line}.") from None
