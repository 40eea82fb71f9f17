"""Run vLLM offline on a model with the environment given (the plugin reads ADAPTK_*), greedy, and
print one JSON line: the generated ids and, where the plugin ran, each MoE layer's report.

    python vllm_run.py MODEL PROMPT... (a subprocess per configuration: vLLM keeps global state)
"""

import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: its layers readable

from vllm import LLM, SamplingParams  # noqa: E402

MAX_TOKENS = int(os.environ.get("ADAPTK_TEST_MAX_TOKENS", "16"))


def main() -> None:
    model, prompts = sys.argv[1], sys.argv[2:]
    llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))
    layers = []
    try:
        from adaptk.engines.vllm import hooks
    except ImportError:
        hooks = None
    st = hooks.state() if hooks is not None else None
    for monitor in (st.monitors.values() if st is not None else []):
        layers.append(monitor.report().to_dict())
    print("RESULT " + json.dumps({"ids": [list(o.outputs[0].token_ids) for o in outs], "layers": layers}))


if __name__ == "__main__":
    main()
