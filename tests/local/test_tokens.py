import sentencepiece

from tokens import train_bpe, write_token_list


def test_token_list_has_espnet_layout(tmp_path):
    text = tmp_path / "text"
    sentences = ["THE RED CAT SEES A DOG", "ANNA WRITES SIX LETTERS", "A SMALL BIRD SINGS TODAY"] * 20
    text.write_text("".join(f"utt{i:03d} {s}\n" for i, s in enumerate(sentences)))
    model = train_bpe(text, tmp_path / "bpe", nbpe=20)
    tokens = write_token_list(model, tmp_path / "tokens.txt").read_text().splitlines()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert len(tokens) == len(set(tokens)) == 20 + 2  # spm's <unk> is ours; plus <blank> and <sos/eos>
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    pieces = {p for s in sentences for p in processor.encode(s, out_type=str)}
    assert pieces <= set(tokens)
