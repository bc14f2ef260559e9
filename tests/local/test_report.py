import json

import pytest

from report import format_markdown, gather


def test_gather_scores_and_reads_compute(tmp_path):
    dump = tmp_path / "dump"
    (dump / "test_clean").mkdir(parents=True)
    (dump / "test_clean" / "text").write_text("1-1-0000 A B C D\n")
    for model, hypothesis, ratio in (("asr_dense", "A B C D", 1.0), ("asr_amortized", "A B C", 0.4)):
        decode = tmp_path / model / "decode_test_clean"
        (decode / "1best_recog").mkdir(parents=True)
        (decode / "1best_recog" / "text").write_text(f"1-1-0000 {hypothesis}\n")
        (decode / "summary.json").write_text(json.dumps({
            "compute_ratio_layers": ratio, "compute_ratio_encoder": ratio, "gflops_per_second": 1.5 * ratio,
            "rtf": 0.02, "encoder_rtf": 0.01, "gate_threshold": 0.5,
        }))
    rows = gather(dump, ["test_clean"], [tmp_path / "asr_dense", tmp_path / "asr_amortized"])
    assert [r["wer"] for r in rows] == [0.0, 25.0]
    assert rows[1]["compute_ratio_layers"] == 0.4
    table = format_markdown(rows)
    assert "| asr_amortized | - | decode_test_clean | 0.5 | - | 25.00 (0.0/25.0/0.0) | - | - | 0.400 |" in table


def test_statistics_give_intervals_and_a_paired_test_against_the_first_model(tmp_path):
    from report import add_statistics

    dump = tmp_path / "dump"
    (dump / "test_clean").mkdir(parents=True)
    references = {f"1-1-{i:04d}": "A B C D" for i in range(40)}
    (dump / "test_clean" / "text").write_text("".join(f"{k} {v}\n" for k, v in references.items()))
    for model, wrong in (("asr_dense", 4), ("asr_amortized", 12)):
        decode = tmp_path / model / "decode_test_clean"
        (decode / "1best_recog").mkdir(parents=True)
        hyps = {k: ("A B C X" if i < wrong else v) for i, (k, v) in enumerate(references.items())}
        (decode / "1best_recog" / "text").write_text("".join(f"{k} {v}\n" for k, v in hyps.items()))
        (decode / "summary.json").write_text(json.dumps({
            "compute_ratio_layers": 1.0, "compute_ratio_encoder": 1.0, "gflops_per_second": 1.0, "rtf": 0.02}))
    rows = gather(dump, ["test_clean"], [tmp_path / "asr_dense", tmp_path / "asr_amortized"])
    add_statistics(rows, resamples=500)
    dense, amortized = rows
    assert dense["wer_low"] <= dense["wer"] == 2.5 <= dense["wer_high"]
    assert "vs_baseline" not in dense and amortized["baseline"] == "asr_dense"
    versus = amortized["vs_baseline"]
    assert versus["delta"] == pytest.approx(5.0) and versus["low"] > 0 and versus["p_not_worse"] < 0.05
    assert versus["relative"] == pytest.approx(2.0)
    table = format_markdown(rows)
    assert "| +5.00 [" in table and "(+200% rel.), 0.00 |" in table


def test_threshold_decodes_are_gathered_too(tmp_path):
    import pytest

    from report import decode_dirs

    (tmp_path / "decode_test_clean_th0.3").mkdir()
    (tmp_path / "decode_test_clean_th0.7").mkdir()
    assert [d.name for d in decode_dirs(tmp_path, "test_clean")] == ["decode_test_clean_th0.3", "decode_test_clean_th0.7"]
    with pytest.raises(FileNotFoundError, match="run stage 5"):
        decode_dirs(tmp_path, "test_other")


