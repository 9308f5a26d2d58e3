"""Settings: keyword > LAMBDAEXEC_* environment > config file > default; bad input is named."""

from __future__ import annotations

import pytest

from lambdaexec import ConfigError, LambdaExecutor, load_config


def write(tmp_path, text):
    path = tmp_path / "config.ini"
    path.write_text(text)
    return {"LAMBDAEXEC_CONFIG": str(path)}


def test_precedence(tmp_path):
    env = write(tmp_path, "[lambdaexec]\nretries = 5\ntimeout = 7\nmax_workers = 3\n")
    assert load_config({}, env).retries == 5
    env["LAMBDAEXEC_RETRIES"] = "4"
    cfg = load_config({}, env)
    assert (cfg.retries, cfg.timeout, cfg.max_workers) == (4, 7.0, 3)
    assert load_config({"retries": 1}, env).retries == 1
    assert load_config({"retries": None}, env).retries == 4  # None means "not given"


def test_defaults_without_file(tmp_path):
    cfg = load_config({}, {"LAMBDAEXEC_CONFIG": str(tmp_path / "absent.ini")})
    assert (cfg.backend, cfg.storage, cfg.retries) == ("local", "local", 2)


@pytest.mark.parametrize("overrides, env, text, message", [
    ({"retrys": 1}, {}, "", "unknown setting 'retrys'"),
    ({}, {"LAMBDAEXEC_TIMEOUTT": "3"}, "", "LAMBDAEXEC_TIMEOUTT: unknown setting 'timeoutt'"),
    ({}, {}, "[lambdaexec]\nbukket = x\n", "unknown key 'bukket'"),
    ({}, {}, "[other]\nx = 1\n", r"unknown section \[other\]"),
    ({"max_workers": "many"}, {}, "", "max_workers must be int, got 'many'"),
    ({}, {"LAMBDAEXEC_KEEP_DATA": "perhaps"}, "", "keep_data must be bool"),
    ({"timeout": -1}, {}, "", "timeout must be > 0"),
    ({"backend": "gcp"}, {}, "", "backend must be one of"),
    ({"storage": "s3"}, {}, "", "needs a bucket"),
    ({"backend": "lambda"}, {}, "", "cannot use local storage"),
])
def test_bad_settings_name_the_key(tmp_path, overrides, env, text, message):
    env = {**write(tmp_path, text), **env}
    with pytest.raises(ConfigError, match=message):
        load_config(overrides, env)


def test_executor_rejects_unknown_keyword():
    with pytest.raises(ConfigError, match="unknown setting 'max_wrokers'"):
        LambdaExecutor(max_wrokers=2)


def test_environment_switches_the_executor(monkeypatch, tmp_path):
    monkeypatch.setenv("LAMBDAEXEC_MAX_WORKERS", "1")
    monkeypatch.setenv("LAMBDAEXEC_STORAGE_PATH", str(tmp_path / "store"))
    with LambdaExecutor() as ex:
        assert ex.config.max_workers == 1
        assert ex.submit(sum, [1, 2]).result(timeout=30) == 3
    assert (tmp_path / "store").is_dir()
