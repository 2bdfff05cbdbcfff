"""DAGs driven by dag_run.conf, for the Airflow-level tests (dag.test() against the simulator)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, AssetAlias

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator
from airflow_provider_nanogpt.sensors.video import VideoStatusSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")
REQUEST = {
    "model": "{{ dag_run.conf.get('model', 'kling-video-v2') }}",
    "prompt": "{{ dag_run.conf.get('prompt') }}",
    "image_url": "{{ dag_run.conf.get('image_url') }}",
    "image_path": "{{ dag_run.conf.get('image_path') }}",
    "extra_params": "{{ dag_run.conf.get('extra_params') }}",
    "output_path": "{{ dag_run.conf.get('output_path') }}",
}


def _generate_dag(dag_id: str, *, native: bool = True, **operator_kwargs: object) -> DAG:
    with DAG(
        dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        render_template_as_native_obj=native,
        default_args={"retries": 0},
    ) as dag:
        GenerateVideoOperator(
            task_id="generate", poll_interval=0.2, **{**REQUEST, **operator_kwargs}
        )
    return dag


class _FailsAfterDelivering(GenerateVideoOperator):
    """The first try fails after the video was delivered, before Airflow records success (as a
    post_execute error, a failed XCom push or a worker killed at that moment would)."""

    def post_execute(self, context: Any, result: Any = None) -> None:
        super().post_execute(context, result)
        if context["ti"].try_number == 1:
            raise RuntimeError("failing after the video was delivered")


def _fails_after_delivery_dag(dag_id: str, **operator_kwargs: object) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, render_template_as_native_obj=True) as dag:
        _FailsAfterDelivering(
            task_id="generate",
            poll_interval=0.2,
            retries=1,
            retry_delay=timedelta(seconds=0),
            **{**REQUEST, **operator_kwargs},
        )
    return dag


fails_after_delivery = _fails_after_delivery_dag("nanogpt_fails_after_delivery")
fails_after_delivery_sync = _fails_after_delivery_dag(
    "nanogpt_fails_after_delivery_sync", deferrable=False
)

deferrable = _generate_dag("nanogpt_deferrable")
sync = _generate_dag("nanogpt_sync", deferrable=False)
short_timeout = _generate_dag("nanogpt_short_timeout", timeout=1.5)
with_retry = _generate_dag("nanogpt_with_retry", retries=1, retry_delay=timedelta(seconds=0))
submit_only = _generate_dag("nanogpt_submit_only", wait_for_completion=False)
# Its connection (set by the UI tests) has no output_base_dir: the UI must read no saved file.
no_base_dir = _generate_dag("nanogpt_no_base_dir", nanogpt_conn_id="nanogpt_no_base")
# The first try's job fails (NanoGPT refunds it), the retry's succeeds.
refunded_then_retried = _generate_dag(
    "nanogpt_refunded_then_retried",
    retries=1,
    retry_delay=timedelta(seconds=0),
    prompt="{{ dag_run.conf.get('prompt') }}{{ ' [sim:fail]' if ti.try_number == 1 else '' }}",
)
# Retries right away and a short settle time: the never-pay-twice paths in a few seconds.
uncertain = _generate_dag(
    "nanogpt_uncertain", retries=3, retry_delay=timedelta(seconds=0), settle_seconds=3.0
)
# A job NanoGPT lists late: the settle time (10 s) outlasts the listing lag the test sets (7 s),
# and the lag outlasts how long a retry takes to start, even on a loaded machine.
uncertain_late_listing = _generate_dag(
    "nanogpt_uncertain_late_listing",
    retries=3,
    retry_delay=timedelta(seconds=0),
    settle_seconds=10.0,
)
uncertain_sync = _generate_dag(
    "nanogpt_uncertain_sync",
    deferrable=False,
    retries=3,
    retry_delay=timedelta(seconds=0),
    settle_seconds=3.0,
)
rate_limited_briefly = _generate_dag("nanogpt_rate_limit_bound", timeout=1.5)

# execution_timeout far below timeout: the wait must end by execution_timeout, deferred or not.
EXECUTION_TIMEOUT = timedelta(seconds=5)
LONG_TIMEOUT = 800.0  # longer than the 600 s Retry-After of the rate-limit tests
execution_timeout_deferred = _generate_dag(
    "nanogpt_execution_timeout", timeout=LONG_TIMEOUT, execution_timeout=EXECUTION_TIMEOUT
)
execution_timeout_sync = _generate_dag(
    "nanogpt_execution_timeout_sync",
    deferrable=False,
    timeout=LONG_TIMEOUT,
    execution_timeout=EXECUTION_TIMEOUT,
)
# Worker-side sleeps (a 429's Retry-After) bounded by timeout, or by a shorter execution_timeout.
rate_limit_deadline_sync = _generate_dag(
    "nanogpt_rate_limit_deadline_sync", deferrable=False, timeout=3.0
)
rate_limit_execution_timeout_sync = _generate_dag(
    "nanogpt_rate_limit_execution_timeout_sync",
    deferrable=False,
    timeout=LONG_TIMEOUT,
    execution_timeout=timedelta(seconds=3),
)

with DAG(
    "nanogpt_sensor_execution_timeout",
    schedule=None,
    start_date=START,
    catchup=False,
    render_template_as_native_obj=True,
    default_args={"retries": 0},
) as sensor_execution_timeout:
    submitted = GenerateVideoOperator(
        task_id="submit", poll_interval=0.2, wait_for_completion=False, **REQUEST
    )
    for sensor_deferrable in (True, False):
        submitted >> VideoStatusSensor(
            task_id="wait_deferred" if sensor_deferrable else "wait_poke",
            run_id="{{ ti.xcom_pull(task_ids='submit', key='run_id') }}",
            deferrable=sensor_deferrable,
            poke_interval=2.0,
            timeout=LONG_TIMEOUT,
            execution_timeout=EXECUTION_TIMEOUT,
        )

with DAG(
    "nanogpt_split",
    schedule=None,
    start_date=START,
    catchup=False,
    render_template_as_native_obj=True,
) as split:
    submit = GenerateVideoOperator(
        task_id="submit", poll_interval=0.2, wait_for_completion=False, **REQUEST
    )
    wait_deferred = VideoStatusSensor(
        task_id="wait_deferred",
        run_id="{{ ti.xcom_pull(task_ids='submit', key='run_id') }}",
        poke_interval=0.2,
        timeout=60,
    )
    wait_poke = VideoStatusSensor(
        task_id="wait_poke",
        run_id="{{ ti.xcom_pull(task_ids='submit', key='run_id') }}",
        deferrable=False,
        poke_interval=0.2,
        timeout=60,
        output_path="{{ dag_run.conf.get('output_path') }}",
    )
    submit >> [wait_deferred, wait_poke]

MONEY_GUARDS = ("min_balance_usd", "max_cost_usd")


def _budget_dag(dag_id: str, guards: tuple[str, ...], *, native: bool = True) -> DAG:
    """The guards named are set from dag_run.conf; a guard set there but missing from the conf
    renders to nothing, which fails the task (see harness.budget_dag for picking one)."""
    # Text rendering would turn the optional request fields' None into "None": leave them out.
    unset = {} if native else dict.fromkeys(set(REQUEST) - {"model", "prompt"})
    return _generate_dag(
        dag_id,
        native=native,
        **unset,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **{name: f"{{{{ dag_run.conf.get('{name}') }}}}" for name in guards},
    )


budget = _budget_dag("nanogpt_budget", MONEY_GUARDS)
budget_min_balance = _budget_dag("nanogpt_budget_min_balance_usd", ("min_balance_usd",))
budget_max_cost = _budget_dag("nanogpt_budget_max_cost_usd", ("max_cost_usd",))
# Text rendering (Airflow's default): a missing conf value renders to the string "None".
budget_text_min_balance = _budget_dag(
    "nanogpt_budget_text_min_balance_usd", ("min_balance_usd",), native=False
)
budget_text_max_cost = _budget_dag(
    "nanogpt_budget_text_max_cost_usd", ("max_cost_usd",), native=False
)

with DAG(
    "nanogpt_batch_200",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=16,
) as batch_200:
    GenerateVideoOperator.partial(
        task_id="generate", model="kling-video-v2", poll_interval=0.2
    ).expand(prompt=[f"batch video {i}" for i in range(200)])

# Three mapped videos, labelled by the operator's default map_index_template.
with DAG("nanogpt_mapped", schedule=None, start_date=START, catchup=False) as mapped:
    GenerateVideoOperator.partial(
        task_id="generate", model="kling-video-v2", poll_interval=0.2
    ).expand(
        prompt=[
            "A hummingbird hovering over a red flower,\n"
            "slow motion, golden hour light in the garden",
            "Neon-lit alley in the rain",
        ]
    )

# Source media from dag_run.conf too; the retry is there to show invalid input never uses it.
MEDIA = {
    name: f"{{{{ dag_run.conf.get('{name}') }}}}"
    for name in ("video_url", "video_path", "audio_url", "audio_path")
}
media = _generate_dag("nanogpt_media", retries=1, retry_delay=timedelta(seconds=0), **MEDIA)

# Lineage: a templated output path named through an AssetAlias, and a DAG scheduled on the alias.
VIDEOS_ALIAS = AssetAlias("nanogpt-test-videos")


SECRET_PROMPT = "a confidential product launch teaser"


def _lineage_dag(dag_id: str, **overrides: object) -> DAG:
    with DAG(
        dag_id, schedule=None, start_date=START, catchup=False, render_template_as_native_obj=True
    ) as dag:
        request = {**REQUEST, "output_path": "{{ dag_run.conf['out_dir'] }}/{{ ds }}/video.mp4"}
        GenerateVideoOperator(
            task_id="generate",
            poll_interval=0.2,
            outlets=[VIDEOS_ALIAS],
            **{**request, **overrides},
        )
    return dag


lineage = _lineage_dag("nanogpt_lineage")
# The prompt is in the DAG, not in dag_run.conf: Airflow's own facets repeat the conf as given.
lineage_no_prompts = _lineage_dag(
    "nanogpt_lineage_no_prompts", prompt=SECRET_PROMPT, lineage_include_prompts=False
)

with DAG(
    "nanogpt_lineage_consumer", schedule=[VIDEOS_ALIAS], start_date=START, catchup=False
) as lineage_consumer:
    EmptyOperator(task_id="publish")

# Approval above a threshold: kling-video-v2 costs $0.35 for 5 s and $0.70 for 10 s (or unset).
APPROVAL = {
    "approval_above_usd": 0.5,
    "duration": "{{ dag_run.conf.get('duration') }}",
    "timeout": 120.0,
}
approval = _generate_dag("nanogpt_approval", **APPROVAL)
approval_timeout = _generate_dag("nanogpt_approval_timeout", **APPROVAL, approval_timeout=1.0)
approval_fails_after_delivery = _fails_after_delivery_dag(
    "nanogpt_approval_fails_after_delivery", **APPROVAL
)
approval_refunded_then_retried = _generate_dag(
    "nanogpt_approval_refunded_then_retried",
    **APPROVAL,
    retries=1,
    retry_delay=timedelta(seconds=0),
    prompt="{{ dag_run.conf.get('prompt') }}{{ ' [sim:fail]' if ti.try_number == 1 else '' }}",
)
