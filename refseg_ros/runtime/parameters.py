"""The node's parameters: one table, from which everything about them is derived; ROS-free.

`PARAMETERS` holds, for every parameter, its type and default, its description, its
range or choices, and whether it is live (may change on a running node, used from the
next frame or request on) or read-only after configure (the model, subscriptions or a
service are built from it: change it with cleanup, set, configure). Derived from it:

- the node's declarations, with their `ParameterDescriptor`s, and its checks at
  configure and on `set_parameters` (`refseg_ros.ros.params`, the only part that needs
  rclpy);
- the settings classes' fields and defaults: the node's `Settings` and the parts the
  evaluation shares with it (`runtime.captions.TextSettings`,
  `runtime.acquisition.AcquisitionSettings`, `runtime.reference_modes.ReferenceSettings`,
  `runtime.transitions.TransitionSettings`) take their defaults from `parameter`;
- `refseg-eval`'s flags of the same names (`add_argument`: same default, choices, range
  and help);
- the parameter table of docs/NODE.md (`markdown_table`; `python -m
  refseg_ros.runtime.parameters` prints it).

`config/segmenter.yaml` holds the table's defaults (test/package/test_node_config.py checks it).
Adding a row is all a new parameter takes (and, where a settings part uses it, its field).
This module imports nothing but the standard library, so that the evaluation's command
line and the docs need neither rclpy nor torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from .modes import DEFAULT_DBST_ON, NAMES

RECTIFIED_CHOICES = ("auto", "true", "false")
CAPTION_TOPIC_MODES = ("replace", "add")
TEXT_PATHS = ("auto", "samwise", "grounding", "none")
TEXT_MODES = ("causal", "clip")
REFERENCE_MODES = NAMES  # the mode grammar (runtime.modes)
# engine.encoders.BACKENDS and PRECISIONS (test_encoder_backends checks they agree; this
# module imports no engine)
ENCODER_BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
ENCODER_PRECISIONS = ("fp32", "fp16", "bf16")


class Kind(enum.Enum):
    """A parameter's type, named as ROS names it (rcl_interfaces/msg/ParameterType,
    rclpy's `Parameter.Type`); the value is the Python type of a value of it."""

    BOOL = "bool"
    INTEGER = "integer"
    DOUBLE = "double"
    STRING = "string"
    INTEGER_ARRAY = "integer_array"
    STRING_ARRAY = "string_array"

    @property
    def python(self) -> Any:
        """The annotation of a settings field of this kind (e.g. list[str])."""
        return _PYTHON[self]

    @classmethod
    def of(cls, value: Any) -> "Kind":
        """The kind of a (non-empty, for a list) value.

        Raises:
            TypeError: a value of no kind here (None, an empty or mixed list, a dict).
        """
        if isinstance(value, list) and value and len({type(v) for v in value}) == 1:
            kind = {int: cls.INTEGER_ARRAY, str: cls.STRING_ARRAY}.get(type(value[0]))
        else:
            kind = {bool: cls.BOOL, int: cls.INTEGER, float: cls.DOUBLE, str: cls.STRING}.get(type(value))
        if kind is None:
            raise TypeError(f"no parameter kind for {value!r}")
        return kind


_PYTHON = {Kind.BOOL: bool, Kind.INTEGER: int, Kind.DOUBLE: float, Kind.STRING: str,
           Kind.INTEGER_ARRAY: list[int], Kind.STRING_ARRAY: list[str]}


