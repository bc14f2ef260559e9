"""espnet_amortized.bin.asr_transducer_decode: options and latency (the tiny recipe test decodes with it)."""

import argparse
import pathlib
import types

import pytest

from espnet_amortized.bin import asr_transducer_decode as decode

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_the_recipe_decode_configs_stream_at_the_dense_models_chunk_and_left_context():
    import yaml

    dense = yaml.safe_load((REPO / "conf" / "train_dense.yaml").read_text())["encoder_conf"]
    for name in ("decode.yaml", "decode_streaming.yaml"):
        options = decode.transducer_options(REPO / "conf" / name)
        assert options["decoding_window"] == dense["chunk_size"] * 4 * 10  # 40 ms frames
        assert options["left_context"] == dense["chunk_size"] * dense["left_chunks"]


def test_unknown_asr_transducer_options_are_named(tmp_path):
    config = tmp_path / "decode.yaml"
    config.write_text("beam_size: 2\nasr_transducer:\n    decoding_window: 320\n    chunk: 4\n")
    with pytest.raises(ValueError, match=r"unknown option\(s\) chunk; known: decoding_window"):
        decode.transducer_options(config)
    assert decode.transducer_options(None) == {"beam_size": 4, "decoding_window": 640, "left_context": 32,
                                               "beam_search_config": {}}


def test_algorithmic_latency_is_the_window_plus_the_front_ends_overhang():
    args = types.SimpleNamespace(frontend_conf={"fs": 16000, "n_fft": 512, "hop_length": 160})
    assert decode.algorithmic_latency_ms(args, 640) == pytest.approx(640 + 352 / 16)
    assert decode.algorithmic_latency_ms(types.SimpleNamespace(frontend_conf={"fs": "16k"}), 320) == pytest.approx(344)


def test_streaming_flag_is_strict():
    assert decode.get_parser().parse_args(["--asr_train_config", "c", "--asr_model_file", "m", "--data", "d",
                                           "--output_dir", "o", "--streaming", "true"]).streaming is True
    with pytest.raises(argparse.ArgumentTypeError):
        decode._boolean("yes")
