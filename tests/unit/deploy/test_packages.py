"""The UDF's PACKAGES against what its handler imports, and against the versions the tests run it with."""

import ast
import sys
from fnmatch import fnmatchcase
from importlib import metadata
from pathlib import Path

from floe_trainer import udf_handler
from floe_trainer.deploy import UDF_PACKAGES, pinned_packages
from floe_trainer.snowflake_session import LOCAL_DISTRIBUTIONS

# needed at run time without an import statement of the handler's own
INDIRECT = {"onnx": "torch.onnx.export writes the graphs with it", "sentencepiece": "the T5 tokenizer"}


def handler_imports() -> set[str]:
    """Top-level modules the handler imports, in functions too, the standard library left out."""
    tree = ast.parse(Path(udf_handler.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


def channel_name(module: str) -> str:
    return next((name for name, dist in LOCAL_DISTRIBUTIONS.items() if dist == module), module)


def test_every_package_the_handler_imports_is_declared_and_nothing_else():
    imported = {channel_name(module) for module in handler_imports()}
    assert imported == {"numpy", "pandas", "pytorch", "transformers", "onnxruntime"}
    assert set(UDF_PACKAGES) == imported | set(INDIRECT)


def test_the_declared_series_hold_the_versions_the_tests_run_the_handler_with():
    for name, series in UDF_PACKAGES.items():
        installed = metadata.version(LOCAL_DISTRIBUTIONS.get(name, name)).split("+")[0]
        assert fnmatchcase(installed, series), f"{name} {installed} is not in {series}"
    assert pinned_packages() == tuple(f"{name}=={series}" for name, series in sorted(UDF_PACKAGES.items()))
