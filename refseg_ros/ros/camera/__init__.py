"""One camera of the segmenter, from its topics to its results.

- `channel.CameraChannel`: the camera's subscriptions (image, CameraInfo, depth), the hand
  over of its frames to the node's mailbox, decoding, depth pairing, its locator
  (refseg_ros.runtime.locator) and its publishing, late results included;
- `channel.CameraFrame`: one frame on its way through the worker's stages;
- `publishers.CameraPublishers`: the publishers of its results (`output_topic` names them).
"""

from .channel import CameraChannel, CameraFrame
from .publishers import CameraPublishers, output_topic

__all__ = ["CameraChannel", "CameraFrame", "CameraPublishers", "output_topic"]
