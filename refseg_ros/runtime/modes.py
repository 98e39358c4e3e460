"""The grammar of reference mode names, standard library only (the parameter table and
refseg-eval's parser use it without numpy or torch); runtime.recipes builds and installs
what a name stands for.

A name is the tracker, then the parts, joined by `+`:

- tracker: `baseline` (SAM2 from the pinned examples; left out of a name with parts),
  `ttga` (SAM2 through a per-target neck tuned by CAV-SAM's TTGA) or `fssam` (FSSAM on
  every frame);
- `+acquisition`: the DINOv2 prior looks for the target while it is not tracked and
  gates the tracker;
- `+dbst`: CAV-SAM's diffusion transition frames bridge the reference to the scene, a
  job started on the triggers of `dbst_on` (TRIGGERS). FSSAM keeps no memory to pin them
  to: `fssam+dbst` is no mode.

`cavsam` (the paper's name) is read as `ttga+dbst`, `cavsam+acquisition` as
`ttga+acquisition+dbst` (ALIASES).
"""

from __future__ import annotations

from dataclasses import dataclass

TRACKERS = ("baseline", "ttga", "fssam")
TRIGGERS = ("taught", "lost")  # when a transition job may start
DEFAULT_DBST_ON = ",".join(TRIGGERS)  # dbst_on's default, the node's and the evaluation's
ALIASES = {"cavsam": "ttga+dbst", "cavsam+acquisition": "ttga+acquisition+dbst"}


@dataclass(frozen=True)
class Recipe:
    """A reference target's composition.

    tracker: baseline, ttga or fssam (TRACKERS); acquisition: the DINOv2 prior looks for
    the target and gates its tracker; dbst: diffusion transition frames bridge to it;
    dbst_on: when a transition job starts (a subset of TRIGGERS); () without dbst.
    """

    tracker: str = "baseline"
    acquisition: bool = False
    dbst: bool = False
    dbst_on: tuple[str, ...] = TRIGGERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "dbst_on", tuple(self.dbst_on) if self.dbst else ())

    @property
    def name(self) -> str:
        """The canonical mode name (one of MODES), e.g. ttga+acquisition+dbst."""
        parts = [] if self.tracker == "baseline" else [self.tracker]
        parts += ["acquisition"] * self.acquisition + ["dbst"] * self.dbst
        return "+".join(parts) or "baseline"


def _grammar() -> tuple[str, ...]:
    names = []
    for tracker in TRACKERS:
        for acquisition in (False, True):
            for dbst in (False, True):
                if not (dbst and tracker == "fssam"):
                    names.append(Recipe(tracker, acquisition, dbst).name)
    return tuple(names)


MODES = _grammar()
NAMES = MODES + tuple(ALIASES)


def parse_mode(name: str, dbst_on: tuple[str, ...] = TRIGGERS) -> Recipe:
    """The recipe a mode name (one of NAMES) stands for, with `dbst_on` as its triggers.

    Raises ValueError listing the names when `name` is none of them.
    """
    canonical = ALIASES.get(name.strip(), name.strip())
    if canonical not in MODES:
        raise ValueError(f"reference mode must be one of {', '.join(NAMES)}, got {name!r}")
    parts = canonical.split("+")
    tracker = parts[0] if parts[0] in TRACKERS else "baseline"
    return Recipe(tracker, "acquisition" in parts, "dbst" in parts, tuple(dbst_on))
