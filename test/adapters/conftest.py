"""Fixtures of the adapter tests (test/adapters/)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one intra-op thread for the module, restored after it: two OpenMP threads
    on two busy cores make each tiny UNet pass of the diffusion tests far slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
