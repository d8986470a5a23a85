"""What every section of the configuration shares: the base model (unknown keys refused,
assignments validated), ``ConfigError`` and its one-line messages, the limits several sections
use, and where the shipped configs live."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from stream.errors import PromptcamError


def _configs_dir() -> Path:
    """The folder with ``default.yaml`` and the tiny-random model configs: installed as package
    data next to this package (``stream/_configs``, see pyproject.toml), or the source tree's
    top-level ``configs/``."""
    here = Path(__file__).resolve().parent.parent
    installed, source = here / "_configs", here.parent / "configs"
    return installed if (installed / "default.yaml").is_file() else source


CONFIGS_DIR = _configs_dir()
DEFAULT_CONFIG_PATH = CONFIGS_DIR / "default.yaml"
# A camera's frames take 3 ZeroMQ sockets in the engine (SUB, its monitor's pair); ZeroMQ's
# default context holds 1023, and the engine's own sockets (tracks, annotated, control,
# detections and its monitor) need a few: 256 cameras leave room to spare.
SOCKETS_PER_CAMERA = 3
MAX_ENGINE_CAMERAS = 256
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_SHOWN_CHARS = 120  # characters of a user's value that an error line shows


def off_host(endpoint: str) -> bool:
    """True for a ``tcp://`` endpoint whose host is not a loopback address."""
    return endpoint.startswith("tcp://") and endpoint[6:].rsplit(":", 1)[0] not in LOOPBACK_HOSTS


class ConfigError(PromptcamError, ValueError):
    """A configuration value is wrong; the message is one line that names the key."""


class YamlSyntaxError(ConfigError):
    """A text is not valid YAML (``--set`` then takes it as a plain string)."""


class ConfigModel(BaseModel):
    """A section of the configuration: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def shorten(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters: what an error shows of user input."""
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[: limit - 3]}..."


SECRET_KEYS = frozenset({"token", "password"})  # config keys whose values errors never show


def first_error(exc: ValidationError, prefix: str = "") -> str:
    """The first error of ``exc`` as one line naming its key (under ``prefix``)."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"] and not prefix:
        return msg  # a whole-config check: its message names the keys
    key = prefix + ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{shorten(key)}'"
    if key.rsplit(".", 1)[-1] in SECRET_KEYS:  # never echo a secret, even a bad one
        return f"bad config value for '{shorten(key)}': {msg}"
    return f"bad config value for '{shorten(key)}': {msg} (got {shorten(repr(err.get('input')))})"
