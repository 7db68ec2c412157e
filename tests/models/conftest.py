"""Fixtures for the model tests (builders live in model_builders.py)."""

import pytest
import torch

from model_builders import hf_model


@pytest.fixture
def hf_checkpoint(tmp_path):
    """Factory: (family, tie, dtype) -> (folder, torch model) saved with save_pretrained."""
    def make(family: str, tie: bool = False, dtype=torch.float32, seed: int = 0):
        model = hf_model(family, tie, seed).to(dtype)
        path = tmp_path / f"hf_{family}_{'tied' if tie else 'untied'}_{seed}"
        model.save_pretrained(path)
        return str(path), model
    return make
