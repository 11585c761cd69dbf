"""Key/value cache layers for generation on CPU (torch and transformers imported lazily, on first use).

    from resume.models.kv_cache import reserve_cache_room
    model.generate(**enc, cache=reserve_cache_room(cache))    # an existing DynamicCache, changed in place

Written here because transformers' `DynamicLayer` appends each generated token with `torch.cat`, which
copies the layer's whole cache at every step, and none of its other caches fits: `StaticCache` reserves the
room but attends over its whole length at every step (measured 1.06x on the GRPO rollouts and dropped,
bench/README.md "The GRPO step"), the offloaded and quantized caches solve other problems. The reserved
layer keeps the same values in the same order; only where they live changes, so generation gives the
same tokens (`tests/test_shared_prompt.py`). Used by the GRPO rollouts (`resume.shared_prompt`); the corpus
summaries gained nothing from it (23.76 s vs 23.63 s for 16 documents × 160 tokens, bf16, bench/README.md).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["reserve_cache_room"]


@functools.cache
def _reserved_layer_class() -> type:
    """A `DynamicLayer` that appends each new token's keys/values into room reserved ahead, where
    transformers' own `torch.cat` copies the layer's whole cache at every generated token: a quarter of
    a GRPO rollout's time for SmolLM2 with 16 rows of ~500 prompt tokens on CPU (bench/README.md). `StaticCache`
    reserves too but attends over its whole length at every step (measured 1.06x, dropped). The layer
    returns views of the used part, so the attention sees the same values; any method of the base class
    that replaces `keys`/`values` (crop, reorder, batch selection) is noticed and the room re-reserved.
    On CPU only: on a GPU the copy is a fast device-to-device one and the reserved room (up to twice the
    cache) costs memory the batch needs, so a GPU layer behaves exactly as transformers' own."""
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        def _reserve(self, need: int) -> None:
            room = max(2 * need, need + 256)
            shape = (*self.keys.shape[:-2], room, self.keys.shape[-1])
            k = self.keys.new_empty(shape)
            v = self.values.new_empty((*self.values.shape[:-2], room, self.values.shape[-1]))
            n = self.keys.shape[-2]
            k[..., :n, :] = self.keys
            v[..., :n, :] = self.values
            self._room = (k, v)

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized or self.keys.numel() == 0 or key_states.device.type != "cpu":
                return super().update(key_states, value_states, *args, **kwargs)
            n, add = self.keys.shape[-2], key_states.shape[-2]
            room = getattr(self, "_room", None)
            if (room is None or room[0].shape[-2] < n + add or self.keys.data_ptr() != room[0].data_ptr()
                    or self.values.data_ptr() != room[1].data_ptr() or self.keys.shape[:-2] != room[0].shape[:-2]):
                self._reserve(n + add)
            k, v = self._room
            k[..., n:n + add, :] = key_states
            v[..., n:n + add, :] = value_states
            self.keys, self.values = k[..., :n + add, :], v[..., :n + add, :]
            return self.keys, self.values

    return ReservedLayer


def reserve_cache_room(cache: Any) -> Any:
    """Turn the full-attention `DynamicLayer`s of `cache` into `_reserved_layer_class()` layers (in place)."""
    from transformers.cache_utils import DynamicLayer

    reserved = _reserved_layer_class()
    for layer in getattr(cache, "layers", ()):
        if type(layer) is DynamicLayer:
            layer.__class__ = reserved
    return cache
