"""``python -m pipelines.api``: serve the data API (PIPELINES_API_HOST / PIPELINES_API_PORT).

Refuses to start, with the reason, when the credentials or the catalog login it needs are missing.
"""

from __future__ import annotations

import logging
import os

import uvicorn

from pipelines.api.app import create_app
from pipelines.api.auth import AuthConfigError
from pipelines.api.connection import ApiConfigError
from pipelines.platform.settings import SettingsError


def main() -> None:
    host = os.environ.get("PIPELINES_API_HOST", "").strip() or "127.0.0.1"
    port_text = os.environ.get("PIPELINES_API_PORT", "").strip() or "8080"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SystemExit(f"PIPELINES_API_PORT must be a port number, got {port_text!r}")
    try:
        app = create_app()
    except (AuthConfigError, ApiConfigError, SettingsError) as exc:
        raise SystemExit(f"pipelines.api: not starting: {exc}") from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    logging.getLogger("pipelines.api").info("API credentials: %s", app.state.key_source)
    # proxy_headers: behind an Ingress the client address comes from X-Forwarded-For
    uvicorn.run(app, host=host, port=int(port_text), log_level="info", proxy_headers=True)


if __name__ == "__main__":
    main()
