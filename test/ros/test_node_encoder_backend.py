"""The node with an encoder backend that cannot run here (tensorrt, no NVIDIA runtime):
configure fails, the node stays unconfigured and its status topic says why; with
encoder_backend_fallback set, configure succeeds, the pass runs on torch, the status says
so, and targets are tracked. One real node process over DDS, driven through its
lifecycle services."""

from __future__ import annotations

from support.node_harness import (Listener, change_lifecycle, lifecycle_state, scene_reference, start_camera,
                                  start_node, wait_tracked)
from lifecycle_msgs.msg import State, Transition
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from refseg_ros.msg import SegmentedObjectArray

CAM0 = "/cam0/image_raw"
OBJECTS = f"{CAM0}/refseg/objects"


def test_unavailable_backend_is_refused_with_its_reason_and_the_fallback_runs_on_torch(tmp_path):
    listener = Listener("encoder_backend_listener")
    listener.listen_status()
    listener.listen(OBJECTS, SegmentedObjectArray)
    node = start_node(tmp_path, {"cameras": [CAM0], "store_dir": "", "encoder_backend": "tensorrt"},
                      autostart=False, env={"REFSEG_WEIGHTS": str(tmp_path / "weights")})
    camera = None
    try:
        assert not change_lifecycle(listener, Transition.TRANSITION_CONFIGURE)
        assert lifecycle_state(listener) == State.PRIMARY_STATE_UNCONFIGURED
        reason = listener.wait_status("configure failed: EncoderBackendUnavailableError", node=node)
        assert "TensorrtExecutionProvider" in reason

        value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=True)
        reply = listener.call(SetParameters, "/refseg/set_parameters", SetParameters.Request(
            parameters=[Parameter(name="encoder_backend_fallback", value=value)]))
        assert reply.results[0].successful, reply.results[0].reason
        since = listener.count("/refseg/status")
        assert change_lifecycle(listener, Transition.TRANSITION_CONFIGURE)
        assert change_lifecycle(listener, Transition.TRANSITION_ACTIVATE)
        note = listener.wait_status("encoder_backend tensorrt refused", since=since, node=node)
        assert "runs on torch" in note and "TensorrtExecutionProvider" in note
        assert "encoder_backend tensorrt refused" in node.output()  # and in the log
        listener.wait_status("image encoder: torch", since=since, node=node)

        camera = start_camera(tmp_path, CAM0, "cam0", rate=5)
        listener.teach(scene_reference(320, 240), since=since, node=node)
        wait_tracked(listener, node, OBJECTS, 1, frames=2)
    finally:
        if camera is not None:
            camera.stop()
        node.stop()
        listener.close()
