"""Repository tooling: generated install files (sync_manifests.py, chart.py) and the pinned command-line tools
they and the tests need (floe_tools.py, kstatus/)."""
