"""Engine adapters: how adaptk's engine-free routing core is installed into one inference engine.

``adaptk.engines.transformers`` patches a loaded transformers model (``adaptk.patch``);
``adaptk.engines.vllm`` is a vLLM plugin routing a served model's MoE layers (docs/vllm.md).
"""
