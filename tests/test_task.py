import torch

from espnet_amortized.task import AmortizedASRTask
from tests.conftest import TOKENS


def test_the_task_is_espnets_with_optimizers_that_count_the_models_updates():
    from espnet2.tasks.asr import ASRTask

    assert issubclass(AmortizedASRTask, ASRTask)
    args = AmortizedASRTask.get_parser().parse_args(
        ["--output_dir", "unused", "--input_size", "80", "--encoder", "amortized_transformer",
         "--encoder_conf", "output_size=32", "--encoder_conf", "num_blocks=1", "--decoder", "transducer",
         "--model", "amortized_espnet", "--optim", "adam"]
    )
    args.token_list, args.normalize, args.frontend, args.specaug = list(TOKENS), None, None, None
    args.joint_net_conf = {"joint_space_size": 32}
    model = AmortizedASRTask.build_model(args)
    (optimizer,) = AmortizedASRTask.build_optimizers(args, model)
    optimizer.step()
    optimizer.step()
    assert int(model.num_updates) == 2 and int(model.encoder.num_updates) == 2
