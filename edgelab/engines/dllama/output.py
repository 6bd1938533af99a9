"""Turn the stdout of ``dllama inference`` into timed events.

What dllama prints (``src/dllama.cpp``, v0.16; older releases used the short
form in brackets, which is accepted too)::

    <log lines: 📄 tokenizer, 💡 header, 📀 memory, ⭕ sockets, 💿 Loading weights...>
    💿 Weights loaded
    [🚁 Network is in non-blocking mode]          (only with --net-turbo 1)
    <the prompt, echoed verbatim, then a newline>
    🔷️ Eval%5u ms Sync%5u ms | Sent%6zu kB Recv%6zu kB | (%d tokens)   one per prefill batch
       [🔷️ E%5u ms S%6zu kB R%6zu kB (%d tokens)]
    🔶 Pred%5u ms Sync%5u ms | Sent%6zu kB Recv%6zu kB | <piece>       one per output token
       [🔶 P%5u ms S%6zu kB R%6zu kB <piece>]
    <blank line>
    Evaluation / nBatches / nTokens / tokens/s ...  Prediction / nTokens / tokens/s ...

Sent/Recv are the root's bytes since the previous line (dllama resets its
counters on every read), ``Pred``/``Eval`` is compute time and ``Sync`` the time
spent exchanging activations, both for that one forward pass. A piece is printed
raw and may itself contain newlines, so a token's text runs until the next
marker line; a piece dllama could not decode yet (a BOS/EOS token or the first
bytes of a multi-byte character) is printed as ``~``. Fatal errors start with 🚨.

Because a piece can span lines, the end of a token record is only certain when
the next line arrives; waiting for that would delay every token by one. dllama
flushes stdout after each token, so the reader calls :meth:`OutputParser.idle`
when no more bytes are immediately available, and the pending token is emitted
then. Continuation lines that arrive later anyway are carried into the next
token's text, so the concatenated output stays exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PRED_RE = re.compile(
    r"^🔶 Pred\s*(\d+) ms Sync\s*(\d+) ms \| Sent\s*(\d+) kB Recv\s*(\d+) kB \| (.*)$", re.S
)
PRED_OLD_RE = re.compile(r"^🔶 P\s*(\d+) ms S\s*(\d+) kB R\s*(\d+) kB (.*)$", re.S)
EVAL_RE = re.compile(
    r"^🔷\ufe0f? Eval\s*(\d+) ms Sync\s*(\d+) ms \| Sent\s*(\d+) kB Recv\s*(\d+) kB"
    r" \| \((\d+) tokens\)$"
)
EVAL_OLD_RE = re.compile(r"^🔷\ufe0f? E\s*(\d+) ms S\s*(\d+) kB R\s*(\d+) kB \((\d+) tokens\)$")
SUMMARY_TPS_RE = re.compile(r"^\s*tokens/s: ([\d.]+|inf|nan) \(([\d.]+|inf|nan) ms/tok\)$")
SUMMARY_INT_RE = re.compile(r"^\s*(nBatches|nTokens): (\d+)$")
WEIGHTS_LOADED = "💿 Weights loaded"
TURBO_PREFIX = "🚁"
ERROR_PREFIX = "🚨"
PLACEHOLDER = "~"


@dataclass(frozen=True)
class LogLine:
    text: str
    at: float


@dataclass(frozen=True)
class WeightsLoaded:
    """The root finished streaming weights; the prompt is about to be evaluated."""

    at: float


@dataclass(frozen=True)
class PrefillBatch:
    eval_ms: int
    sync_ms: int | None
    sent_kb: int
    recv_kb: int
    tokens: int
    at: float


@dataclass(frozen=True)
class TokenLine:
    """One output token as dllama printed it."""

    text: str
    compute_ms: int
    sync_ms: int | None
    sent_kb: int
    recv_kb: int
    at: float
    # dllama printed "~": either a token with no text of its own (BOS/EOS, the
    # first bytes of a multi-byte character) or a literal "~" token.
    placeholder: bool = False

    def detail(self) -> dict[str, Any]:
        """The per-token numbers stored in ``TokenEvent.detail``."""
        d: dict[str, Any] = {
            "compute_ms": self.compute_ms,
            "sync_ms": self.sync_ms,
            "sent_kb": self.sent_kb,
            "recv_kb": self.recv_kb,
        }
        if self.placeholder:
            d["placeholder"] = True
        return d


@dataclass(frozen=True)
class ErrorLine:
    message: str
    at: float


@dataclass(frozen=True)
class Summary:
    """dllama's closing statistics (its own arithmetic, kept for comparison)."""

    values: dict[str, Any]
    at: float


