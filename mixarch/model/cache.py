"""The decode cache: one :class:`LayerCache` per layer, the same object for every mixer kind."""

from __future__ import annotations

import torch


class LayerCache:
    """Decode state of one layer. Mixers use the slots they need:

    - ``key``, ``value``: ``[B, T, Hkv, D]`` tensors of a softmax or sparse layer (see :meth:`append_kv`);
    - ``state``: a fixed-size recurrent state (e.g. ``[B, H, Dk, Dv]`` fp32 for Lightning attention);
    - ``extras``: further named tensors (compressed keys, convolution tails, ...).

    ``seen_tokens`` counts the tokens consumed so far (padding included); mixers read it as the index of their
    first input token and the model advances it after every forward.

    ``pad`` (``[B]`` int64 or None) is the number of left-padding tokens of each row, for batches of sequences
    of different lengths: the first ``pad[b]`` tokens of row ``b`` are not part of its sequence, and mixers
    must make them invisible to the row's other tokens (see :meth:`key_mask` and :meth:`is_pad`).
    """

    def __init__(self, pad: torch.Tensor | None = None) -> None:
        self.seen_tokens = 0
        self.pad = pad
        self.key: torch.Tensor | None = None
        self.value: torch.Tensor | None = None
        self.state: torch.Tensor | None = None
        self.extras: dict[str, torch.Tensor] = {}

    def append_kv(self, key: torch.Tensor, value: torch.Tensor, *, window: int | None = None):
        """Append ``key``/``value`` ``[B, T, Hkv, D]``; return all cached keys and values including them.

        With ``window`` only the ``window`` most recent tokens are kept afterwards (the returned tensors still
        hold everything the current queries may need).
        """
        if self.key is None:
            k_all, v_all = key, value
        else:
            k_all, v_all = torch.cat((self.key, key), dim=1), torch.cat((self.value, value), dim=1)
        if window is not None and k_all.shape[1] > window:
            self.key, self.value = k_all[:, -window:].clone(), v_all[:, -window:].clone()
        else:
            self.key, self.value = k_all, v_all
        return k_all, v_all

    def is_pad(self, t: int) -> torch.Tensor | None:
        """``[B, t]`` bool, True at padding, for the ``t`` tokens of the current call (None without padding)."""
        if self.pad is None:
            return None
        index = torch.arange(self.seen_tokens, self.seen_tokens + t, device=self.pad.device)
        return index.unsqueeze(0) < self.pad.unsqueeze(1)

    def key_mask(self, n_keys: int, t: int) -> torch.Tensor | None:
        """``[B, n_keys]`` bool, True for real (non-padding) keys, for the last ``n_keys`` keys of a call that
        consumes ``t`` tokens (None without padding)."""
        if self.pad is None:
            return None
        end = self.seen_tokens + t
        index = torch.arange(end - n_keys, end, device=self.pad.device)
        return index.unsqueeze(0) >= self.pad.unsqueeze(1)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the cache holds, by slot name."""
        out = {name: t for name, t in (("key", self.key), ("value", self.value), ("state", self.state))
               if t is not None}
        out.update({f"extras.{name}": t for name, t in self.extras.items()})
        return out

    def nbytes(self) -> int:
        """Bytes held by this layer's cache."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


class ModelCache:
    """The caches of all layers of a model, in layer order; ``pad`` as in :class:`LayerCache`."""

    def __init__(self, n_layers: int, pad: torch.Tensor | None = None) -> None:
        self.pad = pad
        self.layers = [LayerCache(pad) for _ in range(n_layers)]

    def __getitem__(self, index: int) -> LayerCache:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def seen_tokens(self) -> int:
        return self.layers[0].seen_tokens if self.layers else 0

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)
