"""Start the Streamlit server for the UI page (``flowerclf ui``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from flowerclf.core.errors import UsageError
from flowerclf.core.package_format import load_package
from flowerclf.ui.clients import UI_ENV_API, UI_ENV_MODEL

log = logging.getLogger(__name__)


def streamlit_command(port: int, host: str = "127.0.0.1") -> list[str]:
    page = Path(__file__).with_name("app.py")
    return [
        sys.executable, "-m", "streamlit", "run", str(page),
        "--server.port", str(port), "--server.address", host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--server.maxUploadSize", "20", "--client.toolbarMode", "viewer",
    ]  # fmt: skip


def ui_environment(api: str | None, model: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (UI_ENV_API, UI_ENV_MODEL)}
    if api:
        env[UI_ENV_API] = api
    elif model is not None:
        load_package(model)  # a clear error now rather than on the page
        env[UI_ENV_MODEL] = str(Path(model).resolve())
    else:
        raise UsageError("give --api URL or --model DIR")
    return env


def run_ui(api: str | None, model: Path | None, port: int, host: str = "127.0.0.1") -> int:
    """Run Streamlit in the foreground until interrupted; returns its exit status.

    On POSIX the process *becomes* Streamlit (exec), so signals sent to ``flowerclf ui``
    (Ctrl-C, a supervisor's SIGTERM) reach the server and no orphan is left behind.
    """
    env = ui_environment(api, model)
    command = streamlit_command(port, host)
    log.info("web UI on http://%s:%d (%s)", host, port, api or model)
    if os.name == "posix":
        logging.shutdown()
        os.execve(command[0], command, env)  # does not return
    return subprocess.call(command, env=env)