def test_streaming_table_has_beam_and_latency_columns(tmp_path):
    dump = tmp_path / "dump"
    (dump / "test_clean").mkdir(parents=True)
    (dump / "test_clean" / "text").write_text("1-1-0000 A B\n")
    decode = tmp_path / "asr_amortized" / "decode_streaming_test_clean"
    (decode / "1best_recog").mkdir(parents=True)
    (decode / "1best_recog" / "text").write_text("1-1-0000 A B\n")
    (decode / "summary.json").write_text(json.dumps({
        "compute_ratio_layers": 0.4, "compute_ratio_encoder": 0.4, "gflops_per_second": 0.02, "rtf": 0.01,
        "encoder_rtf": 0.002, "gate_threshold": 0.5, "beam_size": 4, "piece_latency_mean_ms": 1.25,
        "piece_latency_p95_ms": 7.5, "algorithmic_latency_ms": 960.0,
        "gflops_per_second_prediction": 0.5, "gflops_per_second_joint": 0.25,
    }))
    rows = gather(dump, ["test_clean"], [tmp_path / "asr_amortized"], mode="streaming")
    table = format_markdown(rows, "streaming")
    assert "| piece latency mean / p95 ms | algorithmic latency ms |" in table.splitlines()[0]
    assert "| GFLOPs / audio s | search GFLOPs / audio s | RTF |" in table.splitlines()[0]
    assert table.splitlines()[2].endswith("| 0.020 | 0.750 | 0.0100 | 0.0020 | 4 | 1.2 / 7.5 | 960 |")
    assert table.splitlines()[1].count("---") == 17


def test_training_seconds_sums_finished_runs_and_skips_a_killed_one(tmp_path):
    from report import training_seconds

    (tmp_path / "launch.log").write_text(
        "# python -m x train --config conf/a.yaml\n# started at Thu Nov 26 08:01:43 2026\nlog\n"
        "# ended at Thu Nov 26 08:11:43 2026 with exit code 1\n"
        "# python -m x train --config conf/a.yaml\n# started at Thu Nov 26 09:00:00 2026\nkilled here\n"
        "# python -m x train --config conf/a.yaml\n# started at Thu Nov  6 10:00:00 2026\n"
        "# ended at Thu Nov  6 10:05:30 2026 with exit code 0\n"
    )
    assert training_seconds(tmp_path) == 600 + 330
    assert training_seconds(tmp_path / "missing") is None


