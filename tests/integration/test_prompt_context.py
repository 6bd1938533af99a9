"""A prompt that cannot fit the model's context is refused when it is submitted (issue 13).

Real model, real tokenizer (llama.cpp's ``vocab_only`` load of SmolLM2-135M): 3,000
words are 3,001 tokens, more than the 2,048-token context minus ``max_tokens`` and
the chat template's margin, so the API answers 400 naming ``prompt`` before any
cluster exists. No broker is configured, so an accepted run would be a 503.
"""

from __future__ import annotations

import pytest

from edgelab.catalog import ModelInfo
from edgelab.service import create_app
from edgelab.settings import Settings
from edgelab.validation import context
from edgelab.validation.context import (
    CONTEXT_TOKENS,
    TEMPLATE_MARGIN,
    count_tokens,
    default_model,
    warm,
)

pytestmark = pytest.mark.integration


def test_a_prompt_over_the_context_is_a_400_at_submit_time(
    settings: Settings, smollm2: ModelInfo
) -> None:
    client = create_app(settings, {"TESTING": True}).test_client()
    long_prompt = "word " * 3000
    assert count_tokens(smollm2, long_prompt) == 3001  # BOS + one token per word
    resp = client.post(
        "/api/runs", json={"prompt": long_prompt, "model": smollm2.name, "max_tokens": 64}
    )
    assert resp.status_code == 400
    message = resp.get_json()["errors"]["prompt"]
    assert "3001 tokens" in message
    assert f"at most {CONTEXT_TOKENS - TEMPLATE_MARGIN - 64} prompt tokens" in message
    # What fits goes on to the queue (here: no broker configured, so 503).
    ok = client.post("/api/runs", json={"prompt": "word " * 1500, "model": smollm2.name})
    assert ok.status_code == 503


def test_a_web_worker_warms_the_default_models_vocabulary(
    settings: Settings, smollm2: ModelInfo
) -> None:
    """What edgelab/service/wsgi.py does as a worker starts (here without gevent, so it
    loads before returning): the model a run gets by default, and only that one."""
    assert default_model(settings) == smollm2
    context._vocab.cache_clear()
    warm(default_model(settings))
    assert context._vocab.cache_info().currsize == 1
    warm(None)  # no catalogued default: nothing to do
    assert context._vocab.cache_info().currsize == 1
    assert count_tokens(smollm2, "word " * 10) == 11
    assert context._vocab.cache_info().hits >= 1  # the count used the warm vocabulary
