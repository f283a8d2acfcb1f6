"""How a model generates: ``eager`` is plain transformers ``generate()``; ``fast`` is the
project's own decode loop (static KV cache, on-device greedy sampling, the decode step
captured as a CUDA graph on NVIDIA GPUs)."""

BACKENDS = ("eager", "fast")