def test_summary_has_one_row_per_model_with_both_sets_streaming_rtf_and_training_time(tmp_path, monkeypatch):
    from report import add_statistics, format_summary, summarize

    monkeypatch.chdir(tmp_path)
    dump = tmp_path / "dump"
    references = {f"1-1-{i:04d}": "A B C D" for i in range(20)}
    for test_set in ("test_clean", "test_other"):
        (dump / test_set).mkdir(parents=True)
        (dump / test_set / "text").write_text("".join(f"{k} {v}\n" for k, v in references.items()))
    for model, ratio in (("asr_dense", 1.0), ("asr_amortized", 0.4)):
        exp = tmp_path / "exp" / model
        for suffix in ("", "_th0.3"):
            for test_set in ("test_clean", "test_other"):
                decode = exp / f"decode_{test_set}{suffix}"
                (decode / "1best_recog").mkdir(parents=True)
                wrong = 0 if model == "asr_dense" else 2
                (decode / "1best_recog" / "text").write_text(
                    "".join(f"{k} {'A B C X' if i < wrong else v}\n" for i, (k, v) in enumerate(references.items())))
                (decode / "summary.json").write_text(json.dumps({
                    "compute_ratio_layers": ratio * (1.5 if suffix else 1), "compute_ratio_encoder": ratio,
                    "gflops_per_second": ratio, "rtf": 0.02}))
        gate_unit = "none" if model == "asr_dense" else "unit"
        (exp / "config.yaml").write_text(
            "ngpu: 0\nmax_epoch: 12\nencoder: amortized_transformer\nencoder_conf:\n    input_layer: dw_striding\n"
            f"    subsampling_factor: 4\n    chunk_size: 16\n    gate_unit: {gate_unit}\n")
        (exp / "launch.log").write_text(
            f"# python -m x train --config {tmp_path}/conf/train_{model}.yaml --exp_dir e\n"
            "# started at Thu Nov 26 08:00:00 2026\n# ended at Thu Nov 26 08:30:00 2026 with exit code 0\n")
    streaming = tmp_path / "exp" / "asr_amortized" / "decode_streaming_test_clean"
    streaming.mkdir()
    (streaming / "summary.json").write_text(json.dumps({"rtf": 0.0123}))
    exps = [tmp_path / "exp" / "asr_dense", tmp_path / "exp" / "asr_amortized"]
    rows = gather(dump, ["test_clean", "test_other"], exps)
    add_statistics(rows, resamples=200)
    summary = summarize(rows, exps, ["test_clean", "test_other"])
    assert [s["model"] for s in summary] == ["asr_dense", "asr_amortized"]
    amortized = summary[1]
    assert amortized["compute_ratio_layers"] == 0.4  # its own threshold, not the th0.3 decoding
    assert amortized["sets"]["test_other"]["wer"] == 2.5 and amortized["sets"]["test_clean"]["vs_baseline"]["delta"] == 2.5
    assert amortized["config"] == "conf/train_asr_amortized.yaml" and amortized["training_seconds"] == 1800
    assert summary[0]["streaming_rtf"] is None and amortized["streaming_rtf"] == 0.0123
    # The issue-11 schema of summary.json.
    assert [s["role"] for s in summary] == ["dense", "gated"] and amortized["name"] == "asr_amortized"
    assert amortized["front_end"] == "dw_striding x4, 48 channels" and amortized["epochs"] == 12
    assert amortized["latency_ms"] == 10.0 * (16 * 4 + 7 - 4)  # the chunk plus the front-end's context
    assert amortized["training_minutes"] == 30.0 and amortized["gflops_per_audio_second"] == 0.4
    wer, low, high = amortized["wer"]["test_other"]
    assert wer == 2.5 and low <= wer <= high
    from report import main

    main(["--dumpdir", str(dump), "--test_sets", "test_clean", "test_other", "--exps", *map(str, exps),
          "--out", str(tmp_path / "exp" / "RESULTS.md"), "--bootstrap", "50", "--corpus", "synthetic v2 tiny",
          "--command", "./run.sh --synthetic_size tiny"])
    document = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert document["corpus"] == "synthetic v2 tiny" and document["command"] == "./run.sh --synthetic_size tiny"
    assert "cores" in document["machine"] and [m["name"] for m in document["models"]] == ["asr_dense", "asr_amortized"]
    table = format_summary(summary, ["test_clean", "test_other"])
    assert "| asr_amortized | gated | conf/train_asr_amortized.yaml | - | 670 | 0.400 / 0.400 | 0.400 | 2.50 [" in table
    assert table.rstrip().endswith("| 0.0200 | 0.0123 | 30 min | CPU, 1 thread |")
    assert amortized["decoding"] == "decode_<set>" and amortized["decode_rtf"] == 0.02


