"""Provider metadata for Airflow's provider discovery (the ``apache_airflow_provider`` entry point).

Import-light on purpose: Airflow calls this in every component at start-up.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_nanogpt import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-nanogpt",
        "name": "NanoGPT",
        # The distribution's summary and the README's opening words (tests/release).
        "description": "An Apache Airflow 3 provider for NanoGPT's video generation API. "
        "Put a prompt in a DAG and get a video file back.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "NanoGPT",
                "external-doc-url": "https://docs.nano-gpt.com/api-reference/video-generation",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": "NanoGPT",
                "python-modules": ["airflow_provider_nanogpt.hooks.nanogpt"],
            }
        ],
        "operators": [
            {
                "integration-name": "NanoGPT",
                "python-modules": ["airflow_provider_nanogpt.operators.video"],
            }
        ],
        "sensors": [
            {
                "integration-name": "NanoGPT",
                "python-modules": ["airflow_provider_nanogpt.sensors.video"],
            }
        ],
        "triggers": [
            {
                "integration-name": "NanoGPT",
                "python-modules": [
                    "airflow_provider_nanogpt.triggers.video",
                    "airflow_provider_nanogpt.triggers.wait",
                ],
            }
        ],
        "extra-links": [
            "airflow_provider_nanogpt.links.video.NanoGPTVideoLink",
            "airflow_provider_nanogpt.links.video.NanoGPTSavedVideoLink",
        ],
        "connection-types": [
            {
                "connection-type": "nanogpt",
                "hook-class-name": "airflow_provider_nanogpt.hooks.nanogpt.NanoGPTHook",
                "hook-name": "NanoGPT",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port"],
                    "relabeling": {"password": "API Key", "host": "Base URL"},
                    "placeholders": {
                        "password": "sk-nano-...",
                        "host": "https://nano-gpt.com",
                    },
                },
                "conn-fields": {
                    "request_timeout": {
                        "label": "Request timeout (seconds)",
                        "description": "The most one HTTP call to NanoGPT may take, all of it. "
                        "Submissions get at least 60 s.",
                        "schema": {"type": ["number", "null"], "minimum": 1, "default": 30},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries for transient errors (429, 5xx, network) "
                        "on each call. A submission is never blindly re-sent.",
                        "schema": {
                            "type": ["integer", "null"],
                            "minimum": 0,
                            "maximum": 20,
                            "default": 5,
                        },
                    },
                    "allowed_video_hosts": {
                        "label": "Allowed video hosts",
                        "description": "Only fetch videos from these hosts (comma-separated; "
                        "*.example.com for subdomains), redirects included; listed hosts may be "
                        "private. Empty: any http(s) host at a public address.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "max_video_bytes": {
                        "label": "Max video size (bytes)",
                        "description": "Larger videos are refused, before or while "
                        "downloading. Default 2 GiB.",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                    "download_timeout": {
                        "label": "Download timeout (seconds)",
                        "description": "The most one video download may take, retries included. "
                        "Default 1800.",
                        "schema": {"type": ["number", "null"], "minimum": 1},
                    },
                    "output_base_dir": {
                        "label": "Output base directory",
                        "description": "Every output_path must resolve to a place under this "
                        "path or URI (.. and links followed). Empty: paths are used as given.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "budget_usd_per_day": {
                        "label": "Shared budget per day (USD)",
                        "description": "At most this much spent through this connection per day, "
                        "across every DAG, worker and triggerer (reserved before each submit). "
                        "Needs a budget ledger connection.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "budget_usd_per_month": {
                        "label": "Shared budget per month (USD)",
                        "description": "As the daily budget, per calendar month. Both may apply.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "budget_timezone": {
                        "label": "Budget reset time zone",
                        "description": "The budgets reset at midnight in this IANA time zone "
                        "(e.g. Europe/Paris). Default UTC.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "budget_ledger_conn_id": {
                        "label": "Budget ledger connection",
                        "description": "The id of a PostgreSQL (or, on one machine, SQLite) "
                        "connection whose database keeps the budgets' ledger.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "budget_count_outside_spend": {
                        "label": "Count spend outside Airflow",
                        "description": "Budget reconciliation also counts what this API key "
                        "spent outside Airflow (NanoGPT's usage endpoint) in this connection's "
                        "budgets.",
                        "schema": {"type": ["boolean", "null"]},
                    },
                    "approval_above_usd": {
                        "label": "Ask for approval above (USD)",
                        "description": "A video estimated above this waits for a person's "
                        "approval (Airflow's Required Actions) before it is sent. Operators may "
                        "set their own.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "approval_timeout": {
                        "label": "Approval timeout (seconds)",
                        "description": "No answer by then: the task fails and nothing is sent.",
                        "schema": {"type": ["number", "null"], "minimum": 1},
                    },
                },
            }
        ],
    }
