"""Per-item random numbers for batched augmentations, keyed by the item, not by its batch.

Every number an augmentation draws for an item is a hash of (the item's key, the augmentation's
position in the pipeline, a counter): the splitmix64 finaliser (Steele, Lea and Flood 2014, the
output mix of Java's SplittableRandom) applied to int64 tensors, whose multiplication wraps
modulo 2**64 on CPU and CUDA alike. So an item gets the same numbers whatever batch it is in,
wherever it sits in the batch, whatever the batch size and on whichever device; no generator
state is carried from one batch to the next, and nothing waits for the host.

The item's key itself hashes (seed, fold seed, fold, epoch, cache index): see `item_keys`. Keys
live on the host; the few numbers per item are hashed there and sent in one copy, which costs
less than the dozens of tiny device operations a hash takes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ablate.device import from_host

_GOLDEN = 0x9E3779B97F4A7C15 - 2**64  # 2**64 / golden ratio, as a signed int64
_M1 = 0xBF58476D1CE4E5B9 - 2**64
_M2 = 0x94D049BB133111EB - 2**64


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: it copies the sign bit)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix(x: Tensor) -> Tensor:
    """splitmix64's finaliser: a bijection of int64 that scatters nearby inputs across all bits."""
    x = x ^ _shr(x, 30)
    x = x * _M1
    x = x ^ _shr(x, 27)
    x = x * _M2
    return x ^ _shr(x, 31)


def combine(key: Tensor, *values: int | Tensor) -> Tensor:
    """The key of a sub-stream: key and each value folded in, in order (order matters)."""
    for v in values:
        key = mix(key + _GOLDEN + v)
    return key


def item_keys(items: Tensor, seed: int, fold_seed: int, fold: int, epoch: int) -> Tensor:
    """int64 key per item (its cache index) of one training epoch of one fold."""
    base = torch.zeros((), dtype=torch.int64, device=items.device)
    return combine(combine(base, seed, fold_seed, fold, epoch) + torch.zeros_like(items), items)


def run_seed(seed: int, fold_seed: int, fold: int) -> int:
    """The seed of a training run's own generators (model init, batch order, mixup): a hash of
    (seed, fold seed, fold), so each fold and each repeat (its fold seed) has its own luck, while two
    arms on the same fold draw the same numbers. 63 bits (torch.manual_seed takes non-negative)."""
    key = combine(torch.zeros((), dtype=torch.int64), 0x5EED, seed, fold_seed, fold)
    return int(key.item()) & ((1 << 63) - 1)


def uniform(keys: Tensor, counter: int | Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Uniform numbers in [0, 1), one per key (broadcast with `counter`): 53 bits for float64
    (parameters), 24 bits for float32 (noise)."""
    h = combine(keys, counter)
    bits = 53 if dtype == torch.float64 else 24
    return _shr(h, 64 - bits).to(dtype) * (2.0**-bits)


def normal(keys: Tensor, counter: Tensor) -> Tensor:
    """Standard normal float32 numbers by Box-Muller from two uniforms of the same counter."""
    u1 = 1.0 - uniform(keys, counter * 2, torch.float32)  # (0, 1]: log stays finite
    u2 = uniform(keys, counter * 2 + 1, torch.float32)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2 * math.pi) * u2)


class Draws:
    """The numbers one augmentation draws for the items of a batch. The per-item parameters (at
    most PARAMS per augmentation: a flip, a shift, an angle, ...) are hashed on the host in one go
    and sent to the device as one small table; per-element fields (noise, which frames to drop)
    are hashed on the device, with counters from 2**32 up so they never meet a parameter's."""

    PARAMS = 24
    FIELD = 1 << 32

    def __init__(self, keys: Tensor, stream: int, device: torch.device,
                 tables: tuple[Tensor, Tensor] | None = None) -> None:
        """keys: the items' keys, on the host; `tables`: (host, device) parameter tables already
        drawn for this stream (by `for_streams`), else they are drawn here."""
        self.item_keys, self.stream, self.device = keys, stream, device
        self._keys: Tensor | None = None
        if tables is None:
            tables = self.parameters(self.keys), None
        self.host_table = tables[0]  # [B, PARAMS]
        self.table = from_host(self.host_table, device) if tables[1] is None else tables[1]
        self._device_keys: Tensor | None = None

    @property
    def keys(self) -> Tensor:
        """The stream's key of each item, on the host (made when first needed: only per-element
        fields use it)."""
        if self._keys is None:
            self._keys = combine(self.item_keys, self.stream)
        return self._keys

    @classmethod
    def parameters(cls, keys: Tensor) -> Tensor:
        """The parameter table of stream keys [...]: float64 [..., PARAMS]."""
        return uniform(keys[..., None], torch.arange(cls.PARAMS))

    @classmethod
    def for_streams(cls, keys: Tensor, streams: list[int], device: torch.device) -> list[Draws]:
        """The Draws of several augmentations of one batch, their parameters hashed in one go and
        sent to the device in one copy (the same numbers as one Draws per stream; on a GPU each
        tiny host operation and copy costs a launch's worth of time)."""
        if not streams:
            return []
        table = cls.parameters(combine(keys[:, None], torch.tensor(streams, dtype=torch.int64)))  # [B, S, PARAMS]
        on_device = from_host(table, device)
        return [cls(keys, s, device, (table[:, i], on_device[:, i])) for i, s in enumerate(streams)]

    def u(self, k: int) -> Tensor:
        """Parameter k of each item: float64 [B] in [0, 1), on the device."""
        if not 0 <= k < self.PARAMS:
            raise IndexError(f"draw {k}: an augmentation draws at most {self.PARAMS} parameters")
        return self.table[:, k]

    def between(self, k: int, bounds: tuple[float, float]) -> Tensor:
        low, high = bounds
        return low + (high - low) * self.u(k)

    def host_between(self, k: int, bounds: tuple[float, float]) -> Tensor:
        """The same numbers as `between`, on the host (for sizes the host must know)."""
        low, high = bounds
        return low + (high - low) * self.host_table[:, k]

    def _keys_on_device(self, dims: int) -> Tensor:
        if self._device_keys is None:
            self._device_keys = from_host(self.keys, self.device)
        return self._device_keys.view(-1, *([1] * (dims - 1)))

    def field_uniform(self, counter: Tensor) -> Tensor:
        """float32 uniforms for per-element counters [1, ...] (the item's own frame and row),
        on the counter's device: [B, ...]."""
        return uniform(self._keys_on_device(counter.dim()), self.FIELD + counter, torch.float32)

    def field_normal(self, counter: Tensor) -> Tensor:
        return normal(self._keys_on_device(counter.dim()), self.FIELD + counter)
