"""OpenLineage for generated videos: what a task read and wrote, and the NanoGPT run behind it.

Only the operators' ``get_openlineage_facets_*`` methods import this module, and Airflow's
OpenLineage listener calls those only when ``apache-airflow-providers-openlineage`` is installed;
without it nothing here is ever imported.

Datasets are named by the OpenLineage naming conventions: a local file is namespace ``file`` and
its absolute path; object storage is ``s3://bucket`` (``gs://bucket``, …) and the key; a URL is
``https://host`` and its path, never its query (signed URLs carry credentials there).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
from airflow.providers.common.compat.openlineage.facet import Dataset, RunFacet
from airflow.providers.openlineage.extractors import OperatorLineage

from airflow_provider_nanogpt import __version__

FACET_NAME = "nanogpt_video"
_PRODUCER = f"https://pypi.org/project/airflow-provider-nanogpt/{__version__}/"
# Request fields that carry the prompt: left out when a team treats prompts as sensitive.
PROMPT_FIELDS = frozenset({"prompt", "negative_prompt", "script"})


@attrs.define
class NanoGPTVideoRunFacet(RunFacet):
    """The NanoGPT side of a run: which job, which model, what it cost, what was asked."""

    runId: str | None = None
    model: str | None = None
    cost: float | None = None
    currency: str | None = None
    request: dict[str, Any] = attrs.field(factory=dict)
    promptsIncluded: bool = True

    @staticmethod
    def _get_schema() -> str:
        # No schema of its own is published: it is a RunFacet with the fields above.
        return "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunFacet"


def dataset_for(location: object) -> Dataset | None:
    """The dataset for a local path, a ``file://`` or object-storage URI, or an http(s) URL."""
    if location is None or location == "":
        return None
    if isinstance(location, str):
        text = location
    else:  # a Path or an ObjectStoragePath
        from airflow_provider_nanogpt.storage import describe, resolve_destination

        text = describe(resolve_destination(location))
    if "://" not in text:
        return Dataset(namespace="file", name=os.path.abspath(text))
    parts = urlsplit(text)
    if parts.scheme == "file":
        return Dataset(namespace="file", name=parts.path)
    if parts.scheme in ("http", "https"):
        return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path or "/")
    # Object storage: the bucket (container) is the namespace, the key is the name.
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path.lstrip("/"))


def request_summary(fields: Mapping[str, Any], *, include_prompts: bool) -> dict[str, Any]:
    """The request as the DAG gave it, without file contents or URL queries and, if asked,
    without prompts."""
    summary: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None or value == "" or (not include_prompts and name in PROMPT_FIELDS):
            continue
        if name == "extra_params" and isinstance(value, Mapping):
            value = request_summary(value, include_prompts=include_prompts)
        elif isinstance(value, str) and value.startswith("data:"):
            value = f"<inline data, {len(value)} characters>"
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            value = value.split("?", 1)[0]  # a signed URL's query is a credential
        elif not isinstance(value, str | int | float | bool | dict | list):
            value = str(value)  # a path object
        summary[name] = value
    return summary


def run_facet(**fields: Any) -> NanoGPTVideoRunFacet:
    return NanoGPTVideoRunFacet(producer=_PRODUCER, **fields)


def operator_lineage(
    inputs: Iterable[object], output: object, facet: NanoGPTVideoRunFacet
) -> OperatorLineage[Dataset, RunFacet]:
    return OperatorLineage(
        inputs=[d for d in map(dataset_for, inputs) if d is not None],
        outputs=[d for d in [dataset_for(output)] if d is not None],
        run_facets={FACET_NAME: facet},
    )
