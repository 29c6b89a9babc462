"""docs/configuration.md's table (scripts/settings_table.py): one row per variable, nested
settings models walked, so that provider settings grouped in a model stay documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "settings_table.py"


def settings_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Provider(BaseModel):
    api_key: str = Field(default="", description="The provider's API key.")
    rpm: int = Field(default=60, description="Calls a minute.")


class Providers(BaseModel):
    openai: Provider = Field(default_factory=Provider, description="OpenAI.")
    cohere: Provider = Field(default_factory=Provider)


class Nested(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BEACON_", env_nested_delimiter="__")

    max_message_bytes: int = Field(default=4 * 1024 * 1024, description="Largest | message.")
    providers: Providers = Field(default_factory=Providers)
    by_name: dict[str, Provider] = Field(
        default_factory=lambda: {"mistral": Provider()}, description="Per name."
    )


def test_nested_models_become_one_row_per_variable() -> None:
    rows = list(settings_table().rows(Nested, "BEACON_", "__"))
    assert rows == [
        ("BEACON_MAX_MESSAGE_BYTES", "4 MiB", "Largest \\| message."),
        ("BEACON_PROVIDERS__OPENAI", "", "OpenAI."),
        ("BEACON_PROVIDERS__OPENAI__API_KEY", "empty", "The provider's API key."),
        ("BEACON_PROVIDERS__OPENAI__RPM", "60", "Calls a minute."),
        ("BEACON_PROVIDERS__COHERE__API_KEY", "empty", "The provider's API key."),
        ("BEACON_PROVIDERS__COHERE__RPM", "60", "Calls a minute."),
        # A table of models is read as BEACON_<KEY>_<FIELD> (service.config.ProviderVariables).
        ("BEACON_MISTRAL_API_KEY", "empty", "The provider's API key."),
        ("BEACON_MISTRAL_RPM", "60", "Calls a minute."),
    ]


def test_the_table_documents_every_setting() -> None:
    from service.config import Settings

    script = settings_table()
    table = script.table()
    for name, field in Settings.model_fields.items():
        mapped = script.mapped_model(field.annotation)
        if mapped is not None:
            for key in script.default_of(field):
                for sub in mapped.model_fields:
                    assert f"| `BEACON_{key.upper()}_{sub.upper()}` |" in table, (name, key, sub)
        elif script.model_of(field.annotation):
            assert f"| `BEACON_{name.upper()}__" in table, name
        else:
            assert f"| `BEACON_{name.upper()}` |" in table, name
