"""The vLLM engine adapter: a ``vllm.general_plugins`` entry point that routes vLLM's MoE layers
through an adaptk policy and publishes routing health on the server's ``/metrics``.

Nothing here imports vLLM except ``hooks`` (imported by ``plugin.register`` only when
``ADAPTK_POLICY`` or ``ADAPTK_MONITOR`` is set). ``config`` reads the environment, ``served``
checks a policy file against the served model, ``route`` applies the policy's k to vLLM's own
softmax top-k routing, ``pairs`` runs the experts over the kept pairs only, ``metrics`` counts and
publishes. Details: docs/vllm.md.
"""
