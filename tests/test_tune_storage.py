"""Where a study lives: storage URLs as the user wrote them, passwords kept out of files and logs,
and a study directory's tune.json."""

import json

import pytest

from charrnn.errors import CharrnnError
from charrnn.tune_storage import STUDY_FILE, masked_url, read_manifest, with_driver, write_manifest


class Config:
    def __init__(self, corpus, storage):
        self.corpus, self.storage = corpus, storage


def test_postgresql_urls_get_the_installed_driver_and_others_stay():
    assert with_driver("postgresql://u:p@host/db") == "postgresql+psycopg://u:p@host/db"
    assert with_driver("postgres://u@host/db") == "postgresql+psycopg://u@host/db"
    assert with_driver("sqlite:////tmp/study.db") == "sqlite:////tmp/study.db"
    assert with_driver("mysql://u:p@host/db") == "mysql://u:p@host/db"


def test_passwords_are_hidden_from_what_is_shown_and_written(tmp_path):
    url = "postgresql://tuner:s3cret@db.example:5432/studies"
    assert "s3cret" not in masked_url(url) and "tuner" in masked_url(url)
    assert masked_url(with_driver(url)) == masked_url(url)  # shown as the user wrote it
    assert "s3cret" not in masked_url("not a url://tuner:s3cret@host")
    write_manifest(tmp_path, Config(tmp_path / "corpus.txt", url), "study-3min")
    text = (tmp_path / STUDY_FILE).read_text(encoding="utf-8")
    assert "s3cret" not in text
    manifest = read_manifest(tmp_path)
    assert manifest["study"] == "study-3min" and manifest["password_hidden"] is True


def test_a_directory_that_is_not_a_study_is_one_line(tmp_path):
    with pytest.raises(CharrnnError, match="is not a study directory"):
        read_manifest(tmp_path)
    (tmp_path / STUDY_FILE).write_text(json.dumps(["not", "a", "study"]), encoding="utf-8")
    with pytest.raises(CharrnnError, match="does not describe a study"):
        read_manifest(tmp_path)
    (tmp_path / STUDY_FILE).write_text("{", encoding="utf-8")
    with pytest.raises(CharrnnError, match="cannot read"):
        read_manifest(tmp_path)
