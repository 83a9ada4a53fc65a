"""Scratch: a tensor per key, kept while its shape, dtype and device stay, freed by clear."""

import torch

from zolab.engine.scratch import Scratch


def test_a_key_keeps_its_tensor_until_its_layout_changes():
    s = Scratch()
    a = s("u", (3, 4), torch.float32, torch.device("cpu"))
    assert s("u", (3, 4), torch.float32, torch.device("cpu")) is a
    b = s("u", (4, 3), torch.float32, torch.device("cpu"))
    assert b is not a and b.shape == (4, 3)
    c = s("u", (4, 3), torch.float64, torch.device("cpu"))
    assert c is not b and c.dtype == torch.float64
    assert s("v", (4, 3), torch.float64, torch.device("cpu")) is not c  # keys do not share


def test_clear_frees_the_tensors_and_the_spares():
    s = Scratch()
    a = s("u", (2,), torch.float32, torch.device("cpu"))
    s.spares[((2,), torch.float32, torch.device("cpu"))].append(torch.empty(2))
    s.clear()
    assert not s.tensors and not s.spares
    assert s("u", (2,), torch.float32, torch.device("cpu")) is not a
