"""Generated tokens as text: incremental detokenization and stop strings, per sequence and per batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mixarch.generate.generate import stream
from mixarch.generate.sampling import SamplingParams

REPLACEMENT = "\ufffd"


class TextStream:
    """Turns the tokens of one sequence into text pieces, safely for streaming.

    :meth:`push` returns the text that is final after one more token: an incomplete character (the tokenizer
    decodes it to U+FFFD) and any tail that could begin a stop string are held back. At the first stop string
    the text ends (the stop string excluded) and :attr:`stopped` is set. :meth:`flush` returns what is held
    back once generation has ended for another reason. ``tokenizer`` needs ``decode(ids) -> str``.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""  # decoded so far
        self.emitted = 0  # characters of text returned so far
        self.stopped = False
        self._prefix = 0  # ids[_prefix:_read] decode to the tail of text (context for the next token)
        self._read = 0

    def push(self, token: int) -> str:
        """Add one token; the new final text (empty once stopped)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        self._decode(complete=False)
        return self._release(final=False)

    def flush(self) -> str:
        """Everything still held back (generation has ended without a stop string)."""
        if self.stopped:
            return ""
        self._decode(complete=True)
        return self._release(final=True)

    def _decode(self, complete: bool) -> None:
        """Extend :attr:`text` with the new tokens' characters, unless they end in an incomplete one (or
        ``complete``: generation is over, take them as they are)."""
        before = self.tokenizer.decode(self.ids[self._prefix:self._read])
        after = self.tokenizer.decode(self.ids[self._prefix:])
        if len(after) > len(before) and (complete or not after.endswith(REPLACEMENT)):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)

    def _release(self, final: bool) -> str:
        hits = [i for i in (self.text.find(s, self.emitted) for s in self.stop) if i >= 0]
        if hits:
            end, self.stopped = min(hits), True
        elif final:
            end = len(self.text)
        else:
            end = len(self.text) - self._held_tail()
        out = self.text[self.emitted:end]
        self.emitted = end
        return out

    def _held_tail(self) -> int:
        """Length of the longest tail of the unreleased text that is a proper prefix of a stop string."""
        pending = self.text[self.emitted:]
        for n in range(min(len(pending), max((len(s) for s in self.stop), default=1) - 1), 0, -1):
            if any(s.startswith(pending[-n:]) for s in self.stop):
                return n
        return 0


@dataclass(frozen=True)
class TextDelta:
    """New text of one row after a step, ``finish_reason`` (``"stop"``, ``"length"``) at its last step, and the
    tokens it has generated so far."""

    text: str
    finish_reason: str | None
    tokens: int


def stream_text(model, tokenizer, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams],
                stops: Sequence[Sequence[str]], *, prefill_chunk: int | None = None
                ) -> Iterator[list[TextDelta | None]]:
    """:func:`~mixarch.generate.stream` as text: per step, one :class:`TextDelta` per row (None once the row has
    finished). A row also finishes (``"stop"``) at the first of its stop strings ``stops[b]``; the batch ends
    when every row has finished."""
    texts = [TextStream(tokenizer, s) for s in stops]
    counts = [0] * len(prompts)
    done = [False] * len(prompts)
    steps = stream(model, prompts, params=params, prefill_chunk=prefill_chunk)
    try:
        for step in steps:
            out: list[TextDelta | None] = []
            for b, (token, reason) in enumerate(zip(step.tokens, step.finish_reasons)):
                if done[b]:
                    out.append(None)
                    continue
                text = ""
                if token is not None:
                    counts[b] += 1
                    text = texts[b].push(token)
                if texts[b].stopped:
                    reason = "stop"
                elif reason is not None:
                    text += texts[b].flush()
                done[b] = reason is not None
                out.append(TextDelta(text, reason, counts[b]))
            yield out
            if all(done):
                return
    finally:
        steps.close()
