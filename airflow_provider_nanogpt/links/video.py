"""NanoGPTVideoLink: a button in the Airflow UI that opens the finished video."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

VIDEO_URL_XCOM_KEY = "video_url"


class NanoGPTVideoLink(BaseOperatorLink):
    """Points at the video URL the task pushed to XCom; empty until the video is ready.

    Airflow 3 evaluates links on the worker at the end of each attempt and stores the result, so
    this runs where XCom reads are cheap and never touches NanoGPT.
    """

    name = "NanoGPT Video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.providers.common.compat.sdk import XCom

        value = XCom.get_value(key=VIDEO_URL_XCOM_KEY, ti_key=ti_key)
        return value if isinstance(value, str) else ""
