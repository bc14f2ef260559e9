"""The whole recipe, end to end, on the tiny synthetic corpus (one short epoch per model)."""

import json
import os
import pathlib
import subprocess

import pytest

from make_synthetic_librispeech import CORPUS_VERSION

REPO = pathlib.Path(__file__).resolve().parents[1]
from tests.conftest import run_tiny_recipe as _run  # noqa: E402  (the recipe fixture is in conftest)


def test_all_stages_produce_their_outputs(recipe):
    work, log = recipe
    for stage in range(7):
        assert f"stage {stage}" in log
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "rejected.txt"):
        assert (work / "data" / "test_other" / name).is_file()
    # Speed perturbation (default 0.9 1.0 1.1): stages 2-4 train on train_clean_100_sp.
    sp = work / "data" / "train_clean_100_sp"
    train = (work / "data" / "train_clean_100" / "wav.scp").read_text().count("\n")
    assert (sp / "wav.scp").read_text().count("\n") == 3 * train and (sp / ".done").is_file()
    assert f"sp0.9 {train} written, 0 already present" in log and (sp / "perturb.txt").read_text().startswith("factor\t")
    assert (work / "dump" / "fbank" / "train_clean_100_sp" / "cmvn.npz").is_file()
    assert (work / "dump" / "fbank" / "train_clean_100_sp" / "feats_shape").read_text().count("\n") == 3 * train
    assert not (work / "dump" / "fbank" / "train_clean_100").exists()
    assert (work / "exp" / "asr_stats_bpe48_sp" / ".done").is_file()
    tokens = (work / "data" / "token_list" / "bpe48" / "tokens.txt").read_text().splitlines()
    assert tokens[0] == "<blank>" and tokens[-1] == "<sos/eos>"
    for model in ("dense", "amortized"):
        for test_set in ("test_clean", "test_other"):
            decode = work / "exp" / f"asr_{model}" / f"decode_{test_set}"
            assert "Sum/Avg" in (decode / "score_wer" / "result.txt").read_text()
            assert (decode / "compute.jsonl").read_text().count("\n") == 8
    results = (work / "exp" / "RESULTS.md").read_text()
    # one summary row per model, then one row per test set
    assert results.count("| asr_dense |") == 3 and results.count("| asr_amortized |") == 3
    assert "| asr_amortized | gated | conf/train_amortized.yaml |" in results and "CPU, 1 thread |" in results
    assert "run.sh" in (work / "exp" / "run.sh.cmd").read_text()


def test_rerun_of_a_finished_stage_does_no_work(recipe):
    work, _ = recipe
    scp = work / "dump" / "fbank" / "test_clean" / "feats.scp"
    before = scp.stat().st_mtime_ns
    log = _run(work, "--stage", "2", "--stop_stage", "2")
    assert "fbank" not in log and scp.stat().st_mtime_ns == before


def test_deleted_dump_is_regenerated(recipe):
    import shutil

    work, _ = recipe
    shutil.rmtree(work / "dump" / "fbank" / "dev_clean")
    log = _run(work, "--stage", "2", "--stop_stage", "2")
    assert "stage 2: fbank dev_clean" in log and (work / "dump" / "fbank" / "dev_clean" / "feats.scp").is_file()