def test_an_asr_transducer_model_is_reported_at_its_streaming_latency(tmp_path):
    """Offline, an asr_transducer model's encoder sees the whole utterance: its summary row (and the paired test)
    takes its streaming decode, the offline one stays in the table of every decoding."""
    from report import add_statistics, decode_dirs, summarize

    dump = tmp_path / "dump"
    references = {f"1-1-{i:04d}": "A B C D" for i in range(20)}
    (dump / "test_clean").mkdir(parents=True)
    (dump / "test_clean" / "text").write_text("".join(f"{k} {v}\n" for k, v in references.items()))
    decodings = {"asr_dense": {"decode_test_clean": 0},
                 "asr_espnet_transducer": {"decode_test_clean": 0, "decode_streaming_test_clean": 4}}
    for model, dirs in decodings.items():
        exp = tmp_path / "exp" / model
        for name, wrong in dirs.items():
            decode = exp / name
            (decode / "1best_recog").mkdir(parents=True)
            (decode / "1best_recog" / "text").write_text(
                "".join(f"{k} {'A B C X' if i < wrong else v}\n" for i, (k, v) in enumerate(references.items())))
            streamed = "streaming" in name
            (decode / "summary.json").write_text(json.dumps({
                "compute_ratio_layers": 1.0, "compute_ratio_encoder": 1.0, "gflops_per_second": 0.3,
                "rtf": 0.05 if streamed else 0.01, **({"algorithmic_latency_ms": 662.0} if streamed else {})}))
    toolkit = tmp_path / "exp" / "asr_espnet_transducer"
    (toolkit / "config.yaml").write_text("encoder_conf:\n    input_conf: {subsampling_factor: 4}\n    body_conf: []\n")
    assert [d.name for d in decode_dirs(toolkit, "test_clean")] == ["decode_streaming_test_clean", "decode_test_clean"]
    exps = [tmp_path / "exp" / "asr_dense", toolkit]
    rows = gather(dump, ["test_clean"], exps)
    add_statistics(rows, resamples=100)
    summary = summarize(rows, exps, ["test_clean"])
    row = summary[1]
    assert row["role"] == "toolkit" and row["latency_ms"] == 662.0 and row["decoding"] == "decode_streaming_<set>"
    assert row["wer"]["test_clean"][0] == 5.0 and row["decode_rtf"] == 0.05  # streaming, not the offline 0.0
    assert row["sets"]["test_clean"]["vs_baseline"]["delta"] == pytest.approx(5.0)
    assert sorted(r["wer"] for r in rows if r["model"] == toolkit.name) == [0.0, 5.0]  # both decodings listed
    import shutil

    shutil.rmtree(toolkit / "decode_streaming_test_clean")
    with pytest.raises(FileNotFoundError, match="only when streamed"):
        decode_dirs(toolkit, "test_clean")


# The committed summaries: how RESULTS.md cites each WER with its interval, and whether the summary is a
# comparison (every model after the first paired against it). The bench's dense baseline (7,500 updates) and
# issue 12's toolkit comparison and its front-end ablation (2,250 updates, one machine each).
COMMITTED_SUMMARIES = {
    "summary.json": (("| {wer:.2f} (", "| {low:.2f}-{high:.2f} |"), False),
    "summary_toolkit_u2250.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_frontend_u2250.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_budget_u2250.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_budget_u2250_r3.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_budget_u2250_r4.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_budget_u2250_r4_nogconv.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_budget_u2250_r5.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_budget_u7500.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_budget_u7500_best_checkpoint.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_budget_u7500_ave_12_15.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), True),
    "summary_allocate060_u7500_dedicated.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), False),
    "summary_allocate060_u7500_budget.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), False),
    "summary_draw2_u7500_dedicated035.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), False),
    "summary_draw2_u7500_budget.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), False),
    "summary_draw3_u7500_dedicated060.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), False),
    "summary_draw3_u7500_budget.json": (("| {wer:.2f} [{low:.2f}, {high:.2f}] |",), False),
}


@pytest.mark.parametrize("name", sorted(COMMITTED_SUMMARIES))
def test_committed_summary_follows_the_schema_and_the_documents_cite_it(name):
    """egs/sweep/results/summary*.json is what RESULTS.md and the README report: a figure changed in one and not
    the others fails here."""
    import pathlib

    repo = pathlib.Path(__file__).resolve().parents[2]
    citations, paired = COMMITTED_SUMMARIES[name]
    document = json.loads((repo / "egs" / "sweep" / "results" / name).read_text())
    assert {"corpus", "machine", "command", "models"} <= set(document) and document["models"]
    results, readme = (repo / "RESULTS.md").read_text(), (repo / "README.md").read_text()
    for model in document["models"]:
        assert {"name", "role", "config", "front_end", "params_m", "latency_ms", "epochs", "training_minutes",
                "compute_ratio_layers", "compute_ratio_encoder", "gflops_per_audio_second", "wer"} <= set(model)
        assert model["role"] in ("dense", "static", "gated", "budget", "toolkit")
        for test_set, (wer, low, high) in model["wer"].items():
            assert low <= wer <= high, (model["name"], test_set)
            for citation in citations:
                cited = citation.format(wer=wer, low=low, high=high)
                assert cited in results, (model["name"], test_set, cited)
            assert f"{wer:.1f}%" in readme, (model["name"], test_set)
        for budget, entry in [*model.get("budgets", {}).items(), *model.get("frozen", {}).items()]:  # every budget
            for test_set, (wer, low, high) in entry["wer"].items():
                assert low <= wer <= high, (model["name"], budget, test_set)
                for citation in citations:
                    assert citation.format(wer=wer, low=low, high=high) in results, (model["name"], budget, test_set)
    if paired:
        for model in document["models"][1:]:
            for test_set in model["wer"]:
                assert model["sets"][test_set]["vs_baseline"] is not None, (model["name"], test_set)


