"""``hybrid-eda demo``: the whole pipeline on the embedded default data, on a laptop.

Each part of the package contributes one demonstration step (a callable ``(out_dir) -> dict``); the demo runs
them in order and writes ``summary.json`` beside their JSON and PNG outputs.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path

LOGGER = logging.getLogger(__name__)

#: (title, "module:function") of every demonstration step, in pipeline order.
DEMO_STEPS: tuple[tuple[str, str], ...] = (
    ("Lorenz-96 EDA testbed", "hybrid_eda.l96.cli:demo"),
    ("Synthetic global EDA -> anemoi-datasets stores", "hybrid_eda.synthetic.demo:demo"),
    ("Variance emulator: anemoi-training train, evaluated on held-out dates", "hybrid_eda.evaluation.demo:demo"),
    # after the variance step, in its folder (evaluation/): its checkpoint and held-out EDA feed the global run
    (
        "Variance impact: B variances inside L96 4D-Var and the global exact analysis",
        "hybrid_eda.evaluation.demo:impact_demo",
    ),
)


def run_demo(out_dir: Path) -> dict:
    """Run every demo step, writing outputs under ``out_dir``; returns the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"steps": []}
    for title, target in DEMO_STEPS:
        module, func = target.split(":")
        step_dir = out_dir / module.split(".")[1]
        step_dir.mkdir(parents=True, exist_ok=True)
        LOGGER.info("demo: %s -> %s", title, step_dir)
        start = time.perf_counter()
        result = getattr(importlib.import_module(module), func)(step_dir)
        summary["steps"].append(
            {"title": title, "out": str(step_dir), "wall_seconds": time.perf_counter() - start, "result": result}
        )
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    LOGGER.info("demo finished: %s", out_dir / "summary.json")
    return summary
