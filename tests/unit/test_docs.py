"""The generated references (README tables, docs/cli.md) agree with the code: `make docs`."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import SharedSettings
from docs import generate


@pytest.mark.parametrize("path", [generate.README, generate.CLI_DOC], ids=lambda p: p.name)
def test_generated_references_match_the_code(path: Path) -> None:
    expected = generate.expected()
    on_disk = path.read_text() if path.is_file() else ""
    assert on_disk == expected[path], (
        f"{path} differs from what the code says: run `make docs` (and edit the settings "
        "classes' Field(description=...) or the commands' help, not the generated text)"
    )


def test_every_variable_a_service_reads_is_in_the_readme() -> None:
    readme = generate.README.read_text()
    for name in generate.settings_variables():
        if "_LOADER_" in name:
            continue  # documented once as SKEIN_LOADER_<TYPE>_..., checked below
        assert f"`{name}`" in readme, name
    assert "`SKEIN_LOADER_<TYPE>_MAX_CONNECTIONS`" in readme
    assert "`SKEIN_LOADER_BIGQUERY_METRICS_PORT`" in readme


def test_secrets_are_never_printed() -> None:
    readme = generate.README.read_text()
    for secret in ("skein-local-development-key-change-me", "skein-local-spool-token"):
        assert secret not in readme


def test_loader_prefixes_become_a_template() -> None:
    prefixes = ["SKEIN_LOADER_POSTGRES_", "SKEIN_LOADER_BIGQUERY_", "SKEIN_LOADER_SNOWFLAKE_"]
    assert generate.template_prefix(prefixes) == "SKEIN_LOADER_<TYPE>_"
    # Word by word: two types starting with the same letter share no more than the words.
    assert generate.template_prefix(["SKEIN_X_SPARK_", "SKEIN_X_SNOW_"]) == "SKEIN_X_<TYPE>_"


class _Undocumented(SharedSettings):
    model_config = SettingsConfigDict(env_prefix="SKEIN_UNDOC_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_UNDOC_"

    workers: int = 2
    token: SecretStr = Field(SecretStr("hunter2"), description="a secret")


def test_a_field_without_description_or_a_secret_without_shown_default_is_refused() -> None:
    fields = _Undocumented.model_fields
    with pytest.raises(generate.DocError, match="description"):
        generate.meaning("_Undocumented.workers", fields["workers"])
    with pytest.raises(generate.DocError, match="doc_default"):
        generate.shown_default("_Undocumented.token", "token", fields["token"])


def test_the_documented_names_are_the_ones_pydantic_settings_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every whole-number setting, set through its documented name, changes what the class reads.
    checked = 0
    classes: list[type[SharedSettings]] = [SharedSettings, *generate.settings_classes()]
    for cls in classes:
        if cls is not SharedSettings and not generate.prefix_of(cls):
            continue  # the loaders' template: read through each loader's class
        for name, field in cls.model_fields.items():
            default = field.default
            if type(default) is not int:
                continue
            variable = generate.variable_name(cls, name, field)
            with monkeypatch.context() as env:
                env.setenv(variable, str(default + 1))
                assert getattr(cls(), name) == default + 1, variable
            checked += 1
    assert checked > 50
