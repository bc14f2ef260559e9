import json

import numpy as np
import pytest

from plots import compute_allocation, main, read_epochs

LOG = """[vm] 2026 (trainer:394) INFO: 1epoch results: [train] loss=50.0, compute_ratio=0.9, nonfinite_loss=0.000, \
train_time=0.3, time=55 seconds, total_count=100, gpu_max_cached_mem_GB=0, [valid] loss=40.0, compute_ratio=0.8, time=1.2 seconds, total_count=10
[vm] 2026 (trainer:394) INFO: 2epoch results: [train] loss=30.0, compute_ratio=0.5, time=55 seconds, [valid] loss=nan, time=1.2 seconds
"""


def test_epoch_results_are_read_from_espnet_logs(tmp_path):
    (tmp_path / "train.log").write_text(LOG)
    epochs = read_epochs(tmp_path / "train.log")
    assert sorted(epochs) == [1, 2]
    assert epochs[1]["train"]["compute_ratio"] == 0.9 and epochs[1]["valid"]["loss"] == 40.0
    assert np.isnan(epochs[2]["valid"]["loss"])


def test_scoring_stage_plots(tmp_path):
    import kaldiio

    dump = tmp_path / "dump"
    (dump / "test_clean").mkdir(parents=True)
    with kaldiio.WriteHelper(f"ark,scp:{dump / 'test_clean' / 'feats.ark'},{dump / 'test_clean' / 'feats.scp'}") as writer:
        writer("u1", np.random.default_rng(0).standard_normal((120, 80)).astype(np.float32))
    rows = []
    for model, ratio, threshold in (("asr_dense", 1.0, None), ("asr_amortized", 0.4, 0.5)):
        exp = tmp_path / model
        decode = exp / "decode_test_clean"
        (decode / "score_wer").mkdir(parents=True)
        (exp / "train.log").write_text(LOG)
        if threshold is not None:
            (decode / "gates").mkdir()
            np.save(decode / "gates" / "u1.npy", (np.random.default_rng(1).random((20, 3, 2)) < ratio).astype(np.uint8))
        rows.append({"model": model, "test_set": "test_clean", "decode": "decode_test_clean", "wer": 20.0 + 10 * (1 - ratio),
                     "wer_low": 15.0, "wer_high": 35.0, "compute_ratio_layers": ratio, "gflops_per_second": 0.05 * ratio,
                     "gate_threshold": threshold,
                     "per_utterance": str(decode / "score_wer" / "per_utterance.tsv")})
    # decode-time thresholds: the dense model has no threshold of its own, the gated one does
    for row in list(rows):
        rows.append({**row, "decode": "decode_test_clean_th0.7", "wer": row["wer"] + 1,
                     "gate_threshold": None if row["gate_threshold"] is None else 0.7})
    # the gated model frozen to its units' majorities: a point beside its curve
    rows.append({**rows[1], "decode": "decode_test_clean_frozen0.4", "wer": 31.0, "compute_ratio_layers": 0.35,
                 "frozen": True, "compute_budget": 0.4})
    results = tmp_path / "RESULTS.json"
    results.write_text(json.dumps(rows))
    out = tmp_path / "plots"
    main(["--results", str(results), "--exps", str(tmp_path / "asr_dense"), str(tmp_path / "asr_amortized"),
          "--dumpdir", str(dump), "--out", str(out), "--also", str(write_toolkit_summary(tmp_path))])
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["compute_asr_amortized_u1.png", "pareto_test_clean.png", "training_curves.png"]
    assert all((out / name).stat().st_size > 10_000 for name in written)


def write_toolkit_summary(tmp_path):
    models = [{"name": name, "role": role, "latency_ms": 640.0, "compute_ratio_layers": 1.0, "gflops_per_second": gflops,
               "wer": {"test_clean": [60.0, 58.0, 62.0], "test_other": [75.0, 73.0, 77.0]}}
              for name, role, gflops in (("asr_dense_other_run", "dense", 0.1), ("asr_cbt", "toolkit", 0.38))]
    models.append({"name": "asr_budget", "role": "budget", "latency_ms": 640.0, "compute_ratio_layers": 1.0,
                   "compute_ratio_encoder": 1.0, "gflops_per_second": 0.1, "wer": {"test_clean": [50.0, 48.0, 52.0]},
                   "budgets": {"0.35": {"compute_ratio_encoder": 0.35, "wer": {"test_clean": [55.0, 53.0, 57.0]}}}})
    path = tmp_path / "summary_toolkit.json"
    path.write_text(json.dumps({"models": models}))
    return path