@pytest.mark.parametrize("toolkit", ["train_contextual_block_transformer.yaml", "train_contextual_block_conformer.yaml"])
def test_the_contextual_block_baselines_are_at_the_dense_models_latency(tmp_path, toolkit):
    """Issue 12 compares at matched latency: within 20% of conf/train_dense.yaml's (these configs: exactly)."""
    import pathlib
    import shutil

    from report import describe_model

    conf = pathlib.Path(__file__).resolve().parents[2] / "conf"
    latencies = {}
    for name, config in (("dense", conf / "train_dense.yaml"), ("toolkit", conf / "tuning" / toolkit)):
        (tmp_path / name).mkdir()
        shutil.copy(config, tmp_path / name / "config.yaml")
        latencies[name] = describe_model(tmp_path / name)["latency_ms"]
    assert latencies["dense"] == 670.0 and abs(latencies["toolkit"] / latencies["dense"] - 1) <= 0.2
    assert describe_model(tmp_path / "toolkit")["role"] == "toolkit"


def _decoded_models(tmp_path, models, extra=None):
    """Ten 4-word utterances in dump/test_clean and, per model, config.yaml and decode dirs:
    ``models`` {name: (config text, [(decode suffix, compute budget, compute, wrong utterances)])}; the compute
    is the decoding's compute ratios and GFLOPs per second. Returns the dump folder and the experiment folders."""
    dump = tmp_path / "dump"
    (dump / "test_clean").mkdir(parents=True)
    references = {f"1-1-{i:04d}": "A B C D" for i in range(10)}
    (dump / "test_clean" / "text").write_text("".join(f"{k} {v}\n" for k, v in references.items()))
    for model, (config, runs) in models.items():
        exp = tmp_path / model
        for suffix, budget, compute, wrong in runs:
            decode = exp / f"decode_test_clean{suffix}"
            (decode / "1best_recog").mkdir(parents=True)
            hyps = {k: ("A B C X" if i < wrong else v) for i, (k, v) in enumerate(references.items())}
            (decode / "1best_recog" / "text").write_text("".join(f"{k} {v}\n" for k, v in hyps.items()))
            (decode / "summary.json").write_text(json.dumps({
                "compute_ratio_layers": compute, "compute_ratio_encoder": compute, "gflops_per_second": compute,
                "rtf": 0.02, "gate_threshold": 0.5, "compute_budget": budget, **(extra or {})}))
        (exp / "config.yaml").write_text(config)
    return dump, [tmp_path / name for name in models]


