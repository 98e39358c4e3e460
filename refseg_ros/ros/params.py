"""The node's parameters in rclpy: declarations, reading and the set-parameters check.

Everything about a parameter (type, default, description, range or choices, live or
read-only) is its row of `runtime.parameters.PARAMETERS`, the one table; this module
derives the node's side from it: each declaration and its `ParameterDescriptor`, the
`Settings` read at configure, and the check of a `set_parameters` request.

Read-only parameters keep `ParameterDescriptor.read_only` false: rcl never lets a
read-only parameter change again, not even on an unconfigured node, so they are refused
by the node's set-parameters callback (`changed_settings`) while it is configured, with
the reason.
"""

from __future__ import annotations

from dataclasses import fields, make_dataclass, replace
from typing import Iterable, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterUninitializedException)
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..runtime import geometry
from ..runtime.acquisition import AcquisitionSettings
from ..runtime.captions import TextSettings
from ..runtime.parameters import PARAMETERS, Param, check_values, settings_fields
from ..runtime.reference_modes import ReferenceSettings
from ..runtime.transitions import TransitionSettings
from .standard_outputs import OutputSwitches

__all__ = ["PARAMETERS", "Param", "Settings", "changed_settings", "declare", "descriptor", "read"]

INT64_MAX = 2 ** 63 - 1
# The settings parts the node shares with the evaluation, each with its own rules (check).
PARTS = (TextSettings, AcquisitionSettings, ReferenceSettings, TransitionSettings, OutputSwitches)


def parameter_type(row: Param) -> Parameter.Type:
    """The rclpy parameter type of a row."""
    return Parameter.Type[row.kind.name]


def descriptor(name: str, row: Param, enforce_range: bool = True) -> ParameterDescriptor:
    """The ParameterDescriptor declared for the parameter `name` (typed, with its range
    unless `enforce_range` is false)."""
    kind = parameter_type(row)
    d = ParameterDescriptor(name=name, type=kind.value, description=row.description,
                            additional_constraints=row.constraints(), read_only=False)
    if row.range is not None and enforce_range:
        low, high, *step = row.range
        if kind == Parameter.Type.INTEGER:
            d.integer_range = [IntegerRange(from_value=low, to_value=INT64_MAX if high is None else high,
                                            step=step[0] if step else 0)]
        else:
            d.floating_point_range = [FloatingPointRange(
                from_value=float(low), to_value=float("inf") if high is None else float(high), step=0.0)]
    return d


class _CameraSettings:
    """The node's own rules on its Settings (whose fields are made from PARAMETERS)."""

    def transport(self, index: int) -> str:
        """raw or compressed for the camera at `index`."""
        if index < len(self.camera_transports) and self.camera_transports[index]:
            return self.camera_transports[index]
        return "compressed" if self.cameras[index].rstrip("/").endswith("/compressed") else "raw"

    def camera_info_topic(self, index: int) -> str:
        """The CameraInfo topic of the camera at `index` ("" for none)."""
        return self.camera_info_topics[index] if index < len(self.camera_info_topics) else ""

    def rectified(self, index: int) -> bool:
        """Whether the camera at `index` gives rectified images (camera_rectified, auto by
        its topic's name: geometry.is_rectified_topic)."""
        choice = self.camera_rectified[index] if index < len(self.camera_rectified) else "auto"
        return geometry.is_rectified_topic(self.cameras[index]) if choice in ("", "auto") else choice == "true"

    def depth_topic(self, index: int) -> str:
        """The aligned depth topic of the camera at `index` ("" for none)."""
        return self.depth_topics[index] if index < len(self.depth_topics) else ""

    def text(self) -> TextSettings:
        """The text path's settings."""
        return _part(self, TextSettings)

    def reference(self) -> ReferenceSettings:
        """How reference targets are segmented."""
        return _part(self, ReferenceSettings)

    def transitions(self) -> TransitionSettings:
        """The diffusion transition frames' settings."""
        return _part(self, TransitionSettings)

    def acquisition(self) -> AcquisitionSettings:
        """The reference targets' acquisition settings."""
        return _part(self, AcquisitionSettings)

    def check(self) -> None:
        """Refuse settings that cannot work, naming the parameter: each value against its
        row of PARAMETERS, then the rules that tie parameters together.

        Raises:
            ValueError: the first problem found.
        """
        check_values(self)
        for part in PARTS:
            part.check(self)
        if not self.cameras:
            raise ValueError("parameter cameras is empty: give at least one image topic")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"parameter cameras lists a topic twice: {self.cameras}")
        for name in ("camera_info_topics", "camera_rectified", "depth_topics"):
            if len(getattr(self, name)) > len(self.cameras):
                raise ValueError(f"parameter {name} has {len(getattr(self, name))} entries for "
                                 f"{len(self.cameras)} camera(s): one per camera, in the order of cameras")
        if not self.depth_min_range < self.depth_max_range:
            raise ValueError(f"parameters depth_min_range and depth_max_range must satisfy min < max, got "
                             f"{self.depth_min_range} and {self.depth_max_range}")


