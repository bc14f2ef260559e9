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
     "tuning/train_dense_librispeech.yaml", "tuning/train_amortized_librispeech.yaml",
     "tuning/train_amortized_budget.yaml"],
)
def test_recipe_configs_build_and_run_a_training_step(config):
    """Every recipe config (the LibriSpeech-scale ones included) builds through our task as the recipe trains
    it, and takes one optimizer update on a toy batch with its own optimizer and scheduler: the weights move,
    and the update counters count it."""
    import torch
    from espnet2.tasks.abs_task import scheduler_classes

    from espnet_amortized.task import AmortizedASRTask
    from espnet_amortized.updates import update_counters
    from tests.conftest import TOKENS

    torch.manual_seed(0)
    args = AmortizedASRTask.get_parser().parse_args(
        ["--config", str(REPO / "conf" / config), "--output_dir", "unused", "--input_size", "80"]
    )
    args.token_list = list(TOKENS)
    args.normalize = None
    model = AmortizedASRTask.build_model(args)
    optimizer = AmortizedASRTask.build_optimizers(args, model)[0]
    scheduler = scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    speech, lengths = torch.randn(2, 300, 80), torch.tensor([300, 250])
    text, text_lengths = torch.randint(3, len(TOKENS) - 1, (2, 5)), torch.tensor([5, 4])
    model.train()
    loss, stats, _ = model(speech, lengths, text, text_lengths)
    loss.backward()
    optimizer.step()
    scheduler.step()
    assert torch.isfinite(loss).all() and "loss_transducer" in stats
    moved = [name for name, value in model.named_parameters() if not torch.equal(value, before[name])]
    assert "decoder.embed.weight" in moved and any(name.startswith("encoder.") for name in moved)
    assert all(int(module.num_updates) == 1 for module in update_counters(model))


# -- interruptions and bad batches: a small amortized model on fbank features --------------------
ROBUST_TRAINING = ["--max_epoch", "3", "--num_workers", "0", "--use_tensorboard", "false", "--batch_type", "unsorted",
                   "--batch_size", "4", "--seed", "3"]


def _train_command(fbank_data, exp):
    import sys

    work, train, valid, tokens, stats = fbank_data
    return [sys.executable, "-m", "espnet_amortized.recipe.espnet_jobs", "train", "--config", str(work / "train.yaml"),
            "--train_dir", str(train), "--valid_dir", str(valid), "--token_list", str(tokens), "--token_type", "char",
            "--stats_dir", str(stats), "--exp_dir", str(exp), "--threads", "1", "--", "--input_size", "80",
            *ROBUST_TRAINING]


def _epoch_results(log: str) -> dict:
    import re

    results = {}
    for match in re.finditer(r"(\d+)epoch results: \[train\] (.*?)\[valid\] (.*?), time=", log):
        train = dict(re.findall(r"(\w+)=([-\d.e+nai]+)", match.group(2)))
        valid = dict(re.findall(r"(\w+)=([-\d.e+nai]+)", match.group(3)))
        results[int(match.group(1))] = {"train": train, "valid": valid}
    return results


@pytest.fixture(scope="module")
def uninterrupted(fbank_data):
    import subprocess

    exp = fbank_data[0] / "exp_uninterrupted"
    subprocess.run(_train_command(fbank_data, exp), check=True, capture_output=True)
    return exp


def test_a_nan_batch_is_skipped_and_counted_not_propagated(uninterrupted):
    import math

    import torch

    log = (uninterrupted / "train.log").read_text()
    assert "Skipping updating the model" in log and "loss is nan for a batch" in log
    results = _epoch_results(log)
    assert sorted(results) == [1, 2, 3]
    for epoch in results.values():
        assert float(epoch["train"]["nonfinite_loss"]) > 0  # one batch in every epoch holds the NaN utterance
        assert math.isfinite(float(epoch["train"]["loss"])) and math.isfinite(float(epoch["valid"]["loss"]))
    state = torch.load(uninterrupted / "3epoch.pth", map_location="cpu")
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())
    # 3 epochs of 225 batches (num_iters_per_epoch), those holding the NaN utterance skipped: the counters count
    # the optimizer updates made, and the multiplier stayed finite (a skipped batch does not move it)
    skipped = log.count("Skipping updating the model")
    assert 0 < skipped < 3 * 225 / 4
    assert float(state["num_updates"]) == float(state["encoder.num_updates"]) == 3 * 225 - skipped


