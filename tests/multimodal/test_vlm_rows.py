"""verl's VLM rows: `<image>` placeholders plus an `images` column, kept exactly through Parquet, checked on load."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from agentgym.config import load_config
from agentgym.rows.check import DataCheckError, Registered, require_valid_rows
from agentgym.multimodal.images import as_png, count_placeholders, load_image, with_image_parts
from agentgym.rows.parquet import write_rows_parquet
from agentgym.rollout.build import check_dataset
from agentgym.rows import read_rows


def _png(color: str, size=(20, 12)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def _row(n_placeholders: int, images: list, column: str = "images") -> dict:
    text = "Count the squares. " + " ".join(["<image>"] * n_placeholders)
    return {"data_source": "shapes", "prompt": [{"role": "user", "content": text}], column: images,
            "reward_model": {"style": "rule", "ground_truth": "3"},
            "extra_info": {"tools_kwargs": {"image_zoom_in": {"create_kwargs": {"image_index": 0}}}}}


def test_parquet_keeps_image_bytes_and_hf_image_dicts(tmp_path):
    raw = [_row(1, [_png("red")]), _row(2, [_png("blue"), _png("green", (7, 9))])]
    back = read_rows(str(write_rows_parquet(raw, tmp_path / "raw.parquet")))
    assert back == raw
    assert load_image(back[0]["images"][0]).getpixel((0, 0)) == (255, 0, 0)
    assert load_image(back[1]["images"][1]).size == (7, 9)
    hf = [_row(2, [{"bytes": _png("blue"), "path": None}, {"bytes": _png("green"), "path": "g.png"}])]
    back = read_rows(str(write_rows_parquet(hf, tmp_path / "hf.parquet")))
    assert back == hf  # the deliberate `path: None` included
    assert load_image(back[0]["images"][0]).getpixel((0, 0)) == (0, 0, 255)


def test_one_file_cannot_mix_bytes_and_image_dicts(tmp_path):
    from agentgym.errors import ConfigError

    mixed = [_row(1, [_png("red")]), _row(1, [{"bytes": _png("blue"), "path": None}])]
    with pytest.raises(ConfigError, match="JSON lines"):
        write_rows_parquet(mixed, tmp_path / "mixed.parquet")


def test_placeholder_image_mismatch_names_the_row_and_the_fix(tmp_path):
    rows = [_row(1, [_png("red")]), _row(2, [_png("red")]), _row(1, [b"not an image"])]
    with pytest.raises(DataCheckError) as err:
        require_valid_rows(rows, Registered.of(None, None))
    text = str(err.value)
    assert "row 1" in text and "2 `<image>` placeholder(s) but the row has 1 item(s) under `images`" in text
    assert "Fix: put one `<image>` in the prompt text per item of `images`" in text
    assert "row 2" in text and "not a readable image" in text
    assert "row 0" not in text


def test_data_image_key_picks_the_column(tmp_path):
    cfg = load_config(None, ["data.image_key=pictures"])
    check_dataset(cfg, [_row(1, [_png("red")], column="pictures")], registered=Registered.of(None, None))
    with pytest.raises(DataCheckError, match="under `pictures`"):
        check_dataset(cfg, [_row(1, [_png("red")])], registered=Registered.of(None, None))


def test_image_paths_load_relative_to_a_base_dir(tmp_path):
    (tmp_path / "a.png").write_bytes(_png("white"))
    assert as_png("a.png", base_dir=tmp_path) == _png("white")
    with pytest.raises(ValueError, match="is not a file"):
        load_image("missing.png", base_dir=tmp_path)


def test_placeholders_become_image_parts_in_order():
    messages = [{"role": "user", "content": "left <image> right <image>"}]
    parts = with_image_parts(messages)[0]["content"]
    assert parts == [{"type": "text", "text": "left "}, {"type": "image"}, {"type": "text", "text": " right "},
                     {"type": "image"}]
    assert count_placeholders(messages) == 2 == count_placeholders(with_image_parts(messages))