def _part(settings: "Settings", cls):
    return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


_IN_PARTS = {f.name for part in PARTS for f in fields(part)}
Settings = make_dataclass("Settings", settings_fields(name for name in PARAMETERS if name not in _IN_PARTS),
                          bases=(_CameraSettings, *PARTS))
Settings.__module__ = __name__
Settings.__doc__ = """Every parameter's value, read once per configure: a field for each row of
PARAMETERS, typed and with the row's default (`runtime.parameters.settings_fields`); the
parts' fields (PARTS: the text path's, acquisition's, the reference mode's, the
transitions', the standard outputs' switches) come from their own classes, whose defaults are the table's too."""


def declare(node: Node) -> None:
    """Declare every parameter of PARAMETERS on `node`, typed, with its descriptor.

    A value given at start-up in another type is converted where that keeps its meaning
    ("-p overlay_alpha:=1", an integer, for a double; "true" for a bool); one that cannot
    be converted, or lies out of range, is kept as given (declared without type or range)
    so that configure fails naming the parameter instead of the node's constructor.
    """
    for name, row in PARAMETERS.items():
        try:
            node.declare_parameter(name, parameter_type(row) if row.unset else row.default, descriptor(name, row))
            continue
        except (InvalidParameterTypeException, InvalidParameterValueException):
            pass
        loose = descriptor(name, row, enforce_range=False)
        loose.dynamic_typing = True  # (rclpy refuses a Parameter.Type default with it: declare unset)
        given = node.declare_parameter(name, None if row.unset else row.default, loose).value
        try:
            value = row.coerce(name, given)
            row.check(name, value)
        except ValueError:
            continue
        node.undeclare_parameter(name)
        node.declare_parameter(name, value, descriptor(name, row), ignore_override=True)


def read(node: Node) -> Settings:
    """The node's parameters as checked Settings.

    Raises:
        ValueError: a value of the wrong type or out of range, or settings that cannot
            work together (Settings.check), naming the parameter.
    """
    values = {}
    for name, row in PARAMETERS.items():
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            value = None
        if value is not None:
            values[name] = row.coerce(name, value)
    settings = Settings(**values)
    settings.check()
    return settings


def changed_settings(current: Optional[Settings], parameters: Iterable[Parameter]) -> Optional[Settings]:
    """The settings after setting `parameters` (a set_parameters request), or None when
    there is nothing to apply now.

    Args:
        current: the running node's settings; None while it is not configured (every
            parameter may then be set; configure reads and checks them all).
        parameters: the requested values; names not in PARAMETERS (rclpy's own, such as
            use_sim_time) are left to rclpy.
    Returns:
        New Settings holding the changes (to be used from the next frame on), or None when
        the node is not configured or no parameter of the table changed (a parameter set
        to the value it has is no change, so tools that send every parameter back are
        not refused).
    Raises:
        ValueError: the reason for refusing the whole request: a value of the wrong type
            or out of range, a read-only parameter on a configured node, or settings that
            cannot work together.
    """
    changes = {}
    for p in parameters:
        row = PARAMETERS.get(p.name)
        if row is None:
            continue
        value = row.coerce(p.name, p.value) if p.value is not None else row.value()
        row.check(p.name, value)
        if current is None or getattr(current, p.name) != value:
            changes[p.name] = value
    if current is None or not changes:
        return None
    frozen = [name for name in changes if not PARAMETERS[name].live]
    if frozen:
        raise ValueError(f"parameter{'s' if len(frozen) > 1 else ''} {', '.join(frozen)} "
                         f"{'are' if len(frozen) > 1 else 'is'} read-only after configure (the model, "
                         f"subscriptions or services are built from it): deactivate and clean up the "
                         f"node, set it, configure again")
    settings = replace(current, **changes)
    settings.check()
    return settings
