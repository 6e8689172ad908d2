"""The model registry and user cache: downloads over a real local HTTP server and file:// URLs, import, verify,
remove, defaults, and every download failure leaving the cache as it was."""
from __future__ import annotations

import http.server
import json
import pickle
import socket
import threading
from pathlib import Path

import pytest

from SlicerEssNet.errors import CancelledError, ChecksumMismatchError, DownloadError, ModelNotFoundError, WeightsError
from SlicerEssNet.model_card import ModelCard
from SlicerEssNet.model_store import ModelStore, RegistryEntry, default_cache_dir
from SlicerEssNet.weights import create_untrained_model, load_model

from weights_testing import Payload, one_line, sha256

SHIPPED_REGISTRY = Path(__file__).resolve().parents[2] / "SlicerEssNet" / "models" / "registry.json"




def everything_in(folder: Path) -> list:
    """Every file, hidden temporaries included."""
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []



class ModelServer(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``/half/<file>`` promises the whole file, sends half and hangs up; logs every request."""

    requests: list = []

    def do_GET(self):
        type(self).requests.append(self.path)
        if self.path.startswith("/half/"):
            data = (Path(self.directory) / self.path[len("/half/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def published(tmp_path):
    """Two tiny models published in a folder: the files a server or a file:// URL hands out."""
    pytest.importorskip("torch")  # building them needs torch; the registry tests without models run anywhere
    folder = tmp_path / "published"
    folder.mkdir()
    return {task: create_untrained_model(task, folder / f"tiny-{task}") for task in ("synthesis", "segmentation")}


@pytest.fixture
def server(published):
    folder = next(iter(published.values())).parent
    ModelServer.requests = []
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *args: ModelServer(*args, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def entry_for(weights: Path, url: str, default=False, inline_card=True, **changes) -> dict:
    card = json.loads(weights.with_suffix(".json").read_text())
    entry = {"name": card["name"], "task": card["task"], "version": card["version"], "url": url,
             "sha256": sha256(weights), "default": default, "description": "a tiny test model"}
    entry.update(changes)
    if inline_card and "card" not in changes:
        entry["card"] = dict(card, sha256=entry["sha256"])  # a registry and its card agree with each other
    return entry


def store_with(tmp_path, entries, name="registry.json") -> ModelStore:
    registry = tmp_path / name
    registry.write_text(json.dumps({"format": "slicer-essnet-registry/1", "models": entries}))
    return ModelStore(cache_dir=tmp_path / "cache", registry_path=registry)


# --- where the cache lives --------------------------------------------------------------------------
def test_cache_folder_per_platform(tmp_path):
    home = str(tmp_path)
    assert default_cache_dir({"SLICERESSNET_HOME": "/data/essnet", "HOME": home}, "linux") == \
        Path("/data/essnet/models")
    assert default_cache_dir({"HOME": home}, "linux") == tmp_path / ".cache" / "SlicerEssNet" / "models"
    assert default_cache_dir({"HOME": home, "XDG_CACHE_HOME": "/xdg"}, "linux") == Path("/xdg/SlicerEssNet/models")
    assert default_cache_dir({"HOME": home}, "darwin") == tmp_path / "Library" / "Caches" / "SlicerEssNet" / "models"
    assert default_cache_dir({"LOCALAPPDATA": "C:/Users/u/AppData/Local", "USERPROFILE": home}, "win32") == \
        Path("C:/Users/u/AppData/Local") / "SlicerEssNet" / "models"
    assert default_cache_dir({"USERPROFILE": home}, "win32") == \
        tmp_path / "AppData" / "Local" / "SlicerEssNet" / "models"


def test_the_environment_variable_moves_the_default_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICERESSNET_HOME", str(tmp_path))
    store = ModelStore()
    assert store.cache_dir == tmp_path / "models" and store.registry_path == SHIPPED_REGISTRY


# --- the registry -----------------------------------------------------------------------------------
def test_the_shipped_registry_is_valid():
    pytest.importorskip("torch")  # a card's architecture is checked against the network classes
    data = json.loads(SHIPPED_REGISTRY.read_text())
    assert data["format"] == "slicer-essnet-registry/1" and isinstance(data["models"], list)
    entries = ModelStore(cache_dir="/nonexistent").entries()
    assert [e.name for e in entries] == [m["name"] for m in data["models"]]
    for entry in entries:  # whatever Training publishes must have a usable card and a default per task at most
        card = ModelCard.from_dict(entry.card) if entry.card else None
        assert card is None or (card.name == entry.name and card.task == entry.task)


@pytest.mark.parametrize("edit, words", [
    (lambda e: e.update(url="ftp://example.org/m.safetensors"), "must start with"),
    (lambda e: e.update(sha256="abc"), "64 lower-case hex"),
    (lambda e: e.update(task="denoising"), "not one of"),
    (lambda e: e.update(name="a/b"), "letters, digits"),
    (lambda e: e.update(sise=3), "unknown field 'sise'"),
    (lambda e: e.pop("url"), "needs a string 'url'"),
    (lambda e: e.pop("card"), "exactly one of 'card'"),
    (lambda e: e.update(card_url="https://example.org/c.json"), "exactly one of 'card'"),
    (lambda e: e.update(default="yes"), "'default' must be true or false"),
])
def test_bad_registry_entries(tmp_path, published, edit, words):
    entry = entry_for(published["synthesis"], "https://example.org/x.safetensors")
    edit(entry)
    with pytest.raises(WeightsError) as error:
        store_with(tmp_path, [entry]).entries()
    assert words in one_line(error) and "registry.json" in str(error.value)


def test_bad_registry_files(tmp_path, published):
    one = entry_for(published["synthesis"], "https://example.org/x.safetensors", default=True)
    with pytest.raises(WeightsError, match="listed twice"):
        store_with(tmp_path, [one, one]).entries()
    other = dict(one, name="other")
    with pytest.raises(WeightsError, match="second default synthesis model on CT"):
        store_with(tmp_path, [one, other]).entries()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(WeightsError, match="cannot be read"):
        ModelStore(tmp_path / "cache", broken).entries()
    broken.write_text('{"format": "slicer-essnet-registry/9", "models": []}')
    with pytest.raises(WeightsError, match="is not a slicer-essnet-registry/1 file"):
        ModelStore(tmp_path / "cache", broken).entries()
    with pytest.raises(WeightsError, match="not found"):
        ModelStore(tmp_path / "cache", tmp_path / "absent.json").entries()


def test_default_model_per_task(tmp_path, published):
    store = store_with(tmp_path, [entry_for(published["synthesis"], "https://example.org/s", default=True),
                                  entry_for(published["segmentation"], "https://example.org/g", default=False)])
    default = store.default_model("synthesis")
    assert isinstance(default, RegistryEntry) and default.name == "tiny-synthesis" and str(default) == "tiny-synthesis"
    with pytest.raises(ModelNotFoundError) as error:
        store.default_model("segmentation")
    assert "--model" in one_line(error) and "python -m Training" in str(error.value)
    with pytest.raises(WeightsError, match="not one of"):
        store.default_model("registration")


def test_one_default_per_task_and_input_modality(tmp_path, published):
    """What Training ships: a default per task and input modality (e.g. liver on MR and liver on CT)."""
    on_mr = entry_for(published["segmentation"], "https://example.org/mr", default=True)
    on_ct = entry_for(published["segmentation"], "https://example.org/ct", default=True, name="liver-ct")
    on_ct["card"] = dict(on_ct["card"], name="liver-ct", input={
        "modality": "CT", "preprocessing": {"kind": "ct_window", "low": -125, "high": 275}})
    store = store_with(tmp_path, [on_mr, on_ct])
    assert store.default_model("segmentation").name == "tiny-segmentation"
    assert store.default_model("segmentation", "mr").name == "tiny-segmentation"
    assert store.default_model("segmentation", "CT").name == "liver-ct"
    with pytest.raises(ModelNotFoundError, match="no default synthesis model is registered"):
        store.default_model("synthesis")
    with pytest.raises(ModelNotFoundError, match="segmentation model on PET"):
        store.default_model("segmentation", "PET")


# --- downloading ------------------------------------------------------------------------------------
def test_download_over_http_with_progress_then_use_from_cache(tmp_path, published, server):
    weights = published["synthesis"]
    store = store_with(tmp_path, [entry_for(weights, f"{server}/{weights.name}", default=True)])
    assert [(row.name, row.installed, row.source) for row in store.list()] == [("tiny-synthesis", False, "registry")]
    calls = []
    path = store.resolve("tiny-synthesis", progress=lambda done, total: calls.append((done, total)))
    size = weights.stat().st_size
    assert path == tmp_path / "cache" / "tiny-synthesis.safetensors"
    assert path.read_bytes() == weights.read_bytes()
    assert everything_in(tmp_path / "cache") == ["tiny-synthesis.json", "tiny-synthesis.safetensors"]
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert ModelCard.load(path.with_suffix(".json")).sha256 == sha256(weights)
    assert store.verify("tiny-synthesis") == path
    row = store.list()[0]
    assert (row.installed, row.path, row.size, row.source, row.default) == (True, path, size, "cache", True)
    served = len(ModelServer.requests)
    assert store.resolve("tiny-synthesis") == path and len(ModelServer.requests) == served  # no second download
    loaded = load_model(store.resolve(str(store.default_model("synthesis"))))
    assert loaded.card.name == "tiny-synthesis" and loaded.path == path


def test_a_download_cut_off_halfway_leaves_nothing(tmp_path, published, server):
    weights = published["segmentation"]
    store = store_with(tmp_path, [entry_for(weights, f"{server}/half/{weights.name}")])
    calls = []
    with pytest.raises(DownloadError) as error:
        store.download("tiny-segmentation", progress=lambda done, total: calls.append((done, total)))
    size = weights.stat().st_size
    assert f"cut off after {size // 2} of {size} bytes" in one_line(error)
    assert everything_in(tmp_path / "cache") == []
    assert calls and calls[-1] == (size // 2, size)
    assert [row.installed for row in store.list()] == [False]


def test_a_404_leaves_nothing(tmp_path, published, server):
    store = store_with(tmp_path, [entry_for(published["segmentation"], f"{server}/missing.safetensors")])
    with pytest.raises(DownloadError) as error:
        store.resolve("tiny-segmentation")
    assert "HTTP 404" in one_line(error)
    assert everything_in(tmp_path / "cache") == []


def test_unreachable_and_bad_urls(tmp_path, published):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    weights = published["segmentation"]
    for url, words in [(f"http://127.0.0.1:{port}/m.safetensors", "cannot download"),
                       ((tmp_path / "absent.safetensors").as_uri(), "cannot download"),
                       ("http://[::1/m", "cannot download"),
                       ("https://", "cannot download")]:
        store = store_with(tmp_path, [entry_for(weights, url)])
        with pytest.raises(DownloadError) as error:
            store.download("tiny-segmentation", timeout=5)
        assert words in one_line(error) and "tiny-segmentation" in str(error.value)
        assert everything_in(tmp_path / "cache") == []


def test_download_from_a_file_url_with_a_card_url(tmp_path, published):
    weights = published["segmentation"]
    entry = entry_for(weights, weights.as_uri(), inline_card=False, card_url=weights.with_suffix(".json").as_uri())
    store = store_with(tmp_path, [entry])
    path = store.download("tiny-segmentation")
    assert path.read_bytes() == weights.read_bytes()
    assert load_model(path).card.labels == {"0": "background", "1": "liver"}


def test_a_registry_checksum_the_file_does_not_have(tmp_path, published, server):
    weights = published["segmentation"]
    store = store_with(tmp_path, [entry_for(weights, f"{server}/{weights.name}", sha256="0" * 64)])
    with pytest.raises(ChecksumMismatchError) as error:
        store.download("tiny-segmentation")
    assert "another or a damaged file" in one_line(error)
    assert everything_in(tmp_path / "cache") == []


def test_a_registry_card_that_disagrees(tmp_path, published):
    weights = published["segmentation"]
    card = json.loads(weights.with_suffix(".json").read_text())
    for changes, error_type, words in [
        ({"sha256": "1" * 64}, ChecksumMismatchError, "different SHA256"),
        ({"name": "someone-else"}, WeightsError, "carries the card of someone-else"),
        ({"architecture": {"name": "unet", "num_classes": 2, "base": 8}}, WeightsError, "'inc.0.weight'"),
        ({"grid": {"mode": "spacing"}}, WeightsError, "spacing_mm"),
        ({"grid": {"mode": "spacing", "spacing_mm": 2, "multiple_of": 8}}, WeightsError, "multiple of 16"),
    ]:
        store = store_with(tmp_path, [entry_for(weights, weights.as_uri(), card=dict(card, **changes))])
        with pytest.raises(error_type) as error:
            store.download("tiny-segmentation")
        assert words in one_line(error)
        assert everything_in(tmp_path / "cache") == []


def test_a_hostile_file_behind_a_registry_url_is_never_unpickled(tmp_path, published):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.safetensors"
    hostile.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    pickle.loads(hostile.read_bytes())  # the control: unpickled, it runs
    assert marker.exists()
    marker.unlink()
    store = store_with(tmp_path, [entry_for(published["segmentation"], hostile.as_uri(), sha256=sha256(hostile))])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        store.download("tiny-segmentation")
    assert not marker.exists() and everything_in(tmp_path / "cache") == []


def test_cancelling_through_the_progress_callback_leaves_nothing(tmp_path, published):
    weights = published["segmentation"]
    store = store_with(tmp_path, [entry_for(weights, weights.as_uri())])

    def cancel(done, total):
        if done:
            raise CancelledError("cancelled by the user: nothing was written")

    with pytest.raises(CancelledError):
        store.download("tiny-segmentation", progress=cancel)
    assert everything_in(tmp_path / "cache") == []


def test_a_damaged_cached_copy_is_downloaded_again(tmp_path, published, server):
    weights = published["synthesis"]
    store = store_with(tmp_path, [entry_for(weights, f"{server}/{weights.name}")])
    path = store.download("tiny-synthesis")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError):
        store.verify("tiny-synthesis")
    assert store.resolve("tiny-synthesis") == path and sha256(path) == sha256(weights)
    assert store.verify("tiny-synthesis") == path


def test_damage_past_the_first_mebibyte_is_caught_downloaded_cached_or_imported(tmp_path):
    """The tiny models above are a few kB; a checksum of only a file's first MiB would pass all of them. A model
    of 2 MB with one bit flipped near its end must be refused wherever the store checks a file."""
    pytest.importorskip("torch")
    (tmp_path / "published").mkdir()
    weights = create_untrained_model("segmentation", tmp_path / "published" / "wide-liver", width=8)
    good = weights.read_bytes()
    bad = bytearray(good)
    offset = len(bad) - 5  # inside the last tensor's data: the file still parses
    assert offset > (1 << 20) + 4096
    bad[offset] ^= 0x01
    damaged = tmp_path / "damaged" / weights.name
    damaged.parent.mkdir()
    damaged.write_bytes(bytes(bad))
    damaged.with_suffix(".json").write_bytes(weights.with_suffix(".json").read_bytes())

    served_damaged = store_with(tmp_path, [entry_for(weights, damaged.as_uri())])  # the good file's SHA256
    with pytest.raises(ChecksumMismatchError) as error:
        served_damaged.download("wide-liver")
    assert "another or a damaged file" in one_line(error)
    with pytest.raises(ChecksumMismatchError):
        served_damaged.import_file(damaged)
    assert everything_in(tmp_path / "cache") == []

    store = store_with(tmp_path, [entry_for(weights, weights.as_uri())])
    path = store.download("wide-liver")
    assert path.read_bytes() == good
    path.write_bytes(bytes(bad))  # the cached copy damaged on disk afterwards
    with pytest.raises(ChecksumMismatchError):
        store.verify("wide-liver")
    assert store.resolve("wide-liver") == path and path.read_bytes() == good  # fetched again, not used as it was


# --- shipped, imported, local -----------------------------------------------------------------------
def test_a_model_shipped_in_the_package(tmp_path, published):
    weights = published["segmentation"]
    shipped = tmp_path / "package"
    shipped.mkdir()
    for path in (weights, weights.with_suffix(".json")):
        (shipped / path.name).write_bytes(path.read_bytes())
    store = store_with(shipped, [entry_for(weights, f"package:{weights.name}", default=True)])
    store.cache_dir = tmp_path / "cache"
    assert store.resolve("tiny-segmentation") == shipped / weights.name
    assert store.download("tiny-segmentation") == shipped / weights.name
    assert store.verify("tiny-segmentation") == shipped / weights.name
    assert [(r.installed, r.source) for r in store.list()] == [(True, "package")]
    with pytest.raises(WeightsError, match="shipped with SlicerEssNet"):
        store.remove("tiny-segmentation")
    (shipped / weights.name).write_bytes(b"damaged")
    with pytest.raises(ChecksumMismatchError):
        store.resolve("tiny-segmentation")
    assert everything_in(tmp_path / "cache") == []


def test_import_for_offline_sites(tmp_path, published):
    store = store_with(tmp_path, [])
    source = published["segmentation"]
    path = store.import_file(source)
    assert path == tmp_path / "cache" / source.name and path.read_bytes() == source.read_bytes()
    assert store.import_file(source.with_suffix(".json")) == path  # by its card, again: idempotent
    rows = store.list()
    assert [(r.name, r.task, r.installed, r.source, r.size) for r in rows] == \
        [("tiny-segmentation", "segmentation", True, "cache", source.stat().st_size)]
    assert store.verify("tiny-segmentation") == path and store.resolve("tiny-segmentation") == path
    assert store.verify(path) == path


def test_import_converts_a_torch_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    original = create_untrained_model("segmentation", tmp_path / "mine")
    loaded = load_model(original)
    legacy = tmp_path / "legacy" / "mine.pt"
    legacy.parent.mkdir()
    torch.save(loaded.network.state_dict(), legacy)
    loaded.card.replace(sha256=sha256(legacy)).save(legacy.with_suffix(".json"))
    store = store_with(tmp_path, [])
    path = store.import_file(legacy)
    assert path.suffix == ".safetensors"
    imported = load_model(path)
    assert all(torch.equal(imported.network.state_dict()[k], v) for k, v in loaded.network.state_dict().items())


def test_import_refuses_broken_or_impostor_files(tmp_path, published):
    source = published["segmentation"]
    damaged = tmp_path / "damaged" / source.name
    damaged.parent.mkdir()
    damaged.write_bytes(source.read_bytes()[:-10])
    damaged.with_suffix(".json").write_bytes(source.with_suffix(".json").read_bytes())
    store = store_with(tmp_path, [entry_for(published["synthesis"], "https://example.org/s")])
    with pytest.raises(ChecksumMismatchError):
        store.import_file(damaged)
    (damaged.parent / "bare.safetensors").write_bytes(source.read_bytes())
    with pytest.raises(WeightsError, match="has no model card bare.json"):
        store.import_file(damaged.parent / "bare.safetensors")
    (tmp_path / "impostor").mkdir()
    impostor = create_untrained_model("synthesis", tmp_path / "impostor" / "tiny-synthesis", seed=7)
    with pytest.raises(ChecksumMismatchError) as error:
        store.import_file(impostor)
    assert "another name" in one_line(error)
    assert everything_in(tmp_path / "cache") == []


def test_paths_are_taken_as_they_are(tmp_path, published):
    store = store_with(tmp_path, [])
    source = published["synthesis"]
    assert store.resolve(source) == source and store.resolve(str(source.with_suffix(".json"))) == source
    for missing in (tmp_path / "absent.safetensors", "some/folder/model"):
        with pytest.raises(ModelNotFoundError):
            store.resolve(missing)
    with pytest.raises(ModelNotFoundError) as error:
        store.resolve("no-such-model")
    assert "models list" in one_line(error)


def test_unknown_names_get_a_suggestion(tmp_path, published):
    store = store_with(tmp_path, [entry_for(published["synthesis"], "https://example.org/s")])
    with pytest.raises(ModelNotFoundError) as error:
        store.resolve("tiny-synthessis")
    assert "did you mean 'tiny-synthesis'" in one_line(error)
    for call in (store.download, store.verify):
        with pytest.raises(ModelNotFoundError):
            call("tiny-synthessis")


def test_remove_and_remove_all(tmp_path, published):
    store = store_with(tmp_path, [])
    store.import_file(published["synthesis"])
    store.import_file(published["segmentation"])
    leftover = tmp_path / "cache" / ".tiny-synthesis.safetensors.abc123.partial.safetensors"
    leftover.write_bytes(b"killed mid-download")
    unrelated = tmp_path / "cache" / "README.txt"
    unrelated.write_text("not ours")
    removed = store.remove("tiny-synthesis")
    assert sorted(p.name for p in removed) == [leftover.name, "tiny-synthesis.json", "tiny-synthesis.safetensors"]
    assert [r.name for r in store.list()] == ["tiny-segmentation"]
    with pytest.raises(ModelNotFoundError) as error:
        store.remove("tiny-synthesis")
    assert "nothing to remove" in one_line(error)
    assert [p.name for p in store.remove_all()] == ["tiny-segmentation.json", "tiny-segmentation.safetensors"]
    assert everything_in(tmp_path / "cache") == ["README.txt"] and store.list() == []
    with pytest.raises(ModelNotFoundError):
        store.remove("../README")
    assert ModelStore(cache_dir=tmp_path / "never-made", registry_path=SHIPPED_REGISTRY).remove_all() == []


def test_a_site_registry_replaces_the_shipped_one(tmp_path, monkeypatch):
    from SlicerEssNet.model_store import ModelStore

    site = tmp_path / "site-registry.json"
    site.write_text('{"format": "slicer-essnet-registry/1", "models": []}')
    monkeypatch.setenv("SLICERESSNET_REGISTRY", str(site))
    assert ModelStore(cache_dir=tmp_path / "cache").registry_path == site
    assert ModelStore(cache_dir=tmp_path / "cache").entries() == []
    monkeypatch.delenv("SLICERESSNET_REGISTRY")
    assert [e.name for e in ModelStore(cache_dir=tmp_path / "cache").entries()]  # the shipped models
