"""Config layer: pydantic models for the YAML file and the loader that validates it."""

from tunelab.config.load import config_schema, dump_config, load_config, load_config_text, validate
from tunelab.config.schema import Config

__all__ = ["Config", "config_schema", "dump_config", "load_config", "load_config_text", "validate"]
