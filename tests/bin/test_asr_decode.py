import json

import numpy as np
import pytest
import soundfile

from espnet_amortized.bin import asr_decode


def _wav_dir(tmp_path, count=2):
    lines = []
    for index in range(count):
        path = tmp_path / f"utt{index}.wav"
        soundfile.write(path, np.random.default_rng(index).standard_normal(24000).astype(np.float32) * 0.1, 16000)
        lines.append(f"utt{index} {path}")
    (tmp_path / "wav.scp").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize("search,beam_size", [("greedy", 1), ("beam", 3)])
@pytest.mark.parametrize("length_bonus", [0.0, 0.5])
def test_our_searches_decode_like_the_streaming_decoder_offline(saved_model, tmp_path, length_bonus, search, beam_size):
    from espnet_amortized.streaming import Speech2TextStreaming, load_audio

    data = _wav_dir(tmp_path)
    (tmp_path / "search.yaml").write_text(
        f"search: {search}\nbeam_size: {beam_size}\nmax_symbols_per_frame: 4\nlength_bonus: {length_bonus}\n"
        "transducer_conf:\n    score_norm: true\n"
    )
    config, model = saved_model
    summary = asr_decode.main(["--asr_train_config", str(config), "--asr_model_file", str(model), "--data", str(data),
                               "--output_dir", str(tmp_path / "out"), "--config", str(tmp_path / "search.yaml")])
    hypotheses = dict(line.split(maxsplit=1) if " " in line else (line, "")
                      for line in (tmp_path / "out" / "1best_recog" / "text").read_text().splitlines())
    records = {r["key"]: r for r in map(json.loads, (tmp_path / "out" / "compute.jsonl").read_text().splitlines())}
    reference = Speech2TextStreaming(config, model, beam_size=beam_size, length_bonus=length_bonus, score_norm=True)
    for key, path in (line.split() for line in (data / "wav.scp").read_text().splitlines()):
        reference.search_macs.reset()
        assert hypotheses[key] == reference.decode_offline(load_audio(path))
        # the same search on the same frames: the same prediction and joint network work, counted the same way
        assert reference.search_macs.as_dict() == {k: records[key][k] for k in ("macs_prediction", "macs_joint")}
        assert records[key]["macs_prediction"] > 0 and records[key]["macs_joint"] > 0
    assert summary["utterances"] == 2 and 0 < summary["compute_ratio_layers"] <= 1.01
    assert summary["gflops_per_second_prediction"] > 0 and summary["gflops_per_second_joint"] > 0


def test_beam_search_writes_compute_records_and_unit_decisions(saved_model, tmp_path):
    data = _wav_dir(tmp_path, count=3)
    (tmp_path / "beam.yaml").write_text(
        "search: espnet\nbeam_size: 2\ntransducer_conf:\n    search_type: default\n    score_norm: true\n"
    )
    config, model = saved_model
    out = tmp_path / "out"
    asr_decode.main(["--asr_train_config", str(config), "--asr_model_file", str(model), "--data", str(data),
                     "--output_dir", str(out), "--config", str(tmp_path / "beam.yaml"), "--save_gates", "2"])
    records = [json.loads(line) for line in (out / "compute.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == ["utt0", "utt1", "utt2"]
    saved = sorted(p.name for p in (out / "gates").glob("*.npy"))
    assert saved == ["utt0.npy", "utt1.npy"]
    gates = np.load(out / "gates" / "utt0.npy")
    assert gates.shape[1:] == (2, 2) and set(np.unique(gates)) <= {0, 1}
    assert abs(gates.mean() - records[0]["compute_ratio_layers"]) < 0.5  # the same decisions, roughly the same share


def test_length_bonus_is_refused_for_espnets_beam_search(saved_model, tmp_path):
    (tmp_path / "beam.yaml").write_text("search: espnet\nbeam_size: 2\nlength_bonus: 0.5\n")
    config, model = saved_model
    with pytest.raises(ValueError, match="length_bonus"):
        asr_decode.main(["--asr_train_config", str(config), "--asr_model_file", str(model), "--data", str(tmp_path),
                         "--output_dir", str(tmp_path / "out"), "--config", str(tmp_path / "beam.yaml")])


def test_an_unknown_search_is_an_error_naming_the_choices(saved_model, tmp_path):
    (tmp_path / "bad.yaml").write_text("search: viterbi\n")
    config, model = saved_model
    with pytest.raises(ValueError, match="search must be one of beam, greedy, espnet"):
        asr_decode.main(["--asr_train_config", str(config), "--asr_model_file", str(model), "--data", str(tmp_path),
                         "--output_dir", str(tmp_path / "out"), "--config", str(tmp_path / "bad.yaml")])


def test_summary_times_the_encoder_only_where_every_record_does():
    from espnet_amortized.bin.asr_decode import summarize

    timed = [{"seconds": 2.0, "decode_seconds": 0.2, "encoder_seconds": 0.05, "macs_encoder": 1e9,
              "macs_dense_encoder": 1e9}] * 2
    summary = summarize(timed)
    assert summary["rtf"] == pytest.approx(0.1) and summary["encoder_rtf"] == pytest.approx(0.025)
    untimed = [{key: value for key, value in record.items() if key != "encoder_seconds"} for record in timed]
    assert summarize(untimed)["encoder_rtf"] is None and summarize(timed[:1] + untimed)["encoder_rtf"] is None


def test_frozen_units_from_a_decoding_run_each_units_majority_on_every_frame(saved_model, tmp_path):
    from espnet_amortized.bin import asr_inference_streaming

    data = _wav_dir(tmp_path, count=2)
    config, model = saved_model
    common = ["--asr_train_config", str(config), "--asr_model_file", str(model), "--data", str(data)]
    gated = asr_decode.main(common + ["--output_dir", str(tmp_path / "gated")])
    assert any(0 < rate < 1 for rate in gated["attention_rates"] + gated["ffn_rates"])  # the test needs dynamic units
    frozen = asr_decode.main(common + ["--output_dir", str(tmp_path / "frozen"),
                                      "--frozen_units_from", str(tmp_path / "gated" / "summary.json")])
    majority = {name: [int(rate >= 0.5) for rate in gated[f"{name}_rates"]] for name in ("attention", "ffn")}
    assert frozen["frozen_units"] == majority and frozen["frozen_units_from"] == str(tmp_path / "gated" / "summary.json")
    assert frozen["attention_rates"] == majority["attention"] and frozen["ffn_rates"] == majority["ffn"]
    assert gated["frozen_units"] is None
    streamed = asr_inference_streaming.main(common + ["--output_dir", str(tmp_path / "streamed"),
                                                      "--frozen_units_from", str(tmp_path / "gated" / "summary.json")])
    assert streamed["frozen_units"] == majority and streamed["attention_rates"] == majority["attention"]