@pytest.mark.parametrize("factors", ["0.9 0", "0.9 -1.1", "fast"])
def test_bad_speed_perturb_factors_fail_before_any_work(tmp_path, factors):
    result = subprocess.run(["bash", str(REPO / "run.sh"), "--synthetic_size", "tiny", "--speed_perturb_factors", factors],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "--factors: speed factor" in result.stderr
    assert not (tmp_path / "downloads").exists() and not (tmp_path / "data").exists()


def test_help_lists_the_speed_perturb_factors():
    result = subprocess.run(["bash", str(REPO / "run.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--speed_perturb_factors 0.9 1.0 1.1" in result.stdout


def test_a_missing_plot_also_summary_fails_before_any_work(tmp_path):
    result = subprocess.run(["bash", str(REPO / "run.sh"), "--synthetic_size", "tiny", "--plot_also", "nowhere.json:toolkit"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "--plot_also: nowhere.json is neither a file here nor in" in result.stderr
    assert not (tmp_path / "downloads").exists()


def test_unknown_option_is_rejected(tmp_path):
    result = subprocess.run(["bash", str(REPO / "run.sh"), "--no_such_option", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "unknown option --no_such_option" in result.stderr


@pytest.mark.parametrize("corpus,train_set", [("librispeech_100", "train_clean_100"), ("librispeech", "train_960")])
def test_egs_entry_points_select_the_corpus(corpus, train_set):
    result = subprocess.run(["bash", str(REPO / "egs" / corpus / "run.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    options = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.startswith("  --") and len(line.split(None, 1)) == 2)
    assert options["--corpus"].strip() == "librispeech" and options["--train_set"].strip() == train_set


# The RNN-T loss's joint tensor, (utterances, encoder frames, tokens + 1, vocabulary) floats, for a batch of the
# longest training utterances (numel batching sorts by length). ESPnet's numel sampler counts each utterance's
# speech (frames x 80 fbank bins) and text (tokens x vocabulary: text_shape is "L,V") against batch_bins. 40 ms
# encoder frames; ASSUMED token rates (BPE pieces per second of LibriSpeech speech: ~2.7 words/s at ~1.3
# pieces/word for 5,000 pieces, ~1.9 for 500); the longest train-clean-100 utterance is ~24.5 s.
LONGEST_SECONDS = 24.5
TOKENS_PER_SECOND = {500: 5.1, 5000: 3.5}


def joint_bytes(batch_bins: int, nbpe: int, joint_space_size: int) -> float:
    """float32 bytes of the joint network's output, its gradient and its hidden layer (before and after tanh)."""
    assert nbpe in TOKENS_PER_SECOND, f"no token rate assumed for {nbpe} pieces: add one to TOKENS_PER_SECOND"
    tokens = TOKENS_PER_SECOND[nbpe] * LONGEST_SECONDS
    utterances = batch_bins / (100 * LONGEST_SECONDS * 80 + tokens * nbpe)
    lattice = utterances * (25 * LONGEST_SECONDS) * (tokens + 1)
    return 4 * lattice * (2 * nbpe + 2 * joint_space_size)


@pytest.mark.parametrize("corpus", ["librispeech_100", "librispeech"])
def test_librispeech_entry_points_keep_the_transducer_joint_tensor_to_half_an_80gb_gpu(corpus):
    """With --ngpu 1 the whole batch is on one GPU: its joint tensor takes ~31 GB at 500 pieces, ~58 GB at 5,000
    (which leaves an 80 GB GPU ~20 GB for the 12-layer encoder's activations, and does not fit a 40 or 48 GB one)."""
    import re

    import yaml

    nbpe = int(re.search(r"--nbpe (\d+)", (REPO / "egs" / corpus / "run.sh").read_text()).group(1))
    for name in ("train_dense_librispeech.yaml", "train_amortized_librispeech.yaml"):
        config = yaml.safe_load((REPO / "conf" / "tuning" / name).read_text())
        assert joint_bytes(config["batch_bins"], nbpe, config["joint_net_conf"]["joint_space_size"]) < 40e9


def test_decoding_at_a_list_of_gate_thresholds(recipe):
    work, _ = recipe
    log = _run(work, "--stage", "5", "--stop_stage", "6", "--test_sets", "test_clean", "--gate_thresholds", "0.2 0.8",
               "--plot_also", "egs/sweep/results/summary_toolkit_u2250.json")  # found in the repository
    assert "compute knob: th0.8" in log
    assert (work / "exp" / "plots" / "pareto_test_clean.png").stat().st_size > 10_000
    summaries = {}
    for threshold in ("0.2", "0.8"):
        summary = work / "exp" / "asr_amortized" / f"decode_test_clean_th{threshold}" / "summary.json"
        summaries[threshold] = __import__("json").loads(summary.read_text())
    assert summaries["0.2"]["gate_threshold"] == 0.2
    assert summaries["0.2"]["compute_ratio_layers"] >= summaries["0.8"]["compute_ratio_layers"]
    results = (work / "exp" / "RESULTS.md").read_text()
    assert "| asr_amortized |" in results and "| 0.8 |" in results


def test_a_budget_conditioned_model_decodes_at_its_budgets_and_frozen_to_its_majorities(recipe):
    """Issue 13's static control: each unit frozen to its majority decision on the validation set at a budget."""
    work, _ = recipe
    # With the recipe's two models (trained and decoded already), so that stage 6's RESULTS.md still lists them.
    config = ("--test_sets", "test_clean",
              "--train_config", "conf/train_dense.yaml conf/train_amortized.yaml conf/tuning/train_amortized_budget.yaml")
    log = _run(work, "--stage", "4", "--stop_stage", "5", *config, "--compute_budgets", "0.5 1.0")
    assert "compute knob: b0.5" in log and "compute knob: f" not in log
    log = _run(work, "--stage", "5", "--stop_stage", "6", *config, "--frozen_budgets", "0.5")  # its own knob
    assert "compute knob: f0.5" in log and "compute knob: b" not in log and "compute knob: default" not in log
    exp = work / "exp" / "asr_amortized_budget"
    rates = json.loads((exp / "decode_dev_clean_b0.5" / "summary.json").read_text())  # held-out data, not test_clean
    frozen = json.loads((exp / "decode_test_clean_frozen0.5" / "summary.json").read_text())
    majority = {name: [int(rate >= 0.5) for rate in rates[f"{name}_rates"]] for name in ("attention", "ffn", "conv")}
    assert frozen["frozen_units"] == majority and frozen["compute_budget"] == 0.5
    assert {name: frozen[f"{name}_rates"] for name in majority} == majority  # every frame runs the frozen units
    models = {m["name"]: m for m in json.loads((work / "exp" / "summary.json").read_text())["models"]}
    assert sorted(models) == ["asr_amortized", "asr_amortized_budget", "asr_dense"]
    model = models["asr_amortized_budget"]
    assert model["role"] == "budget" and sorted(model["budgets"]) == ["0.5", "1"] and sorted(model["frozen"]) == ["0.5"]
    assert model["frozen"]["0.5"]["vs_dynamic"]["test_clean"]["low"] <= model["frozen"]["0.5"]["vs_dynamic"]["test_clean"]["high"]
    assert "| decode_test_clean_frozen0.5 |" in (work / "exp" / "RESULTS.md").read_text()


def test_streaming_decoding_stage_uses_the_streaming_decode_config(recipe):
    import json

    work, _ = recipe
    _run(work, "--stage", "5", "--stop_stage", "6", "--decode_mode", "streaming", "--test_sets", "test_clean")
    for model in ("dense", "amortized"):
        decode = work / "exp" / f"asr_{model}" / "decode_streaming_test_clean"
        summary = json.loads((decode / "summary.json").read_text())
        assert summary["beam_size"] == 1 and summary["utterances"] == 8  # conf/decode_streaming.yaml: greedy
        assert "Sum/Avg" in (decode / "score_wer" / "result.txt").read_text()
        assert (decode / "partial.jsonl").read_text().count("\n") == 8
    streaming = (work / "exp" / "RESULTS_streaming.md").read_text()
    assert "| asr_amortized |" in streaming and "piece latency" in streaming
    assert "| asr_dense |" in (work / "exp" / "RESULTS.md").read_text()  # the offline table is still there


def test_raising_the_threshold_of_the_trained_model_lowers_its_compute(recipe, monkeypatch):
    """Per unit and frame, a higher threshold only ever switches units off; compute falls strictly."""
    import kaldiio
    import torch

    from espnet_amortized._espnet import asr_task_class
    from espnet_amortized.compute import count_macs

    work, _ = recipe
    monkeypatch.chdir(work)
    exp = work / "exp" / "asr_amortized"
    model, _ = asr_task_class().build_model_from_file(exp / "config.yaml", exp / "valid.loss.ave.pth", "cpu")
    model.eval()
    features = [torch.from_numpy(m.copy()) for _, m in kaldiio.load_scp_sequential(str(work / "dump" / "fbank" / "test_clean" / "feats.scp"))]
    lengths = torch.tensor([f.size(0) for f in features])
    batch = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)

    def decide(threshold):
        model.encoder.gate_threshold = threshold
        with torch.no_grad():
            _, _, info = model.encoder(*model.normalize(batch, lengths))
        ratio = count_macs(model.encoder, info.gates, info.valid, info.allowed, info.input_lengths.tolist()).layer_ratio
        return info, ratio

    info, _ = decide(0.5)
    probs = info.probs[info.valid].flatten()
    assert probs.std() > 0, "the trained arbitrator gives every unit the same probability"
    # Thresholds inside the model's own range of probabilities, plus both ends.
    thresholds = [0.0] + torch.quantile(probs, torch.tensor([0.2, 0.5, 0.8])).tolist() + [1.0]
    results = [decide(t) for t in thresholds]
    ratios = [ratio for _, ratio in results]
    assert all(high < low for low, high in zip(ratios, ratios[1:])), (thresholds, ratios)
    for (low, _), (high, _) in zip(results, results[1:]):
        assert torch.all(high.gates <= low.gates)
    assert results[0][0].gates[info.valid].min() == 1 and results[-1][0].gates.max() == 0


def test_the_budget_knob_of_the_trained_model_lands_and_is_monotone(recipe, monkeypatch):
    """--compute_budget on the recipe's trained gated model: the whole-encoder compute follows each budget within
    0.03 above the always-run floor, only the floor below it, and rises with the budget."""
    import kaldiio
    import torch

    from espnet_amortized.checks import load_asr_model, set_compute_knobs
    from espnet_amortized.compute import count_macs

    work, _ = recipe
    monkeypatch.chdir(work)
    exp = work / "exp" / "asr_amortized"
    model, _ = load_asr_model(exp / "config.yaml", exp / "valid.loss.ave.pth")
    features = [torch.from_numpy(m.copy()) for _, m in kaldiio.load_scp_sequential(str(work / "dump" / "fbank" / "test_clean" / "feats.scp"))]
    lengths = torch.tensor([f.size(0) for f in features])
    batch = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)

    def ratio(budget):
        set_compute_knobs(model.encoder, compute_budget=budget)
        with torch.no_grad():
            _, _, info = model.encoder(*model.normalize(batch, lengths))
        return count_macs(model.encoder, info.gates, info.valid, info.allowed, info.input_lengths.tolist()).encoder_ratio

    floor = ratio(0.0)
    budgets = [0.3, 0.35, 0.5, 0.7, 0.9, 1.0]
    ratios = [ratio(budget) for budget in budgets]
    for budget, measured in zip(budgets, ratios):
        assert measured == pytest.approx(max(budget, floor), abs=0.03), (budget, floor, measured)
    assert ratios == sorted(ratios) and ratios[0] < ratios[-1] - 0.3


@pytest.mark.parametrize("beam_size", [1, 4])
def test_the_recipe_model_streams_like_it_decodes_offline(recipe, monkeypatch, beam_size):
    """Chunk-by-chunk decoding of the whole tiny test set equals the same search on whole utterances."""
    import random

    import numpy as np
    import soundfile

    from espnet_amortized.streaming import Speech2TextStreaming

    work, _ = recipe
    monkeypatch.chdir(work)  # trained configs name their files relative to the recipe folder, as in ESPnet
    exp = work / "exp" / "asr_amortized"
    s2t = Speech2TextStreaming(exp / "config.yaml", exp / "valid.loss.ave.pth", beam_size=beam_size, score_norm=True)
    rng = random.Random(0)
    entries = [line.split(maxsplit=1) for line in (work / "data" / "test_clean" / "wav.scp").read_text().splitlines()]
    for _, path in entries:
        audio, _ = soundfile.read(path, dtype="float32")
        s2t.reset()
        start = 0
        while start < audio.size:
            size = rng.randint(1600, 6400)
            s2t(audio[start : start + size])
            start += size
        final = s2t(np.zeros(0, dtype=np.float32), is_final=True)
        assert final == s2t.decode_offline(audio)
    assert len(entries) == 8


def test_the_same_command_twice_trains_the_same_model_and_decodes_the_same_words(recipe):
    """Reproducibility: seeds, one thread per job and a fixed batch order; the second run is bit-identical."""
    import torch

    work, _ = recipe
    _run(work, "--stage", "4", "--stop_stage", "6", "--expdir", "exp again", "--test_sets", "test_clean",
         "--train_config", "conf/train_dense.yaml")
    first, again = work / "exp" / "asr_dense", work / "exp again" / "asr_dense"
    weights = [torch.load(run / "valid.loss.ave.pth", map_location="cpu") for run in (first, again)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    hyps = [(run / "decode_test_clean" / "1best_recog" / "text").read_text() for run in (first, again)]
    assert hyps[0] == hyps[1] and hyps[0].count("\n") == 8


def test_another_checkpoint_is_decoded_and_reported_beside_the_default(recipe):
    """--inference_model (asr.sh's --inference_asr_model): its own decode folder and results files; the default
    checkpoint's decodings and report stay as they were; a checkpoint that is not there stops stage 5 first."""
    work, _ = recipe
    results = work / "exp" / "RESULTS.md"
    before = results.read_text()
    _run(work, "--stage", "5", "--stop_stage", "6", "--train_config", "conf/train_dense.yaml",
         "--inference_model", "valid.loss.best.pth")
    decode = work / "exp" / "asr_dense" / "decode_model_valid.loss.best" / "decode_test_clean"
    assert "Sum/Avg" in (decode / "score_wer" / "result.txt").read_text()
    assert "--asr_model_file exp/asr_dense/valid.loss.best.pth " in (decode / "decode.log").read_text()
    assert "Checkpoint decoded: valid.loss.best.pth." in (work / "exp" / "RESULTS_model_valid.loss.best.md").read_text()
    summary = json.loads((work / "exp" / "summary_model_valid.loss.best.json").read_text())
    assert [m["inference_model"] for m in summary["models"]] == ["valid.loss.best.pth"]
    assert results.read_text() == before
    result = subprocess.run(["bash", str(REPO / "run.sh"), "--synthetic_size", "tiny", "--nbpe", "48", "--stage", "5",
                             "--stop_stage", "5", "--inference_model", "no_such.pth"], cwd=work, capture_output=True, text=True)
    assert result.returncode != 0 and "--inference_model no_such.pth: no exp/asr_dense/no_such.pth" in result.stderr
    assert not (work / "exp" / "asr_dense" / "decode_model_no_such").exists()


def test_a_bad_training_config_fails_before_any_work(tmp_path):
    bad = tmp_path / "bad config.yaml"
    bad.write_text("encoder: amortized_transformer\nencoder_conf:\n    chunk_size: 0\ndecoder: transducer\nmodel: amortized_espnet\n")
    command = ["bash", str(REPO / "run.sh"), "--synthetic_size", "tiny", "--train_config", "conf/train_dense.yaml"]
    result = subprocess.run([*command[:-1], str(bad).replace(" ", "\\ ")], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "neither a file here" in result.stderr  # a space splits the list: said so
    (tmp_path / "bad.yaml").write_text(bad.read_text())
    result = subprocess.run([*command[:-1], "bad.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "bad training config: bad.yaml: chunk_size must be > 0" in result.stderr
    assert not (tmp_path / "downloads").exists() and not (tmp_path / "data").exists()


def test_a_changed_corpus_never_mixes_with_data_made_from_the_old_one(recipe, tmp_path):
    """Stage 0 reuses a corpus of this generator version; data made from another corpus stops the run."""
    work, _ = recipe
    corpus = work / "downloads" / f"synthetic_v{CORPUS_VERSION}_tiny" / "LibriSpeech"
    assert (corpus / "VERSION").is_file() and (corpus / ".done").is_file()
    before = (corpus / "CONDITIONS.TXT").stat().st_mtime_ns
    out = tmp_path / "rerun"
    (out / "data" / "dev_clean").mkdir(parents=True)
    (out / "data" / "dev_clean" / ".done").write_text("")  # prepared by a corpus before VERSION markers
    command = ["bash", str(REPO / "run.sh"), "--synthetic_size", "tiny", "--stage", "0", "--stop_stage", "1",
               "--download_dir", str(work / "downloads"), "--speed_perturb_factors", ""]
    result = subprocess.run(command, cwd=out, capture_output=True, text=True)
    assert result.returncode != 0 and "data/dev_clean/.done was made from another corpus" in result.stderr
    assert "stage 0: synthetic corpus" not in result.stderr  # the finished corpus was reused
    assert (corpus / "CONDITIONS.TXT").stat().st_mtime_ns == before
    assert (out / "data" / "train_clean_100" / ".done").read_text().strip().endswith((corpus / "VERSION").read_text().strip())


def test_the_recipe_runs_from_a_repository_path_with_spaces(recipe, tmp_path):
    """A clone under 'my projects/…': the recipe's own paths (scripts, configs, launchers) stay whole."""
    work, _ = recipe
    clone = _clone(tmp_path / "my projects" / "espnet amortized")
    out = tmp_path / "recipe output"
    out.mkdir()
    command = ["bash", str(clone / "run.sh"), "--stage", "1", "--stop_stage", "3", "--nbpe", "48", "--nj", "2",
               "--librispeech_root", str(work / "downloads" / f"synthetic_v{CORPUS_VERSION}_tiny" / "LibriSpeech")]
    result = subprocess.run(command, cwd=out, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "data" / "token_list" / "bpe48" / "tokens.txt").is_file()
    assert (out / "dump" / "fbank" / "test_other" / "feats.scp").is_file()


def _clone(clone):
    """The repository's tracked files copied to ``clone``, with this checkout's .venv."""
    import shutil

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, tracked):
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)
    (clone / ".venv").symlink_to(REPO / ".venv")
    return clone


def test_sweep_dry_run_writes_and_builds_every_config(tmp_path):
    """egs/sweep/run.sh: its derived configs exist, every model builds, the planned stages are printed."""
    import yaml

    clone = _clone(tmp_path / "clone")
    result = subprocess.run(["bash", str(clone / "egs" / "sweep" / "run.sh"), "--dry_run", "true"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    generated = clone / "egs" / "sweep" / "conf_generated"
    names = sorted(p.stem for p in generated.glob("train_*.yaml"))
    assert names == ["train_amortized_chunk_warm", "train_amortized_layer", "train_amortized_local", "train_amortized_w1",
                     "train_amortized_w10", "train_amortized_w3", "train_amortized_w30", "train_amortized_warm"]
    w10 = yaml.safe_load((generated / "train_amortized_w10.yaml").read_text())
    assert w10["model_conf"]["compute_weight"] == 10 and w10["model_conf"]["compute_regularizer"] == "linear"
    assert yaml.safe_load((generated / "train_amortized_layer.yaml").read_text())["encoder_conf"]["gate_unit"] == "layer"
    planned = [line for line in result.stdout.splitlines() if line.startswith("would run:")]
    assert len(planned) == 6 and "--synthetic_size bench" in planned[0] and "--gate_thresholds 0.3 0.7" in planned[3]
    assert "train_amortized_warm.yaml" in planned[1] and "train_amortized_warm.yaml" not in planned[0]  # after dense
    assert "--decode_mode streaming" in planned[4] and "contextual_block" not in planned[4]
    assert not (clone / "egs" / "sweep" / "exp" / "asr_dense").exists()  # nothing trained


def test_bench_dry_run_derives_a_schedule_that_ends_with_training(tmp_path):
    """egs/bench/run.sh: the derived config decays its learning rate to the last of iters x epochs updates."""
    import yaml

    clone = _clone(tmp_path / "clone")
    result = subprocess.run(["bash", str(clone / "egs" / "bench" / "run.sh"), "--dry_run", "true",
                             "--iters_per_epoch", "200", "--max_epoch", "3"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((clone / "egs" / "bench" / "conf_generated" / "train_dense_bench.yaml").read_text())
    base = yaml.safe_load((clone / "conf" / "train_dense.yaml").read_text())
    assert config["num_iters_per_epoch"] == 200 and config["max_epoch"] == 3
    assert config["scheduler_conf"]["warmup_steps_list"] == [0, 500, 600]
    assert config["scheduler_conf"]["warmup_lr_list"] == base["scheduler_conf"]["warmup_lr_list"]
    assert config["encoder_conf"] == base["encoder_conf"] and config["model_conf"] == base["model_conf"]
    planned = [line for line in result.stdout.splitlines() if line.startswith("would run:")]
    assert planned == ["would run: ../../run.sh --synthetic_size bench --train_config conf_generated/train_dense_bench.yaml"]
    assert not (clone / "egs" / "bench" / "exp").exists()  # nothing trained


def test_bench_variant_derives_its_own_config_and_an_unnamed_change_is_refused(tmp_path):
    """egs/bench/run.sh --variant NAME --set ...: an ablation of the bench config, trained into its own exp."""
    import yaml

    clone = _clone(tmp_path / "clone")
    script = str(clone / "egs" / "bench" / "run.sh")
    result = subprocess.run(["bash", script, "--dry_run", "true", "--variant", "dropout",
                             "--set", "encoder_conf.dropout_rate=0.1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    generated = clone / "egs" / "bench" / "conf_generated"
    config = yaml.safe_load((generated / "train_dense_bench_dropout.yaml").read_text())
    assert config["encoder_conf"]["dropout_rate"] == 0.1 and config["scheduler_conf"]["warmup_steps_list"][-1] == 7500
    assert not (generated / "train_dense_bench.yaml").exists()
    assert "--train_config conf_generated/train_dense_bench_dropout.yaml" in result.stdout
    refused = subprocess.run(["bash", script, "--dry_run", "true", "--set", "encoder_conf.dropout_rate=0.1"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "name the ablation with --variant" in refused.stderr
    unpublishable = subprocess.run(["bash", script, "--dry_run", "true", "--variant", "dropout", "--publish", "true",
                                    "--set", "encoder_conf.dropout_rate=0.1"], capture_output=True, text=True)
    assert unpublishable.returncode != 0 and "an ablation is not the bench summary" in unpublishable.stderr


def test_bench_base_trains_a_toolkit_baseline_on_the_same_schedule_and_cannot_publish_it(tmp_path):
    """egs/bench/run.sh --base CONFIG: another model (issue 12's toolkit baselines) on the bench's data and updates."""
    import yaml

    clone = _clone(tmp_path / "clone")
    script = str(clone / "egs" / "bench" / "run.sh")
    base = "../../conf/tuning/train_contextual_block_conformer.yaml"
    result = subprocess.run(["bash", script, "--dry_run", "true", "--base", base], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((clone / "egs" / "bench" / "conf_generated" /
                             "train_contextual_block_conformer_bench.yaml").read_text())
    original = yaml.safe_load((clone / "conf" / "tuning" / "train_contextual_block_conformer.yaml").read_text())
    assert config["encoder"] == "contextual_block_conformer" and config["encoder_conf"] == original["encoder_conf"]
    assert config["scheduler_conf"]["warmup_steps_list"] == [0, 500, 7500]
    assert "--train_config conf_generated/train_contextual_block_conformer_bench.yaml" in result.stdout
    refused = subprocess.run(["bash", script, "--dry_run", "true", "--base", base, "--publish", "true"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "the bench summary is the dense baseline's" in refused.stderr
    missing = subprocess.run(["bash", script, "--dry_run", "true", "--base", "conf/none.yaml"], capture_output=True, text=True)
    assert missing.returncode != 0 and "conf/none.yaml: no such training config" in missing.stderr


def test_bench_gpu_script_derives_every_base_at_its_updates_and_plans_one_side_by_side_run(tmp_path):
    """egs/bench/gpu.sh (issue 12 on a lent GPU): the configs it derives and the one run.sh command it would run."""
    import yaml

    clone = _clone(tmp_path / "clone")
    out, work = tmp_path / "out", tmp_path / "work"
    result = subprocess.run(["bash", str(clone / "egs" / "bench" / "gpu.sh"), "--out", str(out), "--workdir", str(work),
                             "--setup", "false", "--dry_run", "true", "--max_epoch", "30"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    generated = clone / "egs" / "bench" / "conf_generated"
    dense = yaml.safe_load((generated / "train_dense_bench_gpu_u15000.yaml").read_text())
    block = yaml.safe_load((generated / "train_contextual_block_transformer_bench_gpu_u15000.yaml").read_text())
    assert dense["scheduler_conf"]["warmup_steps_list"] == block["scheduler_conf"]["warmup_steps_list"] == [0, 500, 15000]
    assert block["encoder"] == "contextual_block_transformer"
    planned = [line for line in result.stdout.splitlines() if line.startswith("would run in")]
    assert planned == [f"would run in {work}: {clone}/run.sh --synthetic_size bench --nj {len(os.sched_getaffinity(0))} --ngpu 1 "
                       f"--train_config {generated}/train_dense_bench_gpu_u15000.yaml "
                       f"{generated}/train_contextual_block_transformer_bench_gpu_u15000.yaml"]
    assert "command: " in (out / "gpu.log").read_text() and not (work / "exp").exists()
    missing = subprocess.run(["bash", str(clone / "egs" / "bench" / "gpu.sh"), "--dry_run", "true"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "--out DIR is required" in missing.stderr


# -- ESPnet's own streaming transducer (the asr_transducer task) through the same stages --------
TOOLKIT_TRANSDUCER = REPO / "conf" / "tuning" / "train_espnet_transducer_conformer.yaml"


@pytest.fixture(scope="module")
def transducer_recipe(recipe):
    """The toolkit transducer on the tiny recipe's data: trained and streamed, then decoded offline and scored."""
    work, _ = recipe
    common = ("--expdir", "exp_toolkit", "--train_config", str(TOOLKIT_TRANSDUCER))
    streaming_log = _run(work, "--stage", "4", "--stop_stage", "5", "--decode_mode", "streaming", *common)
    offline_log = _run(work, "--stage", "5", "--stop_stage", "6", *common)
    return work / "exp_toolkit", streaming_log, offline_log


def test_espnet_asr_transducer_trains_streams_and_decodes_through_the_recipe(transducer_recipe):
    exp, streaming_log, offline_log = transducer_recipe
    assert "collect_stats -> exp_toolkit/asr_transducer_stats_bpe48_sp" in streaming_log
    assert (exp / "asr_transducer_stats_bpe48_sp" / "train" / "feats_stats.npz").is_file()  # its own front-end's
    model = exp / "asr_espnet_transducer_conformer"
    train_log = (model / "train.log").read_text()
    assert "espnet_amortized.bin.asr_transducer_train" in train_log.splitlines()[0] and "1epoch results" in train_log
    for test_set in ("test_clean", "test_other"):
        for decode in (f"decode_streaming_{test_set}", f"decode_{test_set}"):
            assert (model / decode / "1best_recog" / "text").read_text().count("\n") == 8
    streamed = json.loads((model / "decode_streaming_test_clean" / "summary.json").read_text())
    offline = json.loads((model / "decode_test_clean" / "summary.json").read_text())
    assert streamed["streaming"] is True and offline["streaming"] is False
    assert streamed["algorithmic_latency_ms"] == pytest.approx(640 + 352 / 16)  # window + STFT overhang
    assert streamed["gflops_per_second"] > 0 and streamed["encoder"] == "Encoder"
    (row,) = json.loads((exp / "summary.json").read_text())["models"]
    assert row["role"] == "toolkit" and row["front_end"] == "conv2d x4"
    assert row["latency_ms"] == pytest.approx(streamed["algorithmic_latency_ms"]) and row["params_m"] > 0