def _counters(exp):
    import torch

    state = torch.load(exp / "3epoch.pth", map_location="cpu")
    return [float(state[key]) for key in ("num_updates", "encoder.num_updates", "compute_multiplier")]


def test_kill_during_training_then_rerun_resumes_to_the_same_model(fbank_data, uninterrupted):
    import os
    import signal
    import subprocess
    import time

    exp = fbank_data[0] / "exp_killed"
    process = subprocess.Popen(_train_command(fbank_data, exp), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (exp / "1epoch.pth").exists():  # saved after checkpoint.pth: epoch 1 is complete
        assert process.poll() is None and time.time() < deadline, "training ended before its first epoch was saved"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert "3epoch results" not in (exp / "train.log").read_text(), "killed too late to test resumption"
    subprocess.run(_train_command(fbank_data, exp), check=True, capture_output=True)
    log = (exp / "train.log").read_text()
    assert log.count("# ") >= 2  # both runs' command lines: the interrupted run's log is kept
    resumed, reference = _epoch_results(log), _epoch_results((uninterrupted / "train.log").read_text())
    assert float(resumed[3]["valid"]["loss"]) == pytest.approx(float(reference[3]["valid"]["loss"]), rel=1e-4)
    assert float(resumed[3]["train"]["loss"]) == pytest.approx(float(reference[3]["train"]["loss"]), rel=1e-4)
    # the update counters and the budget controller's multiplier continue where they were
    assert _counters(exp) == pytest.approx(_counters(uninterrupted), rel=1e-6)
    assert _counters(exp)[2] != 0.0


def test_a_checkpoint_cut_short_is_set_aside(tmp_path):
    (tmp_path / "checkpoint.pth").write_bytes(b"PK\x03\x04 truncated")
    espnet_jobs._check_checkpoint(tmp_path)
    assert not (tmp_path / "checkpoint.pth").exists()
    assert len(list(tmp_path.glob("checkpoint.pth.unreadable-*"))) == 1


def test_a_schedule_that_does_not_end_with_training_is_refused(tmp_path):
    from espnet_amortized.recipe.espnet_jobs import check_config

    config = tmp_path / "schedule.yaml"
    config.write_text((REPO / "conf" / "train_dense.yaml").read_text())
    check_config(config)  # the recipe's own config ends its schedule on its last update
    with pytest.raises(ValueError, match=r"warmup_steps_list ends at update \d+, but max_epoch 3 x"):
        check_config(config, ["--max_epoch", "3"])


# -- ESPnet's asr_transducer task: the toolkit's own streaming transducer ------------------------
TRANSDUCER = REPO / "conf" / "tuning" / "train_espnet_transducer_conformer.yaml"


def test_the_asr_transducer_config_builds_with_its_own_front_end():
    from espnet_amortized.recipe.espnet_jobs import check_config

    check_config(TRANSDUCER)


def test_recipe_inputs_give_the_asr_task_the_fbank_dump_and_the_transducer_task_the_audio(tmp_path):
    from espnet_amortized.recipe.espnet_jobs import recipe_inputs

    fbank, audio = (tmp_path / "dump" / "train", tmp_path / "dump" / "valid"), (tmp_path / "train", tmp_path / "valid")
    for directory in audio:
        directory.mkdir()
        (directory / "wav.scp").write_text("a /x.flac\n")
    cmvn, stats = tmp_path / "cmvn.npz", tmp_path / "stats"
    dirs, options = recipe_inputs("asr", fbank, audio, cmvn, stats, collect=True)
    assert dirs == list(fbank) and options == ["--input_size", 80, "--normalize", "global_mvn", "--normalize_conf",
                                               f"stats_file={cmvn}"]
    dirs, options = recipe_inputs("asr_transducer", fbank, audio, cmvn, stats, collect=True)
    assert dirs == list(audio) and options == []  # the pass that computes its statistics
    dirs, options = recipe_inputs("asr_transducer", fbank, audio, cmvn, stats, collect=False)
    assert options[-1] == f"stats_file={stats / 'train' / 'feats_stats.npz'}"
    with pytest.raises(ValueError, match="trains on audio: give --train_audio_dir"):
        recipe_inputs("asr_transducer", fbank, (None, None), cmvn, stats, collect=False)
    (audio[1] / "wav.scp").unlink()
    with pytest.raises(ValueError, match=r"valid: no wav.scp \(asr_transducer trains on audio\)"):
        recipe_inputs("asr_transducer", fbank, audio, cmvn, stats, collect=False)


def test_configs_train_through_their_task_entry_module(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(espnet_jobs, "run_logged", lambda module, args, log, threads=None: calls.append(module))
    (tmp_path / "wav.scp").write_text("a /x.flac\n")
    for config in (REPO / "conf" / "train_dense.yaml", TRANSDUCER):
        espnet_jobs.train(config, tmp_path, tmp_path, tmp_path / "tokens.txt", tmp_path, tmp_path / "exp")
    assert calls == ["espnet_amortized.bin.asr_train", "espnet_amortized.bin.asr_transducer_train"]


def test_two_processes_train_the_same_model_as_one_with_the_same_global_batches(data_parallel_runs):
    import re

    import torch

    log = (data_parallel_runs[2] / "train.log").read_text()
    assert "torch.distributed.run" in log and "--dist_backend gloo" in log
    assert re.search(r"^\[\S+:0/2\] .*1epoch results", log, re.M), log[-3000:]  # ESPnet's rank/world-size prefix
    one, two = (torch.load(run / "1epoch.pth", map_location="cpu") for run in (data_parallel_runs[1], data_parallel_runs[2]))
    assert one.keys() == two.keys()
    # the buffers: the update counters count the 6 global updates, the multiplier took the same steps
    for name in ("num_updates", "encoder.num_updates"):
        assert float(one[name]) == float(two[name]) == 6
    assert float(two["compute_multiplier"].abs().sum()) > 0
    torch.testing.assert_close(two["compute_multiplier"], one["compute_multiplier"], rtol=1e-4, atol=1e-7)
    # The weights, up to float summation order: Adam turns a gradient that is 0 in one run and ~1e-9 in the other
    # into a step of up to the learning rate (5e-3), so single elements may differ by ~1e-4, the whole by far less.
    weights = [name for name in one if one[name].is_floating_point() and "num_updates" not in name]
    for name in weights:
        torch.testing.assert_close(two[name], one[name], rtol=1e-3, atol=3e-4, msg=lambda m: f"{name}: {m}")
    difference = sum(float((two[name] - one[name]).double().norm() ** 2) for name in weights) ** 0.5
    assert difference < 1e-4 * sum(float(one[name].double().norm() ** 2) for name in weights) ** 0.5


def test_data_parallel_processes_need_the_cpu_and_at_least_one(tmp_path):
    for procs, ngpu, message in ((0, 0, "num_procs must be >= 1"), (2, 1, "--ngpu 1 alone")):
        with pytest.raises(ValueError, match=message):
            espnet_jobs.train(tmp_path / "c.yaml", tmp_path, tmp_path, tmp_path / "t.txt", tmp_path, tmp_path / "exp",
                              ngpu=ngpu, num_procs=procs)
