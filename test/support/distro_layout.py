"""Run Python with this rclpy's modules laid out as an older ROS 2 distribution lays them out.

    python test/support/distro_layout.py humble|jazzy -m MODULE [ARGS...]
    python test/support/distro_layout.py humble|jazzy -c CODE

Only Kilted's rclpy installs here. Its classes are the ones the older distributions'
modules hold too, under other module names; what differs is where they live and what is
missing, and that is what this changes before anything of refseg_ros is imported:

- humble (rclpy 3.3): ``rclpy.qos_event`` holds the QoS event classes (no deprecation
  warning), ``rclpy.event_handler`` and ``rclpy.experimental`` do not exist, and a
  Subscription has no ``get_publisher_count``.
- jazzy (rclpy 7.1): ``rclpy.experimental`` (the events executor) does not exist.

rclpy's own modules are imported first, with the real names, as the older distribution's
rclpy has its own; afterwards an import of a hidden module raises ImportError.
"""

from __future__ import annotations

import importlib
import runpy
import sys
import types

DISTROS = ("humble", "jazzy")
# rclpy's modules that import the moved ones themselves: loaded before those are hidden
_RCLPY_MODULES = ("rclpy.node", "rclpy.publisher", "rclpy.subscription", "rclpy.lifecycle", "rclpy.executors",
                  "rclpy.parameter_client", "rclpy.parameter_event_handler", "rclpy.event_handler")


def _hide(rclpy: types.ModuleType, name: str) -> None:
    """Make `import rclpy.<name>` (and its submodules) raise ImportError."""
    full = f"rclpy.{name}"
    for loaded in [m for m in sys.modules if m == full or m.startswith(full + ".")]:
        del sys.modules[loaded]
    sys.modules[full] = None  # type: ignore[assignment]  # the import system's "not importable"
    if hasattr(rclpy, name):
        delattr(rclpy, name)


def apply(distro: str) -> None:
    """Lay this process's rclpy out as `distro`'s (one of DISTROS).

    Raises:
        ValueError: an unknown distribution.
    """
    if distro not in DISTROS:
        raise ValueError(f"distro must be one of {', '.join(DISTROS)}, got {distro!r}")
    import rclpy

    for name in _RCLPY_MODULES:
        importlib.import_module(name)
    if distro == "humble":
        real = sys.modules["rclpy.event_handler"]
        old = types.ModuleType("rclpy.qos_event", "QoS event callbacks (Humble's module name)")
        old.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")})
        _hide(rclpy, "event_handler")
        sys.modules["rclpy.qos_event"] = old
        rclpy.qos_event = old  # type: ignore[attr-defined]
        from rclpy.subscription import Subscription

        del Subscription.get_publisher_count
    _hide(rclpy, "experimental")


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] not in DISTROS or argv[2] not in ("-m", "-c"):
        sys.exit(__doc__)
    apply(argv[1])
    if argv[2] == "-c":
        sys.argv = ["-c", *argv[4:]]
        exec(compile(argv[3], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = [argv[3], *argv[4:]]
        runpy.run_module(argv[3], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv)
