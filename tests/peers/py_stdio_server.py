"""An MCP server on the Python SDK (`mcp` 2.x) over stdio, for toolgate's stdio-upstream
tests: a read tool, a write tool, a tool that reports progress, and one that reports
progress and asks the client to sample. With the argument `crash-on-call`, it exits (as if SIGKILLed) on any
tool call; with `garbage`, it prints a line that is not JSON-RPC first.

Usage: py_stdio_server.py [MODE]
"""

import os
import sys

import anyio

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import SamplingMessage, TextContent, ToolAnnotations

MODE = sys.argv[1] if len(sys.argv) > 1 else ""
server = MCPServer("toolgate-test-stdio")
FILES = {"notes.txt": "hello"}


def trouble() -> None:
    if MODE == "crash-on-call":
        os._exit(137)



@server.tool(description="Read a file.", annotations=ToolAnnotations(readOnlyHint=True))
def read_file(name: str) -> str:
    trouble()
    print(f"stdio server: read {name}", file=sys.stderr, flush=True)
    return FILES.get(name, f"no file {name}")


@server.tool(
    description="Write a file.",
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False),
)
def write_file(name: str, body: str) -> str:
    trouble()
    FILES[name] = body
    return f"wrote {name}"


@server.tool(description="Count, reporting progress.", annotations=ToolAnnotations(readOnlyHint=True))
async def count(steps: int, ctx: Context) -> str:
    for i in range(steps):
        await ctx.report_progress(i + 1, steps)
    return f"counted {steps}"


@server.tool(description="Take a long time.", annotations=ToolAnnotations(readOnlyHint=True))
async def slow() -> str:
    await anyio.sleep(60)
    return "done"


@server.tool(description="Summarize a text, asking the client's model.", annotations=ToolAnnotations(readOnlyHint=True))
async def summarize(text: str, ctx: Context) -> str:
    await ctx.report_progress(1, 2)
    sampled = await ctx.session.create_message(
        [SamplingMessage(role="user", content=TextContent(type="text", text=f"Summarize: {text}"))],
        max_tokens=50,
    )
    await ctx.report_progress(2, 2)
    return f"summary: {sampled.content.text}"


if __name__ == "__main__":
    if MODE == "garbage":
        # Before the SDK takes stdout over: the first line the client reads.
        sys.stdout.write("this is not json\n")
        sys.stdout.flush()
    server.run("stdio")
