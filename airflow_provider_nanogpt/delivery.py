"""Delivering a finished NanoGPT video: the download, the task's small result, and the Asset
events that tell downstream DAGs about it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_nanogpt.exceptions import NanoGPTCompletedWithoutVideoError

if TYPE_CHECKING:
    from airflow_provider_nanogpt.api.status import VideoStatus
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook


def deliver(
    hook: NanoGPTHook,
    status: VideoStatus,
    *,
    run_id: str,
    model: str | None,
    currency: str | None,
    precharge: float | None,
    output_path: Any,
    log: Any,
) -> dict[str, Any]:
    """Download (if asked) and build the task's small return value for a finished job.

    ``cost`` is NanoGPT's final cost, or else (the flat status shape carries none) what it
    pre-charged, the best figure known; ``currency`` is the one the job was paid in.
    """
    from airflow_provider_nanogpt.hooks.video_hosts import redact_url
    from airflow_provider_nanogpt.polling import nothing_to_deliver

    if not status.is_deliverable or status.video_url is None:
        raise NanoGPTCompletedWithoutVideoError(nothing_to_deliver(run_id, status), run_id=run_id)
    saved_to = None
    if output_path:
        saved_to = hook.download_video(status.video_url, output_path).path
    cost = status.cost if status.cost is not None else precharge
    if status.cost is not None:
        cost_note = f" (final cost {format_money(cost, currency)})"
    elif cost is not None:
        cost_note = (
            f" (cost {format_money(cost, currency)}, the pre-charge: NanoGPT gave no final cost)"
        )
    else:  # a sensor watching a flat-shape run: no figure at all, so none is claimed
        cost_note = ""
    log.info("NanoGPT video %s is ready: %s%s", run_id, redact_url(status.video_url), cost_note)
    return {
        "run_id": run_id,
        "model": model or status.model,
        "status": "success",
        "video_url": status.video_url,
        "cost": cost,
        "currency": currency,
        "output_path": saved_to,
    }


EVENT_EXTRA_KEYS = ("run_id", "model", "cost", "currency", "video_url", "output_path")


def record_outlet_events(
    context: Mapping[str, Any], outlets: Any, result: Mapping[str, Any], log: Any
) -> None:
    """Describe the video in each Asset outlet event, for downstream DAGs.

    A fixed ``Asset`` gets the details as its event's extra. An ``AssetAlias`` gets an event for
    the asset at the rendered ``output_path`` (``/videos/{{ ds }}/x.mp4`` cannot be named when
    the DAG is written), with the same extra.
    """
    from airflow.sdk import Asset, AssetAlias

    extra = {key: result.get(key) for key in EVENT_EXTRA_KEYS}
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra = extra
        elif isinstance(outlet, AssetAlias):
            uri = asset_uri(result.get("output_path"))
            if uri is None:
                log.warning(
                    "No output_path, so no asset to add to the alias %r: a short-lived video URL "
                    "does not name a lasting asset.",
                    outlet.name,
                )
                continue
            context["outlet_events"][outlet].add(Asset(uri), extra=extra)


def asset_uri(output_path: object) -> str | None:
    """The Asset URI of a saved video: ``file:///abs/path`` or the object-storage URI."""
    import os

    if not output_path:
        return None
    text = str(output_path)
    return text if "://" in text else f"file://{os.path.abspath(text)}"


def format_money(value: float | None, currency: str | None) -> str:
    """An amount with its currency, never a dollar sign on something that is not dollars.

    NanoGPT names no currency for a final cost, nor for a charge whose ``paymentSource`` it left
    out: those amounts are in whatever the run was paid with, and are shown as such.
    """
    if value is None:
        return "unknown"
    if currency == "USD":
        return f"${value:.4f}"
    return f"{value:.4f} {currency}" if currency else f"{value:.4f} in the run's payment currency"
