"""The dllama stdout parser, on fixtures written from dllama's documented printf formats."""

from __future__ import annotations

from edgelab.engines.dllama.output import (
    ErrorLine,
    Event,
    LogLine,
    OutputParser,
    PrefillBatch,
    Summary,
    TokenLine,
    WeightsLoaded,
)


def pred(piece: str, compute: int = 12, sync: int = 3, sent: int = 40, recv: int = 41) -> str:
    # "🔶 Pred%5u ms Sync%5u ms | Sent%6zu kB Recv%6zu kB | %s\n"
    return (
        f"🔶 Pred{compute:5d} ms Sync{sync:5d} ms | Sent{sent:6d} kB Recv{recv:6d} kB | {piece}\n"
    )


def evalb(tokens: int, ev: int = 30, sync: int = 5, sent: int = 100, recv: int = 90) -> str:
    return (
        f"🔷️ Eval{ev:5d} ms Sync{sync:5d} ms | Sent{sent:6d} kB Recv{recv:6d} kB"
        f" | ({tokens} tokens)\n"
    )


HEAD = (
    "📄 BosId: 120 (<s>)\n💡 Arch: Llama\n💡 Dim: 96\n📀 RequiredMemory: 900 kB\n"
    "⭕ Socket[0]: connecting to 127.0.0.1:4001 worker\n⭕ Socket[0]: connected\n"
    "💿 Loading weights...\n💿 Weights loaded\n"
)
SUMMARY = (
    "\nEvaluation\n   nBatches: 32\n    nTokens: 7\n   tokens/s: 140.00 (7.14 ms/tok)\n"
    "Prediction\n    nTokens: 3\n   tokens/s: 66.67 (15.00 ms/tok)\n"
)


def parse_all(text: str, prompt: str | None) -> list[Event]:
    p = OutputParser(prompt)
    return p.feed(text.encode(), 1.0) + p.close(2.0)


def tokens(events: list[Event]) -> list[TokenLine]:
    return [e for e in events if isinstance(e, TokenLine)]


def test_full_run_yields_prefill_tokens_numbers_and_summary() -> None:
    prompt = "Name three planets."
    out = HEAD + prompt + "\n" + evalb(7) + pred(" Mars", 12, 3, 40, 41) + pred(",")
    out += pred(" Venus", 20, 9, 50, 51) + SUMMARY
    events = parse_all(out, prompt)
    assert any(isinstance(e, WeightsLoaded) for e in events)
    batches = [e for e in events if isinstance(e, PrefillBatch)]
    assert [(b.eval_ms, b.sync_ms, b.sent_kb, b.recv_kb, b.tokens) for b in batches] == [
        (30, 5, 100, 90, 7)
    ]
    toks = tokens(events)
    assert [t.text for t in toks] == [" Mars", ",", " Venus"]
    assert toks[2].detail() == {"compute_ms": 20, "sync_ms": 9, "sent_kb": 50, "recv_kb": 51}
    summary = [e for e in events if isinstance(e, Summary)]
    assert summary[0].values["prediction"] == {
        "nTokens": 3,
        "tokens_per_s": 66.67,
        "ms_per_token": 15.0,
    }
    # The echoed prompt is neither a log line nor a token.
    assert not any(isinstance(e, LogLine) and e.text == prompt for e in events)


def test_pieces_with_newlines_keep_their_exact_text() -> None:
    out = HEAD + "p\n" + pred("line one") + pred("\n") + pred("a\nb") + pred("end\n") + SUMMARY
    toks = tokens(parse_all(out, "p"))
    assert [t.text for t in toks] == ["line one", "\n", "a\nb", "end\n"]


def test_tilde_placeholder_and_literal_tilde_text() -> None:
    out = HEAD + "p\n" + pred("~") + pred("~~") + pred(" ~x") + SUMMARY
    toks = tokens(parse_all(out, "p"))
    assert [t.text for t in toks] == ["~", "~~", " ~x"]
    assert [t.placeholder for t in toks] == [True, False, False]


def test_prompt_echo_that_looks_like_markers_is_skipped() -> None:
    prompt = "first\n" + pred("fake").rstrip("\n") + "\nlast"
    out = HEAD + prompt + "\n" + pred("real") + SUMMARY
    assert [t.text for t in tokens(parse_all(out, prompt))] == ["real"]


def test_live_stream_emits_each_token_when_output_pauses() -> None:
    p = OutputParser("p")
    assert not tokens(p.feed((HEAD + "p\n" + evalb(3)).encode(), 1.0))
    assert tokens(p.feed(pred(" one").encode(), 2.0)) == []  # might continue...
    first = tokens(p.idle())  # ...but nothing more arrived: it is complete
    assert [(t.text, t.at) for t in first] == [(" one", 2.0)]
    p.feed(pred("x").encode(), 3.0)
    assert [t.text for t in tokens(p.idle())] == ["x"]
    # A continuation line that arrives late is carried into the next token.
    p.feed(b"y\n", 3.5)
    p.feed(pred("z").encode(), 4.0)
    assert [t.text for t in tokens(p.idle())] == ["\nyz"]
    rest = p.feed(SUMMARY.encode(), 5.0) + p.close(6.0)
    assert not tokens(rest)
    assert any(isinstance(e, Summary) for e in rest)


def test_idle_waits_for_a_partial_line() -> None:
    p = OutputParser(None)
    data = pred("abc").encode()
    p.feed(data[:10], 1.0)
    assert p.idle() == []
    p.feed(data[10:], 1.1)
    assert [t.text for t in tokens(p.idle())] == ["abc"]


def test_error_line_is_reported() -> None:
    out = HEAD + "🚨 Critical error: Cannot connect\n"
    events = parse_all(out, "p")
    assert [e.message for e in events if isinstance(e, ErrorLine)] == [
        "🚨 Critical error: Cannot connect"
    ]


def test_older_short_format_is_understood() -> None:
    out = (
        "p\n🔷️ E   25 ms S    10 kB R    12 kB (4 tokens)\n🔶 P   11 ms S     1 kB R     2 kB hi\n"
    )
    events = parse_all(out, None)
    batch = next(e for e in events if isinstance(e, PrefillBatch))
    assert (batch.eval_ms, batch.sync_ms, batch.tokens) == (25, None, 4)
    tok = tokens(events)[0]
    assert (tok.text, tok.compute_ms, tok.sync_ms, tok.sent_kb) == ("hi", 11, None, 1)


def test_wide_numbers_without_padding() -> None:
    out = HEAD + "p\n" + pred("w", compute=123456, sync=99999, sent=1234567, recv=7654321)
    tok = tokens(parse_all(out, "p"))[0]
    assert (tok.compute_ms, tok.sync_ms, tok.sent_kb, tok.recv_kb) == (
        123456,
        99999,
        1234567,
        7654321,
    )
