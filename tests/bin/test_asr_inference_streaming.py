import json

import numpy as np
import soundfile

from espnet_amortized.bin import asr_inference_streaming


def test_decodes_a_data_dir_with_compute_and_latency(saved_model, tmp_path):
    lines = []
    for index in range(2):
        path = tmp_path / f"utt{index}.wav"
        soundfile.write(path, np.random.default_rng(index).standard_normal(24000).astype(np.float32) * 0.1, 16000)
        lines.append(f"utt{index} {path}")
    (tmp_path / "wav.scp").write_text("\n".join(lines) + "\n")
    config, model = saved_model
    summary = asr_inference_streaming.main(
        ["--asr_train_config", str(config), "--asr_model_file", str(model), "--data", str(tmp_path),
         "--output_dir", str(tmp_path / "out"), "--piece_ms", "200"]
    )
    assert [line.split()[0] for line in (tmp_path / "out" / "1best_recog" / "text").read_text().splitlines()] == ["utt0", "utt1"]
    records = [json.loads(line) for line in (tmp_path / "out" / "compute.jsonl").read_text().splitlines()]
    assert all(0 < r["compute_ratio_layers"] < 1.5 and r["piece_latency_p95_ms"] > 0 for r in records)
    assert len(records[0]["unit_rates"]["attention"]) == 2
    assert all(r["macs_prediction"] > 0 and r["macs_joint"] > 0 for r in records)
    assert summary["gflops_per_second_joint"] > 0
    assert summary["algorithmic_latency_ms"] == 4 * 4 * 10.0  # chunk 4 frames x conv2d stride 4 x 10 ms
    partials = json.loads((tmp_path / "out" / "partial.jsonl").read_text().splitlines()[0])["partials"]
    assert len(partials) == 8  # 1.5 s in 200 ms pieces


def test_beam_size_and_length_bonus_come_from_the_decode_config_unless_given(saved_model, tmp_path):
    path = tmp_path / "utt.wav"
    soundfile.write(path, np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    (tmp_path / "wav.scp").write_text(f"utt {path}\n")
    (tmp_path / "decode.yaml").write_text("beam_size: 3\nlength_bonus: 0.5\ntransducer_conf:\n    score_norm: true\n")
    config, model = saved_model
    common = ["--asr_train_config", str(config), "--asr_model_file", str(model), "--data", str(tmp_path),
              "--config", str(tmp_path / "decode.yaml")]
    summary = asr_inference_streaming.main(common + ["--output_dir", str(tmp_path / "a")])
    assert summary["beam_size"] == 3 and summary["length_bonus"] == 0.5
    summary = asr_inference_streaming.main(common + ["--output_dir", str(tmp_path / "b"), "--beam_size", "1",
                                                     "--length_bonus", "0"])
    assert summary["beam_size"] == 1 and summary["length_bonus"] == 0.0
