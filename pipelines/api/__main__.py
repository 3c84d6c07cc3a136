"""``python -m pipelines.api``: serve the data API (PIPELINES_API_HOST / PIPELINES_API_PORT)."""

from __future__ import annotations

import os

import uvicorn

from pipelines.api.app import create_app


def main() -> None:
    host = os.environ.get("PIPELINES_API_HOST", "").strip() or "127.0.0.1"
    port_text = os.environ.get("PIPELINES_API_PORT", "").strip() or "8080"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SystemExit(f"PIPELINES_API_PORT must be a port number, got {port_text!r}")
    uvicorn.run(create_app(), host=host, port=int(port_text), log_level="info")


if __name__ == "__main__":
    main()
