"""The trainer image carries the contract, not the operator: no module of floe_trainer may import floe_operator
or kopf (the image installs neither), and neither may the contract they share."""

import ast
import subprocess
import sys
from pathlib import Path

import floe_contract
import floe_trainer

OPERATOR_PACKAGES = ("floe_operator", "kopf")


def imported_packages(package) -> dict[str, set[str]]:
    """Top-level packages each module of ``package`` imports, at any depth of its code (lazy imports too)."""
    found = {}
    for path in Path(package.__file__).parent.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
        found[path.name] = names
    return found


def test_no_trainer_or_contract_module_imports_the_operator():
    for package in (floe_trainer, floe_contract):
        modules = imported_packages(package)
        assert "config.py" in modules or package is floe_contract
        offending = {name: names & set(OPERATOR_PACKAGES) for name, names in modules.items()}
        assert not any(offending.values()), offending
    assert "floe_contract" in imported_packages(floe_trainer)["config.py"]


def test_the_trainer_config_loads_without_the_operator():
    code = (
        "import sys, floe_trainer.config; "
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {OPERATOR_PACKAGES!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr
