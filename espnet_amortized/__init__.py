"""espnet-amortized: a compute-cost-amortized streaming Transformer-Transducer for ESPnet.

``import espnet_amortized`` registers the encoder and model with ESPnet, so
that ESPnet's own ``Speech2Text`` can load a trained model.
"""

from espnet_amortized.registry import register

__version__ = "0.1.0"
__all__ = ["register", "__version__"]

register()
