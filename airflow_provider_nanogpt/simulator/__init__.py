"""Local stand-in for the NanoGPT video API (standard library only).

Run it with ``python -m airflow_provider_nanogpt.simulator`` or from Python::

    from airflow_provider_nanogpt.simulator import NanoGPTSimulator

    with NanoGPTSimulator(api_key="sk-nano-test", time_scale=0.05) as sim:
        ...  # point the NanoGPT connection at sim.url

See docs/simulator.md for prompt markers, control endpoints and fault injection.
"""

from __future__ import annotations

from .app import NanoGPTSimulator

__all__ = ["NanoGPTSimulator"]
