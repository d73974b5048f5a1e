"""The UDF handler: one function for Snowflake's batches and the emulator's rows, picklable by value."""

import subprocess
import sys
import textwrap

import cloudpickle
import pandas as pd
import pytest
from floe_trainer import udf_handler
from floe_trainer.deploy import deployment_digest, package_model


@pytest.fixture(scope="module")
def import_dir(tmp_path_factory, model_dir):
    directory = tmp_path_factory.mktemp("import")
    generation = {"maxNewTokens": 4, "batchSize": 2}
    package_model(model_dir, deployment_digest(model_dir, generation), generation, directory)
    return directory


def test_frame_series_and_single_value(import_dir, monkeypatch):
    monkeypatch.setitem(sys._xoptions, "snowflake_import_directory", str(import_dir))
    texts = ["A long article " * 20, None, "short one", "medium sized text here"]
    by_series = udf_handler.summarize(pd.Series(texts, index=[10, 11, 12, 13]))
    assert list(by_series.index) == [10, 11, 12, 13] and by_series[11] is None
    assert all(isinstance(by_series[i], str) for i in (10, 12, 13))
    by_frame = udf_handler.summarize(pd.DataFrame({0: texts}))
    assert list(by_frame) == list(by_series)  # sorted batching returns rows in their original order
    assert udf_handler.summarize("short one") == by_series[12]
    assert udf_handler.summarize._sf_vectorized_input is pd.DataFrame


def test_pickles_by_value_without_the_loaded_model(import_dir, monkeypatch):
    monkeypatch.setitem(sys._xoptions, "snowflake_import_directory", str(import_dir))
    udf_handler.summarize("load the model first")
    cloudpickle.register_pickle_by_value(udf_handler)
    try:
        payload = cloudpickle.dumps(udf_handler.summarize)
    finally:
        cloudpickle.unregister_pickle_by_value(udf_handler)
    assert len(payload) < 100_000  # the function, not the model
    script = textwrap.dedent(f"""
        import sys, pickle, pandas as pd
        sys._xoptions["snowflake_import_directory"] = {str(import_dir)!r}
        handler = pickle.loads(sys.stdin.buffer.read())
        assert "floe_trainer.udf_handler" not in sys.modules
        out = handler(pd.Series(["a first text", "a second one"]))
        print(all(isinstance(s, str) for s in out), isinstance(handler("a third"), str))
    """)
    done = subprocess.run([sys.executable, "-c", script], input=payload, capture_output=True, timeout=300)
    assert done.stdout.decode().split() == ["True", "True"], done.stderr.decode()[-2000:]


def test_onnx_backend_decodes_like_torch(tmp_path, model_dir, monkeypatch):
    """`backend: onnx` gives the same summaries as torch fp32 greedy decoding; int8 still summarizes."""
    texts = pd.Series(["A long article about the city budget " * 8, "short one", "medium sized text here"])
    summaries = {}
    for name, extra in {
        "torch": {"quantize": "none"},
        "onnx": {"quantize": "none", "backend": "onnx"},
        "onnx-int8": {"backend": "onnx"},
    }.items():
        generation = {"maxNewTokens": 12, "batchSize": 2, **extra}
        directory = tmp_path / name
        directory.mkdir()
        package_model(model_dir, deployment_digest(model_dir, generation), generation, directory)
        monkeypatch.setitem(sys._xoptions, "snowflake_import_directory", str(directory))
        summaries[name] = list(udf_handler.summarize(texts))
    assert summaries["onnx"] == summaries["torch"]
    assert isinstance(
        udf_handler.summarizer_for(str(tmp_path / "onnx-int8" / udf_handler.MODEL_ZIP)).model, udf_handler.OnnxT5
    )
    assert all(isinstance(s, str) for s in summaries["onnx-int8"])
