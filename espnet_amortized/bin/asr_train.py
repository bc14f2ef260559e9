"""ESPnet's ``asr_train`` with ``amortized_transformer`` / ``amortized_espnet`` registered.

Accepts every ESPnet ASR option and config, stock encoders included, so
baselines and amortized models train through the same path::

    python -m espnet_amortized.bin.asr_train --config conf/train.yaml ...
    python -m espnet_amortized.bin.asr_train --help

It is ESPnet's ASRTask with one addition: the optimizer counts the amortized
model's updates (``espnet_amortized.task``). Multi-GPU workers re-import this
module, so ``register()`` runs in each.
"""

from espnet_amortized import register
from espnet_amortized.bin import run_training

register()

from espnet_amortized.task import AmortizedASRTask  # noqa: E402  (after register: the task reads the choices)


def main(cmd=None):
    AmortizedASRTask.main(cmd=cmd)


if __name__ == "__main__":
    run_training(main)
