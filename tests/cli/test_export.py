"""phiscale-export passes a normal checkpoint's weights through as fp32 and explains bad inputs."""

from __future__ import annotations

import pytest
import torch

from phiscale.cli.export import main


def lightning_ckpt(path):
    state = {
        "model.conv.weight": torch.randn(4, 3, 3, 3, dtype=torch.bfloat16),
        "model.bn.num_batches_tracked": torch.tensor(7),
    }
    torch.save({"state_dict": state, "epoch": 3, "global_step": 120, "hyper_parameters": {"lr": 0.1}}, path)
    return state


def test_lightning_ckpt_state_dict_passes_through_as_fp32(tmp_path, capsys):
    state = lightning_ckpt(tmp_path / "last.ckpt")
    main([str(tmp_path / "last.ckpt"), str(tmp_path / "out" / "model.pt")])
    out = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert set(out) == set(state)
    assert out["model.conv.weight"].dtype == torch.float32
    assert torch.equal(out["model.conv.weight"], state["model.conv.weight"].float())
    assert out["model.bn.num_batches_tracked"].dtype == torch.int64  # integer buffers keep their type
    assert "wrote 2 tensors" in capsys.readouterr().out


def test_strip_prefix_gives_the_bare_network_keys(tmp_path):
    lightning_ckpt(tmp_path / "last.ckpt")
    main([str(tmp_path / "last.ckpt"), str(tmp_path / "m.pt"), "--strip-prefix", "model."])
    assert set(torch.load(tmp_path / "m.pt", weights_only=True)) == {"conv.weight", "bn.num_batches_tracked"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.ckpt", "does not exist"),
        (lambda p: p, "is a directory but not a DeepSpeed checkpoint"),
        (
            lambda p: (torch.save({"epoch": 1}, p / "x.ckpt"), p / "x.ckpt")[1],
            "neither a Lightning checkpoint",
        ),
    ],
    ids=["missing", "plain-dir", "no-state-dict"],
)
def test_bad_checkpoints_fail_in_one_line(tmp_path, capsys, make, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(make(tmp_path)), str(tmp_path / "out.pt")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err


def test_a_tag_without_latest_is_named_with_what_it_lacks(tmp_path, capsys):
    (tmp_path / "global_step5").mkdir()
    (tmp_path / "global_step5" / "mp_rank_00_model_states.pt").write_bytes(b"")
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "out.pt")])
    err = capsys.readouterr().err
    assert "it has no `latest` file" in err and "tag 'global_step5' lacks a whole mp_rank_00_model_states.pt" in err
    assert err.count("\n") == 1, err
