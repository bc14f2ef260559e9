import pytest
import torch
import torchaudio

from espnet_amortized.loss import RNNTLoss, check_compute_options, compute_regularizer


def test_rnnt_loss_is_the_batch_mean_of_torchaudio_losses():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 4, 5, requires_grad=True)
    labels = torch.randint(1, 5, (2, 3), dtype=torch.int32)
    logit_lengths = torch.tensor([6, 5], dtype=torch.int32)
    label_lengths = torch.tensor([3, 2], dtype=torch.int32)
    loss = RNNTLoss(blank=0)(logits, labels, logit_lengths, label_lengths)
    per_utt = torchaudio.functional.rnnt_loss(logits, labels, logit_lengths, label_lengths, blank=0, reduction="none")
    assert loss.shape == () and torch.allclose(loss, per_utt.mean())
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_rnnt_loss_rejects_fastemit():
    with pytest.raises(ValueError, match="fastemit_lambda"):
        RNNTLoss(fastemit_lambda=0.01)


def test_regularizers():
    ratio = torch.tensor(0.7, requires_grad=True)
    assert float(compute_regularizer(ratio, "linear")) == pytest.approx(0.7)
    assert float(compute_regularizer(ratio, "target", 0.4)) == pytest.approx(0.3)
    assert float(compute_regularizer(ratio, "target_squared", 0.4)) == pytest.approx(0.09)
    assert float(compute_regularizer(torch.tensor(0.3), "target", 0.4)) == 0
    compute_regularizer(ratio, "target", 0.4).backward()
    assert float(ratio.grad) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "weight,kind,target,message",
    [(-0.1, "linear", 0.4, "compute_weight"), (0.1, "l1", 0.4, "compute_regularizer"),
     (0.1, "target", 0.0, "compute_target"), (0.1, "target", 1.5, "compute_target")],
)
def test_bad_compute_options(weight, kind, target, message):
    with pytest.raises(ValueError, match=message):
        check_compute_options(weight, kind, target)
