"""The decode roofline: how fast batch-1 decoding could go if memory bandwidth were all.

Each decoded token must read every weight the step uses once, plus the KV cache up to
its position. The input embedding table is the exception: one row is read, not the
table (unless it is tied to the LM head, which reads it whole). Bytes per token divided
into the device's measured read bandwidth gives the ceiling (the copy bandwidth for
warm-up records made before the read bandwidth was measured); the measured decode rate
is stated as a percentage of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Roofline:
    """Bytes per decoded token and the rate the measured bandwidth allows."""

    weight_bytes_per_token: int
    kv_cache_bytes_per_token: int
    bytes_per_token: int
    bandwidth_gb_per_s: float
    tokens_per_s: float
    at_position: int

    def to_dict(self) -> dict:
        """A plain dict for JSON, with the method."""
        return {
            **asdict(self),
            "method": (
                "bytes per token = weights read per decode step (input embedding table "
                "excluded unless tied to the LM head) + KV cache up to the average decode "
                "position; tokens/s = measured read bandwidth (copy bandwidth in older records) "
                "/ bytes per token"
            ),
        }


def weight_bytes_read_per_token(model) -> int:
    """Bytes of the weights one decode step reads."""
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel() * parameter.element_size()
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == embed.data_ptr()
    if not tied:
        # Decoding looks up one row of the embedding table, not the whole table.
        total -= embed.numel() * embed.element_size() - embed.shape[1] * embed.element_size()
    return total


def kv_cache_bytes(config, position: int, element_size: int) -> int:
    """Bytes of keys and values cached for ``position`` tokens (decoder-only models)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return 2 * text.num_hidden_layers * kv_heads * head_dim * position * element_size


def decode_roofline(
    model, prompt_tokens: int, new_tokens: int, bandwidth_gb_per_s: float
) -> Roofline:
    """The roofline of decoding ``new_tokens`` after ``prompt_tokens``, batch 1."""
    weights = weight_bytes_read_per_token(model)
    element_size = model.get_input_embeddings().weight.element_size()
    position = prompt_tokens + new_tokens // 2
    kv = kv_cache_bytes(model.config, position, element_size)
    total = weights + kv
    return Roofline(
        weight_bytes_per_token=weights,
        kv_cache_bytes_per_token=kv,
        bytes_per_token=total,
        bandwidth_gb_per_s=bandwidth_gb_per_s,
        tokens_per_s=bandwidth_gb_per_s * 1e9 / total,
        at_position=position,
    )


def roofline_bandwidth(warmup: dict | None) -> tuple[float | None, str]:
    """The bandwidth a roofline divides by, from a warm-up record, and which one it is:
    the read bandwidth where it was measured, else the copy bandwidth (older records)."""
    warmup = warmup or {}
    for key, kind in (("read_bandwidth_gb_per_s", "read"), ("copy_bandwidth_gb_per_s", "copy")):
        median = (warmup.get(key) or {}).get("median")
        if median:
            return median, kind
    return None, "none"
