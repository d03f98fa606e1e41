"""ts: source: a hand-written .ts pair round-trips; every broken file is a DataError, never a traceback."""

import numpy as np
import pytest

from cnnlstm.data import load_dataset, read_ts
from cnnlstm.errors import ConfigError, DataError

HEADER = """# a toy problem
@problemName Toy
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true walking running
@data
"""
# Two channels, unequal lengths, string labels: (C, T_i) per line in the file.
TRAIN = [
    ([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "walking"),
    ([[0.5, 0.25], [7.0, 8.0]], "running"),
    ([[9.0, 8.0, 7.0, 6.0], [1.5, 2.5, 3.5, 4.5]], "walking"),
]
TEST = [([[3.0, 1.0], [2.0, 0.0]], "running"), ([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], "walking")]


def ts_text(rows, header=HEADER):
    lines = [":".join(",".join(repr(v) for v in ch) for ch in channels) + f":{label}" for channels, label in rows]
    return header + "\n".join(lines) + "\n"


@pytest.fixture
def pair(tmp_path):
    (tmp_path / "Toy_TRAIN.ts").write_text(ts_text(TRAIN))
    (tmp_path / "Toy_TEST.ts").write_text(ts_text(TEST))
    return tmp_path / "Toy_TRAIN.ts"


def test_round_trip_keeps_values_lengths_and_labels(pair):
    bundle = load_dataset(f"ts:{pair}")
    assert bundle.info.class_names == ["running", "walking"]  # sorted training labels
    assert bundle.info.model_kwargs == {"num_classes": 2, "in_channels": 2}
    for split, rows in ((bundle.train, TRAIN), (bundle.test, TEST)):
        assert len(split) == len(rows)
        for i, (channels, label) in enumerate(rows):
            np.testing.assert_array_equal(split[i]["x"].numpy(), np.array(channels, dtype=np.float32).T)  # (T, C)
            assert int(split[i]["y"]) == ["running", "walking"].index(label)


def test_explicit_test_file(tmp_path):
    (tmp_path / "a.ts").write_text(ts_text(TRAIN))
    (tmp_path / "b.ts").write_text(ts_text(TEST))
    bundle = load_dataset(f"ts:{tmp_path / 'a.ts'}", test=str(tmp_path / "b.ts"))
    assert len(bundle.test) == 2
    with pytest.raises(ConfigError, match="test=PATH"):
        load_dataset(f"ts:{tmp_path / 'a.ts'}")


def test_every_truncation_is_a_data_error_or_a_shorter_valid_file(tmp_path):
    text = ts_text(TRAIN)
    data_start = text.index("@data\n") + len("@data\n")
    path = tmp_path / "cut_TRAIN.ts"
    for k in range(len(text)):
        path.write_text(text[:k])
        at_line_end = k > data_start and (text[k - 1] == "\n" or text[k] == "\n")
        try:
            x, y = read_ts(path)
        except DataError:
            continue
        assert at_line_end, f"cut at byte {k} ({text[:k][-20:]!r}) loaded without error"
        assert len(y) == text[data_start:k].strip("\n").count("\n") + 1


def test_cut_inside_a_row_mentions_truncation(tmp_path):
    text = ts_text(TRAIN)
    path = tmp_path / "cut_TRAIN.ts"
    path.write_text(text[: text.rindex(",")])
    with pytest.raises(DataError, match="cut off"):
        read_ts(path)


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin_TRAIN.ts"
    path.write_bytes(ts_text(TRAIN).replace("running", "caf\u00e9").replace("walking", "tea").encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 text \(invalid byte at line 8\)"):
        read_ts(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1.0,?,3.0:4.0,5.0,6.0:walking", "NaN/inf"),  # a missing value
        (":1.0:walking", "could not be read"),  # a zero-length channel
        ("1.0,2.0:3.0,4.0:jumping", "not declared in @classLabel"),
    ],
)
def test_bad_rows_are_data_errors(tmp_path, row, message):
    (tmp_path / "Bad_TRAIN.ts").write_text(ts_text(TRAIN) + row + "\n")
    (tmp_path / "Bad_TEST.ts").write_text(ts_text(TEST))
    with pytest.raises(DataError, match=message):
        load_dataset(f"ts:{tmp_path / 'Bad_TRAIN.ts'}")


def test_blank_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "blank_TRAIN.ts"
    path.write_text(HEADER + "\n" + ts_text(TRAIN, ""))  # line 10, right after @data, is empty
    with pytest.raises(DataError, match="line 10 is blank"):
        read_ts(path)


def test_missing_file_and_single_class(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"ts:{tmp_path / 'nope_TRAIN.ts'}")
    (tmp_path / "One_TRAIN.ts").write_text(ts_text([r for r in TRAIN if r[1] == "walking"]))
    (tmp_path / "One_TEST.ts").write_text(ts_text(TEST))
    with pytest.raises(DataError, match="only class 'walking'"):
        load_dataset(f"ts:{tmp_path / 'One_TRAIN.ts'}")


def test_unseen_test_label_is_named(tmp_path):
    header = HEADER.replace("walking running", "walking running jumping")
    (tmp_path / "U_TRAIN.ts").write_text(ts_text(TRAIN, header))
    (tmp_path / "U_TEST.ts").write_text(ts_text([*TEST, ([[1.0], [2.0]], "jumping")], header))
    with pytest.raises(DataError, match="'jumping' never occur in training"):
        load_dataset(f"ts:{tmp_path / 'U_TRAIN.ts'}")
