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
    assert "| asr_amortized | - | test_clean | 0.5 | 25.00 (0.0/25.0/0.0) | - | - | 0.400 |" in table


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
    }))
    rows = gather(dump, ["test_clean"], [tmp_path / "asr_amortized"], mode="streaming")
    table = format_markdown(rows, "streaming")
    assert "| piece latency mean / p95 ms | algorithmic latency ms |" in table.splitlines()[0]
    assert table.splitlines()[2].endswith("| 0.0100 | 0.0020 | 4 | 1.2 / 7.5 | 960 |")
    assert table.splitlines()[1].count("---") == 15
