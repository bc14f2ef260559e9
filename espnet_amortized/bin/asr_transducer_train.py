"""ESPnet's ``asr_transducer_train`` (the toolkit's own streaming transducer) with our RNN-T loss.

That task's model imports warp-transducer's ``RNNTLoss``, which the package
registry does not have; ``register()`` provides it, backed by torchaudio's
``rnnt_loss``, exactly as for the asr task. Accepts every option of
``espnet2.bin.asr_transducer_train``::

    python -m espnet_amortized.bin.asr_transducer_train --config conf/tuning/train_espnet_transducer_conformer.yaml ...
    python -m espnet_amortized.bin.asr_transducer_train --help

Multi-GPU workers re-import this module, so ``register()`` runs in each.
"""

from espnet_amortized import register
from espnet_amortized._espnet import asr_transducer_train_main
from espnet_amortized.bin import run_training

register()

if __name__ == "__main__":
    run_training(asr_transducer_train_main)
