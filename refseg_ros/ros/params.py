"""The node's parameters: declared with descriptions, read into one plain settings object."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..runtime.acquisition import AcquisitionSettings
from ..runtime.captions import TextSettings
from ..runtime.reference_modes import ReferenceSettings
from ..runtime.transitions import TransitionSettings
from .standard_outputs import OutputSwitches

# name -> (default, description). A Parameter.Type default declares a parameter that may
# stay unset (ROS cannot infer a type from an empty list).
PARAMETERS: dict[str, tuple[Any, str]] = {
    "cameras": (["camera/image_raw"], "image topics, one per camera (relative names are in the "
                "node's namespace); a topic ending in /compressed is read as sensor_msgs/CompressedImage"),
    "camera_transports": (Parameter.Type.STRING_ARRAY, "per camera: raw or compressed "
                          "(overrides the /compressed suffix rule); empty: by suffix"),
    "camera_info_topics": (Parameter.Type.STRING_ARRAY, "per camera: its sensor_msgs/CameraInfo topic "
                           "(bearing and position need it); empty entry or list: none"),
    "depth_topics": (Parameter.Type.STRING_ARRAY, "per camera: an aligned depth image topic (registered "
                     "to the colour camera; 16UC1 mm or 32FC1 m) for the targets' 3D positions; empty: none"),
    "depth_stamp_tolerance": (0.02, "seconds: a depth image is paired with the colour frame whose stamp is "
                              "closest, if within this"),
    "depth_queue_size": (30, "depth images kept per camera for pairing (cover a step's time at the depth "
                         "rate; replay mode keeps at least the image queue's depth)"),
    "depth_percentile": (50.0, "which percentile of a mask's valid depths is the target's depth (50: median)"),
    "depth_min_range": (0.0, "metres: nearer depth values are invalid"),
    "depth_max_range": (100.0, "metres: farther depth values are invalid"),
    "point_targets": (Parameter.Type.INTEGER_ARRAY, "target ids whose position is also published as "
                      "geometry_msgs/PointStamped on <camera>/<output_namespace>/target_<id>/point"),
    "mode": ("live", "live: newest frame only, never a backlog; replay: every frame, in order"),
    "qos_reliability": ("", "override for image subscriptions: reliable or best_effort"),
    "qos_depth": (0, "override for the image subscriptions' queue depth (0: by mode)"),
    "output_qos_depth": (0, "queue depth of the result publishers (0: by mode)"),
    "output_namespace": ("refseg", "results go to <camera>/<output_namespace>/{mask,objects,overlay}"),
    "publish_detections": (True, "also publish vision_msgs Detection2DArray and Detection3DArray on "
                           "<camera>/<output_namespace>/detections and .../detections_3d (when vision_msgs "
                           "is installed)"),
    "publish_tf": (True, "publish a TF frame per target with a 3D position on /tf: <optical frame> -> "
                   "<tf_frame_prefix>target_<id> (when tf2_msgs is installed)"),
    "tf_frame_prefix": ("refseg/", "prefix of the targets' TF frames (e.g. refseg/target_3); no leading '/'"),
    "model": ("sam2.1_hiera_t", "SAM2 model name (see refseg_ros.engine.model.MODEL_CONFIGS)"),
    "checkpoint": ("", "SAM2 checkpoint file; auto: the weights cache's file for the model "
                   "(refseg-weights); empty: random weights (tests only)"),
    "image_size": (1024, "model input size, a multiple of 64"),
    "device": ("auto", "auto, cpu, cuda or cuda:N"),
    "precision": ("auto", "auto, fp32 or bf16"),
    "preprocessing": ("device", "frame resize rule: device (on the model's device, fast) or official "
                      "(SAM2's video predictor's: PIL on the CPU, its exact numbers; docs/ENGINE.md)"),
    "compute_threads": (0, "CPU threads of the model (torch intra-op threads); 0: the cores of "
                        "this process less one, left to frame intake (docs/NODE.md, 'CPU threads')"),
    "compile": (False, "torch.compile the heavy modules (pays off on CUDA; minutes to build on CPU)"),
    "seed": (0, "seed of the random initialisation when no checkpoint is given"),
    "store_dir": ("~/.ros/refseg_ros/targets", "directory of the target store; empty: keep "
                  "taught targets in memory only"),
    "reference_topic": ("~/reference", "refseg_ros/ReferenceTarget: teach by example"),
    "caption_topic": ("~/caption", "std_msgs/String: teach by caption"),
    "status_topic": ("~/status", "std_msgs/String: human-readable events"),
    "object_masks": (False, "also put each object's own mask (mono8) in the object list, so "
                     "that overlapping objects keep every pixel (the label image gives a "
                     "pixel to the later object only)"),
    "overlay_alpha": (0.5, "mask opacity in the overlay image"),
    "diagnostics_period": (1.0, "seconds between /diagnostics reports"),
    "stamp_tolerance": (5.0, "seconds a frame's header.stamp may lie from this node's clock "
                        "on arrival before the header is reported as implausible"),
    "status_repeat_period": (5.0, "seconds before an identical rejection is reported again"),
    "max_caption_length": (1000, "longest caption accepted, in characters"),
    "dino_model": ("", "folder of a transformers Dinov2Model: reference targets are looked for by their "
                   "prior while not tracked (acquisition), in every reference_mode; empty: off (in "
                   "reference_mode fssam: FSSAM's own DINOv2)"),
    "acquisition_threshold": (0.5, "raw candidate score (mask-averaged cosine x IoU and presence terms) a "
                              "frame needs"),
    "acquisition_m": (2, "frames above the threshold, out of the last acquisition_k looked at, before a seed"),
    "acquisition_k": (3, "frames looked at that the M-of-K rule counts"),
    "acquisition_interval": (0.0, "seconds between two proposals for one target (0: as fast as DINOv2 goes)"),
    "acquisition_candidates": (5, "similarity peaks decoded per proposal, in one batched SAM2 decode"),
    "acquisition_input_size": (224, "DINOv2 input side in pixels, a multiple of its patch (0: the model's own; "
                               "224: a ViT-B/14 proposal costs ~0.4 of a step at 512 on the CPU, 518: ~2.4)"),
    "acquisition_watch": (True, "the prior also looks at tracked reference targets (every acquisition_interval) "
                          "and declares one lost, with no mask, when acquisition_m of the last acquisition_k "
                          "looks find nothing like it (SAM2 alone keeps drawing a mask from memory)"),
    "reference_mode": ("baseline", "how reference targets are segmented: baseline (pinned examples, SAM2 "
                       "tracking), ttga (a per-target neck tuned by CAV-SAM's test-time geometric alignment "
                       "in the background; with dbst_pipeline, also DBST's transition frames encoded through "
                       "that neck: CAV-SAM in full) or fssam (FSSAM on every frame; needs fssam_checkpoint, "
                       "model sam2_hiera_s, image_size 512)"),
    "fssam_checkpoint": ("", "FSSAM checkpoint file (its SAM2 and DINOv2) for reference_mode fssam"),
    "ttga_steps": (100, "reference_mode ttga: Adam steps of a target's neck tuning (background thread)"),
    "fssam_official": (False, "FSSAM as its release computes it instead of as the paper describes "
                       "(docs/ENGINE.md, FSSAM)"),
    "dbst_pipeline": ("", "folder of a diffusers Stable Diffusion pipeline (2.1 base): reference targets get "
                      "diffusion transition frames (CAV-SAM) in the background, beside acquisition when "
                      "dino_model is set too; empty: off"),
    "dbst_on": ("taught,lost", "when a transition job starts: taught and/or lost"),
    "dbst_frames": (9, "transition frames per job"),
    "dbst_lora_steps": (200, "steps of each per-image LoRA fit of a transition job"),
    "text_path": ("auto", "how captions are tracked: samwise, grounding, none, or auto (samwise when "
                  "samwise_checkpoint is set, else grounding when grounding_model is set, else none)"),
    "samwise_checkpoint": ("", "official SAMWISE checkpoint file (its SAM2 must be the model parameter's: "
                           "sam2_hiera_b+ at 1024)"),
    "samwise_tokenizer": ("", "folder with roberta-base's vocab.json + merges.txt (or tokenizer.json)"),
    "text_window": (8, "SAMWISE window T in frames: the causal window (1: per-frame streaming) or the clip"),
    "text_mode": ("causal", "SAMWISE streaming mode: causal (a result every frame, adapted with the T-1 "
                  "frames before) or clip (the official non-overlapping clips; results T-1 frames late, "
                  "published with their frames' headers)"),
    "text_cme": (True, "SAMWISE's conditional memory encoder on (as the official model)"),
    "grounding_model": ("", "folder of a transformers zero-shot detector (Grounding DINO, "
                        "MM-Grounding-DINO/LLMDet, OWLv2) for the grounding path"),
    "grounding_threshold": (0.35, "detector score a caption's box needs"),
    "regrounding_interval": (0.0, "seconds between re-groundings of a tracked caption (0: only when lost)"),
    "grounding_retry": (0.0, "seconds between grounding calls while a caption is not found (0: as often "
                        "as the detector keeps up)"),
    "max_label_length": (256, "longest label accepted, in characters"),
    "max_targets": (1000, "most targets the node keeps"),
}


@dataclass
class Settings(TextSettings, AcquisitionSettings, ReferenceSettings, TransitionSettings, OutputSwitches):
    """Every parameter's value, read once per configure (the text path's, acquisition's
    and the reference mode's fields come from their own settings classes)."""

    cameras: list[str] = field(default_factory=list)
    camera_transports: list[str] = field(default_factory=list)
    camera_info_topics: list[str] = field(default_factory=list)
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
        """Refuse settings that cannot work, naming the parameter."""
        for part in (TextSettings, AcquisitionSettings, ReferenceSettings, TransitionSettings, OutputSwitches):
            part.check(self)
        if not self.cameras:
            raise ValueError("parameter cameras is empty: give at least one image topic")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"parameter cameras lists a topic twice: {self.cameras}")
        if self.mode not in ("live", "replay"):
            raise ValueError(f"parameter mode must be live or replay, got {self.mode!r}")
        for i, transport in enumerate(self.camera_transports):
            if transport not in ("", "raw", "compressed"):
                raise ValueError(f"camera_transports[{i}] must be raw or compressed, got {transport!r}")
        for name in ("camera_info_topics", "depth_topics"):
            if len(getattr(self, name)) > len(self.cameras):
                raise ValueError(f"parameter {name} has {len(getattr(self, name))} entries for "
                                 f"{len(self.cameras)} camera(s): one per camera, in the order of cameras")
        if self.depth_stamp_tolerance < 0:
            raise ValueError("parameter depth_stamp_tolerance must not be negative")
        if self.depth_queue_size < 1:
            raise ValueError("parameter depth_queue_size must be at least 1")
        if not 0.0 <= self.depth_percentile <= 100.0:
            raise ValueError(f"parameter depth_percentile must lie in [0, 100], got {self.depth_percentile}")
        if not 0.0 <= self.depth_min_range < self.depth_max_range:
            raise ValueError("parameters depth_min_range and depth_max_range must satisfy 0 <= min < max")
        if self.qos_reliability.strip().lower().replace("-", "_") not in ("", "reliable", "best_effort"):
            raise ValueError(f"parameter qos_reliability must be reliable or best_effort, got {self.qos_reliability!r}")
        if self.image_size <= 0 or self.image_size % 64:
            raise ValueError(f"parameter image_size must be a positive multiple of 64, got {self.image_size}")
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise ValueError(f"parameter overlay_alpha must lie in [0, 1], got {self.overlay_alpha}")
        if self.preprocessing not in ("device", "official"):
            raise ValueError(f"parameter preprocessing must be device or official, got {self.preprocessing!r}")
        if self.compute_threads < 0:
            raise ValueError(f"parameter compute_threads must be 0 (auto) or positive, got {self.compute_threads}")
        if self.stamp_tolerance <= 0:
            raise ValueError("parameter stamp_tolerance must be positive")
        if self.diagnostics_period <= 0:
            raise ValueError("parameter diagnostics_period must be positive")


def _part(settings: "Settings", cls):
    return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def declare(node: Node) -> None:
    # Dynamic typing: "-p overlay_alpha:=1" (an integer) should not stop the node; values
    # are converted to the declared type when read.
    for name, (default, description) in PARAMETERS.items():
        typed = isinstance(default, Parameter.Type)  # ROS refuses dynamic typing with a type
        node.declare_parameter(name, default, ParameterDescriptor(description=description,
                                                                  dynamic_typing=not typed))


def read(node: Node) -> Settings:
    values = {}
    for name, (default, _) in PARAMETERS.items():
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            value = None
        if value is not None:
            values[name] = _coerce(name, value, default)
    settings = Settings(**values)
    settings.check()
    return settings


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
        return type(default)(value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {name} has value {value!r}, which is not a "
                         f"{type(default).__name__}") from None
