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
    import importlib.util

    skips = {}
    if not torch.cuda.is_available():
        skips["gpu"] = pytest.mark.skip(reason="needs a CUDA device")
    if importlib.util.find_spec("vllm") is None:
        skips["vllm"] = pytest.mark.skip(reason="needs vLLM (pip install 'adaptk[vllm]'; .ci/run builds .venv-vllm)")
    for item in items:
        for marker, skip in skips.items():
            if item.get_closest_marker(marker) is not None:  # a marker, not a folder named so
                item.add_marker(skip)
