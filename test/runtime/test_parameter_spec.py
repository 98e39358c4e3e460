"""One parameter spec: the node's declarations, the settings classes and refseg-eval's flags
are each checked against the table (refseg_ros.runtime.parameters.PARAMETERS); the
parameters file is checked in test_node_config.py.

The declarations are read from the real node (its own process, unconfigured) through its
describe_parameters and get_parameters services over DDS, as `ros2 param describe` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing

import pytest

from refseg_ros.runtime.parameters import PARAMETERS, Kind, flag

NODE = "/refseg"
INT64_MAX = 2 ** 63 - 1


def settings_classes() -> list[type]:
    from refseg_ros.runtime.acquisition import AcquisitionSettings
    from refseg_ros.runtime.captions import TextSettings
    from refseg_ros.runtime.reference_modes import ReferenceSettings
    from refseg_ros.runtime.transitions import TransitionSettings

    return [TextSettings, AcquisitionSettings, ReferenceSettings, TransitionSettings]


def field_default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def test_settings_fields_have_the_tables_names_types_and_defaults():
    from refseg_ros.ros.params import Settings

    assert {f.name for f in dataclasses.fields(Settings)} == set(PARAMETERS)
    for cls in [*settings_classes(), Settings]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            row = PARAMETERS[f.name]  # every field is a parameter
            assert field_default(f) == row.value(), f"{cls.__name__}.{f.name}: default {field_default(f)!r}, " \
                                                    f"table {row.value()!r}"
            assert type(field_default(f)) is type(row.value()), f"{cls.__name__}.{f.name}"
            assert hints[f.name] == row.kind.python, f"{cls.__name__}.{f.name}: {hints[f.name]} for {row.kind}"
    # The evaluation's engine options: the parameters' defaults, but None for "random
    # weights" and "the model's own size" (the node's '' and 1024).
    from refseg_ros.eval.sources import EngineSettings

    from refseg_ros.eval.cli import ENGINE_PARAMETERS

    engine = {f.name: field_default(f) for f in dataclasses.fields(EngineSettings) if f.name in ENGINE_PARAMETERS}
    assert engine == {**{k: PARAMETERS[k].default for k in ENGINE_PARAMETERS}, "checkpoint": None, "image_size": None}
    # A list default is a fresh list per instance, never shared.
    assert Settings().cameras is not Settings().cameras
    assert Settings().store_dir == "~/.ros/refseg_ros/targets" == PARAMETERS["store_dir"].default


def test_settings_checks_are_the_tables_ranges_and_choices():
    from refseg_ros.runtime.acquisition import AcquisitionSettings
    from refseg_ros.runtime.captions import TextSettings
    from refseg_ros.runtime.transitions import TransitionSettings

    for settings, reason in ((TextSettings(text_window=0), "parameter text_window must be >= 1, got 0"),
                             (TextSettings(text_mode="batch"), "parameter text_mode must be one of causal, clip"),
                             (AcquisitionSettings(acquisition_input_size=-1),
                              "parameter acquisition_input_size must be >= 0, got -1"),
                             (AcquisitionSettings(acquisition_m=3, acquisition_k=2),
                              "acquisition_m and acquisition_k must satisfy 1 <= m <= k"),
                             (TransitionSettings(dbst_on="taught,never"), "dbst_on takes taught and/or lost"),
                             (TransitionSettings(dbst_frames=0), "parameter dbst_frames must be >= 1, got 0")):
        with pytest.raises(ValueError, match=reason):
            settings.check()
    for cls in settings_classes():
        cls().check()  # the table's defaults pass


# ------------------------------------------------------------------ refseg-eval's flags
def run_actions() -> dict[str, argparse.Action]:
    from refseg_ros.eval import cli

    parser = cli._build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {a.dest: a for a in sub.choices["run"]._actions}


def test_eval_flags_of_node_parameters_are_the_tables():
    from refseg_ros.eval import cli

    actions = run_actions()
    derived = [*cli.ENGINE_PARAMETERS, *cli.TEXT_PARAMETERS, *cli.REFERENCE_PARAMETERS]
    assert set(cli.EVALUATION_DEFAULTS) <= set(derived)
    for name in derived:
        row, action = PARAMETERS[name], actions[name]
        assert action.option_strings[0] == flag(name), name
        if name in cli.EVALUATION_DEFAULTS:
            default, why = cli.EVALUATION_DEFAULTS[name]
            assert action.default == default != row.value() and why in action.help, name
        else:
            assert action.default == row.value() and type(action.default) is type(row.value()), \
                f"{flag(name)}: default {action.default!r}, table {row.value()!r}"
        assert tuple(action.choices or ()) == row.choices, name
        assert action.help.startswith(row.description.replace("%", "%%")), name
        if row.kind == Kind.BOOL:
            assert isinstance(action, argparse.BooleanOptionalAction), name
        if row.range is not None:
            assert row.limits() in action.help, name
    # Every other flag of run is the evaluation's own, named apart from the parameters
    # (--source, not --mode; --bag-reference-topic, not --reference-topic), but
    # --reference-mode: the evaluation's combinations of reference modes, whose default is
    # the node's.
    own = set(actions) & set(PARAMETERS) - set(derived)
    assert own == {"reference_mode"}, own
    assert actions["reference_mode"].default == PARAMETERS["reference_mode"].default


def test_eval_flags_refuse_what_the_node_refuses(capsys):
    from refseg_ros.eval import cli

    for argv, reason in ((["--image-size", "100"], "image_size must be in [64, 8192], a multiple of 64, got 100"),
                         (["--grounding-threshold", "1.5"], "grounding_threshold must be in [0.0, 1.0], got 1.5"),
                         (["--text-window", "0"], "text_window must be >= 1, got 0"),
                         (["--text-mode", "batch"], "text_mode must be one of causal, clip, got 'batch'"),
                         (["--dbst-frames", "two"], "dbst_frames has value 'two', which is not a int")):
        with pytest.raises(SystemExit) as exit_:
            cli._build_parser().parse_args(["run", "bag", "--out", "o", *argv])
        assert exit_.value.code == cli.EXIT_BAD_INPUT
        assert reason in capsys.readouterr().err, argv


def test_eval_flags_make_the_nodes_settings_parts():
    """Unset flags give each part the table's defaults (but EVALUATION_DEFAULTS); given
    ones reach it under the parameter's name, in the parameter's type."""
    from refseg_ros.eval import cli
    from refseg_ros.runtime.acquisition import AcquisitionSettings
    from refseg_ros.runtime.captions import TextSettings
    from refseg_ros.runtime.parameters import settings_from

    values = vars(cli._build_parser().parse_args(["run", "bag", "--out", "o"]))
    assert settings_from(TextSettings, values) == TextSettings()
    assert settings_from(AcquisitionSettings, values) == AcquisitionSettings(acquisition_m=1, acquisition_k=1)
    values = vars(cli._build_parser().parse_args(["run", "bag", "--out", "o", "--text-window", "3",
                                                  "--acquisition-threshold", "1", "--fssam-official",
                                                  "--mode", "live", "--reference-topic", "/refs"]))
    assert settings_from(TextSettings, values).text_window == 3
    assert settings_from(AcquisitionSettings, values).acquisition_threshold == 1.0
    assert values["fssam_official"] is True and isinstance(values["acquisition_threshold"], float)
    assert (values["source"], values["bag_reference_topic"]) == ("live", "/refs")  # the former names


# ------------------------------------------------------------ the node's declarations
def expected_range(row) -> tuple:
    """(integer ranges, floating point ranges) as (from, to, step) tuples."""
    if row.range is None:
        return (), ()
    low, high, *step = row.range
    if row.kind == Kind.INTEGER:
        return ((low, INT64_MAX if high is None else high, step[0] if step else 0),), ()
    return (), ((float(low), math.inf if high is None else float(high), 0.0),)


@pytest.fixture(scope="module")
def declared(tmp_path_factory):
    """The unconfigured node's descriptors and values of every parameter of the table."""
    from rcl_interfaces.srv import DescribeParameters

    from support.node_harness import SMALL_MODEL, Listener, get_parameters, start_node

    tmp = tmp_path_factory.mktemp("spec")
    node = start_node(tmp, {}, autostart=False)
    listener = Listener("spec_listener")
    try:
        names = list(PARAMETERS)
        reply = listener.call(DescribeParameters, f"{NODE}/describe_parameters",
                              DescribeParameters.Request(names=names), timeout=180)
        assert len(reply.descriptors) == len(names), node.output()[-3000:]
        # (get_parameters answers nothing for a request naming an unset parameter)
        values = get_parameters(listener, NODE, [n for n in names if not PARAMETERS[n].unset])
        yield dict(zip(names, reply.descriptors)), values, SMALL_MODEL
    finally:
        listener.close()
        node.stop()


