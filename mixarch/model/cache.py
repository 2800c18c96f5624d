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
        self.state: torch.Tensor | None = None
        self.extras: dict[str, torch.Tensor] = {}
        self._kv: tuple[torch.Tensor, torch.Tensor] | None = None  # buffers with spare capacity along time
        self._kv_len = 0

    @property
    def key(self) -> torch.Tensor | None:
        return None if self._kv is None else self._kv[0][:, :self._kv_len]

    @property
    def value(self) -> torch.Tensor | None:
        return None if self._kv is None else self._kv[1][:, :self._kv_len]

    def append_kv(self, key: torch.Tensor, value: torch.Tensor, *, window: int | None = None):
        """Append ``key``/``value`` ``[B, T, Hkv, D]``; return all cached keys and values including them.

        Storage grows geometrically, so decoding token by token copies each key O(1) times on average. With
        ``window`` only the ``window`` most recent tokens are kept afterwards (the returned tensors still hold
        everything the current queries may need).
        """
        n, t = self._kv_len, key.shape[1]
        if window is not None:  # small: keep exactly the window
            k_all = key if self._kv is None else torch.cat((self.key, key), dim=1)
            v_all = value if self._kv is None else torch.cat((self.value, value), dim=1)
            kept = min(window, k_all.shape[1])
            self._kv, self._kv_len = (k_all[:, -kept:].clone(), v_all[:, -kept:].clone()), kept
            return k_all, v_all
        if self._kv is None or self._kv[0].shape[1] < n + t:
            capacity = n + t if self._kv is None else max(2 * self._kv[0].shape[1], n + t)
            grown = [x.new_empty((x.shape[0], capacity, *x.shape[2:])) for x in (key, value)]
            if self._kv is not None:
                grown[0][:, :n], grown[1][:, :n] = self.key, self.value
            self._kv = (grown[0], grown[1])
        self._kv[0][:, n:n + t], self._kv[1][:, n:n + t] = key, value
        self._kv_len = n + t
        return self.key, self.value

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
        """Bytes of the cached content (what the plugin's cache metadata predicts)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def allocated_bytes(self) -> int:
        """Bytes allocated, spare capacity of the K/V buffers included."""
        spare = 0 if self._kv is None else sum(x.numel() * x.element_size() for x in self._kv) - \
            (self.key.numel() * self.key.element_size() + self.value.numel() * self.value.element_size())
        return self.nbytes() + spare


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

    def advance(self, t: int) -> None:
        """Count ``t`` more consumed tokens in every layer (after a forward)."""
        for layer in self.layers:
            layer.seen_tokens += t

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)