@dataclass(frozen=True)
class Param:
    """One node parameter.

    default: its value when not set, or a `Kind` (an array parameter that may stay unset:
        ROS cannot infer a type from an empty list; its settings field is then []).
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
    def kind(self) -> Kind:
        """The parameter's type."""
        return self.default if isinstance(self.default, Kind) else Kind.of(self.default)

    @property
    def unset(self) -> bool:
        """True for an array parameter that has no value until one is given."""
        return isinstance(self.default, Kind)

    def value(self) -> Any:
        """The settings' value when the parameter is not set: the default (a fresh list for
        an array), [] for an unset array."""
        if self.unset:
            return []
        return list(self.default) if isinstance(self.default, list) else self.default

    def limits(self) -> str:
        """Range or choices in words ("" for none)."""
        if self.choices:
            each = "each one of" if self.kind == Kind.STRING_ARRAY else "one of"
            return f"{each} {choices_text(self.choices)}"
        return range_text(self.range) if self.range is not None else ""

    def constraints(self) -> str:
        """Range or choices and liveness in words (the descriptor's additional_constraints)."""
        parts = [self.limits()] if self.limits() else []
        parts.append("live: used from the next frame on" if self.live
                     else "read-only after configure (cleanup, set, configure)")
        return "; ".join(parts)

    def check(self, name: str, value: Any) -> None:
        """Raises ValueError naming the parameter when `value` is out of range, not a choice,
        or a double that is not finite (NaN or infinite)."""
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"parameter {name} must be a finite number, got {value!r}")
        if self.choices:
            values = value if isinstance(value, (list, tuple)) else [value]
            bad = [v for v in values if v not in self.choices]
            if bad:
                raise ValueError(f"parameter {name} must be {'each ' if values is value else ''}one of "
                                 f"{choices_text(self.choices)}, got {bad[0]!r}")
        if self.range is not None:
            low, high, *step = self.range
            if value < low or (high is not None and value > high) or (step and (value - low) % step[0]):
                raise ValueError(f"parameter {name} must be {range_text(self.range)}, got {value!r}")

    def coerce(self, name: str, value: Any) -> Any:
        """`value` as this parameter's type, where that keeps its meaning: "true" or 1 for
        a bool, 1 for a double, "7" for an integer, one string for a string array.

        Raises:
            ValueError: naming the parameter, when it cannot be converted (a bool for a
                number, "abc" for a double).
        """
        kind = self.kind
        try:
            if kind == Kind.BOOL:
                if isinstance(value, str):
                    return value.strip().lower() in ("1", "true", "yes", "on")
                return bool(value)
            if kind == Kind.INTEGER_ARRAY:
                return [int(v) for v in value]
            if kind == Kind.STRING_ARRAY:
                if isinstance(value, str):
                    return [value] if value else []
                return [str(v) for v in value]
            if kind in (Kind.INTEGER, Kind.DOUBLE) and isinstance(value, bool):
                raise TypeError(value)  # int(True) would pass
            return kind.python(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {name} has value {value!r}, which is not a "
                             f"{getattr(kind.python, '__origin__', kind.python).__name__}") from None


def choices_text(choices: Sequence[str]) -> str:
    """Choices in words: "a, b" ('' quoted)."""
    return ", ".join(repr(c) if c == "" else c for c in choices)


def range_text(span: tuple) -> str:
    """A range in words: ">= 0", "in [0, 1]", "..., a multiple of 64"."""
    low, high, *step = span
    text = f">= {low}" if high is None else f"in [{low}, {high}]"
    return text + (f", a multiple of {step[0]}" if step else "")


