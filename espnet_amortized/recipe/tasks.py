"""Which ESPnet task trains a config (no ESPnet import: the recipe asks it before every stage).

``asr_transducer`` (ESPnet's own streaming transducer) when the config's
``encoder_conf`` has a ``body_conf``, the block list that only that task's
encoder takes (as ESPnet's asr_transducer recipes write it); else ``asr``
(our encoder and every encoder of ESPnet's asr task). A missing or
unreadable config is ``asr``: ESPnet then says what is wrong with it.
"""

import pathlib

TASKS = ("asr", "asr_transducer")


def task_of(config) -> str:
    import yaml

    try:
        conf = yaml.safe_load(pathlib.Path(config).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return "asr"
    encoder_conf = conf.get("encoder_conf") if isinstance(conf, dict) else None
    return "asr_transducer" if isinstance(encoder_conf, dict) and "body_conf" in encoder_conf else "asr"


def budget_conditioned(config) -> bool:
    """Whether a training config's encoder takes a compute budget (``encoder_conf.budget_conditioning``)."""
    import yaml

    conf = yaml.safe_load(pathlib.Path(config).read_text(encoding="utf-8")) or {}
    encoder_conf = conf.get("encoder_conf") if isinstance(conf, dict) else None
    return bool(isinstance(encoder_conf, dict) and encoder_conf.get("budget_conditioning", False))
