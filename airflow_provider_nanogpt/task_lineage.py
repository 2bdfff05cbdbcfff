"""What a task tells Airflow's OpenLineage listener: the methods it calls, and the facts they
report (which run, which model, what it cost).

The listener calls ``get_openlineage_facets_*`` only when ``apache-airflow-providers-openlineage``
is installed; the facets are built in ``airflow_provider_nanogpt.lineage``, which needs it and is
imported only then.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any


class LineageMixin:
    """OpenLineage for a video task; mixed into the operator and the sensor."""

    output_path: Any
    # The model the task asked for, when it knows (the flat status shape does not name it).
    model: str | None = None
    # Whether the run facet may carry the prompt; off for teams that treat prompts as sensitive.
    lineage_include_prompts: bool = True

    def lineage_inputs(self) -> list[object]:
        """Source media the task reads (paths, URIs, URLs)."""
        return []

    def lineage_request(self) -> dict[str, Any]:
        """The request parameters, as the DAG gave them."""
        return {}

    def remember_for_lineage(self, **facts: Any) -> None:
        """Note what this attempt learned about its run (run id, model, cost, …)."""
        self._lineage_facts.update(facts)

    def get_openlineage_facets_on_start(self) -> Any:
        return self._openlineage(self.output_path)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        delivered = self._lineage_facts.get("output_path") or self._lineage_facts.get("video_url")
        return self._openlineage(delivered or self.output_path)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self._openlineage(self.output_path)

    @cached_property
    def _lineage_facts(self) -> dict[str, Any]:
        """What this attempt learned about its run, for the lineage events."""
        return {}

    def _openlineage(self, output: object) -> Any:
        try:
            from airflow_provider_nanogpt import lineage
        except ImportError:  # the OpenLineage provider is not installed
            return None
        facts = self._lineage_facts
        facet = lineage.run_facet(
            runId=facts.get("run_id"),
            model=facts.get("model") or self.model,
            cost=facts.get("cost"),
            currency=facts.get("currency"),
            request=lineage.request_summary(
                self.lineage_request(), include_prompts=self.lineage_include_prompts
            ),
            promptsIncluded=self.lineage_include_prompts,
        )
        return lineage.operator_lineage(self.lineage_inputs(), output, facet)
