"""Fixtures for the model tests (builders live in model_builders.py)."""

import pytest

from model_builders import hf_model


@pytest.fixture
def hf_checkpoint(tmp_path):
    """Factory: (family, tie, dtype) -> (folder, torch model) saved with save_pretrained;
    dtype a torch dtype (default float32). Only `parity` tests use it (they need torch)."""
    def make(family: str, tie: bool = False, dtype=None, seed: int = 0):
        import torch

        model = hf_model(family, tie, seed).to(dtype or torch.float32)
        path = tmp_path / f"hf_{family}_{'tied' if tie else 'untied'}_{seed}"
        model.save_pretrained(path)
        return str(path), model
    return make
