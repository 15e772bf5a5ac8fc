"""Fixtures for the deployment checks: the end-to-end tests' server fixtures, reused as they are.

tests/e2e/conftest.py finds the binary (R2SERVE_BIN, else build/release), writes the tiny model
and starts `r2serve serve` on a free port, ready when /health answers 200.
"""
import importlib.util
from pathlib import Path

_E2E_CONFTEST = Path(__file__).resolve().parents[1] / "e2e" / "conftest.py"
_spec = importlib.util.spec_from_file_location("r2_e2e_fixtures", _E2E_CONFTEST)
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)

binary = _e2e.binary
model_dir = _e2e.model_dir
start_server = _e2e.start_server
