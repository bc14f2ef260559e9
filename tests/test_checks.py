import pytest
import yaml

from espnet_amortized.checks import check_tokenizer, load_asr_model


def test_matching_files_load(saved_model):
    model, args = load_asr_model(*saved_model)
    assert not model.training and len(args.token_list) == model.joint_network.lin_out.out_features


def test_token_list_that_does_not_match_the_model_is_a_clear_error(saved_model, tmp_path):
    config = yaml.safe_load(saved_model[0].read_text())
    config["token_list"] = config["token_list"][:-3] + ["<sos/eos>"]  # two tokens fewer than the output layer
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"model.pth does not match .*config.yaml: size mismatch .*another token list"):
        load_asr_model(tmp_path / "config.yaml", saved_model[1])


def test_missing_model_file_is_named(saved_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth: missing"):
        load_asr_model(saved_model[0], tmp_path / "nothing.pth")


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    from tokens import train_bpe, write_token_list

    out = tmp_path_factory.mktemp("bpe")
    text = out / "text"
    words = "THE CAT SAT ON A MAT WITH ANOTHER CAT AND A DOG THAT RAN".split()
    text.write_text("".join(f"u{i} {' '.join(words[i % 7:] + words[: i % 7])}\n" for i in range(200)))
    model = train_bpe(text, out / "a", 30)
    other = train_bpe(text, out / "b", 24)
    return model, write_token_list(model, out / "a" / "tokens.txt").read_text().split(), other


def test_bpe_model_must_match_the_token_list(bpe):
    model, token_list, other = bpe
    check_tokenizer("bpe", model, token_list, "config.yaml")  # matching: no error
    with pytest.raises(ValueError, match=r"b/bpe.model does not match the token list of config.yaml: 23 pieces vs 29 tokens"):
        check_tokenizer("bpe", other, token_list, "config.yaml")
    with pytest.raises(FileNotFoundError, match="missing.model: the BPE model named by config.yaml is missing"):
        check_tokenizer("bpe", model.parent / "missing.model", token_list, "config.yaml")
    check_tokenizer("char", None, ["<blank>", "A"])  # nothing to check for characters


def test_compute_knobs_are_checked_and_set():
    import pytest
    import torch

    from espnet_amortized.checks import set_compute_knobs
    from tests.conftest import small_encoder

    conditioned, plain = small_encoder(budget_conditioning=True), small_encoder()
    set_compute_knobs(conditioned, gate_threshold=0.3, compute_budget=0.35)
    assert conditioned.compute_budget == 0.35 and conditioned.gate_threshold == 0.3
    for bad in (-0.01, 1.5):
        with pytest.raises(ValueError, match=r"--compute_budget must be in \[0, 1\]"):
            set_compute_knobs(conditioned, compute_budget=bad)
    set_compute_knobs(plain)  # nothing asked: the trained model's knobs
    assert plain.gate_threshold == 0.5 and plain.compute_budget is None
    set_compute_knobs(plain, compute_budget=0.5)  # the allocation needs no budget input
    assert plain.compute_budget == 0.5
    for overrides, reason in ((dict(gate_unit="none"), "gate_unit 'none'"), (dict(arbitrator="local"), "arbitrator 'local'"),
                              (dict(decision_unit="chunk"), "decision_unit 'chunk'")):
        with pytest.raises(ValueError, match=f"--compute_budget 0.5: the budget allocation needs .*{reason}"):
            set_compute_knobs(small_encoder(**overrides), compute_budget=0.5)
    with pytest.raises(ValueError, match="--compute_budget 0.5: the encoder Linear has no gates"):
        set_compute_knobs(torch.nn.Linear(1, 1), compute_budget=0.5)


def test_decoders_refuse_a_budget_outside_the_unit_interval(saved_model, tmp_path):
    import pytest

    from espnet_amortized.bin import asr_decode
    from espnet_amortized.streaming import Speech2TextStreaming

    config, model = saved_model
    with pytest.raises(ValueError, match="--compute_budget must be in"):
        asr_decode.main(["--asr_train_config", str(config), "--asr_model_file", str(model), "--data", str(tmp_path),
                         "--output_dir", str(tmp_path / "out"), "--compute_budget", "1.5"])
    with pytest.raises(ValueError, match="--compute_budget must be in"):
        Speech2TextStreaming(config, model, compute_budget=-0.5)
    assert Speech2TextStreaming(config, model, compute_budget=0.5).model.encoder.compute_budget == 0.5


def test_frozen_units_from_takes_each_units_majority_and_names_what_is_wrong(tmp_path):
    import json

    import torch

    from espnet_amortized.checks import frozen_units_from, set_compute_knobs
    from tests.conftest import small_encoder

    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"attention_rates": [0.5, 0.49, 1.0], "ffn_rates": [0.0, 0.51, 0.05],
                                   "conv_rates": None}))
    frozen = frozen_units_from(summary)
    assert frozen == {"attention": [1, 0, 1], "ffn": [0, 1, 0]}
    encoder = small_encoder()
    set_compute_knobs(encoder, frozen_units=frozen)
    assert encoder.frozen_units == frozen
    with pytest.raises(FileNotFoundError, match="--frozen_units_from .*missing.json: missing"):
        frozen_units_from(tmp_path / "missing.json")
    summary.write_text(json.dumps({"compute_ratio_encoder": 1.0}))
    with pytest.raises(ValueError, match="no attention_rates/ffn_rates \\(not a gated model's decoding\\)"):
        frozen_units_from(summary)
    with pytest.raises(ValueError, match="--frozen_units_from: frozen_units\\['ffn'\\] must be 3 values"):
        set_compute_knobs(encoder, frozen_units={"attention": [1, 1, 1], "ffn": [1]})
    with pytest.raises(ValueError, match="--frozen_units_from: the encoder Linear has no gates"):
        set_compute_knobs(torch.nn.Linear(1, 1), frozen_units=frozen)