def test_a_budget_conditioned_model_reports_every_budget_and_a_dedicated_one_its_target(tmp_path):
    from report import add_statistics, summarize

    gated = "encoder: amortized_transformer\nencoder_conf:\n    gate_unit: unit\n"
    dump, exps = _decoded_models(tmp_path, {
        "asr_budget": (gated + "    budget_conditioning: true\nmodel_conf:\n    compute_regularizer: budget\n",
                       [("_b1.0", 1.0, 1.01, 0), ("_b0.35", 0.35, 0.36, 3), ("_b0.5", 0.5, 0.49, 2)]),
        "asr_b035": (gated + "model_conf:\n    compute_regularizer: budget\n    compute_target: 0.35\n",
                     [("", None, 0.35, 2)]),
        # The budget model's allocation trained at one budget: a dedicated model too.
        "asr_allocate060": (gated + "    budget_conditioning: true\n    budget_min: 0.6\n    budget_full_fraction: 0.0\n"
                            "    budget_min_fraction: 1.0\n    compute_budget: 0.6\nmodel_conf:\n"
                            "    compute_regularizer: budget\n", [("", 0.6, 0.6, 1)]),
    }, extra={"attention_rates": [0.0, 0.5], "ffn_rates": [1.0, 0.3], "dynamic_saving_share": 0.4})
    rows = gather(dump, ["test_clean"], exps)
    assert [r["decode"] for r in rows[:3]] == ["decode_test_clean_b0.35", "decode_test_clean_b0.5", "decode_test_clean_b1.0"]
    add_statistics(rows, resamples=100)
    budget, dedicated, allocated = summarize(rows, exps, ["test_clean"])
    assert allocated["role"] == "gated" and allocated["target_budget"] == 0.6 and "budgets" not in allocated
    assert budget["role"] == "budget" and budget["decoding"] == "decode_<set>_b1.0"  # its full budget is its row
    assert sorted(budget["budgets"]) == ["0.35", "0.5", "1"]
    assert budget["budgets"]["0.35"]["compute_ratio_encoder"] == 0.36
    wer, low, high = budget["budgets"]["0.35"]["wer"]["test_clean"]
    assert wer == 7.5 and low <= wer <= high
    assert dedicated["role"] == "gated" and dedicated["target_budget"] == 0.35 and "budgets" not in dedicated
    assert dedicated["unit_rates"] == {"attention": [0.0, 0.5], "ffn": [1.0, 0.3]}
    assert dedicated["dynamic_saving_share"] == 0.4


def test_a_smaller_dense_model_after_the_reference_is_a_static_control():
    from report import mark_static_controls

    summary = [{"role": "dense", "gflops_per_audio_second": 0.10}, {"role": "dense", "gflops_per_audio_second": 0.037},
               {"role": "dense", "gflops_per_audio_second": 0.095}, {"role": "gated", "gflops_per_audio_second": 0.035}]
    mark_static_controls(summary)
    assert [m["role"] for m in summary] == ["dense", "static", "dense", "gated"]
    assert summary[1]["compute_ratio_vs_reference"] == 0.37 and "compute_ratio_vs_reference" not in summary[2]
    toolkit_first = [{"role": "toolkit", "gflops_per_audio_second": 0.4}, {"role": "dense", "gflops_per_audio_second": 0.1}]
    mark_static_controls(toolkit_first)
    assert toolkit_first[1]["role"] == "dense"  # no dense reference: nothing is a control


