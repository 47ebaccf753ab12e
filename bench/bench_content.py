"""What checking MCP content blocks costs on the event loop (engine/protocol/content.py).

A content tool's output is checked (schema, strict base64, sizes), split into its text,
and digested for the audit log before the result is sent. The work is linear in the
output, which ``max_output`` and the contract's caps bound; the engine does the check and
the digests in a worker thread (trio.to_thread), so these figures are what a call waits,
not what other clients wait. Prints the time per step for one image block of each size,
up to the caps.

    PYTHONPATH=$PWD python bench/bench_content.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import time

from engine.protocol import content


def timed(step: object, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        step()  # type: ignore[operator]
        runs.append(time.perf_counter() - began)
    return statistics.median(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    options = parser.parse_args()
    print(f"{'image':>10} {'check ms':>9} {'text ms':>8} {'digest ms':>10}")
    for size in (1024, 64 * 1024, 512 * 1024, content.MAX_BLOCK_BYTES):
        data = base64.b64encode(os.urandom(size)).decode()
        image = {"type": "image", "data": data, "mimeType": "image/png"}
        output = {"content": [{"type": "text", "text": "a chart"}, image]}
        _, blocks = content.from_tool_output(output)
        check = timed(lambda: content.from_tool_output(output), options.repeat)  # noqa: B023
        text = timed(lambda: content.summary(blocks), options.repeat)  # noqa: B023
        digest = timed(lambda: content.digests(blocks), options.repeat)  # noqa: B023
        print(f"{size // 1024:>7} KiB {check:>9.2f} {text:>8.3f} {digest:>10.2f}")
    eight = [{"type": "image", "data": base64.b64encode(os.urandom(content.MAX_BLOCK_BYTES)).decode(),
              "mimeType": "image/png"}] * 4
    whole = timed(lambda: (content.digests(content.check_blocks(eight))), options.repeat)
    print(f"4 x 2 MiB (the 8 MiB cap): check + digest {whole:.1f} ms")


if __name__ == "__main__":
    main()
