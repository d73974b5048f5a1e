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
    """`backend: onnx` gives the same summaries as torch fp32 greedy decoding; int8 still summarizes; beam
    search runs on torch."""
    texts = pd.Series(["A long article about the city budget " * 8, "short one", "medium sized text here"])
    summaries = {}
    for name, extra in {
        "torch": {"backend": "torch", "quantize": "none"},
        "onnx": {"backend": "onnx", "quantize": "none"},
        "onnx-int8": {"backend": "onnx", "quantize": "dynamic-int8"},
        "beam2": {"numBeams": 2},  # the default backend is onnx, whose decoding is greedy
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
    beams = udf_handler.summarizer_for(str(tmp_path / "beam2" / udf_handler.MODEL_ZIP)).model
    assert not isinstance(beams, udf_handler.OnnxT5) and all(isinstance(s, str) for s in summaries["beam2"])


def test_onnx_rows_that_end_early_leave_the_batch_with_torchs_outputs(tmp_path, model_dir):
    """Greedy decoding on onnxruntime equals torch's `generate` row by row when rows end at different steps
    (the end-of-sequence token is set to one the model emits in some rows, at different positions)."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = T5ForConditionalGeneration.from_pretrained(model_dir).eval()
    texts = [f"Article {i}: " + "the council met again about the budget and the buses " * (i + 1) for i in range(8)]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    settings = dict(max_new_tokens=16, repetition_penalty=2.5, num_beams=1, do_sample=False)
    with torch.inference_mode():
        free = model.generate(**batch, **settings, eos_token_id=None)[:, 1:]
    # the token that ends the most rows, but not all, at the most distinct steps
    candidates = {int(t) for t in free.flatten()}

    def spread(token):
        firsts = {int((row == token).nonzero()[0]) for row in free if (row == token).any()}
        ending = sum((row == token).any() for row in free)
        return (ending < len(texts)) * (len(firsts), int(ending))

    eos = max(candidates, key=spread)
    assert spread(eos)[0] >= 3, free  # rows end at three or more different steps
    model.config.eos_token_id = model.generation_config.eos_token_id = eos
    with torch.inference_mode():
        expected = model.generate(**batch, **settings)
    onnx = udf_handler.OnnxT5(*udf_handler.export_onnx(model, tmp_path), model.config)
    got = onnx.generate(batch["input_ids"], batch["attention_mask"], 16, 2.5)
    assert got.tolist() == expected.tolist()


def test_the_registered_batch_size_is_read_from_the_imports(tmp_path, monkeypatch):
    """Snowflake reads `_sf_max_batch_size` when it imports the handler: the deployer's choice, staged among
    the imports, or the handler's batch size when there is none."""
    monkeypatch.setitem(sys._xoptions, "snowflake_import_directory", str(tmp_path))
    assert udf_handler._registered_max_batch_size() == udf_handler.DEFAULT_SETTINGS["batchSize"]
    (tmp_path / udf_handler.BATCH_FILE).write_text('{"maxBatchSize": 7}')
    assert udf_handler._registered_max_batch_size() == 7
