"""The node's parameters: one table, from which everything about them is derived.

`PARAMETERS` holds, for every parameter, its type and default, its description, its
range or choices, and whether it is live (may change on a running node, used from the
next frame or request on) or read-only after configure (the model, subscriptions or a
service are built from it: change it with cleanup, set, configure). The declaration and
its `ParameterDescriptor`, the checks at configure and on `set_parameters`, and the
parameter table of docs/NODE.md (`markdown_table`) all come from that table, so adding a
row is all a new parameter takes (and a field of the same name in `Settings`).

Read-only parameters keep `ParameterDescriptor.read_only` false: rcl never lets a
read-only parameter change again, not even on an unconfigured node, so they are refused
by the node's set-parameters callback (`changed_settings`) while it is configured, with
the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Optional, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterUninitializedException)
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..runtime import geometry
from ..runtime.acquisition import AcquisitionSettings
from ..runtime.captions import PATHS, TextSettings
from ..runtime.reference_modes import MODES, ReferenceSettings
from ..runtime.transitions import TransitionSettings

INT64_MAX = 2 ** 63 - 1
RECTIFIED_CHOICES = ("auto", "true", "false")
CAPTION_TOPIC_MODES = ("replace", "add")


@dataclass(frozen=True)
class Param:
    """One node parameter.

    default: its value when not set, or a `Parameter.Type` (an array parameter that may
        stay unset: ROS cannot infer a type from an empty list).
    description: what it means, with its units.
    live: True: may be set on a running node and is used from the next frame (or teaching
        request) on; False: read-only after configure.
    range: inclusive (low, high) of a number, high None for no upper bound; integers may
        add a step (low, high, step): low + k * step.
    choices: the strings the value (each element of a string array) may be.
    """

    default: Any
    description: str
    live: bool = False
    range: Optional[tuple] = None
    choices: tuple[str, ...] = ()

    @property
    def type(self) -> Parameter.Type:
        """The ROS parameter type."""
        if isinstance(self.default, Parameter.Type):
            return self.default
        return Parameter.Type.from_parameter_value(self.default)

    def constraints(self) -> str:
        """Range or choices and liveness in words (the descriptor's additional_constraints)."""
        parts = []
        if self.choices:
            each = "each one of" if self.type == Parameter.Type.STRING_ARRAY else "one of"
            parts.append(f"{each} {_choices_text(self.choices)}")
        if self.range is not None:
            parts.append(_range_text(self.range))
        parts.append("live: used from the next frame on" if self.live
                     else "read-only after configure (cleanup, set, configure)")
        return "; ".join(parts)

    def descriptor(self, name: str, enforce_range: bool = True) -> ParameterDescriptor:
        """The ParameterDescriptor declared for the parameter `name` (typed, with its range
        unless `enforce_range` is false)."""
        d = ParameterDescriptor(name=name, type=self.type.value, description=self.description,
                                additional_constraints=self.constraints(), read_only=False)
        if self.range is not None and enforce_range:
            low, high, *step = self.range
            if self.type == Parameter.Type.INTEGER:
                d.integer_range = [IntegerRange(from_value=low, to_value=INT64_MAX if high is None else high,
                                                step=step[0] if step else 0)]
            else:
                d.floating_point_range = [FloatingPointRange(
                    from_value=float(low), to_value=float("inf") if high is None else float(high), step=0.0)]
        return d

    def check(self, name: str, value: Any) -> None:
        """Raises ValueError naming the parameter when `value` is out of range or not a choice."""
        if self.choices:
            values = value if isinstance(value, (list, tuple)) else [value]
            bad = [v for v in values if v not in self.choices]
            if bad:
                raise ValueError(f"parameter {name} must be {'each ' if values is value else ''}one of "
                                 f"{_choices_text(self.choices)}, got {bad[0]!r}")
        if self.range is not None:
            low, high, *step = self.range
            if value < low or (high is not None and value > high) or (step and (value - low) % step[0]):
                raise ValueError(f"parameter {name} must be {_range_text(self.range)}, got {value!r}")


def _choices_text(choices: Sequence[str]) -> str:
    return ", ".join(repr(c) if c == "" else c for c in choices)


def _range_text(span: tuple) -> str:
    low, high, *step = span
    text = f">= {low}" if high is None else f"in [{low}, {high}]"
    return text + (f", a multiple of {step[0]}" if step else "")


# name -> Param(default, description, live, range, choices).
PARAMETERS: dict[str, Param] = {
    "cameras": Param(["camera/image_raw"], "image topics, one per camera (relative names are in the "
                     "node's namespace); a topic ending in /compressed is read as sensor_msgs/CompressedImage"),
    "camera_transports": Param(Parameter.Type.STRING_ARRAY, "per camera: raw or compressed "
                               "(overrides the /compressed suffix rule); empty: by suffix",
                               choices=("", "raw", "compressed")),
    "camera_info_topics": Param(Parameter.Type.STRING_ARRAY, "per camera: its sensor_msgs/CameraInfo topic "
                                "(bearing and position need it); empty entry or list: none"),
    "camera_rectified": Param(Parameter.Type.STRING_ARRAY, "per camera: auto, true or false: its images are "
                              "rectified (image_proc's image_rect, image_rect_color), so CameraInfo's P applies "
                              "and D does not; false: K and D; auto: true when the topic's last name has a "
                              "rect part (image_rect...); empty: auto", live=True, choices=RECTIFIED_CHOICES),
    "depth_topics": Param(Parameter.Type.STRING_ARRAY, "per camera: an aligned depth image topic (registered "
                          "to the colour camera; 16UC1 mm or 32FC1 m) for the targets' 3D positions; empty: none"),
    "depth_stamp_tolerance": Param(0.02, "seconds: a depth image is paired with the colour frame whose stamp is "
                                   "closest, if within this", live=True, range=(0.0, None)),
    "depth_queue_size": Param(30, "depth images kept per camera for pairing (cover a step's time at the depth "
                              "rate; replay mode keeps at least the image queue's depth)", range=(1, None)),
    "depth_percentile": Param(50.0, "which percentile of a mask's valid depths is the target's depth (50: median)",
                              live=True, range=(0.0, 100.0)),
    "depth_min_range": Param(0.0, "metres: nearer depth values are invalid", live=True, range=(0.0, None)),
    "depth_max_range": Param(100.0, "metres: farther depth values are invalid", live=True, range=(0.0, None)),
    "point_targets": Param(Parameter.Type.INTEGER_ARRAY, "target ids whose position is also published as "
                           "geometry_msgs/PointStamped on <camera>/<output_namespace>/target_<id>/point"),
    "mode": Param("live", "live: newest frame only, never a backlog; replay: every frame, in order",
                  choices=("live", "replay")),
    "qos_reliability": Param("", "override for image subscriptions: reliable or best_effort",
                             choices=("", "reliable", "best_effort")),
    "qos_depth": Param(0, "override for the image subscriptions' queue depth (0: by mode)", range=(0, None)),
    "output_qos_depth": Param(0, "queue depth of the result publishers (0: by mode)", range=(0, None)),
    "output_namespace": Param("refseg", "results go to <camera>/<output_namespace>/{mask,objects,overlay}"),
    "model": Param("sam2.1_hiera_t", "SAM2 model name (see refseg_ros.engine.model.MODEL_CONFIGS)"),
    "checkpoint": Param("", "SAM2 checkpoint file; auto: the weights cache's file for the model "
                        "(refseg-weights); empty: random weights (tests only)"),
    "image_size": Param(1024, "model input size, a multiple of 64", range=(64, 8192, 64)),
    "device": Param("auto", "auto, cpu, cuda or cuda:N"),
    "precision": Param("auto", "auto, fp32 or bf16", choices=("auto", "fp32", "bf16")),
    "preprocessing": Param("device", "frame resize rule: device (on the model's device, fast) or official "
                           "(SAM2's video predictor's: PIL on the CPU, its exact numbers; docs/ENGINE.md)",
                           choices=("device", "official")),
    "compute_threads": Param(0, "CPU threads of the model (torch intra-op threads); 0: the cores of "
                             "this process less one, left to frame intake (docs/NODE.md, 'CPU threads')",
                             range=(0, None)),
    "compile": Param(False, "torch.compile the heavy modules (pays off on CUDA; minutes to build on CPU)"),
    "seed": Param(0, "seed of the random initialisation when no checkpoint is given"),
    "store_dir": Param("~/.ros/refseg_ros/targets", "directory of the target store; empty: keep "
                       "taught targets in memory only"),
    "reference_topic": Param("~/reference", "refseg_ros/ReferenceTarget: teach by example"),
    "caption_topic": Param("~/caption", "std_msgs/String: teach by caption"),
    "caption_topic_mode": Param("replace", "what a new caption on caption_topic does: replace (the topic's "
                                "earlier target is forgotten: one caption target at a time) or add (one more "
                                "target); the same caption again (case and whitespace aside) is always the same "
                                "target", choices=CAPTION_TOPIC_MODES),
    "status_topic": Param("~/status", "std_msgs/String: human-readable events"),
    "object_masks": Param(False, "also put each object's own mask (mono8) in the object list, so "
                          "that overlapping objects keep every pixel (the label image gives a "
                          "pixel to the later object only)", live=True),
    "overlay_alpha": Param(0.5, "mask opacity in the overlay image", live=True, range=(0.0, 1.0)),
    "diagnostics_period": Param(1.0, "seconds between /diagnostics reports", live=True, range=(0.01, None)),
    "stamp_tolerance": Param(5.0, "seconds a frame's header.stamp may lie from this node's clock "
                             "on arrival before the header is reported as implausible",
                             live=True, range=(0.001, None)),
    "status_repeat_period": Param(5.0, "seconds before an identical rejection is reported again",
                                  live=True, range=(0.0, None)),
    "max_caption_length": Param(1000, "longest caption accepted, in characters", live=True, range=(1, None)),
    "dino_model": Param("", "folder or hub id (from the hub cache: refseg-weights --for reference) of a "
                        "transformers Dinov2Model: reference targets are looked for by their "
                        "prior while not tracked (acquisition), in every reference_mode; empty: off (in "
                        "reference_mode fssam: FSSAM's own DINOv2)"),
    "acquisition_threshold": Param(0.5, "raw candidate score (mask-averaged cosine x IoU and presence terms) a "
                                   "frame needs"),
    "acquisition_m": Param(2, "frames above the threshold, out of the last acquisition_k looked at, before a seed",
                           range=(1, None)),
    "acquisition_k": Param(3, "frames looked at that the M-of-K rule counts", range=(1, None)),
    "acquisition_interval": Param(0.0, "seconds between two proposals for one target (0: as fast as DINOv2 goes)",
                                  range=(0.0, None)),
    "acquisition_candidates": Param(5, "similarity peaks decoded per proposal, in one batched SAM2 decode",
                                    range=(1, None)),
    "acquisition_input_size": Param(224, "DINOv2 input side in pixels, a multiple of its patch (0: the model's own; "
                                    "224: a ViT-B/14 proposal costs ~0.4 of a step at 512 on the CPU, 518: ~2.4)",
                                    range=(0, None)),
    "acquisition_watch": Param(True, "the prior also looks at tracked reference targets (every acquisition_interval) "
                               "and declares one lost, with no mask, when acquisition_m of the last acquisition_k "
                               "looks find nothing like it (SAM2 alone keeps drawing a mask from memory)"),
    "reference_mode": Param("baseline", "how reference targets are segmented, TRACKER[+acquisition][+dbst] "
                            "(docs/NODE.md, \"Reference modes\"): baseline (pinned examples, SAM2 tracking), ttga (a "
                            "per-target neck tuned by CAV-SAM's test-time geometric alignment in the background) or "
                            "fssam (FSSAM on every frame; needs fssam_checkpoint, model sam2_hiera_s, image_size "
                            "512); +acquisition: the DINOv2 prior gates it (added by dino_model, and by FSSAM's own "
                            "DINOv2 for fssam); +dbst: transition frames (added by dbst_pipeline; through the tuned "
                            "neck for ttga: CAV-SAM in full); cavsam: ttga+dbst", choices=MODES),
    "fssam_checkpoint": Param("", "FSSAM checkpoint file (its SAM2 and DINOv2) for reference_mode fssam"),
    "ttga_steps": Param(100, "reference_mode ttga: Adam steps of a target's neck tuning (background thread)",
                        range=(1, None)),
    "fssam_official": Param(False, "FSSAM as its release computes it instead of as the paper describes "
                            "(docs/ENGINE.md, FSSAM)"),
    "dbst_pipeline": Param("", "folder or hub id (from the hub cache: refseg-weights --for transitions) of a "
                           "diffusers Stable Diffusion pipeline (2.1 base): reference targets get "
                           "diffusion transition frames (CAV-SAM) in the background, beside acquisition when "
                           "dino_model is set too; empty: off"),
    "dbst_on": Param("taught,lost", "when a transition job starts: taught and/or lost"),
    "dbst_frames": Param(9, "transition frames per job", range=(1, None)),
    "dbst_lora_steps": Param(200, "steps of each per-image LoRA fit of a transition job", range=(0, None)),
    "text_path": Param("auto", "how captions are tracked: samwise, grounding, none, or auto (samwise when "
                       "samwise_checkpoint is set, else grounding when grounding_model is set, else what the "
                       "caches hold: refseg-weights --for captions; else none)",
                       choices=PATHS),
    "samwise_checkpoint": Param("", "official SAMWISE checkpoint file, or auto: the weights cache's "
                                "(refseg-weights samwise) (its SAM2 must be the model parameter's: "
                                "sam2_hiera_b+ at 1024)"),
    "samwise_tokenizer": Param("", "folder with roberta-base's vocab.json + merges.txt (or tokenizer.json), "
                              "or a hub id; empty: FacebookAI/roberta-base from the hub cache"),
    "text_window": Param(8, "SAMWISE window T in frames: the causal window (1: per-frame streaming) or the clip",
                         range=(1, None)),
    "text_mode": Param("causal", "SAMWISE streaming mode: causal (a result every frame, adapted with the T-1 "
                       "frames before) or clip (the official non-overlapping clips; results T-1 frames late, "
                       "published with their frames' headers)", choices=("causal", "clip")),
    "text_cme": Param(True, "SAMWISE's conditional memory encoder on (as the official model)"),
    "grounding_model": Param("", "folder or hub id (from the hub cache) of a transformers zero-shot detector (Grounding DINO, "
                             "MM-Grounding-DINO/LLMDet, OWLv2) for the grounding path"),
    "grounding_threshold": Param(0.35, "detector score a caption's box needs", range=(0.0, 1.0)),
    "regrounding_interval": Param(0.0, "seconds between re-groundings of a tracked caption (0: only when lost)",
                                  range=(0.0, None)),
    "grounding_retry": Param(0.0, "seconds between grounding calls while a caption is not found (0: as often "
                             "as the detector keeps up)", range=(0.0, None)),
    "max_label_length": Param(256, "longest label accepted, in characters", live=True, range=(1, None)),
    "max_targets": Param(1000, "most targets the node keeps", live=True, range=(1, None)),
}


@dataclass
class Settings(TextSettings, AcquisitionSettings, ReferenceSettings, TransitionSettings):
    """Every parameter's value, read once per configure (the text path's, acquisition's
    and the reference mode's fields come from their own settings classes)."""

    cameras: list[str] = field(default_factory=list)
    camera_transports: list[str] = field(default_factory=list)
    camera_info_topics: list[str] = field(default_factory=list)
    camera_rectified: list[str] = field(default_factory=list)
    depth_topics: list[str] = field(default_factory=list)
    depth_stamp_tolerance: float = 0.02
    depth_queue_size: int = 30
    depth_percentile: float = 50.0
    depth_min_range: float = 0.0
    depth_max_range: float = 100.0
    point_targets: list[int] = field(default_factory=list)
    mode: str = "live"
    qos_reliability: str = ""
    qos_depth: int = 0
    output_qos_depth: int = 0
    output_namespace: str = "refseg"
    model: str = "sam2.1_hiera_t"
    checkpoint: str = ""
    image_size: int = 1024
    device: str = "auto"
    precision: str = "auto"
    preprocessing: str = "device"
    compute_threads: int = 0
    compile: bool = False
    seed: int = 0
    store_dir: str = ""
    reference_topic: str = "~/reference"
    caption_topic: str = "~/caption"
    caption_topic_mode: str = "replace"
    status_topic: str = "~/status"
    object_masks: bool = False
    overlay_alpha: float = 0.5
    diagnostics_period: float = 1.0
    stamp_tolerance: float = 5.0
    status_repeat_period: float = 5.0
    max_caption_length: int = 1000
    max_label_length: int = 256
    max_targets: int = 1000

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
        for name, row in PARAMETERS.items():
            row.check(name, getattr(self, name))
        for part in (TextSettings, AcquisitionSettings, ReferenceSettings, TransitionSettings):
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


def declare(node: Node) -> None:
    """Declare every parameter of PARAMETERS on `node`, typed, with its descriptor.

    A value given at start-up in another type is converted where that keeps its meaning
    ("-p overlay_alpha:=1", an integer, for a double; "true" for a bool); one that cannot
    be converted, or lies out of range, is kept as given (declared without type or range)
    so that configure fails naming the parameter instead of the node's constructor.
    """
    for name, row in PARAMETERS.items():
        try:
            node.declare_parameter(name, row.default, row.descriptor(name))
            continue
        except (InvalidParameterTypeException, InvalidParameterValueException):
            pass
        loose = row.descriptor(name, enforce_range=False)
        loose.dynamic_typing = True  # (rclpy refuses a Parameter.Type default with it: declare unset)
        given = node.declare_parameter(name, None if isinstance(row.default, Parameter.Type) else row.default,
                                       loose).value
        try:
            value = _coerce(name, given, row.default)
            row.check(name, value)
        except ValueError:
            continue
        node.undeclare_parameter(name)
        node.declare_parameter(name, value, row.descriptor(name), ignore_override=True)


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
            values[name] = _coerce(name, value, row.default)
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
        value = _coerce(p.name, p.value, row.default) if p.value is not None else _unset(row.default)
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


def _unset(default: Any) -> Any:
    return [] if isinstance(default, Parameter.Type) else default


def markdown_table() -> str:
    """docs/NODE.md's parameter table: name, type, default, range or choices, live or
    read-only, description; one line per row of PARAMETERS, in its order."""
    lines = ["| parameter | type | default | range / choices | changes | description |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in PARAMETERS.items():
        default = "unset" if isinstance(row.default, Parameter.Type) else repr(row.default)
        limits = _choices_text(row.choices) if row.choices else _range_text(row.range) if row.range else ""
        kind = row.type.name.lower()
        lines.append(f"| `{name}` | {kind} | `{default}` | {limits} | {'live' if row.live else 'read-only'} "
                     f"| {_markdown(row.description)} |")
    return "\n".join(lines) + "\n"


def _markdown(text: str) -> str:
    return text.replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")


def _coerce(name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if default == Parameter.Type.INTEGER_ARRAY:
            return [int(v) for v in value]
        if isinstance(default, (list, Parameter.Type)):
            if isinstance(value, str):
                return [value] if value else []
            return [str(v) for v in value]
        if isinstance(default, (int, float)) and isinstance(value, bool):
            raise TypeError(value)  # int(True) would pass
        return type(default)(value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {name} has value {value!r}, which is not a "
                         f"{type(default).__name__}") from None


if __name__ == "__main__":
    print(markdown_table(), end="")
