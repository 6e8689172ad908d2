"""Where models come from: the registry shipped in ``SlicerEssNet/models/registry.json`` and the user's cache.

The registry lists each model's name, task, version, URL and SHA256, with its card (inline or by URL). A model
is found, in order, shipped in the package (``package:<file>``), in the cache, or downloaded into the cache
(streamed, checksummed, renamed into place only when complete). Offline sites import files instead.

The cache is ``$SLICERESSNET_HOME/models`` when that variable is set, else the platform's user cache:
``~/.cache/SlicerEssNet/models`` (Linux; ``$XDG_CACHE_HOME`` honoured), ``~/Library/Caches/SlicerEssNet/models``
(macOS), ``%LOCALAPPDATA%\\SlicerEssNet\\models`` (Windows).
"""
from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from .atomic import atomic_path
from .errors import ChecksumMismatchError, DownloadError, ModelNotFoundError, OutputPathError, WeightsError
from .model_card import NAME_PATTERN, SHA256_PATTERN, TASKS, ModelCard
from .weights import (CARD, SAFETENSORS, WEIGHT_SUFFIXES, check_fits, check_model, file_sha256, load_model,
                      locate_model, model_paths, save_model, tensor_shapes)

REGISTRY_FORMAT = "slicer-essnet-registry/1"
PACKAGE_MODELS = Path(__file__).resolve().parent / "models"
URL_SCHEMES = ("https://", "http://", "file://", "package:")
ENTRY_FIELDS = ("name", "task", "version", "url", "sha256", "card", "card_url", "default", "description")
CARD_LIMIT = 1 << 20  # a card is a few kB; refuse to read a large file a bad card_url points at
ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes in all; 0 when the server does not say)


def default_cache_dir(environ=None, platform: str | None = None) -> Path:
    """The model cache folder for this user and platform (``SLICERESSNET_HOME`` overrides)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if environ.get("SLICERESSNET_HOME"):
        return Path(environ["SLICERESSNET_HOME"]).expanduser() / "models"
    home = Path(environ.get("HOME") or environ.get("USERPROFILE") or Path.home())
    if platform.startswith("win"):
        base = Path(environ["LOCALAPPDATA"]) if environ.get("LOCALAPPDATA") else home / "AppData" / "Local"
    elif platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        base = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME") else home / ".cache"
    return base / "SlicerEssNet" / "models"


@dataclass
class RegistryEntry:
    """One model the registry offers. ``str(entry)`` is its name, so it goes wherever a model name goes."""

    name: str
    task: str
    version: str
    url: str
    sha256: str
    card: Optional[dict] = None
    card_url: Optional[str] = None
    default: bool = False
    description: str = ""

    def __str__(self) -> str:
        return self.name

    @property
    def input_modality(self) -> Optional[str]:
        """The input modality its inline card names (None when the card is only at ``card_url``)."""
        try:
            return str(self.card["input"]["modality"]).upper()
        except (KeyError, TypeError):
            return None


@dataclass
class ModelInfo:
    """A row of ``ModelStore.list()``: a registry model (installed or not) or one imported into the cache."""

    name: str
    task: str
    version: str
    installed: bool
    path: Optional[Path]
    size: int  # bytes of the weights file; 0 when not installed
    source: str  # "package", "cache" or "registry" (not installed yet)
    default: bool = False
    description: str = ""
    notes: List[str] = field(default_factory=list)


class ModelStore:
    """The registry plus the user cache. ``cache_dir`` defaults to the user's cache; ``registry_path`` to
    ``$SLICERESSNET_REGISTRY`` (a site's own registry, e.g. pointing at an intranet server) or the package's."""

    def __init__(self, cache_dir=None, registry_path=None):
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        if registry_path is None:
            registry_path = os.environ.get("SLICERESSNET_REGISTRY") or PACKAGE_MODELS / "registry.json"
        self.registry_path = Path(registry_path).expanduser()
        self._entries: Optional[List[RegistryEntry]] = None

    # --- the registry -------------------------------------------------------------------------------
    def entries(self) -> List[RegistryEntry]:
        if self._entries is None:
            self._entries = _read_registry(self.registry_path)
        return list(self._entries)

    def entry(self, name: str) -> Optional[RegistryEntry]:
        return next((entry for entry in self.entries() if entry.name == name), None)

    def default_model(self, task: str, input_modality: str | None = None) -> RegistryEntry:
        """The registry's default model for ``task`` (one default per task and input modality may be registered;
        without ``input_modality`` the first listed default of the task)."""
        if task not in TASKS:
            raise WeightsError(f"task {task!r} is not one of {', '.join(TASKS)}: choose one of them")
        wanted = input_modality.upper() if input_modality else None
        for entry in self.entries():
            if entry.task == task and entry.default and wanted in (None, entry.input_modality):
                return entry
        on = f" on {wanted}" if wanted else ""
        raise ModelNotFoundError(
            f"no default {task} model{on} is registered: pass --model with a model name or weights file, or train "
            f"one with python -m Training")

    def card(self, model) -> Optional[ModelCard]:
        """The card of a model name or weights path, read without torch and without downloading; None when it
        is not known here or cannot be read (the run itself then says why)."""
        if model is None:
            return None
        text = str(model)
        path = Path(text).expanduser()
        try:
            if path.is_file():
                return ModelCard.load(path.with_suffix(CARD))
            installed = self.installed_path(text)
            if installed is not None:
                return ModelCard.load(Path(installed).with_suffix(CARD))
            entry = self.entry(text)
            return ModelCard.from_dict(entry.card) if entry is not None and entry.card else None
        except (WeightsError, OSError, TypeError, ValueError):
            return None

    def model_name(self, model, task: str, input_modality: str | None = None) -> str:
        """``model`` as a name or path; None: the registry's default for ``task`` on ``input_modality``."""
        return str(model) if model is not None else self.default_model(task, input_modality).name

    # --- what is where ------------------------------------------------------------------------------
    def cache_paths(self, name: str):
        """``(weights, card)`` where the cache keeps model ``name``."""
        _check_name(name)
        return model_paths(self.cache_dir / name)

    def installed_path(self, name: str) -> Optional[Path]:
        """The weights file of ``name`` shipped in the package or present in the cache (unverified), else None."""
        entry = self.entry(name)
        if entry is not None and entry.url.startswith("package:"):
            shipped = self._package_file(entry)
            return shipped if shipped.is_file() else None
        weights, card = self.cache_paths(name)
        return weights if weights.is_file() and card.is_file() else None

    def list(self) -> List[ModelInfo]:
        """Every registry model and every model imported into the cache, registry first."""
        rows = []
        for entry in self.entries():
            path = self.installed_path(entry.name)
            source = "registry" if path is None else ("package" if entry.url.startswith("package:") else "cache")
            rows.append(ModelInfo(entry.name, entry.task, entry.version, path is not None, path,
                                  path.stat().st_size if path else 0, source, entry.default, entry.description))
        known = {entry.name for entry in self.entries()}
        if self.cache_dir.is_dir():
            for weights in sorted(self.cache_dir.glob(f"*{SAFETENSORS}")):
                name = weights.name[:-len(SAFETENSORS)]
                if name in known or name.startswith(".") or not weights.with_suffix(CARD).is_file():
                    continue
                rows.append(_cached_row(weights))
        return rows

    # --- getting a model ----------------------------------------------------------------------------
    def resolve(self, name_or_path, progress: Optional[ProgressCallback] = None) -> Path:
        """The weights file (card beside it) for a path on disk (taken as is) or a model name (downloaded if needed)."""
        text = str(name_or_path)
        path = Path(text).expanduser()
        if path.exists() or path.suffix.lower() in WEIGHT_SUFFIXES + (CARD,) or os.sep in text or "/" in text:
            return locate_model(path)[0]
        entry = self.entry(text)
        if entry is not None:
            if entry.url.startswith("package:"):
                return self._checked_package_file(entry)
            weights, card = self.cache_paths(text)
            if weights.is_file() and card.is_file() and file_sha256(weights) == entry.sha256:
                return weights
            return self.download(text, progress=progress)
        if NAME_PATTERN.match(text) and self.cache_paths(text)[0].is_file():
            return check_model(self.cache_paths(text)[0])[0]
        raise ModelNotFoundError(f"no model named {text!r} in the registry or the cache{self._suggest(text)}: "
                                 f"see python -m SlicerEssNet models list, or give a path to a .safetensors file")

    def load(self, name_or_path, progress: Optional[ProgressCallback] = None, device="cpu"):
        """The checked, ready-to-run ``LoadedModel`` of a model name or a path (``resolve``, then ``load_model``)."""
        return load_model(self.resolve(name_or_path, progress=progress), device=device)

    def download(self, name: str, progress: Optional[ProgressCallback] = None, timeout: float = 60.0) -> Path:
        """Fetch a registry model into the cache: streamed, SHA256-checked, renamed into place only when complete."""
        entry = self.entry(name)
        if entry is None:
            raise ModelNotFoundError(f"no model named {name!r} in the registry{self._suggest(name)}: see "
                                     f"python -m SlicerEssNet models list")
        if entry.url.startswith("package:"):
            return self._checked_package_file(entry)
        card = self._entry_card(entry, timeout)
        weights, card_path = self.cache_paths(name)
        self._make_cache()
        with atomic_path(card_path) as card_temporary:
            with atomic_path(weights) as temporary:
                _fetch(entry.url, temporary, name, progress, timeout)
                digest = file_sha256(temporary)
                if digest != entry.sha256:
                    raise ChecksumMismatchError(
                        f"the download of {name} from {entry.url} has SHA256 {digest[:12]}... instead of the "
                        f"registry's {entry.sha256[:12]}...: the server sent another or a damaged file; retry "
                        f"later or report it")
                check_fits(tensor_shapes(temporary), card.architecture, f"the download of {name}")
                card.save(card_temporary)
        return weights

    def import_file(self, path) -> Path:
        """Copy a verified model (weights + card beside them) into the cache, for sites without internet.

        A ``.pt/.pth/.ckpt`` state dict is read safely and stored as ``.safetensors`` with its card updated.
        """
        source, _ = locate_model(path)
        if source.suffix.lower() != SAFETENSORS:
            loaded = load_model(source)  # checksum, safe unpickling, architecture
            self._refuse_registry_clash(loaded.card, None)
            self._make_cache()
            return save_model(loaded.network, loaded.card, self.cache_paths(loaded.card.name)[0])
        source, card = check_model(source)
        self._refuse_registry_clash(card, card.sha256)
        weights, card_path = self.cache_paths(card.name)
        if weights.exists() and weights.resolve() == source.resolve():
            return weights
        self._make_cache()
        with atomic_path(card_path) as card_temporary:
            with atomic_path(weights) as temporary:
                shutil.copyfile(source, temporary)
                if file_sha256(temporary) != card.sha256:
                    raise ChecksumMismatchError(f"copying {source} into the cache changed it (disk full or failing?): "
                                                f"free space and import it again")
                card.save(card_temporary)
        return weights

    def verify(self, name_or_path) -> Path:
        """Check an installed model (or a model file) end to end: card, SHA256, tensor names and shapes."""
        text = str(name_or_path)
        if Path(text).expanduser().exists() or "/" in text or os.sep in text:
            return check_model(Path(text).expanduser())[0]
        entry = self.entry(text)
        path = self.installed_path(text) if NAME_PATTERN.match(text) else None
        if path is None:
            raise ModelNotFoundError(f"model {text!r} is not installed{self._suggest(text)}: download it with "
                                     f"python -m SlicerEssNet models list/import, or use it once to fetch it")
        weights, card = check_model(path)
        if entry is not None and card.sha256 != entry.sha256:
            raise ChecksumMismatchError(
                f"the installed {text} is not the registry's version {entry.version} (SHA256 differs): remove it "
                f"and download it again")
        return weights

    def remove(self, name: str) -> List[Path]:
        """Delete a model from the cache; returns the files removed. Shipped models cannot be removed."""
        entry = self.entry(name)
        if entry is not None and entry.url.startswith("package:"):
            raise WeightsError(f"{name} is shipped with SlicerEssNet and cannot be removed from the cache")
        removed = [path for path in self.cache_paths(name) + tuple(self._partial_files(name)) if path.exists()]
        if not removed:
            raise ModelNotFoundError(f"model {name!r} is not in the cache {self.cache_dir}: nothing to remove")
        for path in removed:
            path.unlink()
        return removed

    def remove_all(self) -> List[Path]:
        """Delete every model (and every interrupted download) from the cache; other files are left alone."""
        if not self.cache_dir.is_dir():
            return []
        removed = [path for path in sorted(self.cache_dir.iterdir())
                   if path.is_file() and (path.suffix in (SAFETENSORS, CARD) or ".partial" in path.name)]
        for path in removed:
            path.unlink()
        return removed

    # --- helpers ------------------------------------------------------------------------------------
    def _package_file(self, entry: RegistryEntry) -> Path:
        return self.registry_path.parent / entry.url[len("package:"):]

    def _checked_package_file(self, entry: RegistryEntry) -> Path:
        shipped = self._package_file(entry)
        if not shipped.is_file():
            raise ModelNotFoundError(f"{shipped} (shipped model {entry.name}) is missing: reinstall SlicerEssNet")
        if not shipped.with_suffix(CARD).is_file():
            raise ModelNotFoundError(f"{shipped.with_suffix(CARD).name} (the card of shipped model {entry.name}) is "
                                     f"missing: reinstall SlicerEssNet")
        weights, card = check_model(shipped)
        if card.sha256 != entry.sha256:
            raise ChecksumMismatchError(f"shipped model {entry.name} does not match the registry's SHA256: "
                                        f"reinstall SlicerEssNet")
        return weights

    def _entry_card(self, entry: RegistryEntry, timeout: float) -> ModelCard:
        """The entry's card (inline or fetched), validated and agreeing with the entry."""
        if entry.card is not None:
            data = entry.card
        else:
            data = _fetch_json(entry.card_url, f"the card of {entry.name}", timeout)
        try:
            card = ModelCard.from_dict(data)
            card.check_grid_fits_network()
        except WeightsError as error:
            raise type(error)(f"registry entry {entry.name}'s card: {error}") from None
        if card.name != entry.name or card.task != entry.task:
            raise WeightsError(f"registry entry {entry.name} ({entry.task}) carries the card of {card.name} "
                               f"({card.task}): fix the registry")
        if card.sha256 and card.sha256 != entry.sha256:
            raise ChecksumMismatchError(f"registry entry {entry.name} and its card name different SHA256s: fix the "
                                        f"registry")
        return card.replace(sha256=entry.sha256)

    def _refuse_registry_clash(self, card: ModelCard, sha256: Optional[str]) -> None:
        entry = self.entry(card.name)
        if entry is not None and entry.sha256 != sha256:
            raise ChecksumMismatchError(
                f"the file is named {card.name} but is not the registry's {card.name} (SHA256 differs): give your "
                f"model another name in its card to import it")

    def _make_cache(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputPathError(f"cannot create the model cache {self.cache_dir} ({error.strerror}): set "
                                  f"SLICERESSNET_HOME to a folder you can write") from None

    def _partial_files(self, name: str) -> List[Path]:
        """Leftovers of a download killed outright (atomic_path removes them on any ordinary error)."""
        if not self.cache_dir.is_dir():
            return []
        return [path for path in self.cache_dir.glob(f".{name}.*") if ".partial" in path.name]

    def _suggest(self, name: str) -> str:
        names = [entry.name for entry in self.entries()]
        close = difflib.get_close_matches(name, names, n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""


# --- module helpers ---------------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ModelNotFoundError(f"{name!r} is not a model name (letters, digits, '.', '_', '-'): check the name")


def _read_registry(path: Path) -> List[RegistryEntry]:
    """Parse and check the registry file; every problem is one line naming the file and the entry."""
    if not path.is_file():
        raise WeightsError(f"model registry {path} not found: reinstall SlicerEssNet or give an existing registry")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"model registry {path} cannot be read ({error}): fix or restore it") from None
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT or not isinstance(data.get("models"),
                                                                                             list):
        raise WeightsError(f"model registry {path} is not a {REGISTRY_FORMAT} file with a 'models' list: fix it")
    entries, defaults = [], set()
    for index, item in enumerate(data["models"]):
        where = f"model registry {path}, entry {index + 1}"
        if not isinstance(item, dict):
            raise WeightsError(f"{where} is not an object: fix the registry")
        for key in item:
            if key not in ENTRY_FIELDS:
                raise WeightsError(f"{where} has an unknown field {key!r}: use {', '.join(ENTRY_FIELDS)}")
        for key in ("name", "task", "version", "url", "sha256"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise WeightsError(f"{where} needs a string {key!r}: fix the registry")
        entry = RegistryEntry(**item)
        where = f"model registry {path}, entry {entry.name!r}"
        if not NAME_PATTERN.match(entry.name):
            raise WeightsError(f"{where}: the name must use only letters, digits, '.', '_' and '-'")
        if entry.task not in TASKS:
            raise WeightsError(f"{where}: task {entry.task!r} is not one of {', '.join(TASKS)}")
        if not entry.url.startswith(URL_SCHEMES):
            raise WeightsError(f"{where}: url {entry.url!r} must start with {', '.join(URL_SCHEMES)}")
        if not SHA256_PATTERN.match(entry.sha256):
            raise WeightsError(f"{where}: sha256 must be 64 lower-case hex digits")
        if not entry.url.startswith("package:") and (entry.card is None) == (entry.card_url is None):
            raise WeightsError(f"{where}: give exactly one of 'card' (inline) or 'card_url'")
        if any(other.name == entry.name for other in entries):
            raise WeightsError(f"{where}: the name is listed twice; names must be unique")
        if not isinstance(entry.default, bool):
            raise WeightsError(f"{where}: 'default' must be true or false")
        if entry.default:
            kind = (entry.task, entry.input_modality)
            if kind in defaults:
                on = f" on {entry.input_modality}" if entry.input_modality else ""
                raise WeightsError(f"{where}: a second default {entry.task} model{on}; mark only one as default")
            defaults.add(kind)
        entries.append(entry)
    return entries


def _cached_row(weights: Path) -> ModelInfo:
    """A list row for a model imported into the cache (card read as plain JSON: listing needs no torch)."""
    try:
        card = json.loads(weights.with_suffix(CARD).read_text(encoding="utf-8"))
        task, version, description = card.get("task", "?"), card.get("version", "?"), card.get("description", "")
        notes = []
    except (OSError, ValueError, AttributeError):
        task, version, description, notes = "?", "?", "", ["unreadable model card"]
    return ModelInfo(weights.name[:-len(SAFETENSORS)], task, version, True, weights, weights.stat().st_size,
                     "cache", False, description, notes)


def _open_url(url: str, what: str, timeout: float):
    """urlopen with every failure turned into a one-line ``DownloadError``."""
    import urllib.error
    import urllib.request

    if not isinstance(url, str) or not url.startswith(("https://", "http://", "file://")):
        raise DownloadError(f"{what} has a bad URL {url!r}: it must start with https://, http:// or file://")
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"downloading {what} from {url} failed with HTTP {error.code} {error.reason}: check "
                            f"the registry URL, or download the file elsewhere and import it") from None
    except urllib.error.URLError as error:
        raise DownloadError(f"cannot download {what} from {url} ({error.reason}): check the network, or download "
                            f"the file elsewhere and import it (python -m SlicerEssNet models import)") from None
    except (ValueError, OSError) as error:
        raise DownloadError(f"cannot download {what} from {url} ({error}): check the URL in the registry") from None


def _fetch(url: str, destination: Path, what: str, progress: Optional[ProgressCallback], timeout: float) -> None:
    """Stream ``url`` into ``destination``; a short or failed transfer raises ``DownloadError``."""
    import http.client

    done = 0
    with _open_url(url, what, timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else 0
        with open(destination, "wb") as handle:
            if progress is not None:
                progress(0, total)
            while True:
                try:
                    chunk = response.read(1 << 20)
                except (http.client.HTTPException, OSError) as error:  # reset, timeout, broken chunked encoding
                    raise DownloadError(f"the download of {what} from {url} was cut off after {done} bytes "
                                        f"({error}): retry, or download the file elsewhere and import it") from None
                if not chunk:
                    break
                try:
                    handle.write(chunk)
                except OSError as error:
                    raise OutputPathError(f"cannot write {destination.parent} ({error.strerror}): free disk space "
                                          f"or set SLICERESSNET_HOME to another folder") from None
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total and done != total:
        raise DownloadError(f"the download of {what} from {url} was cut off after {done} of {total} bytes: retry, "
                            f"or download the file elsewhere and import it")


def _fetch_json(url: str, what: str, timeout: float) -> dict:
    import http.client

    with _open_url(url, what, timeout) as response:
        try:
            text = response.read(CARD_LIMIT + 1)
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(f"downloading {what} from {url} failed ({error}): retry") from None
    if len(text) > CARD_LIMIT:
        raise DownloadError(f"{what} at {url} is larger than a model card can be: check the registry's card_url")
    try:
        return json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{what} at {url} is not valid JSON ({error}): check the registry's card_url") from None
