"""Command line: ``python -m airflow_provider_nanogpt models|balance|reconcile [--conn-id ID]``.

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


# The provider installs no console script for this CLI: ``python -m`` is how it is called.
PROG = "python -m airflow_provider_nanogpt"
DEFAULT_CONN_ID = "nanogpt_default"
COMMANDS = {
    "models": "list NanoGPT's video models and their pricing, one per line",
    "balance": "print the account's USD balance",
    "reconcile": "settle or release the shared budgets' reservations whose outcome was lost",
}
EXAMPLES = ("balance", "models --json", "models --conn-id nanogpt_prod", "reconcile --json")
EPILOG = "\n".join(
    [
        "commands:",
        *(f"  {name:<10}{meaning}" for name, meaning in COMMANDS.items()),
        "",
        f"All read the Airflow connection --conn-id (default: {DEFAULT_CONN_ID}) as the",
        "operators do, for example from the AIRFLOW_CONN_NANOGPT_DEFAULT environment variable.",
        "None submits a video or spends money; reconcile writes only to the budget ledger.",
        "",
        "examples:",
        *(f"  {PROG} {example}" for example in EXAMPLES),
    ]
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ask NanoGPT about your account through an Airflow connection.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), help="see commands below")
    parser.add_argument(
        "--conn-id",
        default=DEFAULT_CONN_ID,
        help=f"Airflow connection id (default: {DEFAULT_CONN_ID})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=60.0,
        help="reconcile: how long after a send NanoGPT's run list is trusted (default: 60)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from airflow_provider_nanogpt.exceptions import NanoGPTError
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

    if args.command == "reconcile":
        return _reconcile(args.conn_id, args.settle_seconds, args.json)
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


def _reconcile(conn_id: str, settle_seconds: float, as_json: bool) -> int:
    from airflow_provider_nanogpt.exceptions import NanoGPTError
    from airflow_provider_nanogpt.reconcile import reconcile_connection

    with _server_context():
        try:
            report = reconcile_connection(conn_id, settle_seconds=settle_seconds)
        except NanoGPTError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