def test_the_node_declares_every_parameter_as_the_table_says(declared):
    from rcl_interfaces.msg import ParameterType

    descriptors, values, given = declared
    for name, row in PARAMETERS.items():
        d = descriptors[name]
        assert d.name == name
        assert d.type == getattr(ParameterType, f"PARAMETER_{row.kind.name}"), f"{name}: type {d.type}"
        assert (d.description, d.additional_constraints) == (row.description, row.constraints()), name
        assert not d.read_only and not d.dynamic_typing, name  # read-only after configure: the node's check
        ranges = (tuple((r.from_value, r.to_value, r.step) for r in d.integer_range),
                  tuple((r.from_value, r.to_value, r.step) for r in d.floating_point_range))
        assert ranges == expected_range(row), f"{name}: ranges {ranges}"
        if name in given:
            assert values[name] == given[name], name
        elif not row.unset:
            assert values[name] == row.default and type(values[name]) is type(row.default), \
                f"{name}: the node's {values[name]!r}, the table's {row.default!r}"


def test_doubles_that_are_not_finite_are_refused_naming_the_parameter():
    from refseg_ros.runtime.parameters import PARAMETERS

    for value in (float("nan"), float("inf"), -float("inf")):
        for name in ("grounding_threshold", "acquisition_threshold", "acquisition_interval"):
            with pytest.raises(ValueError, match=f"parameter {name} must be a finite number"):
                PARAMETERS[name].check(name, value)
    PARAMETERS["acquisition_threshold"].check("acquisition_threshold", 0.7)
