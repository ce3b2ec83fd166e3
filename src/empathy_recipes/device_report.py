"""Which device a stage's model really runs on: logged, and recorded for ``make gpu-check``.

A stage calls :func:`report_device` once its model sits where it will run. The line goes to the
``empathy_recipes.device`` logger; when ``$EMPATHY_RECIPES_DEVICE_LOG`` names a file, one JSON line
``{"stage", "device", "pid"}`` is also appended there (one ``write`` per line in append mode, so several processes,
DDP ranks or distilabel workers, can share the file). ``scripts/gpu_check.py`` reads it back with
:func:`read_device_reports`: the device a stage reports is the one it used, not the one it was asked for.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

ENV_VAR = "EMPATHY_RECIPES_DEVICE_LOG"
logger = logging.getLogger("empathy_recipes.device")


def device_kind(device: Any) -> str:
    """``cuda:0`` -> ``cuda``, ``torch.device("cpu")`` -> ``cpu``; ``meta`` and the like are kept as they are."""
    return str(device).split(":", 1)[0].strip().lower()


def report_device(stage: str, device: Any) -> None:
    """Log that ``stage`` runs on ``device`` and, with ``$EMPATHY_RECIPES_DEVICE_LOG`` set, append it there."""
    logger.info("%s runs on %s", stage, device)
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    line = json.dumps({"stage": stage, "device": str(device), "pid": os.getpid()}) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_device_reports(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The reports appended to ``path`` (none when it does not exist); unreadable lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    reports = []
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and "device" in item:
            reports.append(item)
    return reports
