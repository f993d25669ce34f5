"""The door's server-sent events response (SPEC §10.1): Starlette's StreamingResponse
without its anyio task group.

Under uvicorn (ASGI spec 2.3) StreamingResponse runs the body and a watch for the
client leaving as two tasks of an anyio task group; setting that up, and its cancel
scope, came to about 0.75 ms between the door's first piece and the client's first
event (uvicorn httptools on uvloop, one process per side, load 7.7). Here the body is
sent from the request's own task and one plain asyncio task watches for
`http.disconnect`: a client that leaves still stops the stream at once (the events'
generator is cancelled where it waits, and closes the call on the node, §10.3).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        ended = gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if not ended:
                gone = True
                streaming.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for event in self.events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            # Set before the last send: the server answers a receive with a disconnect
            # once the response is complete.
            ended = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            # The client left: nothing more to send, and not a failure of the server.
            streaming.uncancel()
        finally:
            ended = True
            watcher.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
