"""ESPnet's ``asr_train`` with ``amortized_transformer`` / ``amortized_espnet`` registered.

Accepts every ESPnet ASR option and config, stock encoders included, so
baselines and amortized models train through the same path::

    python -m espnet_amortized.bin.asr_train --config conf/train.yaml ...
    python -m espnet_amortized.bin.asr_train --help

Multi-GPU workers re-import this module, so ``register()`` runs in each.
"""

from espnet_amortized import register
from espnet_amortized._espnet import asr_train_main

register()

if __name__ == "__main__":
    asr_train_main()
