"""An MCP client on the Python SDK (`mcp` 2.x), run by toolgate's integration tests.

Connects in `auto` mode (server/discover, falling back to initialize), lists the tools,
calls one, and prints one JSON object describing what it saw.

Usage: py_client.py URL TOKEN TOOL ARGS_JSON [MODE]
"""

import asyncio
import json
import sys

import httpx2

from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main() -> None:
    url, token, tool, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    mode = sys.argv[5] if len(sys.argv) > 5 else "auto"
    progress = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        listed = await client.list_tools()
        result = await client.call_tool(tool, args, progress_callback=on_progress)
        seen = {
            "protocol_version": client.protocol_version,
            "tools": sorted(t.name for t in listed.tools),
            "result": result.model_dump(mode="json", exclude_none=True),
            "progress": progress,
        }
        print(json.dumps(seen))


asyncio.run(main())
