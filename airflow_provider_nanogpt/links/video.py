"""Buttons in the Airflow UI: the video at NanoGPT, and the copy the task saved.

Airflow 3 evaluates links on the worker at the end of each attempt and stores the result, so
these run where XCom reads are cheap and never touch NanoGPT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

from airflow_provider_nanogpt.job_card import JOB_KEY, JobCardMixin

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

VIDEO_URL_XCOM_KEY = "video_url"
DEFAULT_JOB_CARD_KEY = JOB_KEY


def _xcom(operator: BaseOperator, key: str, ti_key: TaskInstanceKey) -> Any:
    """An XCom of the attempt that just ran. Airflow evaluates links at the end of the attempt,
    on the operator that ran it, which knows what it pushed: asking Airflow for a key never
    pushed (a task that failed before submitting) would log "XCom not found" as an error."""
    if isinstance(operator, JobCardMixin):
        return operator.pushed_this_attempt(ti_key, key)[1]
    from airflow.providers.common.compat.sdk import XCom

    return XCom.get_value(key=key, ti_key=ti_key)


class NanoGPTVideoLink(BaseOperatorLink):
    """NanoGPT's URL of the finished video; empty until the video is ready.

    NanoGPT does not say how long these URLs live: treat them as temporary (see docs/ui.md).
    """

    name = "NanoGPT Video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        value = _xcom(operator, VIDEO_URL_XCOM_KEY, ti_key)
        return value if isinstance(value, str) else ""


class NanoGPTSavedVideoLink(BaseOperatorLink):
    """The copy saved at ``output_path``, where a browser can open it: the AWS or Google Cloud
    console for ``s3://`` and ``gs://`` paths. Empty for local paths and other stores (the
    task's Video tab plays the video whatever the store)."""

    name = "Saved video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        card = _xcom(operator, getattr(operator, "job_card_key", DEFAULT_JOB_CARD_KEY), ti_key)
        path = card.get("output_path") if isinstance(card, dict) else None
        return browsable_url(path) if isinstance(path, str) else ""


def browsable_url(output_path: str) -> str:
    """A console URL for an object-store path, or "" when there is none."""
    parts = urlsplit(output_path)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        return ""
    if parts.scheme in ("s3", "s3a"):
        return (
            f"https://s3.console.aws.amazon.com/s3/object/{quote(bucket)}"
            f"?prefix={quote(key, safe='')}"
        )
    if parts.scheme in ("gs", "gcs"):
        return (
            "https://console.cloud.google.com/storage/browser/_details/"
            f"{quote(bucket)}/{quote(key)}"
        )
    return ""
