"""``AmortizedASRTask``: ESPnet's ASRTask whose optimizers count the model's updates.

Everything else is ESPnet's (parser, model building, trainer, collect_stats);
``espnet_amortized.bin.asr_train`` runs this task's ``main``.
"""

from espnet_amortized._espnet import asr_task_class
from espnet_amortized.updates import count_updates

ASRTask = asr_task_class()


class AmortizedASRTask(ASRTask):
    @classmethod
    def build_optimizers(cls, args, model):
        optimizers = super().build_optimizers(args, model)
        # ESPnet steps every optimizer once per update: a hook on each would count an update several times.
        count_updates(model, optimizers[0])
        return optimizers
