"""The OpenAI door on a whole stack (real node daemon, its inference link, relay and the
development model): a chat streams through the gateway, and kill -9 of the node
mid-stream ends the stream with an error within seconds, never a hang."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from cynode.testing import Stack
from cynode.testing.waiting import wait_until

from .conftest import admin_client, fault_settings

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.podman, pytest.mark.timeout(300)]
MODEL = "smollm2:135m"
ERROR_BOUND_S = 5.0


def test_a_chat_streams_and_kill9_of_the_node_ends_it_with_an_error(
    make_stack: list[Stack], stack_dir: Path, fault_counts: list[str]
) -> None:
    stack = Stack(fault_settings(stack_dir, inference=True))
    make_stack.append(stack)
    stack.start()
    token = admin_client(stack).access_token
    ai = openai.OpenAI(
        base_url=f"{stack.gateway_url}/v1", api_key=token, max_retries=0, timeout=120
    )
    # The node's link opens right after its dispatch stream; /readyz does not wait for it.
    wait_until(lambda: [m.id for m in ai.models.list().data] == [MODEL], timeout=60)
    whole = ai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
    )
    assert whole.choices[0].message.content and whole.usage is not None

    stream = ai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a long story about the sea."}],
        max_tokens=400,
        stream=True,
    )
    killed_at = 0.0
    pieces = 0
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
                if pieces == 3:
                    stack.procs["node"].signal(9)
                    killed_at = time.monotonic()
    ended_after = time.monotonic() - killed_at
    fault_counts.append(
        f"chat node kill -9: stream ended with an error {ended_after:.2f}s after the kill "
        f"({pieces} pieces received)"
    )
    assert killed_at and ended_after < ERROR_BOUND_S
