"""The import layering of the refseg_ros package, read from the source with `ast`.

Every `import` and `from ... import` of every module under `refseg_ros/` is collected,
at any depth (imports inside functions count), with relative imports resolved. The rules
(also in README.md, "Layout"):

- `engine` (SAM2 streaming, tensors only) imports no `adapters`, `runtime`, `ros`,
  `eval` or `demo`, and nothing of ROS (`rclpy`, ROS messages);
- `adapters` import only `engine` and other `adapters` of this package, nothing of ROS;
- `runtime` (the node's ROS-free parts) imports no `ros`, `eval` or `demo`, nothing of ROS;
- `eval` imports no `demo`, and nothing of `ros` except in `eval/eval_client.py`, the
  live evaluation's end of the wire, which speaks to the node with the node's own
  message conversions; the offline evaluation stays free of the ROS layer;
- `ros` (the nodes and their tools) imports no `eval` or `demo`;
- the shared modules at the top (`store`, `imaging`, `models`, `atomicfile`, `procs`)
  import no `runtime`, `ros`, `eval` or `demo`.

`demo` sits on top and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

from support import REPO_ROOT

PACKAGE = "refseg_ros"
ROOT = REPO_ROOT / PACKAGE
ROS_ONLY = ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "visualization_msgs", "diagnostic_msgs",
            "builtin_interfaces", "rcl_interfaces", "refseg_ros.msg", "refseg_ros.srv")
UPPER = ("refseg_ros.runtime", "refseg_ros.ros", "refseg_ros.eval", "refseg_ros.demo")
SHARED = ("refseg_ros.store", "refseg_ros.imaging", "refseg_ros.models", "refseg_ros.atomicfile",
          "refseg_ros.procs")

# layer -> (modules it must not import, modules of that layer exempt from the rule)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "refseg_ros.engine": (("refseg_ros.adapters",) + UPPER + ROS_ONLY, ()),
    "refseg_ros.runtime": (("refseg_ros.ros", "refseg_ros.eval", "refseg_ros.demo") + ROS_ONLY, ()),
    "refseg_ros.eval": (("refseg_ros.ros", "refseg_ros.demo"), ("refseg_ros.eval.eval_client",)),
    "refseg_ros.ros": (("refseg_ros.eval", "refseg_ros.demo"), ()),
}
RULES.update({name: (UPPER, ()) for name in SHARED})
ADAPTERS_MAY_IMPORT = ("refseg_ros.engine", "refseg_ros.adapters")


def within(name: str, prefix: str) -> bool:
    """True when module `name` is `prefix` or lies inside it (dotted-name boundary)."""
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    """The dotted module name of a file under ROOT (a package's `__init__` is the package)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file at `path`; `from a import b`
    yields both `a` and `a.b` (b may be a sub-module), relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def edges() -> list[tuple[str, str, str]]:
    """(importing module, "file:line", imported module) for the whole package."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for line, target in imports(path):
            found.append((module_name(path), f"{path.relative_to(ROOT.parent)}:{line}", target))
    return found


def violations(found: list[tuple[str, str, str]]) -> list[str]:
    """Every import that breaks a rule of the module docstring, as "file:line imports X"."""
    bad = []
    for module, where, target in found:
        if within(module, "refseg_ros.adapters"):
            if (within(target, PACKAGE) and not any(within(target, ok) for ok in ADAPTERS_MAY_IMPORT)
                    and target != PACKAGE) or any(within(target, ros) for ros in ROS_ONLY):
                bad.append(f"{where} imports {target}")
            continue
        for layer, (forbidden, exempt) in RULES.items():
            if within(module, layer) and module not in exempt \
                    and any(within(target, name) for name in forbidden):
                bad.append(f"{where} imports {target}")
    return bad


def test_the_package_keeps_its_layers():
    bad = violations(edges())
    assert not bad, "imports against the layering (test/package/test_layers.py docstring):\n" + "\n".join(bad)


def test_the_scan_sees_imports_of_every_kind():
    """The scan is not blind: absolute, relative, in-function and `from pkg import mod`
    imports known to be in the source are all found."""
    found = {(module, target) for module, _, target in edges()}
    assert ("refseg_ros.eval.live", "refseg_ros.eval.eval_client") in found  # in a function
    assert ("refseg_ros.engine.weights", "refseg_ros.models") in found  # `from .. import models`
    assert ("refseg_ros.eval.eval_client", "refseg_ros.ros.conversions") in found
    assert ("refseg_ros.ros.node", "rclpy.lifecycle") in found
    assert len({module for module, _ in found}) > 100


@pytest.mark.parametrize("module, target", [
    ("refseg_ros.engine.engine", "refseg_ros.adapters.grounding"),
    ("refseg_ros.engine.engine", "rclpy"),
    ("refseg_ros.adapters.grounding.worker", "refseg_ros.runtime.mailbox"),
    ("refseg_ros.adapters.grounding.worker", "refseg_ros.store"),
    ("refseg_ros.runtime.registry", "refseg_ros.ros.params"),
    ("refseg_ros.eval.live", "refseg_ros.ros.conversions"),
    ("refseg_ros.ros.node", "refseg_ros.eval.live"),
    ("refseg_ros.store", "refseg_ros.runtime.registry"),
])
def test_an_upward_import_is_caught(module, target):
    assert violations([(module, "here:1", target)]) == [f"here:1 imports {target}"]


@pytest.mark.parametrize("module, target", [
    ("refseg_ros.eval.eval_client", "refseg_ros.ros.conversions"),
    ("refseg_ros.adapters.reference.fssam", "refseg_ros.engine.heads"),
    ("refseg_ros.runtime.captions", "refseg_ros.models"),
    ("refseg_ros.ros.node", "refseg_ros.runtime.registry"),
    ("refseg_ros.demo", "refseg_ros.eval.bags"),
])
def test_a_downward_import_is_allowed(module, target):
    assert violations([(module, "here:1", target)]) == []
