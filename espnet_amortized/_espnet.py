"""Every ESPnet-internal import of the package lives here.

ESPnet has no stable plugin API; pinning ``espnet==202511`` and importing its
internals from one module keeps an upgrade to one place to check.
"""

from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
from espnet.nets.pytorch_backend.transformer.embedding import StreamPositionalEncoding
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (
    PositionwiseFeedForward,
)
from espnet.nets.pytorch_backend.transformer.subsampling import (
    Conv2dSubsampling,
    Conv2dSubsampling6,
)
from espnet2.asr.encoder.abs_encoder import AbsEncoder

__all__ = [
    "AbsEncoder",
    "Conv2dSubsampling",
    "Conv2dSubsampling6",
    "LayerNorm",
    "MultiHeadedAttention",
    "PositionwiseFeedForward",
    "StreamPositionalEncoding",
]


def asr_task_module():
    """``espnet2.tasks.asr`` (its import costs ~10 s, so only on demand)."""
    import espnet2.tasks.asr as asr_task

    return asr_task


def espnet_asr_model_class():
    from espnet2.asr.espnet_model import ESPnetASRModel

    return ESPnetASRModel


def asr_inference_main(cmd=None):
    from espnet2.bin.asr_inference import main

    return main(cmd)


def speech2text_class():
    from espnet2.bin.asr_inference import Speech2Text

    return Speech2Text


def asr_task_class():
    from espnet2.tasks.asr import ASRTask

    return ASRTask


def text_converters(token_type: str, bpemodel, token_list):
    """ESPnet's tokenizer and token-id converter for a trained model's settings."""
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    return build_tokenizer(token_type=token_type, bpemodel=bpemodel), TokenIDConverter(token_list=token_list)


# ESPnet's asr_transducer task: its own streaming transducer (a block-list encoder with dynamic chunk
# training), the toolkit baseline; our encoder plugs into the asr task, not this one.
def asr_transducer_task_class():
    from espnet2.tasks.asr_transducer import ASRTransducerTask

    return ASRTransducerTask


def asr_transducer_train_main(cmd=None):
    """ESPnet's ``espnet2.bin.asr_transducer_train.main``."""
    from espnet2.bin.asr_transducer_train import main

    return main(cmd)


def asr_transducer_speech2text_class():
    """``espnet2.bin.asr_transducer_inference.Speech2Text`` (offline and ``streaming_decode``)."""
    from espnet2.bin.asr_transducer_inference import Speech2Text

    return Speech2Text
