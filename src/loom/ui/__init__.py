"""The web UI's static files (``static/``), served by ``loom server`` at ``/ui/``.

Plain HTML, CSS and JavaScript modules, no build step and no vendored bundle (docs/ui.md says
why): the browser loads them as shipped in the package, and they talk to the server only over
its public HTTP API (plus ``/v1/loom/intentions/explain``). This package holds no Python code
beyond ``STATIC``, the directory the server serves.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
"""Where the files are (inside the installed package; package-data ships them)."""
