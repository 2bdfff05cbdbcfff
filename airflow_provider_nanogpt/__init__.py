"""Apache Airflow provider for NanoGPT video generation.

The public classes are re-exported lazily: DAG files are parsed constantly, and importing the
package must not pull in HTTP clients or the operators until a name is actually used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY_EXPORTS = {
    "NanoGPTHook": "airflow_provider_nanogpt.hooks.nanogpt",
    "GenerateVideoOperator": "airflow_provider_nanogpt.operators.video",
    "VideoStatusTrigger": "airflow_provider_nanogpt.triggers.video",
    "VideoStatusSensor": "airflow_provider_nanogpt.sensors.video",
    "NanoGPTVideoLink": "airflow_provider_nanogpt.links.video",
}

__all__ = [
    "GenerateVideoOperator",
    "NanoGPTHook",
    "NanoGPTVideoLink",
    "VideoStatusSensor",
    "VideoStatusTrigger",
    "__version__",
]

if TYPE_CHECKING:
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
    from airflow_provider_nanogpt.links.video import NanoGPTVideoLink
    from airflow_provider_nanogpt.operators.video import GenerateVideoOperator
    from airflow_provider_nanogpt.sensors.video import VideoStatusSensor
    from airflow_provider_nanogpt.triggers.video import VideoStatusTrigger


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
