"""The node's ROS 2 parameters file (``--params-file``): the key its parameters live under.

A parameters file names the node its parameters are for. ``refseg:`` matches only the
node ``/refseg``; started in a namespace (``-r __ns:=/robot1``, a launch file's
``namespace``), the node is ``/robot1/refseg`` and such a file is silently ignored.
``/**/refseg:`` matches the node in any namespace, the root one included (``/*/refseg``
would match exactly one level, and ``/*`` alone does not match a namespaced node,
ros2/rcl#954). Everything that reads or writes a parameters file for this node goes
through this module, so the key is written in one place.

No rclpy here: the evaluation tools and benchmarks write parameter files too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Union

import yaml

NODE_NAME = "refseg"
"""The segmenter node's name (``-r __node:=...`` or a launch file's ``name`` changes it)."""

PARAMETERS_KEY = "ros__parameters"

PathLike = Union[str, Path]


def file_key(node_name: str = NODE_NAME) -> str:
    """The key of a parameters file that applies to `node_name` in any namespace."""
    return f"/**/{node_name}"


def node_parameters(document: Mapping[str, Any], node_name: str = NODE_NAME) -> dict[str, Any]:
    """The parameters a loaded parameters file gives `node_name` under `file_key`.

    Raises KeyError naming the key when the file has no such section (a file keyed by
    the plain node name applies in the root namespace only: rewrite its key).
    """
    section = document.get(file_key(node_name)) if isinstance(document, Mapping) else None
    if isinstance(section, Mapping) and isinstance(section.get(PARAMETERS_KEY), Mapping):
        return dict(section[PARAMETERS_KEY])
    keys = sorted(document) if isinstance(document, Mapping) else []
    raise KeyError(f"no {file_key(node_name)!r} section with {PARAMETERS_KEY} in the parameters "
                   f"file (its keys: {keys}); a file keyed {node_name!r} applies only without a namespace")


def read_parameters(path: PathLike, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The parameters the file at `path` gives `node_name`.

    Raises OSError when the file cannot be read, yaml.YAMLError when it is not YAML, and
    KeyError (naming the file) when it has no section for the node.
    """
    document = yaml.safe_load(Path(path).read_text()) or {}
    try:
        return node_parameters(document, node_name)
    except KeyError as exc:
        raise KeyError(f"{path}: {exc.args[0]}") from None


def parameters_document(parameters: Mapping[str, Any], node_name: str = NODE_NAME) -> dict[str, Any]:
    """A parameters file's content giving `parameters` to `node_name` in any namespace."""
    return {file_key(node_name): {PARAMETERS_KEY: dict(parameters)}}


def write_parameters(path: PathLike, parameters: Mapping[str, Any], node_name: str = NODE_NAME) -> Path:
    """Write a parameters file giving `parameters` to `node_name` in any namespace;
    returns its path. Raises OSError when it cannot be written."""
    path = Path(path)
    path.write_text(yaml.safe_dump(parameters_document(parameters, node_name), sort_keys=False))
    return path


def write_with_overrides(source: PathLike, path: PathLike, overrides: Mapping[str, Any],
                         node_name: str = NODE_NAME) -> Path:
    """Write to `path` the parameters file `source` with `overrides` applied; returns
    `path`. Raises as read_parameters and write_parameters do."""
    return write_parameters(path, {**read_parameters(source, node_name), **overrides}, node_name)
