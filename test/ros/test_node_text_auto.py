"""`text_path: auto` with no model parameter set: the node takes a detector from the
Hugging Face cache, put there by `refseg-weights` from a hub stand-in on 127.0.0.1 (a tiny
random-weight OWLv2 under OWLv2's hub id), and tracks a caption over DDS; with an empty
cache, captions wait and the reason names the command that fetches the model.
"""

from __future__ import annotations

import re

import pytest

from refseg_ros.runtime.captions import TextSettings, open_caption_path, with_cached_models
from support.hub_server import HubServer, hub_env, refseg_weights
from support.node_harness import CAM0, CAM0_OBJECTS, list_targets, start_camera, start_node, teach_caption, wait_tracked
from support.tiny_models import save_owlv2

OWL = "google/owlv2-base-patch16-ensemble"


@pytest.fixture(scope="module")
def owl_cache(tmp_path_factory):
    """A Hugging Face cache holding OWLv2, fetched by `refseg-weights owlv2` from the stand-in hub."""
    root = tmp_path_factory.mktemp("hub")
    server = HubServer()
    server.add_repo(OWL, save_owlv2(root / "owlv2"))
    proc = refseg_weights(["owlv2"], hub_env(server, root / "cache"))
    server.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "cache"


def test_auto_tracks_a_caption_with_the_cached_detector(tmp_path, owl_cache, listener, procs, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(owl_cache))  # the node's environment; HF_HUB_OFFLINE=1 stays
    node = start_node(tmp_path, {"cameras": [CAM0], "store_dir": ""})  # no text parameter at all
    procs.append(node)
    procs.append(start_camera(tmp_path, CAM0, "cam0_optical", rate=5))
    listener.wait_status("active", timeout=120, node=node)
    assert f"captions found by owlv2 ({OWL}) and tracked by SAM2" in node.output()

    ack = teach_caption(listener, node, "the red cup")
    assert "tracked through grounding" in ack, ack
    cup = int(re.search(r"taught target (\d+)", ack).group(1))
    wait_tracked(listener, node, CAM0_OBJECTS, cup)
    listed = list_targets(listener)[cup]
    assert (listed.caption, listed.path, listed.status) == ("the red cup", "grounding", "tracked")


def test_a_hub_id_not_cached_names_the_command_that_fetches_it(tmp_path, listener, procs):
    node = start_node(tmp_path, {"cameras": [CAM0], "store_dir": "",
                                 "grounding_model": "IDEA-Research/grounding-dino-tiny"})
    procs.append(node)
    listener.wait_status("active", timeout=120, node=node)
    ack = teach_caption(listener, node, "the red cup")
    assert "is waiting: the grounding text path could not be loaded (ModelNotCached: parameter " \
           "grounding_model: IDEA-Research/grounding-dino-tiny is not a folder, and not in the Hugging Face " \
           "cache" in ack, ack
    assert "fetch it with `refseg-weights grounding-dino-tiny (or refseg-weights --for captions)`" in ack, ack
    assert [t.status for t in list_targets(listener).values()] == ["waiting"]
    assert node.alive()


def test_auto_with_empty_caches_says_how_to_fetch_a_model(tmp_path, owl_cache, monkeypatch):
    # This test session's own hub cache is empty (conftest): nothing to take.
    path, reason = open_caption_path(TextSettings(), None, "sam2.1_hiera_t")
    assert path is None
    assert reason.startswith("no text model configured or cached: fetch one with `refseg-weights --for "
                             "captions`"), reason
    # What auto fills in, per cache: a detector by its hub id; an explicit setting wins.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(owl_cache))
    assert with_cached_models(TextSettings(), "sam2.1_hiera_t").grounding_model == OWL
    assert with_cached_models(TextSettings(), "sam2.1_hiera_t").chosen() == "grounding"
    mine = TextSettings(grounding_model="/models/mine")
    assert with_cached_models(mine, "sam2.1_hiera_t").grounding_model == "/models/mine"
    assert with_cached_models(TextSettings(text_path="none"), "sam2.1_hiera_t").chosen() == "none"
    samwise = with_cached_models(TextSettings(samwise_checkpoint="/x.pth"), "sam2_hiera_b+")
    assert (samwise.chosen(), samwise.samwise_tokenizer) == ("samwise", "FacebookAI/roberta-base")
