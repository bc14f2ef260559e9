"""ESPnet's offline ``asr_inference`` (incl. transducer beam search) for our models::

    python -m espnet_amortized.bin.asr_inference --asr_train_config exp/.../config.yaml \
        --asr_model_file exp/.../valid.loss.best.pth --data_path_and_name_and_type ...
"""

from espnet_amortized import register
from espnet_amortized._espnet import asr_inference_main

register()

if __name__ == "__main__":
    asr_inference_main()
