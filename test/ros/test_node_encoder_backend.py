"""The node's encoder backends over DDS.

- A backend that cannot run here (tensorrt, no NVIDIA runtime): configure fails, the node
  stays unconfigured and its status topic says why; with encoder_backend_fallback set,
  configure succeeds, the pass runs on torch, the status says so, and targets are
  tracked. One real node process, driven through its lifecycle services.
- The CPU backends at parity: three node processes (torch, onnxruntime, openvino; replay
  mode, so every frame is segmented) taught the same reference and fed the same camera
  publish label images that differ by at most MASK_PIXELS pixels over the clip
  (test/engine/test_encoder_backends.py states the engine-level bounds).
"""

from __future__ import annotations

import time

import numpy as np
from support.node_harness import (Listener, change_lifecycle, lifecycle_state, read_stamps, scene_reference,
                                  stamp_key, start_camera, start_node, wait_tracked)
from lifecycle_msgs.msg import State, Transition
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import Image

from refseg_ros.msg import ReferenceTarget, SegmentedObjectArray
from refseg_ros.ros.conversions import image_array

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


CPU_BACKENDS = ("torch", "onnxruntime", "openvino")
FRAMES = 6
MASK_PIXELS = 20  # of 6 frames x 320 x 240 = 460800 label pixels


def test_cpu_backends_publish_the_masks_torch_publishes(tmp_path):
    cam = "/parity/image_raw"
    listener = Listener("encoder_parity_listener")
    nodes = {}
    camera = None
    try:
        for backend in CPU_BACKENDS:
            listener.listen_status(f"/parity/{backend}/status")
            listener.listen(f"{cam}/{backend}/mask", Image)
            nodes[backend] = start_node(
                tmp_path, {"cameras": [cam], "mode": "replay", "store_dir": "", "encoder_backend": backend,
                           "output_namespace": backend, "status_topic": f"/parity/{backend}/status",
                           "reference_topic": "/parity/reference"},
                name=backend, ros_args=("-r", f"__node:=segmenter_{backend}"),
                env={"REFSEG_WEIGHTS": str(tmp_path / "weights")})
        for backend, node in nodes.items():
            listener.wait_status("active", timeout=180, node=node, topic=f"/parity/{backend}/status")
            listener.wait_status(f"image encoder: {backend}", node=node, topic=f"/parity/{backend}/status")
        reference = listener.publisher("/parity/reference", ReferenceTarget)
        listener.wait_for(lambda: reference.get_subscription_count() == len(nodes), 30, "every node subscribed")
        time.sleep(1.0)  # the nodes' side of discovery too
        reference.publish(scene_reference(320, 240))
        for backend, node in nodes.items():
            listener.wait_status("taught target", timeout=60, node=node, topic=f"/parity/{backend}/status")
        camera = start_camera(tmp_path, cam, "parity_optical", rate=5, count=FRAMES,
                              stamps_file=tmp_path / "parity.stamps", subscribers=len(nodes))
        for backend, node in nodes.items():
            try:
                listener.wait_for(lambda b=backend: listener.count(f"{cam}/{b}/mask") >= FRAMES, 180,
                                  f"{FRAMES} label images from {backend}", node)
            except AssertionError as exc:
                counts = {b: listener.count(f"{cam}/{b}/mask") for b in nodes}
                raise AssertionError(f"label images received: {counts}\n{exc}") from None
        sent = sorted(read_stamps(tmp_path / "parity.stamps"))
        labels = {}
        for backend in CPU_BACKENDS:
            masks = listener.received(f"{cam}/{backend}/mask")
            by_stamp = {stamp_key(m.header.stamp): image_array(m) for _, m in masks}
            assert sorted(by_stamp) == sent, f"{backend} did not segment every frame"
            labels[backend] = np.stack([by_stamp[s] for s in sent])
        assert int((labels["torch"] > 0).sum()) > 0, "torch tracked nothing: the comparison would be empty"
        for backend in CPU_BACKENDS[1:]:
            differing = int((labels[backend] != labels["torch"]).sum())
            assert differing <= MASK_PIXELS, f"{backend}: {differing} label pixels differ from torch's"
    finally:
        if camera is not None:
            camera.stop()
        for node in nodes.values():
            node.stop()
        listener.close()
