"""One load path: what is not a checkpoint is one line naming it; a bare state dict passes; an
MLflow URI is told apart from a path. (A .ckpt end to end: tests/cli/test_eval.py; an MLflow model:
tests/tracking/test_models.py; a DeepSpeed directory: tests/train/test_deepspeed.py.)"""

from __future__ import annotations

import pickle

import pytest
import torch

from phiscale.errors import PhiscaleError
from phiscale.train.load import is_mlflow_uri, load_model, read_checkpoint, state_dict


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_text("hello"), r"is not a checkpoint \(not a torch.save zip archive"),
        (lambda p: p.write_bytes(pickle.dumps({"a": 1})), r"is not a checkpoint \(not a torch.save zip archive"),
        (lambda p: (torch.save({"state_dict": {"w": torch.ones(2)}}, p), p.write_bytes(p.read_bytes()[:300])),
         "is not a checkpoint"),
        (lambda p: torch.save({"weights": [1, 2]}, p), "holds neither a Lightning checkpoint"),
    ],
    ids=["text", "pickle", "truncated", "other-dict"],
)
def test_what_is_not_a_checkpoint_is_one_line(tmp_path, write, message):
    path = tmp_path / "model.ckpt"
    write(path)
    with pytest.raises(PhiscaleError, match=message) as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_bare_state_dict_and_the_missing_and_the_wrong_directory(tmp_path):
    torch.save({"model.w": torch.ones(2)}, tmp_path / "weights.pt")
    assert list(state_dict(tmp_path / "weights.pt")) == ["model.w"]
    with pytest.raises(PhiscaleError, match="does not exist; pass a .ckpt, a DeepSpeed checkpoint directory, runs:/"):
        load_model(tmp_path / "gone.ckpt")
    with pytest.raises(PhiscaleError, match="is a directory but not a DeepSpeed checkpoint"):
        state_dict(tmp_path)
    assert is_mlflow_uri("models:/digits@best") and is_mlflow_uri("runs:/abc/model")
    assert not is_mlflow_uri(str(tmp_path / "models:" / "x"))