# name -> Param(default, description, live, range, choices).
PARAMETERS: dict[str, Param] = {
    "cameras": Param(["camera/image_raw"], "image topics, one per camera (relative names are in the "
                     "node's namespace); a topic ending in /compressed is read as sensor_msgs/CompressedImage"),
    "camera_transports": Param(Kind.STRING_ARRAY, "per camera: raw or compressed "
                               "(overrides the /compressed suffix rule); empty: by suffix",
                               choices=("", "raw", "compressed")),
    "camera_info_topics": Param(Kind.STRING_ARRAY, "per camera: its sensor_msgs/CameraInfo topic "
                                "(bearing and position need it); empty entry or list: none"),
    "camera_rectified": Param(Kind.STRING_ARRAY, "per camera: auto, true or false: its images are "
                              "rectified (image_proc's image_rect, image_rect_color), so CameraInfo's P applies "
                              "and D does not; false: K and D; auto: true when the topic's last name has a "
                              "rect part (image_rect...); empty: auto", live=True, choices=RECTIFIED_CHOICES),
    "depth_topics": Param(Kind.STRING_ARRAY, "per camera: an aligned depth image topic (registered "
                          "to the colour camera; 16UC1 mm or 32FC1 m) for the targets' 3D positions; empty: none"),
    "depth_stamp_tolerance": Param(0.02, "seconds: a depth image is paired with the colour frame whose stamp is "
                                   "closest, if within this", live=True, range=(0.0, None)),
    "depth_queue_size": Param(30, "depth images kept per camera for pairing (cover a step's time at the depth "
                              "rate; replay mode keeps at least the image queue's depth)", range=(1, None)),
    "depth_percentile": Param(50.0, "which percentile of a mask's valid depths is the target's depth (50: median)",
                              live=True, range=(0.0, 100.0)),
    "depth_min_range": Param(0.0, "metres: nearer depth values are invalid", live=True, range=(0.0, None)),
    "depth_max_range": Param(100.0, "metres: farther depth values are invalid", live=True, range=(0.0, None)),
    "point_targets": Param(Kind.INTEGER_ARRAY, "target ids whose position is also published as "
                           "geometry_msgs/PointStamped on <camera>/<output_namespace>/target_<id>/point"),
    "mode": Param("live", "live: newest frame only, never a backlog; replay: every frame, in order",
                  choices=("live", "replay")),
    "qos_reliability": Param("", "override for image subscriptions: reliable or best_effort",
                             choices=("", "reliable", "best_effort")),
    "qos_depth": Param(0, "override for the image subscriptions' queue depth (0: by mode)", range=(0, None)),
    "output_qos_depth": Param(0, "queue depth of the result publishers (0: by mode)", range=(0, None)),
    "output_namespace": Param("refseg", "results go to <camera>/<output_namespace>/{mask,objects,overlay}"),
    "publish_detections": Param(True, "also publish vision_msgs Detection2DArray and Detection3DArray on "
                                "<camera>/<output_namespace>/detections and .../detections_3d (when vision_msgs "
                                "is installed)", live=True),
    "publish_tf": Param(True, "publish a TF frame per target with a 3D position on /tf: <optical frame> -> "
                        "<tf_frame_prefix>target_<id> (when tf2_msgs is installed)", live=True),
    "tf_frame_prefix": Param("refseg/", "prefix of the targets' TF frames (e.g. refseg/target_3); no leading '/'",
                             live=True),
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
    "batch_cameras": Param(True, "the cameras' frames waiting together run through the image encoder as one "
                           "batched call (then each camera's tracking as before; the same results); false: one "
                           "encoder call per camera frame"),
    "compile": Param(False, "torch.compile the heavy modules (pays off on CUDA; minutes to build on CPU)"),
    "encoder_backend": Param("torch", "what runs the plain image-encoder pass: torch, onnxruntime (CPU; CUDA with "
                             "onnxruntime-gpu), openvino (CPU) or tensorrt (ONNX Runtime's TensorRT provider); "
                             "exported once per model, size and weights into the weights cache (refseg-weights "
                             "--build-engine builds it ahead) and used only after a parity check against torch; "
                             "adapted passes stay on torch (docs/ENGINE.md, \"Encoder backends\")",
                             choices=ENCODER_BACKENDS),
    "encoder_precision": Param("fp32", "precision of an exported encoder_backend: fp32, or opt-in fp16 / bf16 "
                               "where the backend runs it (measured differences: docs/ENGINE.md); torch follows "
                               "precision", choices=ENCODER_PRECISIONS),
    "encoder_backend_fallback": Param(False, "an encoder_backend that cannot run here (not installed, no provider "
                                      "for the device, failed parity): false: configure fails with the reason (on "
                                      "the status topic); true: the pass runs on torch, and the log and status say "
                                      "why"),
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
                                   "frame needs", live=True),
    "acquisition_m": Param(2, "frames above the threshold, out of the last acquisition_k looked at, before a seed",
                           live=True, range=(1, None)),
    "acquisition_k": Param(3, "frames looked at that the M-of-K rule counts", live=True, range=(1, None)),
    "acquisition_interval": Param(0.0, "seconds between two proposals for one target (0: as fast as DINOv2 goes)",
                                  live=True, range=(0.0, None)),
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
                            "neck for ttga: CAV-SAM in full); cavsam: ttga+dbst", choices=REFERENCE_MODES),
    "fssam_checkpoint": Param("", "FSSAM checkpoint file (its SAM2 and DINOv2) for reference_mode fssam"),
    "ttga_steps": Param(100, "reference_mode ttga: Adam steps of a target's neck tuning (background thread)",
                        range=(1, None)),
    "fssam_official": Param(False, "FSSAM as its release computes it instead of as the paper describes "
                            "(docs/ENGINE.md, FSSAM)"),
    "dbst_pipeline": Param("", "folder or hub id (from the hub cache: refseg-weights --for transitions) of a "
                           "diffusers Stable Diffusion pipeline (2.1 base): reference targets get "
                           "diffusion transition frames (CAV-SAM) in the background, beside acquisition when "
                           "dino_model is set too; empty: off"),
    "dbst_on": Param(DEFAULT_DBST_ON, "when a transition job starts: taught and/or lost"),
    "dbst_frames": Param(9, "transition frames per job", range=(1, None)),
    "dbst_lora_steps": Param(200, "steps of each per-image LoRA fit of a transition job", range=(0, None)),
    "text_path": Param("auto", "how captions are tracked: samwise, grounding, none, or auto (samwise when "
                       "samwise_checkpoint is set, else grounding when grounding_model is set, else what the "
                       "caches hold: refseg-weights --for captions; else none)",
                       choices=TEXT_PATHS),
    "samwise_checkpoint": Param("", "official SAMWISE checkpoint file, or auto: the weights cache's "
                                "(refseg-weights samwise) (its SAM2 must be the model parameter's: "
                                "sam2_hiera_b+ at 1024)"),
    "samwise_tokenizer": Param("", "folder with roberta-base's vocab.json + merges.txt (or tokenizer.json), "
                              "or a hub id; empty: FacebookAI/roberta-base from the hub cache"),
    "text_window": Param(8, "SAMWISE window T in frames: the causal window (1: per-frame streaming) or the clip",
                         range=(1, None)),
    "text_mode": Param("causal", "SAMWISE streaming mode: causal (a result every frame, adapted with the T-1 "
                       "frames before) or clip (the official non-overlapping clips; results T-1 frames late, "
                       "published with their frames' headers)", choices=TEXT_MODES),
    "text_cme": Param(True, "SAMWISE's conditional memory encoder on (as the official model)"),
    "grounding_model": Param("", "folder or hub id (from the hub cache) of a transformers zero-shot detector "
                             "(Grounding DINO, MM-Grounding-DINO/LLMDet, OWLv2) for the grounding path"),
    "grounding_threshold": Param(0.35, "detector score a caption's box needs", live=True, range=(0.0, 1.0)),
    "regrounding_interval": Param(0.0, "seconds between re-groundings of a tracked caption (0: only when lost)",
                                  live=True, range=(0.0, None)),
    "grounding_retry": Param(0.0, "seconds between grounding calls while a caption is not found (0: as often "
                             "as the detector keeps up)", live=True, range=(0.0, None)),
    "max_label_length": Param(256, "longest label accepted, in characters", live=True, range=(1, None)),
    "max_targets": Param(1000, "most targets the node keeps", live=True, range=(1, None)),
}



