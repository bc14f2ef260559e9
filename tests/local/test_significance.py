import numpy as np
import pytest

from significance import bootstrap_interval, main, paired_bootstrap, read_per_utterance


def test_interval_holds_the_wer_and_narrows_with_more_utterances():
    rng = np.random.default_rng(0)
    widths = []
    for count in (50, 800):
        words = rng.integers(5, 15, size=count)
        errors = rng.binomial(words, 0.2)
        wer, low, high = bootstrap_interval(errors, words, resamples=500)
        assert low <= wer <= high and wer == pytest.approx(100 * errors.sum() / words.sum())
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_paired_test_of_identical_and_of_clearly_different_systems():
    table = {f"u{i}": (i % 3, 10) for i in range(100)}
    same = paired_bootstrap(table, dict(table), resamples=200)
    assert same["delta"] == 0 and same["low"] == same["high"] == 0 and same["p_not_worse"] == 1.0
    worse = {key: (errors + 1, words) for key, (errors, words) in table.items()}
    result = paired_bootstrap(table, worse, resamples=200)
    assert result["delta"] == pytest.approx(10.0) and result["low"] > 0 and result["p_not_worse"] == 0.0
    with pytest.raises(ValueError, match="different utterances"):
        paired_bootstrap(table, {"other": (1, 1)})


def test_command_line_reads_per_utterance_files(tmp_path, capsys):
    for name, errors in (("a.tsv", 1), ("b.tsv", 2)):
        (tmp_path / name).write_text("".join(f"u{i}\t{errors}\t10\n" for i in range(20)))
    assert read_per_utterance(tmp_path / "a.tsv")["u3"] == (1, 10)
    main([str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv"), "--resamples", "100"])
    out = capsys.readouterr().out
    assert "A: WER 10.00" in out and "B - A: +10.00" in out
