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
