"""Command line: ``python -m airflow_provider_nanogpt models|balance [--conn-id ID]``.

Uses the same Airflow connection as the operators: from ``AIRFLOW_CONN_*``, a secrets backend or
the metadata database (``airflow connections add``), as ``airflow connections test`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def _server_context() -> Iterator[None]:
    """Look connections up as Airflow's own CLI does (``airflow connections test``): a process
    outside a task has no API server to ask, so the metadata database must be in the search path.
    Restored afterwards, so calling ``main()`` in-process changes nothing else."""
    previous = os.environ.get("_AIRFLOW_PROCESS_CONTEXT")
    os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "server"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("_AIRFLOW_PROCESS_CONTEXT", None)
        else:
            os.environ["_AIRFLOW_PROCESS_CONTEXT"] = previous


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_nanogpt")
    parser.add_argument("command", choices=["models", "balance"])
    parser.add_argument("--conn-id", default="nanogpt_default", help="Airflow connection id")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    from airflow_provider_nanogpt.exceptions import NanoGPTError
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

    hook = NanoGPTHook(args.conn_id)
    with _server_context():
        try:
            if args.command == "balance":
                balance = hook.get_balance()
                if args.json:
                    print(json.dumps({"usd": balance.usd, "nano": balance.nano}))
                else:
                    print(f"USD balance: ${balance.usd:.2f}")
                return 0
            models = hook.list_video_models()
            if args.json:
                print(
                    json.dumps([{"id": m.id, "name": m.name, "pricing": m.pricing} for m in models])
                )
                return 0
            width = max((len(m.id) for m in models), default=10)
            for model in sorted(models, key=lambda m: m.id):
                pricing = {k: v for k, v in model.pricing.items() if k != "currency"}
                print(f"{model.id:<{width}}  {json.dumps(pricing, sort_keys=True)}")
            return 0
        except NanoGPTError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            hook.close()


if __name__ == "__main__":
    sys.exit(main())
