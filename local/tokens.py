#!/usr/bin/env python3
"""Train a sentencepiece model on the training transcripts and write ESPnet's token list.

    python local/tokens.py --text dump/fbank/train_clean_100/text --nbpe 128 --out data/token_list/bpe128

Writes ``bpe.model`` and ``tokens.txt``: ``<blank>``, ``<unk>``, the
sentencepiece pieces in id order, ``<sos/eos>`` (one per line), the layout
ESPnet's asr.sh produces and ``--token_list``/``--bpemodel`` expect.
"""

import argparse
import logging
import pathlib

log = logging.getLogger("tokens")
BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"


def train_bpe(text: pathlib.Path, out: pathlib.Path, nbpe: int, model_type: str = "unigram") -> pathlib.Path:
    import sentencepiece

    out.mkdir(parents=True, exist_ok=True)
    sentences = [line.split(maxsplit=1)[1] for line in text.read_text(encoding="utf-8").splitlines() if len(line.split(maxsplit=1)) == 2]
    if not sentences:
        raise ValueError(f"{text}: no transcripts to train sentencepiece on")
    corpus = out / "train_text.txt"
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "bpe"),
        vocab_size=nbpe,
        model_type=model_type,
        character_coverage=1.0,
        input_sentence_size=100_000_000,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        minloglevel=2,
    )
    return out / "bpe.model"


def write_token_list(model: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    tokens = [BLANK, UNK] + [p for p in pieces if p not in (UNK, "<s>", "</s>")] + [SOS_EOS]
    out.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", type=pathlib.Path, required=True, help="Kaldi text file (utt WORDS...)")
    parser.add_argument("--nbpe", type=int, default=128)
    parser.add_argument("--model_type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (tokens) %(message)s")
    model = train_bpe(args.text, args.out, args.nbpe, args.model_type)
    tokens = write_token_list(model, args.out / "tokens.txt")
    log.info("%s: %d tokens", tokens, sum(1 for _ in tokens.open()))


if __name__ == "__main__":
    main()
