"""End-to-end tests: a real ComfyUI server (started once per session), a headless browser, the node properties."""

from tests.e2e.comfy_fixtures import demo_server  # noqa: F401  (one shared ComfyUI server with demo models)