def test_decodings_are_paired_with_the_static_control_and_the_dedicated_model_of_their_compute(tmp_path):
    """Issue 13: the gated models against the dense model of equal compute, and a budget-conditioned model's
    budgets against the dedicated model of that compute, on the same utterances."""
    from report import add_statistics, compare_at_equal_compute, summarize

    dense = "encoder: amortized_transformer\nencoder_conf:\n    gate_unit: none\n"
    gated = "encoder: amortized_transformer\nencoder_conf:\n    gate_unit: unit\n"
    dump, exps = _decoded_models(tmp_path, {  # compute here: GFLOPs per second
        "asr_dense": (dense, [("", None, 1.0, 1)]),
        "asr_static": (dense, [("", None, 0.6, 4)]),
        "asr_gated": (gated + "model_conf:\n    compute_regularizer: budget\n    compute_target: 0.6\n",
                      [("", None, 0.6, 2)]),
        "asr_budget": (gated + "    budget_conditioning: true\nmodel_conf:\n    compute_regularizer: budget\n",
                       [("_b1.0", 1.0, 1.01, 1), ("_b0.6", 0.6, 0.62, 6), ("_frozen0.6", 0.6, 0.58, 8)]),
    })
    frozen = exps[3] / "decode_test_clean_frozen0.6" / "summary.json"  # the budget's units frozen to their majority
    frozen.write_text(json.dumps({**json.loads(frozen.read_text()), "frozen_units": {"attention": [1], "ffn": [0]},
                                  "attention_rates": [1.0], "ffn_rates": [0.0]}))
    rows = gather(dump, ["test_clean"], exps)
    assert [(r["decode"], r["frozen"]) for r in rows if r["model"] == "asr_budget"] == [
        ("decode_test_clean_b0.6", False), ("decode_test_clean_b1.0", False), ("decode_test_clean_frozen0.6", True)]
    add_statistics(rows, resamples=100)
    summary = summarize(rows, exps, ["test_clean"])
    compare_at_equal_compute(summary, rows, resamples=100)
    _, static, dedicated, budget = summary
    assert static["role"] == "static" and "vs_static" not in static["sets"]["test_clean"]
    versus = dedicated["sets"]["test_clean"]["vs_static"]
    assert versus["model"] == "asr_static" and versus["delta"] == -5.0 and versus["low"] <= -5.0 <= versus["high"]
    at_06 = budget["budgets"]["0.6"]
    assert at_06["vs_static"]["test_clean"]["delta"] == 5.0
    assert at_06["vs_dedicated"]["test_clean"]["model"] == "asr_gated" and at_06["vs_dedicated"]["test_clean"]["delta"] == 10.0
    assert at_06["vs_baseline"]["test_clean"]["delta"] == 12.5  # 6 wrong words against the dense model's 1, of 40
    assert "vs_static" not in budget["budgets"]["1"] and "vs_dedicated" not in budget["budgets"]["1"]  # none near 1
    assert sorted(budget["budgets"]) == ["0.6", "1"] and budget["decoding"] == "decode_<set>_b1.0"
    control = budget["frozen"]["0.6"]  # against the same model's dynamic decisions at 0.6, the same utterances
    assert control["compute_ratio_encoder"] == 0.58 and control["wer"]["test_clean"][0] == 20.0
    assert control["unit_rates"] == {"attention": [1.0], "ffn": [0.0]}
    assert control["vs_dynamic"]["test_clean"]["delta"] == 5.0 and "vs_static" not in control


def test_another_checkpoints_decodings_are_read_from_their_own_folder(tmp_path):
    """run.sh --inference_model valid.loss.best.pth: decode_model_valid.loss.best/, beside the default's."""
    import shutil

    from report import decode_dirs, inference_model_dir, inference_model_tag, summarize

    dense = "encoder: amortized_transformer\nencoder_conf:\n    gate_unit: none\n"
    dump, (exp,) = _decoded_models(tmp_path, {"asr_dense": (dense, [("", None, 1.0, 1)])})
    assert inference_model_tag("valid.loss.ave.pth") == "" and inference_model_dir(exp) == exp
    assert inference_model_tag("valid.loss.best.pth") == "_model_valid.loss.best"
    assert inference_model_tag("sub/3epoch.pth") == "_model_sub_3epoch"
    best = inference_model_dir(exp, "valid.loss.best.pth")
    assert best == exp / "decode_model_valid.loss.best"
    with pytest.raises(FileNotFoundError, match="run stage 5 .* with --inference_model valid.loss.best.pth"):
        decode_dirs(exp, "test_clean", inference_model="valid.loss.best.pth")
    best.mkdir()
    shutil.copytree(exp / "decode_test_clean", best / "decode_test_clean")
    (best / "decode_test_clean" / "1best_recog" / "text").write_text(
        "".join(f"1-1-{i:04d} A B C D\n" for i in range(10)))  # this checkpoint makes no error
    rows = gather(dump, ["test_clean"], [exp], inference_model="valid.loss.best.pth")
    assert [(r["decode"], r["wer"]) for r in rows] == [("decode_test_clean", 0.0)]
    assert gather(dump, ["test_clean"], [exp])[0]["wer"] == 2.5  # the default checkpoint's decoding is untouched
    (model,) = summarize(rows, [exp], ["test_clean"], inference_model="valid.loss.best.pth")
    assert model["inference_model"] == "valid.loss.best.pth" and model["wer"]["test_clean"][0] == 0.0
