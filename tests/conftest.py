import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
pytest.register_assert_rewrite("threads")  # its shared assertions report as the tests' do
# tiny models on a small shared machine: one thread avoids OpenMP oversubscription, which can
# make 2-thread runs of tiny matmuls many times slower than 1 thread
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
