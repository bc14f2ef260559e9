"""gradient_norms: per-group norms that add up to the norm ESPnet's trainer clips, and clear errors."""

import json

import numpy as np
import pytest
import torch

from espnet_amortized.bin import gradient_norms


def _data(tmp_path, utterances: int = 5):
    import kaldiio

    data = tmp_path / "data"
    data.mkdir()
    texts = ["A CAT", "DOG RAN", "BIG RED HAT", "SUN", "MOON LIT"]
    with kaldiio.WriteHelper(f"ark,scp:{data / 'feats.ark'},{data / 'feats.scp'}") as writer:
        for index in range(utterances):
            frames = 60 + 25 * index
            writer(f"utt{index}", np.random.default_rng(index).standard_normal((frames, 80)).astype(np.float32))
    (data / "text").write_text("".join(f"utt{i} {texts[i % len(texts)]}\n" for i in range(utterances)))
    return data


def test_group_norms_add_up_to_the_norm_the_trainer_clips(saved_model, tmp_path, capsys):
    config, model_file = saved_model
    out = tmp_path / "norms.json"
    result = gradient_norms.main(["--exp", str(config.parent), "--model_file", model_file.name, "--data",
                                  str(_data(tmp_path)), "--batch_size", "2", "--num_batches", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["batches"] == 2 and len(result["total_norm_per_batch"]) == 2
    norms = [row["norm"] for row in result["groups"]]
    assert norms == sorted(norms, reverse=True)
    assert sum(row["share"] for row in result["groups"]) == pytest.approx(1.0)
    assert sum(n * n for n in norms) == pytest.approx(result["total_norm"] ** 2)
    groups = {row["group"] for row in result["groups"]}
    assert "encoder.arbitrator.out.weight" in groups and "joint_network.lin_out.weight" in groups
    expected_factor = min(1.0, result["grad_clip"] / result["total_norm"]) if result["grad_clip"] else 1.0
    assert result["clip_factor"] == pytest.approx(expected_factor)
    assert "share of the squared total" in capsys.readouterr().out

    # The per-batch total is the norm torch's clip_grad_norm_ (what ESPnet's trainer calls) sees.
    from espnet_amortized.checks import load_asr_model

    model, args = load_asr_model(config, model_file)
    torch.manual_seed(0)
    batch = next(iter(gradient_norms.training_batches(args, tmp_path / "data", 2, 1)))
    model.train()
    model(**batch)[0].backward()
    clipped = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=float("inf"))
    assert result["total_norm_per_batch"][0] == pytest.approx(clipped.item(), rel=1e-4)


def test_missing_text_and_existing_output_are_clear_errors(saved_model, tmp_path):
    config, model_file = saved_model
    data = _data(tmp_path)
    (data / "text").unlink()
    with pytest.raises(FileNotFoundError, match="text: missing"):
        gradient_norms.main(["--exp", str(config.parent), "--model_file", model_file.name, "--data", str(data)])
    (data / "text").write_text("utt0 A\n")
    out = tmp_path / "taken.json"
    out.write_text("{}")
    with pytest.raises(FileExistsError, match="taken.json: exists"):
        gradient_norms.main(["--exp", str(config.parent), "--model_file", model_file.name, "--data", str(data),
                             "--num_batches", "1", "--out", str(out)])
    assert out.read_text() == "{}"
