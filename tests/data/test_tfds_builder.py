"""prepare_tfds: local files -> ArrayRecord -> data source -> grain batches; caching by fingerprint."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gift_jax.data.records import DataFormatError
from gift_jax.data.sft_examples import build_sft_examples
from gift_jax.data.sft_pipeline import make_eval_batches, make_sft_iterator
from gift_jax.data.sft_split import SFTSplit
from gift_jax.data.tfds_builder import prepare_tfds
from gift_jax.data.tokenizer import load_tokenizer

TRAIN = [
    {
        "sft_prompt": f"What is {i} + 3? Please reason step by step.",
        "solution": f"Add: \\boxed{{{i + 3}}}." * (1 + i % 4),
    }
    for i in range(11)
] + [{"sft_prompt": "Empty one", "solution": ""}]
VALIDATION = [{"q": "Solve for x: 3x + 1 = 10.", "a": "So x = 3."}, {"q": "Check.", "a": "Done."}]


@pytest.fixture
def files(tmp_path):
    train = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(TRAIN), train)
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(json.dumps(row) + "\n" for row in VALIDATION))
    return train, validation


def prepare(files, model_dir, data_dir, **kwargs):
    train, _ = files
    return prepare_tfds({"train": train}, model_dir=model_dir, data_dir=data_dir, max_length=64, **kwargs)


def test_prepared_splits_hold_the_tokenized_samples(files, qwen_style_model_dir, tmp_path):
    train, validation = files
    # All splits of one dataset share the column keys, so give the validation file the train keys.
    validation.write_text("".join(json.dumps({"sft_prompt": r["q"], "solution": r["a"]}) + "\n" for r in VALIDATION))
    prepared = prepare_tfds(
        {"train": train, "validation": validation},
        model_dir=qwen_style_model_dir,
        data_dir=tmp_path / "tfds",
        max_length=64,
    )
    assert prepared.stats["train"] == {
        "num_rows": 12,
        "num_kept": 11,
        "num_dropped_empty_response": 1,
        "num_dropped_prompt_too_long": 0,
        "num_truncated": prepared.stats["train"]["num_truncated"],
    }
    assert prepared.stats["train"]["num_truncated"] > 0  # the longest solutions exceed 64 tokens
    assert prepared.stats["validation"]["num_kept"] == 2

    tokenizer = load_tokenizer(qwen_style_model_dir)
    expected = list(build_sft_examples([(r["sft_prompt"], r["solution"]) for r in TRAIN], tokenizer, max_length=64))
    split = prepared.split("train")
    assert len(split) == len(expected) == 11
    assert split.pad_id == tokenizer.pad_id and split.max_length == 64
    for index, example in enumerate(expected):
        record = split.source[index]
        np.testing.assert_array_equal(record["token_ids"], example.token_ids)
        np.testing.assert_array_equal(record["loss_mask"], example.loss_mask)
        assert record["row"] == example.row and split.num_tokens[index] == len(example.token_ids)
    with pytest.raises(KeyError, match="no split 'test'"):
        prepared.split("test")


def test_batches_from_tfds_equal_batches_from_memory(files, qwen_style_model_dir, tmp_path):
    prepared = prepare(files, qwen_style_model_dir, tmp_path / "tfds")
    on_disk = prepared.split("train")
    in_memory = SFTSplit.from_examples(
        [
            e
            for e in build_sft_examples(
                [(r["sft_prompt"], r["solution"]) for r in TRAIN], load_tokenizer(qwen_style_model_dir), max_length=64
            )
        ],
        pad_id=on_disk.pad_id,
        max_length=64,
    )
    kwargs = dict(batch_size=2, seed=11, num_epochs=2, process_index=1, process_count=2, bucket_lengths=(16, 32, 64))
    for a, b in zip(make_sft_iterator(on_disk, **kwargs), make_sft_iterator(in_memory, **kwargs), strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    eval_batches = list(make_eval_batches(on_disk, batch_size=4, bucket_lengths=(16, 32, 64)))
    assert sum(b["attention_mask"].any(axis=1).sum() for b in eval_batches) == 11


def test_same_inputs_reuse_the_dataset_and_changes_make_a_new_one(files, qwen_style_model_dir, tmp_path):
    data_dir = tmp_path / "tfds"
    first = prepare(files, qwen_style_model_dir, data_dir)
    record_files = sorted(p for p in (tmp_path / "tfds").rglob("*array_record*"))
    stamps = [(p, p.stat().st_mtime_ns) for p in record_files]

    again = prepare(files, qwen_style_model_dir, data_dir)
    assert again.data_dir == first.data_dir
    assert [(p, p.stat().st_mtime_ns) for p in record_files] == stamps  # nothing rewritten

    other_template = prepare(files, qwen_style_model_dir, data_dir, chat_template="plain")
    assert other_template.data_dir != first.data_dir
    other_max_length = prepare_tfds(
        {"train": files[0]}, model_dir=qwen_style_model_dir, data_dir=data_dir, max_length=96
    )
    assert other_max_length.data_dir not in (first.data_dir, other_template.data_dir)

    train, _ = files
    pq.write_table(pa.Table.from_pylist(TRAIN[:5]), train)
    changed_file = prepare(files, qwen_style_model_dir, data_dir)
    assert changed_file.data_dir not in (first.data_dir, other_template.data_dir, other_max_length.data_dir)
    assert len(changed_file.split("train")) == 5
    assert len(first.split("train")) == 11  # the earlier dataset is still intact


def test_bad_inputs_fail_with_file_and_row(files, qwen_style_model_dir, tmp_path):
    train, validation = files
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet.*split 'train'"):
        prepare_tfds({"train": tmp_path / "missing.parquet"}, model_dir=qwen_style_model_dir, data_dir=tmp_path / "t")
    with pytest.raises(DataFormatError, match=r"validation\.jsonl.*missing key 'sft_prompt'"):
        prepare_tfds({"validation": validation}, model_dir=qwen_style_model_dir, data_dir=tmp_path / "t")
    with pytest.raises(ValueError, match=r"train\.parquet: row \d+ has \d+ tokens .*max_length=64"):
        prepare(files, qwen_style_model_dir, tmp_path / "t", truncation="error")
    # A failed preparation leaves no version folder that a later call would take as finished.
    assert not list((tmp_path / "t").rglob("1.0.0"))


def test_preparing_says_what_is_tokenized_not_a_download(files, qwen_style_model_dir, tmp_path, capsys, caplog):
    prepare(files, qwen_style_model_dir, tmp_path / "tfds")
    out = capsys.readouterr().out
    assert f"tokenizing train {files[0]} with {qwen_style_model_dir}'s tokenizer into {tmp_path / 'tfds'}" in out
    assert "Downloading" not in out and "downloaded" not in out
    assert "custom data configuration" not in caplog.text
    prepare(files, qwen_style_model_dir, tmp_path / "tfds")  # reused: nothing to say
    assert "tokenizing" not in capsys.readouterr().out
