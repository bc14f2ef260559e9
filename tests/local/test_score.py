import pytest

from score import score, word_counts


def _write(path, entries):
    path.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    return path


def test_word_counts_on_fixed_strings():
    assert word_counts("A B C D", "A X C") == {"hits": 2, "substitutions": 1, "deletions": 1, "insertions": 0, "words": 4}
    assert word_counts("A B", "A B C") == {"hits": 2, "substitutions": 0, "deletions": 0, "insertions": 1, "words": 2}
    assert word_counts("A B", "")["deletions"] == 2


def test_score_writes_sclite_style_result(tmp_path):
    ref = _write(tmp_path / "ref", {"1-1-0000": "A B C D", "1-1-0001": "E F", "2-1-0000": "G H"})
    hyp = _write(tmp_path / "hyp", {"1-1-0000": "A X C", "1-1-0001": "E F"})
    summary = score(ref, hyp, tmp_path / "score_wer")
    # 1 sub + 1 del in the first, 2 deletions for the missing hypothesis, over 8 words
    assert summary["err"] == pytest.approx(100 * 4 / 8)
    assert summary["sentence_err"] == pytest.approx(100 * 2 / 3)
    assert summary["missing_hypotheses"] == 1
    result = (tmp_path / "score_wer" / "result.txt").read_text()
    assert "Sum/Avg" in result and "50.0" in result
    assert (tmp_path / "score_wer" / "hyp.trn").read_text().splitlines()[0] == "A X C (1-1-1-0000)"


def test_hypothesis_without_reference_is_an_error(tmp_path):
    ref = _write(tmp_path / "ref", {"a": "X"})
    hyp = _write(tmp_path / "hyp", {"a": "X", "b": "Y"})
    with pytest.raises(ValueError, match="no reference"):
        score(ref, hyp, tmp_path / "out")
