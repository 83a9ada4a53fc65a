import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is as fast, and OpenMP workers spin badly when the cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
