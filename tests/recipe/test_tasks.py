"""The ESPnet task of a training config: asr, or asr_transducer for ESPnet's own streaming transducer."""

import pathlib

import pytest

from espnet_amortized.recipe.tasks import task_of

REPO = pathlib.Path(__file__).resolve().parents[2]
ASR_TRANSDUCER_CONFIGS = {"conf/tuning/train_espnet_transducer_conformer.yaml"}


@pytest.mark.parametrize("config", sorted(str(p.relative_to(REPO)) for p in (REPO / "conf").rglob("train_*.yaml")))
def test_every_recipe_config_has_the_task_its_encoder_belongs_to(config):
    expected = "asr_transducer" if config in ASR_TRANSDUCER_CONFIGS else "asr"
    assert task_of(REPO / config) == expected


def test_the_block_list_marks_the_asr_transducer_task(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("encoder_conf:\n    body_conf:\n    -   block_type: conformer\n")
    assert task_of(config) == "asr_transducer"
    config.write_text("encoder: conformer\nencoder_conf:\n    output_size: 64\n")
    assert task_of(config) == "asr"


def test_a_missing_or_broken_config_is_left_to_espnet_to_reject(tmp_path):
    assert task_of(tmp_path / "missing.yaml") == "asr"
    broken = tmp_path / "broken.yaml"
    broken.write_text("encoder_conf: [unclosed\n")
    assert task_of(broken) == "asr"
