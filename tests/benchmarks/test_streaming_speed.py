"""The trained-model benchmark runs end to end and writes its JSON (no timing assertions)."""

import argparse
import json

import numpy as np
import pytest
import torch
import yaml

from espnet_amortized.benchmarks import streaming_speed


def _dense_copy(saved_model, out):
    """The saved model's shape with gate_unit none: the baseline the benchmark compares against."""
    from espnet2.tasks.asr import ASRTask

    config = yaml.safe_load(saved_model[0].read_text())
    config["encoder_conf"] = dict(config["encoder_conf"], gate_unit="none")
    out.mkdir()
    torch.manual_seed(0)
    model = ASRTask.build_model(argparse.Namespace(**config))
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(model.state_dict(), out / "model.pth")
    return out


def _features(tmp_path):
    import kaldiio

    data = tmp_path / "data"
    data.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{data / 'feats.ark'},{data / 'feats.scp'}") as writer:
        for index, frames in enumerate((130, 75, 210)):
            writer(f"utt{index}", np.random.default_rng(index).standard_normal((frames, 80)).astype(np.float32))
    return data


def test_benchmark_compares_every_setting_with_the_baseline(saved_model, tmp_path, capsys):
    dense = _dense_copy(saved_model, tmp_path / "dense")
    output = tmp_path / "speed.json"
    streaming_speed.main(
        ["--models", f"dense={dense}", f"amortized={saved_model[0].parent}", "--model_file", "model.pth",
         "--data", str(_features(tmp_path)), "--thresholds", "0.2", "0.9", "--repeats", "1", "--batch_size", "2",
         "--output", str(output)]
    )
    result = json.loads(output.read_text())
    rows = {row["setting"]: row for row in result["rows"]}
    assert list(rows) == ["dense", "amortized", "amortized@0.2", "amortized@0.9"]
    assert rows["dense"]["streaming_compute_ratio_encoder"] == pytest.approx(1.0)
    assert rows["amortized@0.9"]["streaming_compute_ratio_encoder"] < rows["amortized@0.2"]["streaming_compute_ratio_encoder"]
    for row in rows.values():
        # Same decisions offline and streaming; streaming conv2d recomputes a few overlapping input frames.
        assert row["offline_compute_ratio_encoder"] == pytest.approx(row["streaming_compute_ratio_encoder"], rel=0.01)
        assert row["streaming_theoretical_speedup"] == pytest.approx(1.0 / row["streaming_compute_ratio_encoder"])
        assert row["streaming_seconds"] > 0 and row["offline_seconds"] > 0
    assert [r["rows"] for r in result["gemm_rows"]][-1] == 4  # the model's chunk size
    assert result["utterances"] == 3 and "speedup" in capsys.readouterr().out


def test_model_specs_must_name_a_directory():
    with pytest.raises(ValueError, match="NAME=EXP_DIR"):
        streaming_speed.parse_models(["exp/asr_dense"])