def test_models_of_a_committed_summary_join_the_pareto_plot_named_by_their_file(tmp_path):
    from plots import point_labels, summary_rows

    summary = json.loads(write_toolkit_summary(tmp_path).read_text())
    rows = summary_rows(summary, "summary_toolkit.json", ["toolkit"])
    assert [(r["model"], r["test_set"], r["wer"], r["wer_low"]) for r in rows] == [
        ("asr_cbt", "test_clean", 60.0, 58.0), ("asr_cbt", "test_other", 75.0, 73.0)]
    assert point_labels(rows[0], "test_clean") == ("cbt", "cbt (640 ms, summary_toolkit.json)")
    budget = summary_rows(summary, "summary_toolkit.json", ["budget"])
    assert [(r["decode"], r["own"], r["wer"]) for r in budget] == [("decode_test_clean", True, 50.0),
                                                                   ("decode_test_clean_b0.35", False, 55.0)]
    assert budget[1]["gflops_per_second"] == pytest.approx(0.035) and point_labels(budget[1], "test_clean")[0] == "b=0.35"
    with pytest.raises(ValueError, match="--also summary_toolkit.json: no model of role static"):
        summary_rows(summary, "summary_toolkit.json", ["static"])


def test_also_names_a_summary_and_optionally_its_roles(tmp_path):
    from plots import read_summary

    path = write_toolkit_summary(tmp_path)
    assert read_summary(str(path), ["toolkit"])[1:] == ("summary_toolkit.json", ["toolkit"])
    assert read_summary(f"{path}:dense,budget", ["toolkit"])[2] == ["dense", "budget"]
    with pytest.raises(FileNotFoundError, match="--also missing.json: no such summary.json"):
        read_summary("missing.json", ["toolkit"])


def test_pareto_legend_names_each_model_with_its_latency():
    from plots import point_labels

    own = {"model": "asr_dense", "decode": "decode_test_clean", "own": True, "latency_ms": 670.0}
    assert point_labels(own, "test_clean") == ("dense", "dense (670 ms)")
    assert point_labels({**own, "latency_ms": None}, "test_clean")[1] == "dense (latency unknown)"
    offline = {"model": "asr_tt", "decode": "decode_test_clean", "own": False, "latency_ms": None}
    assert point_labels(offline, "test_clean") == ("full context", None)
    threshold = {"model": "asr_gated", "decode": "decode_test_clean_th0.7", "own": False, "gate_threshold": 0.7}
    assert point_labels(threshold, "test_clean") == ("@0.7", None)
    old = {"model": "asr_dense", "decode": "decode_test_clean_th0.3", "gate_threshold": None}  # no "own": older JSON
    assert point_labels(old, "test_clean") == ("@0.3", None)
    budget = {"model": "asr_budget", "decode": "decode_test_clean_b0.35", "own": False, "compute_budget": 0.35}
    assert point_labels(budget, "test_clean") == ("b=0.35", None)
    frozen = {**budget, "decode": "decode_test_clean_frozen0.35", "frozen": True}
    assert point_labels(frozen, "test_clean") == ("frozen b=0.35", None)


def test_the_left_pareto_panel_places_each_model_at_its_compute_relative_to_the_first():
    from plots import RELATIVE_COMPUTE_EDGE, relative_compute

    static = {"compute_ratio_layers": 1.0, "gflops_per_second": 0.06}  # a smaller dense model: its own ratio is 1
    assert relative_compute(static, 0.1) == (pytest.approx(0.6), "")
    toolkit = {"compute_ratio_layers": 1.0, "gflops_per_second": 0.58}
    assert relative_compute(toolkit, 0.1) == (RELATIVE_COMPUTE_EDGE, " (x5.8)")
    assert relative_compute({"compute_ratio_layers": 0.4, "gflops_per_second": None}, 0.1) == (0.4, "")


@pytest.mark.parametrize("units", [2, 3])  # 3: gated convolution units
def test_compute_allocation_figure(tmp_path, units):
    gates = np.zeros((10, 2, units), dtype=np.uint8)
    gates[:5, 0, 0] = 1
    path = compute_allocation(np.zeros((60, 80)), gates, "title", tmp_path / "a.png")
    assert path.is_file()
