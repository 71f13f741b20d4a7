"""An MCP client on the Python SDK (`mcp` 2.x) that answers sampling requests, run by
toolgate's stdio-upstream tests: it connects in MODE (`legacy`, 2025-11-25, or `auto`),
calls TOOL with ARGS_JSON and a progress callback, answers the server's
`sampling/createMessage` with a fixed text, and prints one JSON object with the result,
the progress it saw, the prompts it was asked and the protocol version.

Usage: py_sampling_client.py URL TOKEN TOOL ARGS_JSON MODE
"""

import asyncio
import json
import sys

import httpx2

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CreateMessageResult, TextContent


async def main() -> None:
    url, token, tool, args, mode = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
    progress, prompts = [], []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    async def on_sampling(context, params) -> CreateMessageResult:
        prompts.append(params.messages[0].content.text)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="a short summary"), model="test-model"
        )

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    transport = streamable_http_client(url, http_client=http)
    async with http, Client(transport, mode=mode, sampling_callback=on_sampling) as client:
        result = await client.call_tool(tool, args, progress_callback=on_progress)
        print(json.dumps({
            "protocol_version": client.protocol_version,
            "result": result.model_dump(mode="json", exclude_none=True),
            "progress": progress,
            "prompts": prompts,
        }))


asyncio.run(main())
