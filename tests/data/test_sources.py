import pytest

from psr.data.sources import check_source, fetch_ferplus_votes


def test_ferplus_check_names_what_is_missing_and_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        check_source("ferplus", tmp_path)
    message = str(err.value)
    assert f"missing {tmp_path / 'fer2013.csv'}" in message and "kaggle.com" in message
    assert f"missing {tmp_path / 'fer2013new.csv'}" in message and "microsoft/FERPlus" in message
    assert f"put it at {tmp_path / 'fer2013.csv'}" in message


def test_ferplus_check_finds_files_and_accepts_the_icml_variant(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    raw.write_fer_pair(tmp_path, usages, votes, names, icml=True)
    found = check_source("ferplus", tmp_path)
    assert found == {
        "pixels": tmp_path / "icml_face_data.csv",
        "votes": tmp_path / "fer2013new.csv",
    }
    (tmp_path / "fer2013new.csv").rename(tmp_path / "elsewhere.csv")
    with pytest.raises(FileNotFoundError, match=r"fer2013new\.csv"):
        check_source("ferplus", tmp_path)
    assert check_source("ferplus", tmp_path, votes=tmp_path / "elsewhere.csv")["votes"].is_file()


@pytest.mark.parametrize(
    ("dataset", "missing", "hint"),
    [
        ("rafdb", "EmoLabel/list_patition_label.txt", "RAF-DB is released by its authors"),
        ("affectnet", "Manually_Annotated_file_lists/validation.csv", "licence agreement"),
        ("affectnet_compact", "val_set/annotations", "compact release"),
        ("folder", "train", "<root>/<split>/<class>"),
    ],
)
def test_other_datasets_name_the_missing_path_and_the_origin(tmp_path, dataset, missing, hint):
    with pytest.raises(FileNotFoundError) as err:
        check_source(dataset, tmp_path / "data")
    assert str(tmp_path / "data" / missing) in str(err.value) and hint in str(err.value)


def test_complete_rafdb_passes(tmp_path, raw):
    raw.write_rafdb(tmp_path, raw.rafdb_entries(1, 1))
    assert check_source("rafdb", tmp_path)["labels"].is_file()
    with pytest.raises(ValueError, match="unknown dataset"):
        check_source("fer2013", tmp_path)


def test_fetch_votes_from_a_local_copy(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    _, vote_file, _ = raw.write_fer_pair(tmp_path / "src", usages, votes, names)
    dest = fetch_ferplus_votes(tmp_path / "data" / "ferplus", local=vote_file)
    assert dest == tmp_path / "data" / "ferplus" / "fer2013new.csv"
    assert dest.read_bytes() == vote_file.read_bytes()


def test_fetch_rejects_a_bad_local_file_and_leaves_no_partial_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Usage,Image name\n")
    with pytest.raises(ValueError, match="wrong header"):
        fetch_ferplus_votes(tmp_path / "out", local=bad)
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        fetch_ferplus_votes(tmp_path / "out", local=tmp_path / "absent.csv")


def test_fetch_without_network_is_a_clean_error(tmp_path):
    # Port 9 (discard) on localhost refuses connections: the offline case, fast.
    with pytest.raises(
        ConnectionError, match=r"could not download .* Offline\? Copy fer2013new\.csv"
    ):
        fetch_ferplus_votes(tmp_path, url="http://127.0.0.1:9/fer2013new.csv", timeout=5)
    assert list(tmp_path.iterdir()) == []
