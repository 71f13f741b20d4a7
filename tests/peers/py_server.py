"""A small MCP server on the Python SDK (`mcp` 2.x), speaking both protocol eras.

Used by toolgate's integration tests as a real third-party upstream. It has annotated
read, write and destructive tools, a progress-reporting tool, and a tool whose schema
declares an `Mcp-Param-*` header. Every POST it receives (body and Authorization header)
is appended as one JSON line to the file named by TOOLGATE_TEST_UPSTREAM_LOG, so tests can prove what never reached it.

Usage: py_server.py PORT [ANNOTATION_VARIANT]

It listens on 127.0.0.1:PORT (0: the system picks a port) and, once listening, prints
`toolgate-peer: listening on 127.0.0.1:PORT` with the port it bound, so that tests reach
this process and no other. A PORT it cannot bind makes it exit at once.
"""

import asyncio
import json
import os
import sys
from typing import Annotated

import uvicorn
from pydantic import Field

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations

PORT = int(sys.argv[1])
# Variant "b" flips one annotation, to test that a changed definition changes its hash.
VARIANT = sys.argv[2] if len(sys.argv) > 2 else "a"
LOG = os.environ.get("TOOLGATE_TEST_UPSTREAM_LOG")

server = MCPServer("toolgate-test-python")

PAGES = {"ops-runbook": "Restart the pager.", "release-notes": "1.0 shipped."}


@server.tool(
    title="Read a page",
    description="Read a wiki page by its id.",
    annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
)
def read_page(page_id: str) -> str:
    return PAGES.get(page_id, f"no page {page_id}")


@server.tool(
    description="Create or replace a wiki page.",
    annotations=ToolAnnotations(
        readOnlyHint=False, destructiveHint=(VARIANT == "b"), idempotentHint=True
    ),
)
def write_page(page_id: str, body: str) -> str:
    PAGES[page_id] = body
    return f"wrote {page_id} ({len(body)} bytes)"


@server.tool(
    description="Delete a wiki page.",
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True),
)
def delete_page(page_id: str) -> str:
    existed = PAGES.pop(page_id, None) is not None
    return f"deleted {page_id}" if existed else f"no page {page_id}"


@server.tool(description="Count slowly, reporting progress at each step.")
async def count_slowly(steps: int, ctx: Context) -> str:
    for i in range(1, steps + 1):
        await asyncio.sleep(0.3)
        await ctx.report_progress(i, steps, f"step {i}")
    return f"counted to {steps}"


@server.tool(
    description="Look up a project; the key is mirrored into the Mcp-Param-Project header.",
    annotations=ToolAnnotations(readOnlyHint=True),
)
def get_project(
    project: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Project"})],
) -> str:
    return f"project {project}"


def logging_middleware(app):
    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not LOG:
            return await app(scope, receive, send)
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        entry = {"body": body.decode("utf-8", "replace"), "authorization": headers.get("authorization"),
                 "traceparent": headers.get("traceparent")}
        with open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await app(scope, replay, send)

    return wrapped


class ReportingServer(uvicorn.Server):
    """A uvicorn server that prints the address it bound once it is listening."""

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"toolgate-peer: listening on {host}:{port}", flush=True)


if __name__ == "__main__":
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(
        logging_middleware(app), host="127.0.0.1", port=PORT, log_level="warning"
    )
    ReportingServer(config).run()
