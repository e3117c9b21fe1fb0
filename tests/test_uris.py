"""URIs as shown in messages, logs, parameters and reports: passwords and query secrets masked."""

import pytest

from psr.uris import redact, split_credentials


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql+psycopg://bob:pa%40ss@db:5432/mlflow", "postgresql+psycopg://bob:***@db:5432/mlflow"),
        ("http://u:p@127.0.0.1:5000", "http://u:***@127.0.0.1:5000"),
        ("mysql://u:@h/db", "mysql://u:***@h/db"),
        ("postgresql://h/db?sslmode=require&password=x", "postgresql://h/db?sslmode=require&password=***"),
        (
            "s3://b/k?X-Amz-Credential=AK%2F1&X-Amz-Date=1&X-Amz-Signature=abc",
            "s3://b/k?X-Amz-Credential=***&X-Amz-Date=1&X-Amz-Signature=***",
        ),
        ("https://h/p?access_token=t#frag", "https://h/p?access_token=***#frag"),
        ("http://h:notaport@x/", "http://h:***@x/"),
        ("https://ghp_token@host:8443/dvc?x=1", "https://***@host:8443/dvc?x=1"),  # a token
        ("ssh://alice:s3cret@host/srv/dvc", "ssh://alice:***@host/srv/dvc"),
    ],
)  # fmt: skip
def test_passwords_and_query_secrets_are_masked(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////abs/mlflow.db",  # the empty authority stays
        "sqlite:///relative.db",
        "journal:optuna.journal",
        "postgresql://postgres@127.0.0.1:5432/psr",  # a user name alone is not a secret
        "http://127.0.0.1:5000/#/experiments/1?searchFilter=x",
        "/plain/path and words",
        "",
    ],
)
def test_uris_without_secrets_are_left_as_written(text):
    assert redact(text) == text


def test_every_uri_in_a_text_is_masked_and_the_text_kept():
    line = "could not connect to 'postgresql://a:pw1@h/db' (then http://b:pw2@h:1/x), giving up"
    shown = redact(line)
    assert "pw1" not in shown and "pw2" not in shown
    assert shown == (
        "could not connect to 'postgresql://a:***@h/db' (then http://b:***@h:1/x), giving up"
    )


def test_split_credentials_of_an_http_uri_only():
    assert split_credentials("https://bob:s%2Fe@h:1/p") == ("https://h:1/p", "bob", "s/e")
    assert split_credentials("http://tok@h") == ("http://tok@h", None, None)  # sent as is
    assert split_credentials("http://127.0.0.1:5000") == ("http://127.0.0.1:5000", None, None)
    db = "postgresql://a:b@h/d"  # the driver needs them in place
    assert split_credentials(db) == (db, None, None)
