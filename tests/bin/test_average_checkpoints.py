import pytest
import torch

from espnet_amortized.bin.average_checkpoints import average_checkpoints, main


def _save_epochs(exp, values):
    exp.mkdir(parents=True, exist_ok=True)
    for epoch, value in values.items():
        torch.save({"weight": torch.full((2, 2), value), "updates": torch.tensor(epoch, dtype=torch.float64),
                    "batches_tracked": torch.tensor(epoch, dtype=torch.long)}, exp / f"{epoch}epoch.pth")


def test_floats_are_averaged_and_integers_summed_as_espnet_does(tmp_path):
    _save_epochs(tmp_path, {12: 1.0, 15: 4.0})
    out = average_checkpoints(tmp_path, [12, 15])
    assert out == tmp_path / "ave_12_15epoch.pth"
    average = torch.load(out)
    assert torch.equal(average["weight"], torch.full((2, 2), 2.5))
    assert average["updates"].item() == 13.5 and average["updates"].dtype == torch.float64
    assert average["batches_tracked"].item() == 27  # espnet2.main_funcs.average_nbest_models accumulates integers


def test_bad_requests_say_what_is_wrong_and_overwrite_nothing(tmp_path):
    _save_epochs(tmp_path, {12: 1.0, 15: 4.0})
    with pytest.raises(ValueError, match="two or more different epochs"):
        average_checkpoints(tmp_path, [12, 12])
    with pytest.raises(FileNotFoundError, match=r"no .*13epoch.pth \(kept in .*: 12epoch.pth, 15epoch.pth\)"):
        average_checkpoints(tmp_path, [12, 13])
    out = tmp_path / "mine.pth"
    out.write_text("results")
    with pytest.raises(FileExistsError, match="mine.pth exists"):
        main(["--exp", str(tmp_path), "--epochs", "12", "15", "--out", str(out)])
    assert out.read_text() == "results"
    torch.save({"other": torch.zeros(1)}, tmp_path / "16epoch.pth")
    with pytest.raises(ValueError, match="other parameters"):
        average_checkpoints(tmp_path, [15, 16])
