"""What a reference target is made of, named in one grammar and installed in one place;
ROS-free.

A reference mode names a `Recipe`: what tracks the target, what looks for it, what
bridges to it and when. Its name is the tracker, then the parts, joined by `+`:

- tracker: `baseline` (SAM2 from the pinned examples; left out of a name with parts),
  `ttga` (SAM2 through a per-target neck tuned by CAV-SAM's TTGA) or `fssam` (FSSAM on
  every frame);
- `+acquisition`: the DINOv2 prior looks for the target while it is not tracked and
  gates the tracker (no mask until found; its watch declares it lost);
- `+dbst`: CAV-SAM's diffusion transition frames bridge the reference to the scene, a
  job started on the triggers of `dbst_on` (taught, lost); for `ttga`, encoded through
  the target's own neck. FSSAM keeps no memory to pin them to: `fssam+dbst` is no mode.

So `MODES` = baseline, acquisition, dbst, acquisition+dbst, ttga, ttga+acquisition,
ttga+dbst, ttga+acquisition+dbst, fssam, fssam+acquisition; `cavsam` (the paper's name)
is read as `ttga+dbst` and `cavsam+acquisition` as `ttga+acquisition+dbst`. The node's
`reference_mode` parameter, `refseg-eval --reference-mode` and `list_targets`' `path`
use these names. The node also adds the parts its models give (`for_node`): a
`dino_model` adds `+acquisition`, a `dbst_pipeline` adds `+dbst`, and FSSAM's own DINOv2
adds `+acquisition` to `fssam`; the evaluation runs exactly the mode it is given.

`open_reference` opens the models a recipe needs (`ReferenceServices`) and says what
the recipe became (a part whose model cannot be loaded is left out); `ReferenceSetup`
is the one place that installs a target of that recipe on an engine's stream, for the
node's registry and the evaluation alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .modes import ALIASES, DEFAULT_DBST_ON, MODES, NAMES, TRACKERS, TRIGGERS, Recipe, parse_mode

if TYPE_CHECKING:  # the grammar imports no torch: refseg-eval's parser uses it
    from ..engine import SegmentationEngine

__all__ = ["ALIASES", "DEFAULT_DBST_ON", "MODES", "NAMES", "TRACKERS", "TRIGGERS", "Opened", "Recipe",
           "ReferenceServices", "ReferenceSetup", "for_node", "open_for_node", "open_reference", "parse_mode"]


def for_node(reference: Any, acquisition: Any, transitions: Any) -> Recipe:
    """The recipe the node asks for: its `reference_mode` (ReferenceSettings) with the
    parts its models add (a `dino_model` (AcquisitionSettings): +acquisition, also
    FSSAM's own DINOv2 for fssam; a `dbst_pipeline` (TransitionSettings): +dbst), so that
    configurations naming only the tracker keep their meaning. Raises ValueError for an
    unknown mode name."""
    stated = parse_mode(reference.reference_mode)
    return Recipe(stated.tracker, stated.acquisition or bool(acquisition.dino_model) or stated.tracker == "fssam",
                  stated.dbst or bool(transitions.dbst_pipeline), transitions.triggers())


@dataclass
class ReferenceServices:
    """The models of a recipe, opened once (node or evaluation run) and shared by its
    targets: `tracker` a TtgaMode or FssamMode (runtime.reference_modes; None: SAM2's own
    tracking), `acquisition` an AcquisitionService, `transitions` a TransitionService."""

    tracker: Optional[Any] = None
    acquisition: Optional[Any] = None
    transitions: Optional[Any] = None

    def close(self) -> None:
        """Stop the background work of acquisition and the transition frames."""
        for service in (self.acquisition, self.transitions):
            if service is not None:
                service.close()


@dataclass
class Opened:
    """What `open_reference` gives: the setup to install targets with, what `wanted`
    asked for, and a note per part (keys "tracker", "acquisition", "dbst"): what it is,
    or why it is left out."""

    setup: "ReferenceSetup"
    wanted: Recipe
    notes: dict[str, str] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """The notes of the parts `wanted` asked for that could not be opened."""
        got, wanted = self.setup.recipe, self.wanted
        lost = {"tracker": got.tracker != wanted.tracker, "acquisition": wanted.acquisition and not got.acquisition,
                "dbst": wanted.dbst and not got.dbst}
        return [self.notes[part] for part, gone in lost.items() if gone]


def open_reference(wanted: Recipe, reference: Any, acquisition: Any, transitions: Any,
                   engine: "SegmentationEngine", synchronous: bool = False) -> Opened:
    """Open the models `wanted` needs, from the settings of each part
    (runtime.reference_modes.ReferenceSettings, runtime.acquisition.AcquisitionSettings,
    runtime.transitions.TransitionSettings); never raises. A tracker that cannot be
    loaded falls back to the baseline, a part that cannot is left out (`Opened.notes`
    says why). `synchronous`: background work is waited for (offline evaluation)."""
    from .acquisition import open_acquisition
    from .reference_modes import open_reference_mode
    from .transitions import open_transitions

    notes = {}
    tracker, notes["tracker"] = open_reference_mode(dataclasses.replace(reference, reference_mode=wanted.tracker),
                                                    engine, synchronous)
    prior = transition = None
    if wanted.acquisition or not acquisition.dino_model:  # none asked for: why, without loading
        prior, notes["acquisition"] = open_acquisition(acquisition, engine.device, synchronous=synchronous,
                                                       dino=getattr(tracker, "dino", None) if wanted.acquisition
                                                       else None)
    else:
        notes["acquisition"] = f"reference targets without acquisition (reference mode {wanted.name})"
    if wanted.dbst or not transitions.dbst_pipeline:
        transition, notes["dbst"] = open_transitions(transitions, engine, synchronous=synchronous)
    else:
        notes["dbst"] = f"no diffusion transition frames (reference mode {wanted.name})"
    name = tracker.path if tracker is not None else "baseline"
    got = Recipe(name, prior is not None, transition is not None and name != "fssam", wanted.dbst_on)
    return Opened(ReferenceSetup(got, ReferenceServices(tracker, prior, transition)), wanted, notes)


def open_for_node(reference: Any, acquisition: Any, transitions: Any, engine: "SegmentationEngine") -> Opened:
    """What the node opens at configure: `for_node`'s recipe with its models, their
    background work at its own pace (never raises; `Opened.notes` for the log)."""
    return open_reference(for_node(reference, acquisition, transitions), reference, acquisition, transitions, engine)


@dataclass
class ReferenceSetup:
    """A recipe with its opened services: the one place that builds a reference target's
    parts (`prepare`) and installs them on an engine's stream (`Prepared.install`)."""

    recipe: Recipe = field(default_factory=Recipe)
    services: ReferenceServices = field(default_factory=ReferenceServices)

    @property
    def path(self) -> str:
        """How a reference target is found besides its memory (list_targets' `path`): the
        recipe's name, "" for the plain baseline."""
        return "" if self.recipe.name == "baseline" else self.recipe.name

    def prepare(self, images: list[np.ndarray], masks: list[np.ndarray]) -> "Prepared":
        """A target's parts from all its examples ((H, W, 3) uint8 images, (H, W) masks,
        the first one first), built once and shared by its streams: the mode's tracker
        and the prior's prototypes, as the recipe has them. Raises what the adapters raise
        for examples they refuse (ValueError) or cannot process."""
        masks = [np.asarray(m) != 0 for m in masks]
        tracker = self.services.tracker.tracker(images, masks) if self.recipe.tracker != "baseline" else None
        prototypes = self.services.acquisition.prototypes(images, masks) if self.recipe.acquisition else None
        return Prepared(self, list(images), masks, tracker, prototypes)


@dataclass
class Prepared:
    """A reference target's parts (`ReferenceSetup.prepare`), ready to install."""

    setup: ReferenceSetup
    images: list[np.ndarray]
    masks: list[np.ndarray]
    tracker: Optional[Any]
    prototypes: Optional[Any]

    def install(self, engine: "SegmentationEngine", stream: str, target_id: int, label: str = "") -> int:
        """Add the target to `stream` with every example, its tracker and its proposers;
        returns its id. Raises EngineError / ValueError for input the engine refuses."""
        from ..engine import MaskPrompt

        if self.tracker is not None:
            target_id = engine.add_tracked_target(stream, self.tracker, label=label, target_id=target_id)
        else:
            target_id = engine.add_target(stream, MaskPrompt(self.masks[0]), label=label, target_id=target_id,
                                          image=self.images[0])
            for image, mask in zip(self.images[1:], self.masks[1:]):
                engine.add_reference(stream, target_id, MaskPrompt(mask), image)
        self._give_proposers(engine, stream, target_id)
        return target_id

    def add_example(self, engine: "SegmentationEngine", stream: str, target_id: int, label: str = "") -> None:
        """The target on `stream` got its last example (k-shot): pinned beside the others
        (baseline) or a tracker rebuilt from all of them, what it tracked so far kept;
        its proposers are made anew from all the examples."""
        from ..engine import MaskPrompt

        if self.tracker is not None:
            engine.add_tracked_target(stream, self.tracker, label=label, target_id=target_id, replace=True)
        else:
            engine.add_reference(stream, target_id, MaskPrompt(self.masks[-1]), self.images[-1])
        self._give_proposers(engine, stream, target_id)

    def _give_proposers(self, engine: "SegmentationEngine", stream: str, target_id: int) -> None:
        """The prior (from all examples) and the transition frames (from the first one,
        through the tracker's own encoder when it is TTGA's), one `ProposerChain` with both
        (the prior's prompts first); nothing when the recipe has neither. A member built
        before one that fails is closed."""
        from ..engine.proposer_chain import ProposerChain

        recipe, services = self.setup.recipe, self.setup.services
        members = []
        try:
            if recipe.acquisition:
                members.append(services.acquisition.proposer(self.prototypes))
            if recipe.dbst:
                members.append(services.transitions.proposer(self.images[0], self.masks[0], on=recipe.dbst_on,
                                                             encoder=self.tracker))
            if members:
                engine.set_proposer(stream, target_id, members[0] if len(members) == 1 else ProposerChain(members))
        except Exception:
            for member in members:
                member.close()
            raise
