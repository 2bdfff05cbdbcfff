"""Run the NanoGPT simulator for benchmarks: ``python -m benchmarks._simserver [--stock] ARGS``.

Same CLI as ``python -m airflow_provider_nanogpt.simulator``, with two socket settings changed so
the benchmarks measure the provider instead of the simulator's socket handling:

* TCP_NODELAY on every connection. The stock handler writes the headers and the body of a
  response in two ``send`` calls; on a kept-alive connection Nagle's algorithm then holds the body
  until the client's delayed ACK (40 ms on Linux), so every poll of a pooled client takes 40 ms
  or more (measured: 22 requests/s on one kept-alive connection, 686/s with TCP_NODELAY).
* A listen backlog of 1024 instead of 5, so thousands of triggers connecting at once are not
  answered with SYN retransmits (a 1 s stall each) that no real API server would cause.

``--stock`` runs the simulator unchanged, to see those effects.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from airflow_provider_nanogpt.simulator import server
    from airflow_provider_nanogpt.simulator.__main__ import main as simulator_main

    args = list(sys.argv[1:] if argv is None else argv)
    if "--stock" in args:
        args.remove("--stock")
    else:
        server.SimRequestHandler.disable_nagle_algorithm = True
        server.SimHTTPServer.request_queue_size = 1024
    return simulator_main(args)


if __name__ == "__main__":
    sys.exit(main())
