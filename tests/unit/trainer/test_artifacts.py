import os
import stat

from floe_trainer.artifacts import content_digest, make_readable


def test_digest_covers_model_files_not_the_card(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "tokenizer.json").write_text("{}")
    first = content_digest(tmp_path)
    (tmp_path / "README.md").write_text("card")
    (tmp_path / "metrics.json").write_text("{}")
    assert content_digest(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    assert content_digest(tmp_path) != first and first.startswith("sha256:")


def test_make_readable_opens_0600_files_to_group_and_other(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"w")
    os.chmod(f, 0o600)
    make_readable(tmp_path)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
