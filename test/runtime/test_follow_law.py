"""The follow controller's control law and stop rules (refseg_ros.runtime.follow), no ROS."""

from __future__ import annotations

import math

import pytest

from refseg_ros.runtime.follow import (STATE_ACQUIRING, STATE_LOST, STATE_OCCLUDED, STATE_TRACKED,
                                       FollowSettings, Follower, Sighting, choose_target, heading_error,
                                       velocity)

LAW = FollowSettings(stop_distance=1.0, linear_gain=0.5, angular_gain=1.5, max_linear_speed=0.4,
                     max_angular_speed=0.8, occlusion_timeout=1.0, stale_timeout=0.5, message_timeout=1.0)


def seen(x: float, z: float, t: float, state: int = STATE_TRACKED, position: bool = True) -> Sighting:
    """A target at (x right, z forward) metres in the optical frame, on a frame stamped t."""
    n = math.hypot(x, z)
    return Sighting(state=state, stamp=t, has_bearing=True, bearing=(x / n, 0.0, z / n),
                    has_position=position, position=(x, 0.0, z))


def test_turns_towards_the_bearing_with_rep103_signs():
    # target to the right (optical +x): clockwise, a negative yaw rate in the base frame
    assert heading_error((0.5, 0.0, 0.8)) > 0
    _, right = velocity(LAW, seen(0.3, 3.0, 1.0))
    _, left = velocity(LAW, seen(-0.3, 3.0, 1.0))
    assert right < 0 < left
    assert right == pytest.approx(-1.5 * math.atan2(0.3, 3.0))


def test_approaches_to_the_stopping_distance_and_never_reverses():
    far, _ = velocity(LAW, seen(0.0, 1.4, 1.0))
    assert far == pytest.approx(0.5 * 0.4)
    assert velocity(LAW, seen(0.0, 1.0, 1.0))[0] == 0.0
    assert velocity(LAW, seen(0.0, 0.5, 1.0))[0] == 0.0  # too close: stays, never backwards
    assert velocity(LAW, seen(0.0, 3.0, 1.0, position=False))[0] == 0.0  # no depth: turn only
    assert velocity(LAW, seen(3.0, -0.1, 1.0))[0] == 0.0  # abeam or behind: turn first


def test_limits_hold_for_any_sighting():
    for x in (-50.0, -2.0, 0.0, 2.0, 50.0):
        for z in (-5.0, 0.1, 5.0, 100.0):
            linear, angular = velocity(LAW, seen(x, z, 1.0))
            assert 0.0 <= linear <= LAW.max_linear_speed
            assert abs(angular) <= LAW.max_angular_speed


def test_lost_stops_once_then_nothing():
    f = Follower(LAW)
    assert f.on_sighting(seen(0.2, 3.0, 10.0), 10.1).linear > 0
    stop = f.on_sighting(seen(0.2, 3.0, 10.2, state=STATE_LOST), 10.3)
    assert stop.stop and (stop.linear, stop.angular) == (0.0, 0.0) and stop.code == "lost"
    assert f.on_sighting(seen(0.2, 3.0, 10.3, state=STATE_LOST), 10.4) is None
    assert f.on_sighting(None, 10.5) is None  # still stopped: nothing more is sent
    assert f.on_sighting(seen(0.2, 3.0, 10.6), 10.7).linear > 0  # tracked again: moves again


def test_absent_target_stops():
    f = Follower(LAW)
    f.on_sighting(seen(0.2, 3.0, 10.0), 10.1)
    assert f.on_sighting(None, 10.2, "target 7").reason == "target 7 is not in the objects"


def test_occlusion_holds_the_last_command_until_its_timeout():
    f = Follower(LAW)
    go = f.on_sighting(seen(0.2, 3.0, 10.0), 10.05)
    for t in (10.3, 10.6, 11.0):
        held = f.on_sighting(Sighting(STATE_OCCLUDED, t), t + 0.05)
        assert (held.linear, held.angular, held.stop) == (go.linear, go.angular, False)
    stop = f.on_sighting(Sighting(STATE_OCCLUDED, 11.1), 11.15)
    assert stop.stop and stop.code == "occluded"
    assert f.on_sighting(Sighting(STATE_ACQUIRING, 11.2), 11.25) is None


def test_stale_or_unstamped_arrays_stop():
    f = Follower(LAW)
    f.on_sighting(seen(0.2, 3.0, 10.0), 10.1)
    assert f.on_sighting(seen(0.2, 3.0, 10.0), 10.6).code == "stale"  # 0.6 s old > 0.5
    f.on_sighting(seen(0.2, 3.0, 11.0), 11.1)
    assert f.on_sighting(seen(0.2, 3.0, 12.0), 11.1).code == "stale"  # from the future
    f.on_sighting(seen(0.2, 3.0, 13.0), 13.1)
    assert f.on_sighting(seen(0.2, 3.0, 0.0), 13.2).code == "no_stamp"


def test_silence_stops_once_from_the_tick():
    f = Follower(LAW)
    assert f.on_tick(5.0) is None  # nothing yet
    f.on_sighting(seen(0.2, 3.0, 10.0), 10.1)
    assert f.on_tick(11.0) is None
    stop = f.on_tick(11.2)
    assert stop.stop and stop.code == "silent"
    assert f.on_tick(12.0) is None


def test_settings_change_on_the_next_sighting_and_bad_values_are_refused():
    f = Follower(LAW)
    assert f.on_sighting(seen(0.0, 5.0, 1.0), 1.0).linear == pytest.approx(0.4)
    f.settings = f.settings.updated(max_linear_speed=0.1)
    assert f.on_sighting(seen(0.0, 5.0, 1.1), 1.1).linear == pytest.approx(0.1)
    with pytest.raises(ValueError, match="max_linear_speed"):
        f.settings.updated(max_linear_speed=-1)
    with pytest.raises(ValueError, match="message_timeout"):
        f.settings.updated(message_timeout=0)


def test_target_choice():
    objects = [(1, "box"), (2, "the red mug"), (4, "box")]
    assert choose_target(objects, target_id=9) == 9
    assert choose_target(objects, target_label="box") == 4
    assert choose_target(objects, target_label="cup") is None
    assert choose_target(objects, caption_ids={2, 3}) == 3
    assert choose_target(objects) is None


def test_bad_numbers_stop_with_the_reason():
    f = Follower(LAW)
    f.on_sighting(seen(0.2, 3.0, 10.0), 10.1)
    nan = Sighting(STATE_TRACKED, 10.2, True, (float("nan"), 0.0, 1.0), True, (0.0, 0.0, 3.0))
    stop = f.on_sighting(nan, 10.25, "target 2")
    assert stop.stop and stop.code == "bad_input" and "not a finite point" in stop.reason
    f.on_sighting(seen(0.2, 3.0, 10.3), 10.35)
    zero = Sighting(STATE_TRACKED, 10.4, True, (0.0, 0.0, 0.0), True, (0.0, 0.0, float("inf")))
    assert f.on_sighting(zero, 10.45).code == "bad_input"
