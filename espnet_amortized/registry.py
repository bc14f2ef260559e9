"""``register()``: the one place that changes ESPnet's global state."""

import importlib
import sys
import types

_registered = False


def _install_rnnt_loss() -> None:
    """Make ``from warprnnt_pytorch import RNNTLoss`` work without warp-transducer."""
    try:
        importlib.import_module("warprnnt_pytorch")
        return  # the real warp-transducer is installed: leave it alone
    except ImportError:
        pass
    from espnet_amortized.loss import RNNTLoss

    module = types.ModuleType("warprnnt_pytorch")
    module.__doc__ = "espnet_amortized: RNNTLoss backed by torchaudio.functional.rnnt_loss"
    module.RNNTLoss = RNNTLoss
    sys.modules["warprnnt_pytorch"] = module


def register() -> None:
    """Add ``amortized_transformer`` and ``amortized_espnet`` to ESPnet's ASR choices.

    ESPnet reads its choices from module-level dicts when a parser is built,
    so call this before ``ASRTask.get_parser()`` (our entry modules do).
    Idempotent.
    """
    global _registered
    if _registered:
        return
    from espnet_amortized._espnet import asr_task_module
    from espnet_amortized.encoder import AmortizedTransformerEncoder
    from espnet_amortized.model import AmortizedESPnetASRModel

    _install_rnnt_loss()
    asr_task = asr_task_module()
    asr_task.encoder_choices.classes["amortized_transformer"] = AmortizedTransformerEncoder
    asr_task.model_choices.classes["amortized_espnet"] = AmortizedESPnetASRModel
    _registered = True