def parameter(name: str) -> Any:
    """The dataclass field of a settings class for the parameter `name`: its default is
    the table's (`Param.value`), so that no settings class states a default of its own.

    Raises:
        KeyError: `name` is no parameter.
    """
    row = PARAMETERS[name]
    if isinstance(row.value(), list):
        return dataclasses.field(default_factory=row.value)
    return dataclasses.field(default=row.value())


def settings_fields(names: Iterable[str]) -> list[tuple[str, Any, Any]]:
    """`dataclasses.make_dataclass` fields (name, annotation, field) for these parameters."""
    return [(name, PARAMETERS[name].kind.python, parameter(name)) for name in names]


def check_values(settings: Any) -> None:
    """Check each field of the dataclass `settings` that is a parameter against its row
    (range, choices).

    Raises:
        ValueError: the first value out of range or not a choice, naming the parameter.
    """
    for f in dataclasses.fields(settings):
        if f.name in PARAMETERS:
            PARAMETERS[f.name].check(f.name, getattr(settings, f.name))


def settings_from(cls: Any, values: dict[str, Any], **given: Any) -> Any:
    """An instance of the settings dataclass `cls` with its fields taken from `values`
    (e.g. vars() of parsed flags), then `given`; a field in neither keeps its default."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in {**values, **given}.items() if k in names})


def flag(name: str) -> str:
    """The command-line flag of the parameter `name`: --image-size for image_size."""
    return "--" + name.replace("_", "-")


def add_argument(parser: Any, name: str, *aliases: str, default: Any = None, note: str = "") -> argparse.Action:
    """Add the parameter `name` to an argparse parser or group as `flag(name)` (and
    `aliases`), with the table's default (unless `default` is given; `note` says why),
    choices, range and description; a value is converted and checked as the node does
    (`Param.coerce`, `Param.check`), so that a bad one is refused by the parser with the
    node's reason. A bool parameter is a pair of switches (--x / --no-x). Array
    parameters are not supported (no flag takes one).

    Raises:
        KeyError: `name` is no parameter.
        ValueError: an array parameter.
    """
    row = PARAMETERS[name]
    if row.kind in (Kind.INTEGER_ARRAY, Kind.STRING_ARRAY):
        raise ValueError(f"parameter {name} is an array: no flag for it")
    value = row.value() if default is None else default
    limits = f"; {row.limits()}" if row.limits() and not row.choices else ""  # argparse lists choices
    why = f": {note}" if note else ""
    help_text = f"{row.description}{limits} (default: {value!r}{why})".replace("%", "%%")
    if row.kind == Kind.BOOL:
        return parser.add_argument(flag(name), *aliases, dest=name, default=value, help=help_text,
                                   action=argparse.BooleanOptionalAction)

    def convert(text: str) -> Any:
        try:
            converted = row.coerce(name, text)
            row.check(name, converted)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return converted

    convert.__name__ = row.kind.value  # argparse names the type in its own messages
    return parser.add_argument(flag(name), *aliases, dest=name, default=value, type=convert,
                               choices=row.choices or None, help=help_text,
                               metavar=None if row.choices else name.upper())


def markdown_table() -> str:
    """docs/NODE.md's parameter table: name, type, default, range or choices, live or
    read-only, description; one line per row of PARAMETERS, in its order."""
    lines = ["| parameter | type | default | range / choices | changes | description |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in PARAMETERS.items():
        default = "unset" if row.unset else repr(row.default)
        limits = choices_text(row.choices) if row.choices else range_text(row.range) if row.range else ""
        lines.append(f"| `{name}` | {row.kind.value} | `{default}` | {limits} | {'live' if row.live else 'read-only'} "
                     f"| {_markdown(row.description)} |")
    return "\n".join(lines) + "\n"


def _markdown(text: str) -> str:
    return text.replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    print(markdown_table(), end="")
