"""What the package's lifecycle nodes share: release on cleanup, shutdown and error, and
a process loop that configures and activates a node itself (autostart) and releases it
on exit."""

from __future__ import annotations

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn


class ReleasingNode(LifecycleNode):
    """A lifecycle node whose `release()` drops everything configure made; cleanup,
    shutdown and error transitions call it."""

    def release(self) -> None:
        """Drop what configure and activate created; safe to call more than once."""
        raise NotImplementedError

    def destroy_publishers(self, *attributes: str) -> None:
        """Destroy the publishers held in these attributes of the node, and set each to None
        (an attribute already None is left as it is)."""
        for attribute in attributes:
            publisher = getattr(self, attribute)
            if publisher is not None:
                self.destroy_publisher(publisher)
                setattr(self, attribute, None)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}; cleaning up")
        self.release()
        return TransitionCallbackReturn.SUCCESS


def spin_lifecycle(node: ReleasingNode, executor: Executor, autostart: bool) -> int:
    """Spin `node` until Ctrl-C or shutdown; with `autostart`, configure and activate it
    first. Returns 1 when a transition fails, else 0. Whatever happens, the node is
    released and destroyed and the context shut down."""
    executor.add_node(node)
    try:
        if autostart:
            for step in ("configure", "activate"):
                if getattr(node, f"trigger_{step}")() != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal(f"{step} failed; see the error above")
                    return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.release()
        finally:
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
            rclpy.try_shutdown()
    return 0
