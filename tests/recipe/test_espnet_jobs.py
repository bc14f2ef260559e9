"""The stock-config swap: an ESPnet LibriSpeech transducer config with only the
encoder (and model) blocks replaced trains one epoch through our entry point
and decodes through our inference entry point and ESPnet's Speech2Text."""

import pathlib

import pytest
import yaml

from espnet_amortized.recipe import espnet_jobs

REPO = pathlib.Path(__file__).resolve().parents[2]
STOCK = REPO / "conf" / "tuning" / "train_stock_conformer_transducer.yaml"
SWAPPED_KEYS = {"encoder", "encoder_conf", "model", "model_conf"}
ONE_TINY_EPOCH = ["--max_epoch", "1", "--num_workers", "0", "--accum_grad", "1", "--use_tensorboard", "false"]


@pytest.fixture(scope="module")
def swapped_model(tiny_corpus, tmp_path_factory):
    stock = yaml.safe_load(STOCK.read_text())
    swapped = dict(stock)
    swapped["encoder"] = "amortized_transformer"
    swapped["encoder_conf"] = dict(output_size=64, attention_heads=4, linear_units=128, num_blocks=2, chunk_size=8)
    swapped["model"] = "amortized_espnet"
    swapped["model_conf"] = dict(stock["model_conf"], compute_weight=0.1)
    assert {key for key in swapped if swapped.get(key) != stock.get(key)} == SWAPPED_KEYS
    work = tmp_path_factory.mktemp("swap run")
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump(swapped))
    tokens = tiny_corpus / "tokens.txt"
    stats = espnet_jobs.collect_stats(config, tiny_corpus, tiny_corpus, tokens, work / "stats", extra=["--num_workers", "0"])
    exp = espnet_jobs.train(config, tiny_corpus, tiny_corpus, tokens, stats, work / "exp", extra=ONE_TINY_EPOCH)
    return exp


def test_swapped_stock_config_trains_one_epoch_and_logs_compute(swapped_model):
    log = (swapped_model / "train.log").read_text()
    assert "1epoch results" in log
    for key in ("loss_compute=", "compute_ratio=", "compute_expected="):
        assert key in log
    trained = yaml.safe_load((swapped_model / "config.yaml").read_text())
    assert trained["encoder"] == "amortized_transformer" and trained["decoder"] == "transducer"
    assert (swapped_model / "valid.loss.best.pth").is_file()


def test_decodes_through_our_entry_point(swapped_model, tiny_corpus, tmp_path):
    decode_config = tmp_path / "decode.yaml"
    decode_config.write_text("beam_size: 2\ntransducer_conf:\n    search_type: default\n    score_norm: true\n")
    hypotheses = espnet_jobs.decode(swapped_model, tiny_corpus, tmp_path / "decode", decode_config, "valid.loss.best.pth")
    keys = [line.split(maxsplit=1)[0] for line in hypotheses.read_text().splitlines()]
    expected = [line.split(maxsplit=1)[0] for line in (tiny_corpus / "text").read_text().splitlines()]
    assert keys == expected and len(keys) == 8


def test_loads_in_espnet_speech2text_after_import(swapped_model, tiny_corpus):
    import soundfile

    import espnet_amortized  # noqa: F401  (registers the encoder and model)
    from espnet2.bin.asr_inference import Speech2Text

    speech2text = Speech2Text(
        str(swapped_model / "config.yaml"), str(swapped_model / "valid.loss.best.pth"), beam_size=2
    )
    assert type(speech2text.asr_model.encoder).__name__ == "AmortizedTransformerEncoder"
    first_audio = (tiny_corpus / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)[1]
    audio, _ = soundfile.read(first_audio)
    text, tokens, token_ids, _ = speech2text(audio)[0]
    assert isinstance(text, str) and len(tokens) == len(token_ids)


def test_failed_job_names_its_log(tmp_path, tiny_corpus):
    with pytest.raises(RuntimeError, match="collect_stats.log"):
        espnet_jobs.collect_stats(tmp_path / "missing.yaml", tiny_corpus, tiny_corpus, tiny_corpus / "tokens.txt", tmp_path)


@pytest.mark.parametrize(
    "config",
    ["train_dense.yaml", "train_amortized.yaml", "tuning/train_contextual_block_transformer.yaml",
     "tuning/train_dense_librispeech.yaml", "tuning/train_amortized_librispeech.yaml"],
)
def test_recipe_configs_build_and_run_a_training_step(config):
    """Every recipe config builds through ESPnet's ASRTask and trains a step on a toy batch."""
    import torch
    from espnet2.tasks.asr import ASRTask

    from tests.conftest import TOKENS

    args = ASRTask.get_parser().parse_args(
        ["--config", str(REPO / "conf" / config), "--output_dir", "unused", "--input_size", "80"]
    )
    args.token_list = list(TOKENS)
    args.normalize = None
    model = ASRTask.build_model(args)
    speech, lengths = torch.randn(2, 300, 80), torch.tensor([300, 250])
    text, text_lengths = torch.randint(3, len(TOKENS) - 1, (2, 5)), torch.tensor([5, 4])
    loss, stats, _ = model(speech, lengths, text, text_lengths)
    loss.backward()
    assert torch.isfinite(loss).all() and "loss_transducer" in stats
