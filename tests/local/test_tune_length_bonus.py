import json

import numpy as np
import pytest
import soundfile

from tune_length_bonus import tune


def _data(tmp_path):
    tmp_path.mkdir(parents=True)
    lines, texts = [], []
    for index in range(2):
        path = tmp_path / f"utt{index}.wav"
        soundfile.write(path, np.random.default_rng(index).standard_normal(16000).astype(np.float32) * 0.1, 16000)
        lines.append(f"utt{index} {path}")
        texts.append(f"utt{index} A B")
    (tmp_path / "wav.scp").write_text("\n".join(lines) + "\n")
    (tmp_path / "text").write_text("\n".join(texts) + "\n")
    return tmp_path


def test_every_bonus_is_decoded_scored_and_the_best_chosen(saved_model, tmp_path):
    config, model = saved_model
    data = _data(tmp_path / "data")
    decode = tmp_path / "decode.yaml"
    decode.write_text("search: beam\nbeam_size: 2\nlength_bonus: 0.0\n")
    document = tune(config.parent, data, decode, [0.0, 3.0], tmp_path / "out", model_file=model.name)
    assert [r["length_bonus"] for r in document["results"]] == [0.0, 3.0]
    best = min(document["results"], key=lambda r: (r["wer"], r["length_bonus"]))
    assert document["best_length_bonus"] == best["length_bonus"]
    assert json.loads((tmp_path / "out" / "tuning.json").read_text()) == document
    for bonus in ("0", "3"):
        assert f"length_bonus: {bonus}.0" in (tmp_path / "out" / f"bonus{bonus}" / "decode.yaml").read_text()
        assert (tmp_path / "out" / f"bonus{bonus}" / "score_wer" / "result.txt").is_file()
    # A larger bonus never emits fewer labels on these utterances.
    words = [sum(len(line.split()) - 1 for line in (tmp_path / "out" / f"bonus{b}" / "1best_recog" / "text").read_text().splitlines())
             for b in ("0", "3")]
    assert words[1] >= words[0]


def test_espnets_search_cannot_be_tuned(saved_model, tmp_path):
    config, model = saved_model
    decode = tmp_path / "decode.yaml"
    decode.write_text("search: espnet\nbeam_size: 2\n")
    with pytest.raises(ValueError, match="search: espnet has no length bonus"):
        tune(config.parent, tmp_path, decode, [0.0], tmp_path / "out", model_file=model.name)
