"""Property-based tests (hypothesis): whatever bytes or values the readers and the served
model get, the answer is a result or the project's clear error (ValueError and subclasses,
naming the file), never another exception. Each test tries ``EXAMPLES`` generated inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

EXAMPLES = 150
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VOTES_HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
)

cells = st.one_of(
    st.integers(-3, 12).map(str),
    st.sampled_from(["", " ", "x", "1.5", "Training", "PublicTest", "fer0000000.png", '"']),
)
vote_lines = st.lists(
    st.one_of(
        st.lists(cells, min_size=10, max_size=13).map(",".join),
        st.text(max_size=40),
    ),
    max_size=8,
)


@SETTINGS
@given(lines=vote_lines, header=st.booleans())
def test_any_vote_file_reads_or_names_itself(tmp_path, lines, header):
    from psr.data.ferplus import read_votes

    path = tmp_path / "fer2013new.csv"
    path.write_text("\n".join(([VOTES_HEADER] if header else []) + lines) + "\n")
    try:
        table = read_votes(path)
    except ValueError as err:
        assert str(path) in str(err)
        return
    assert table.votes.shape == (len(table), 10) and (table.votes >= 0).all()


@SETTINGS
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_a_vote_file_or_image_give_a_clear_error(tmp_path, data):
    from psr.data.decode import read_image
    from psr.data.ferplus import read_votes

    path = tmp_path / "file"
    path.write_bytes(data)
    for reader in (read_votes, read_image):
        try:
            reader(path)
        except ValueError as err:
            assert str(path) in str(err)


@SETTINGS
@given(
    text=st.one_of(
        st.text(max_size=60),
        hnp.arrays(
            np.int64, st.sampled_from([2303, 2304, 2305]), elements=st.integers(-2, 257)
        ).map(lambda a: " ".join(map(str, a.tolist()))),
    )
)
def test_any_pixel_string_is_an_image_or_a_bad_image(text):
    from psr.data.records import BadImage, parse_pixels

    try:
        image = parse_pixels(text, "fer2013.csv line 2")
    except BadImage as err:
        assert "fer2013.csv line 2" in str(err)
        return
    assert image.shape == (48, 48, 1) and image.dtype == np.uint8


@SETTINGS
@given(lines=st.lists(st.text(max_size=50), max_size=6))
def test_any_rafdb_label_list_reads_or_names_the_line(tmp_path, lines):
    from psr.data.rafdb import read_label_file

    path = tmp_path / "list_patition_label.txt"
    path.write_text("\n".join(lines) + "\n")
    try:
        read_label_file(path)
    except ValueError as err:
        assert str(path) in str(err)


@SETTINGS
@given(lines=st.lists(st.lists(cells, max_size=8).map(",".join), max_size=6))
def test_any_affectnet_file_list_reads_or_names_the_line(tmp_path, lines):
    from psr.data.affectnet import read_file_list

    path = tmp_path / "training.csv"
    path.write_text("\n".join(lines) + "\n")
    try:
        list(read_file_list(path))
    except ValueError as err:
        assert str(path) in str(err)


payloads = st.one_of(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int64, np.float64, np.float32, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),
    ),
    st.lists(st.lists(st.integers(-1, 256), max_size=4), max_size=4),
)


@SETTINGS
@given(payload=payloads)
def test_any_payload_is_scored_or_refused_with_what_was_expected(payload):
    from pipeline.pyfunc import BadInput, as_images

    try:
        images = as_images(payload)
    except BadInput as err:
        assert "expected" in str(err) or "per request" in str(err)
        return
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] in (1, 3, 4)
    assert np.array_equal(
        images.astype(np.float64), np.asarray(payload, dtype=np.float64).reshape(images.shape)
    )


@SETTINGS
@given(
    data=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
        lambda inner: st.dictionaries(
            st.sampled_from(["train", "model", "epochs", "batch_size", "x", "phase1", "tune"]),
            inner,
            max_size=4,
        ),
        max_leaves=12,
    )
)
def test_any_params_document_validates_or_names_the_key(data):
    from pipeline.params import parse_params

    try:
        parse_params(data if isinstance(data, dict) else {"x": data}, "params.yaml")
    except ValueError as err:
        assert str(err).startswith(("params.yaml:", "invalid parameters:"))