Event = LogLine | WeightsLoaded | PrefillBatch | TokenLine | ErrorLine | Summary


@dataclass
class _Pending:
    first: str
    compute_ms: int
    sync_ms: int | None
    sent_kb: int
    recv_kb: int
    at: float
    more: list[str] = field(default_factory=list)


class OutputParser:
    """Incremental parser of one ``dllama inference`` stdout stream.

    ``prompt`` is the text dllama will echo after loading; knowing it lets the
    parser skip the echo exactly even when the prompt itself contains lines
    that look like dllama's markers.
    """

    def __init__(self, prompt: str | None = None) -> None:
        self._buf = b""
        self._state = "pre"  # pre -> echo -> run -> summary
        self._echo_lines = prompt.count("\n") + 1 if prompt is not None else 0
        self._echo_seen_turbo = False
        self._pending: _Pending | None = None
        self._carry: list[str] = []
        self._summary: dict[str, Any] = {}
        self._summary_section = ""
        self._carry_prefix = ""
        self._prev_blank = False
        self.tokens = 0

    # -- feeding -------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> list[Event]:
        """Parse the complete lines in ``data`` (plus what was buffered before)."""
        self._buf += data
        events: list[Event] = []
        while True:
            cut = self._buf.find(b"\n")
            if cut < 0:
                break
            raw, self._buf = self._buf[:cut], self._buf[cut + 1 :]
            events.extend(self._line(raw.decode("utf-8", errors="replace"), now))
        return events

    def idle(self) -> list[Event]:
        """No more bytes are available right now: the pending token is complete."""
        if self._pending is None or self._buf:
            return []
        return [self._emit_pending()]

    def close(self, now: float) -> list[Event]:
        """End of stream: flush a partial last line, the pending token and the summary."""
        events: list[Event] = []
        if self._buf:
            rest, self._buf = self._buf, b""
            events.extend(self._line(rest.decode("utf-8", errors="replace"), now))
        if self._pending is not None:
            events.append(self._emit_pending())
        if self._summary:
            events.append(Summary(dict(self._summary), now))
            self._summary = {}
        return events

    # -- lines ---------------------------------------------------------------

    def _line(self, line: str, now: float) -> list[Event]:
        if self._state == "pre":
            return self._pre_line(line, now)
        if self._state == "echo":
            return self._echo_line(line, now)
        if self._state == "summary":
            return self._summary_line(line, now)
        return self._run_line(line, now)

    def _pre_line(self, line: str, now: float) -> list[Event]:
        if line.startswith(WEIGHTS_LOADED):
            self._state = "echo" if self._echo_lines else "run"
            return [LogLine(line, now), WeightsLoaded(now)]
        if line.startswith(ERROR_PREFIX):
            return [ErrorLine(line, now)]
        if _is_marker(line):
            # A dllama that printed no "Weights loaded" line: the run has begun.
            self._state = "run"
            return self._run_line(line, now)
        return [LogLine(line, now)]

    def _echo_line(self, line: str, now: float) -> list[Event]:
        if line.startswith(TURBO_PREFIX) and not self._echo_seen_turbo:
            self._echo_seen_turbo = True
            return [LogLine(line, now)]
        if line.startswith(ERROR_PREFIX):
            return [ErrorLine(line, now)]
        self._echo_lines -= 1
        if self._echo_lines <= 0:
            self._state = "run"
        return []

    def _run_line(self, line: str, now: float) -> list[Event]:
        prev_blank, self._prev_blank = self._prev_blank, line == ""
        events: list[Event] = []
        m = PRED_RE.match(line)
        old = None if m else PRED_OLD_RE.match(line)
        if m or old:
            if self._pending is not None:
                events.append(self._emit_pending())
            if m:
                compute, sync, sent, recv, first = m.groups()
                sync_ms: int | None = int(sync)
            else:
                assert old is not None
                compute, sent, recv, first = old.groups()
                sync_ms = None
            if self._carry:
                # Lines that belonged to the previous, already emitted token: keep
                # them in the output by prefixing them to this one.
                self._carry_prefix = "\n" + "\n".join(self._carry)
                self._carry = []
            self._pending = _Pending(first, int(compute), sync_ms, int(sent), int(recv), now)
            return events
        e = EVAL_RE.match(line)
        e_old = None if e else EVAL_OLD_RE.match(line)
        if e or e_old:
            if self._pending is not None:
                events.append(self._emit_pending())
            if e:
                ev, sy, sent, recv, n = (int(x) for x in e.groups())
                events.append(PrefillBatch(ev, sy, sent, recv, n, now))
            else:
                assert e_old is not None
                ev, sent, recv, n = (int(x) for x in e_old.groups())
                events.append(PrefillBatch(ev, None, sent, recv, n, now))
            return events
        if line.startswith(ERROR_PREFIX):
            if self._pending is not None:
                events.append(self._emit_pending())
            events.append(ErrorLine(line, now))
            return events
        if line == "Evaluation" and (self._ends_with_blank() or prev_blank):
            self._drop_blank()
            if self._pending is not None:
                events.append(self._emit_pending())
            self._carry = []
            self._state = "summary"
            self._summary_section = "evaluation"
            return events
        if self._pending is not None:
            self._pending.more.append(line)
        elif self.tokens:
            self._carry.append(line)
        else:
            events.append(LogLine(line, now))
        return events

    def _summary_line(self, line: str, now: float) -> list[Event]:
        if line in ("Evaluation", "Prediction"):
            self._summary_section = line.lower()
            return []
        section = self._summary.setdefault(self._summary_section, {})
        m = SUMMARY_INT_RE.match(line)
        if m:
            section[m.group(1)] = int(m.group(2))
            return []
        t = SUMMARY_TPS_RE.match(line)
        if t:
            section["tokens_per_s"] = float(t.group(1))
            section["ms_per_token"] = float(t.group(2))
            if self._summary_section == "prediction":
                summary, self._summary = self._summary, {}
                self._state = "after"
                return [Summary(summary, now)]
            return []
        if line.startswith(ERROR_PREFIX):
            return [ErrorLine(line, now)]
        return [LogLine(line, now)]

    # -- helpers -------------------------------------------------------------

    def _ends_with_blank(self) -> bool:
        if self._pending is not None:
            return bool(self._pending.more) and self._pending.more[-1] == ""
        if self._carry:
            return self._carry[-1] == ""
        # The last token's own line was flushed alone, then the blank arrived: the
        # blank would be in _carry. No token at all: dllama still prints the blank.
        return False

    def _drop_blank(self) -> None:
        if self._pending is not None and self._pending.more:
            self._pending.more.pop()
        elif self._carry:
            self._carry.pop()

    def _emit_pending(self) -> TokenLine:
        p = self._pending
        assert p is not None
        self._pending = None
        text = "\n".join([p.first, *p.more])
        prefix, self._carry_prefix = self._carry_prefix, ""
        placeholder = text == PLACEHOLDER and not prefix
        self.tokens += 1
        return TokenLine(
            text=prefix + text,
            compute_ms=p.compute_ms,
            sync_ms=p.sync_ms,
            sent_kb=p.sent_kb,
            recv_kb=p.recv_kb,
            at=p.at,
            placeholder=placeholder,
        )


def _is_marker(line: str) -> bool:
    return bool(
        PRED_RE.match(line)
        or PRED_OLD_RE.match(line)
        or EVAL_RE.match(line)
        or EVAL_OLD_RE.match(line)
    )


__all__ = [
    "ErrorLine",
    "Event",
    "LogLine",
    "OutputParser",
    "PrefillBatch",
    "Summary",
    "TokenLine",
    "WeightsLoaded",
]
