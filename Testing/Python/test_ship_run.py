"""The ship run end to end on phantoms laid out like the real data: it trains, scores the live and averaged
generators on the selection patients as it goes, keeps the best of each on disk (the very weights it scored),
reports on other patients, exports fp16 models with cards that state recipe and quality, and resumes as a no-op."""
from __future__ import annotations

import dataclasses
import io
import shutil

import pytest

torch = pytest.importorskip("torch")

from Training.stages.checkpoint import read_json  # noqa: E402
from Training.study.presets import get_preset  # noqa: E402


def fake_data_root(folder):
    """10 CT and 7 MR phantoms in the BTCV / CHAOS file layout the ship run reads."""
    from Training.data.phantoms import write_phantom_set

    written = write_phantom_set(folder / "phantoms", 10, 7, seed=3)
    (folder / "btcv_ct").mkdir()
    (folder / "chaos_mr_t2").mkdir()
    for index, (image, label) in enumerate(written["CT"]):
        shutil.copyfile(image, folder / "btcv_ct" / f"ct_{index:02d}.nii.gz")
        shutil.copyfile(label, folder / "btcv_ct" / f"ct_{index:02d}_liver.nii.gz")
    for index, (image, label) in enumerate(written["MR"]):
        shutil.copyfile(image, folder / "chaos_mr_t2" / f"mr_t2_{index:02d}.nii.gz")
        shutil.copyfile(label, folder / "chaos_mr_t2" / f"mr_t2_{index:02d}_label.nii.gz")
    return folder


def tiny_ship_preset():
    preset = get_preset("ship")
    preset.data = dataclasses.replace(preset.data, spacing_mm=5.0, crop=64)
    preset.synthesis = dataclasses.replace(preset.synthesis, ngf=4, ndf=4, seg_ngf=4, n_blocks=1, seg_n_blocks=1,
                                           crop=32, iterations=6, decay_from=3, select_every=3, checkpoint_every=3,
                                           ema_decay=0.9)
    return preset


def tiny_study_preset(ship_config):
    """A study preset of a few iterations on the ship run's data, holding out its 5 report CT patients."""
    from pathlib import Path

    root = Path(ship_config["cases"]["CT"][0]["image"]).parent.parent
    preset = get_preset("demo")
    preset.data = dataclasses.replace(preset.data, source="real", data_root=str(root), ct_val_patients=5,
                                      mr_val_patients=2, low_data_patients=1, spacing_mm=8.0, crop=48)
    preset.segmentation = dataclasses.replace(preset.segmentation, base=4, crop=48, iterations=4, decay_from=2,
                                              eval_every=2, checkpoint_every=2)
    return preset


@pytest.fixture(scope="module")
def ship_run(tmp_path_factory):
    from Training.study.ship_synthesis import train_all

    root = fake_data_root(tmp_path_factory.mktemp("data"))
    run_dir = tmp_path_factory.mktemp("run") / "ship"
    assert train_all(run_dir, tiny_ship_preset(), ("essnet",), workers=1, data_root=root, stream=io.StringIO()) == 0
    return run_dir


def test_split_keeps_selection_and_report_patients_apart(ship_run):
    split = read_json(ship_run / "config.json")["split"]["CT"]
    assert len(split["val"]) == 5 and len(split["select"]) == 3 and len(split["train"]) == 2
    assert not set(split["val"]) & set(split["select"])
    assert not (set(split["val"]) | set(split["select"])) & set(split["train"])


def test_selection_scores_both_variants_and_keeps_each_best(ship_run):
    record = read_json(ship_run / "essnet" / "selection.json")
    assert [entry["iteration"] for entry in record["scores"]] == [3, 6]
    for variant in ("live", "average"):
        means = [entry[variant]["mean"] for entry in record["scores"]]
        assert record["best"][variant]["mean"] == max(means)
        assert (ship_run / "essnet" / f"best-{variant}.pt").is_file()
    done = read_json(ship_run / "essnet" / "done.json")
    assert done["iterations"] == 6 and done["device"].startswith("cpu (")  # the card says what it trained on


def test_the_kept_weights_are_the_ones_that_were_scored(ship_run):
    from Training.study.cards import synthesis_card
    from Training.data.cohorts import load_case
    from Training.study.evaluate import as_loaded_model
    from Training.study.judge import load_judge, shape_consistency
    from Training.study.ship_synthesis import best_generators, open_run, run_cases

    config = open_run(ship_run, None)
    preset = config["preset_object"]
    variant, chosen, ct_to_mr, _ = best_generators(ship_run / "essnet", preset, "essnet")
    volumes = {case.patient: load_case(case) for case in run_cases(config, "CT", "select")}
    again = shape_consistency(as_loaded_model(ct_to_mr, synthesis_card(preset, "x", "CT->MR", {})), load_judge(),
                              volumes)
    assert again["per_patient"] == pytest.approx(chosen["per_patient"], abs=1e-6)


def tensors_of(state, prefix="") -> dict:
    """Every tensor in a nested state (dicts, lists), by its path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {path: tensor for key, value in items for path, tensor in tensors_of(value, f"{prefix}/{key}").items()}


def test_a_run_stopped_midway_resumes_to_the_same_models(ship_run, tmp_path, monkeypatch):
    """Killed after the checkpoint and selection of iteration 3, the same command finishes the run: the scores and
    the kept generators are those of the run that never stopped; once done, a further call changes nothing."""
    from Training.stages import train_synthesis
    from Training.stages.checkpoint import load_checkpoint
    from Training.study.ship_synthesis import train_all

    run_dir = tmp_path / "ship"
    run_dir.mkdir()
    shutil.copyfile(ship_run / "config.json", run_dir / "config.json")
    whole_step = train_synthesis.unpaired_step

    def killed_at_4(*arguments):
        if arguments[6] == 4:  # the iteration
            raise KeyboardInterrupt
        return whole_step(*arguments)

    monkeypatch.setattr(train_synthesis, "unpaired_step", killed_at_4)
    with pytest.raises(KeyboardInterrupt):
        train_all(run_dir, None, ("essnet",), workers=1, stream=io.StringIO())
    assert [e["iteration"] for e in read_json(run_dir / "essnet" / "selection.json")["scores"]] == [3]
    assert not (run_dir / "essnet" / "done.json").exists()
    monkeypatch.setattr(train_synthesis, "unpaired_step", whole_step)
    assert train_all(run_dir, None, ("essnet",), workers=1, stream=io.StringIO()) == 0
    resumed, whole = (read_json(folder / "essnet" / "selection.json") for folder in (run_dir, ship_run))
    assert resumed == whole
    # The trained state at the end (generators, discriminators, optimisers, moving averages) is the same too.
    final = [load_checkpoint(folder / "essnet" / "checkpoint.pt")["training"] for folder in (run_dir, ship_run)]
    assert tensors_of(final[0]).keys() == tensors_of(final[1]).keys()
    for name, tensor in tensors_of(final[0]).items():
        assert torch.equal(tensor, tensors_of(final[1])[name]), name
    files = [run_dir / "essnet" / name for name in ("selection.json", "checkpoint.pt", "best-live.pt")]
    finished = [path.stat().st_mtime_ns for path in files]
    assert train_all(run_dir, None, ("essnet",), workers=1, stream=io.StringIO()) == 0
    assert [path.stat().st_mtime_ns for path in files] == finished


def test_a_run_stopped_between_the_kept_weights_and_their_record_reads_the_weights(ship_run, tmp_path, monkeypatch):
    """The best weights are written before selection.json: stopped between the two, the record of the weights on
    disk wins, so the model used and the iteration named are the same."""
    from Training.study import ship_synthesis
    from Training.study.ship_synthesis import best_generators, open_run, selection_record, train_all

    run_dir = tmp_path / "ship"
    run_dir.mkdir()
    shutil.copyfile(ship_run / "config.json", run_dir / "config.json")
    means = iter(range(1, 100))
    monkeypatch.setattr(ship_synthesis.Selection, "score",
                        lambda self, network: {"mean": float(next(means)), "min": 0.0, "per_patient": {}})
    real_write = ship_synthesis.write_json

    def stopped_at_6(data, path):
        if path.name == "selection.json" and any(e["iteration"] == 6 for e in data["scores"]):
            raise KeyboardInterrupt
        real_write(data, path)

    monkeypatch.setattr(ship_synthesis, "write_json", stopped_at_6)
    with pytest.raises(KeyboardInterrupt):
        train_all(run_dir, None, ("essnet",), workers=1, stream=io.StringIO())
    on_disk = read_json(run_dir / "essnet" / "selection.json")
    assert {v: b["iteration"] for v, b in on_disk["best"].items()} == {"live": 3, "average": 3}  # stale
    record = selection_record(run_dir / "essnet")
    assert {v: b["iteration"] for v, b in record["best"].items()} == {"live": 6, "average": 6}
    variant, chosen, _, _ = best_generators(run_dir / "essnet", open_run(run_dir, None)["preset_object"], "essnet")
    assert (variant, chosen["iteration"], chosen["mean"]) == ("average", 6, 4.0)


@pytest.fixture(scope="module")
def ship_report(ship_run):
    from Training.study.ship_report import write_ship_report

    return write_ship_report(ship_run, log=lambda *_: None, two_sample_iterations=20, shipped_before=False)


def test_report_exports_cards_with_recipe_and_quality(ship_run, ship_report):
    from SlicerEssNet.weights import load_model

    text = ship_report.read_text()
    assert "| EssNet | iteration " in text and " of 6, " in text and "Nyquist ratio" in text
    assert "![contact_sheet.png]" in text and "EssNet minus the plain CycleGAN" not in text  # one model only
    loaded = load_model(ship_run / "models" / "essnet-ct2mr.safetensors")
    card = loaded.card
    assert card.architecture["upsampling"] == "resize"
    assert card.training["preset"] == "ship" and card.training["iterations_trained"] == 6
    quality = read_json(ship_run / "quality.json")["models"]["essnet"]
    assert card.metrics["shape_consistency_3d_dice"] == quality["shape_consistency"]["mean"]
    assert 0.0 <= quality["two_sample"]["accuracy"] <= 1.0
    assert (ship_run / "contact_sheet.png").stat().st_size > 1000


def test_report_states_the_segmentation_branchs_gain_over_the_plain_cyclegan(ship_run, ship_report):
    import copy

    from Training.study.ship_report import markdown
    from Training.study.ship_synthesis import open_run

    quality = read_json(ship_run / "quality.json")
    plain = copy.deepcopy(quality["models"]["essnet"])
    plain["shape_consistency"]["mean"] -= 0.0625
    quality["models"]["cyclegan"] = plain
    text = markdown(open_run(ship_run, None), quality, [], {"essnet": 6, "cyclegan": 6})
    assert "| CycleGAN (ablation) |" in text and "EssNet minus the plain CycleGAN, same recipe, seed and judge): +0.062" in text


def test_the_regenerate_line_rebuilds_the_recorded_recipe(ship_run, tmp_path):
    """A run of one model with changed options says ``--only`` and each ``--set``; read back through
    ``parse_option`` onto the named preset, those options give the recorded recipe again."""
    import shlex

    from Training.study.presets import apply_options, parse_option
    from Training.study.ship_report import REPO, regenerate_line
    from Training.study.ship_synthesis import open_run

    recorded = open_run(ship_run, None)["preset_object"]
    line = regenerate_line(recorded, {"cyclegan": 6}, REPO / "runs" / "ship-cyclegan",
                           REPO / "docs" / "results" / "ship-cyclegan")
    train, report = line.split("`")[1], line.split("`")[3]
    assert train.startswith("python -m Training ship-synthesis --run-dir runs/ship-cyclegan --only cyclegan --set ")
    assert report == "python -m Training ship-report runs/ship-cyclegan --out docs/results/ship-cyclegan"
    words = shlex.split(train)
    rebuilt = apply_options(get_preset("ship"), [parse_option(words[index + 1])
                                                 for index, word in enumerate(words) if word == "--set"])
    assert rebuilt.data == recorded.data and rebuilt.synthesis == recorded.synthesis
    both = regenerate_line(recorded, {"essnet": 6, "cyclegan": 6}, REPO / "runs" / "ship", tmp_path / "elsewhere")
    assert "--only" not in both and "--run-dir" not in both
    assert both.endswith(f"ship-report --out {(tmp_path / 'elsewhere').resolve()}`.")


def test_a_study_takes_stage_1_from_the_ship_run(ship_run, tmp_path):
    """``run --synthesis-from``: a run of the real arm alone grows the mixed arm with the ship run's selected
    EssNet; no synthesis model is trained, every CT patient is translated once, the real arm is not retrained."""
    from Training.study.report import write_report
    from Training.study.study import Study

    config = read_json(ship_run / "config.json")
    preset = tiny_study_preset(config)
    preset.arms = ("real",)
    run_dir = tmp_path / "paper"
    Study(run_dir, preset, stream=io.StringIO()).run()
    real_done = (run_dir / "seed0" / "arms" / "real" / "done.json").stat().st_mtime_ns

    log = io.StringIO()
    study = Study(run_dir, preset, stream=log, arms=("real", "real+essnet"), synthesis_from=ship_run)
    assert study.synthesis_models() == (("essnet", True),) and "stage1_essnet" not in study.planned_jobs()
    results = study.run()
    assert not list(run_dir.glob("seed0/stage1_*"))
    assert (run_dir / "seed0" / "arms" / "real" / "done.json").stat().st_mtime_ns == real_done
    chosen = read_json(ship_run / "essnet" / "selection.json")["best"]
    variant = max(chosen, key=lambda v: chosen[v]["mean"])
    record = results["per_seed"]["0"]["stage1"]["essnet"]
    assert (record["variant"], record["iteration"]) == (variant, chosen[variant]["iteration"])
    translated = sorted(p.name.split("_essnet")[0] for p in (run_dir / "synthetic" / "essnet").glob("*_mr.nii.gz"))
    assert translated == sorted(config["split"]["CT"]["train"] + config["split"]["CT"]["select"]
                                + config["split"]["CT"]["val"])
    assert set(results["summary"]) == {"real", "real+essnet"} and "essnet" in results["shape_consistency"]
    assert record["shape_consistency_3d_dice"] == results["per_seed"]["0"]["shape_consistency"]["essnet"]["mean_dice"]
    # No gate: the mixed arm's synthetic MR is made before the real-only U-Net is awaited, which judges it after.
    lines = log.getvalue().splitlines()
    order = [next(i for i, line in enumerate(lines) if text in line)
             for text in ("stage 1 from", "arm real: 3D Dice", "shape consistency essnet")]
    assert order == sorted(order)
    assert not (run_dir / "models" / "demo-essnet-ct2mr.safetensors").exists()  # the ship run exports those
    assert f"the selected models of the ship run `{ship_run.resolve()}`" in write_report(run_dir).read_text()
    with pytest.raises(ValueError, match="another --run-dir"):
        Study(run_dir, preset, synthesis_from=tmp_path / "elsewhere")
    # A run that trained its own stage 1 cannot be switched to the ship run's models.
    own = tmp_path / "own"
    Study(own, preset, stream=io.StringIO())
    (own / "seed0" / "stage1_essnet").mkdir(parents=True)
    with pytest.raises(ValueError, match="trained its own synthesis models"):
        Study(own, preset, synthesis_from=ship_run)


def test_a_study_takes_stage_1_from_the_shipped_models(ship_run, ship_report, tmp_path):
    """``run --synthesis-from SlicerEssNet/models``: the exported fp16 models and their cards serve as stage 1, the
    report names them; an arm that needs a model the folder lacks fails in one line before any folder is made."""
    from Training.study.report import write_report
    from Training.study.study import Study

    models = ship_run / "models"
    card = read_json(models / "essnet-ct2mr.json")
    config = read_json(ship_run / "config.json")
    preset = tiny_study_preset(config)
    preset.arms = ("real", "real+essnet")
    with pytest.raises(FileNotFoundError, match="cyclegan-ct2mr.json"):
        Study(tmp_path / "ablation", preset, arms=("real", "real+cyclegan"), synthesis_from=models)
    assert not (tmp_path / "ablation").exists()

    log = io.StringIO()
    results = Study(tmp_path / "paper", preset, stream=log, synthesis_from=models).run()
    record = results["per_seed"]["0"]["stage1"]["essnet"]
    assert record["shipped"] and record["iteration"] == card["training"]["selected_iteration"]
    assert record["variant"] == card["training"]["selected_weights"]
    translated = sorted(p.name.split("_essnet")[0]
                        for p in (tmp_path / "paper" / "synthetic" / "essnet").glob("*_mr.nii.gz"))
    assert translated == sorted(set(config["split"]["CT"]["train"] + config["split"]["CT"]["select"]
                                    + config["split"]["CT"]["val"]))
    assert set(results["summary"]) == {"real", "real+essnet"}
    judged = results["per_seed"]["0"]["shape_consistency"]["essnet"]["mean_dice"]
    assert 0.0 <= judged <= 1.0 and record["shape_consistency_3d_dice"] == judged
    assert f"the shipped models in `{models.resolve()}`" in write_report(tmp_path / "paper").read_text()


def test_the_run_command_names_a_missing_synthesis_source_in_one_line(tmp_path, capsys):
    """A folder that is not there, or models that lack an arm's generator: exit 1, one line, no run folder."""
    from Training.__main__ import REPO, main

    for source, arms, named in ((tmp_path / "nowhere", ["real", "real+essnet"], "no such folder"),
                                (REPO / "SlicerEssNet" / "models", ["real", "real+cyclegan"], "cyclegan-ct2mr.json")):
        code = main(["run", "--preset", "demo", "--run-dir", str(tmp_path / "run"), "--synthesis-from", str(source),
                     "--arms", *arms, "--workers", "1"])
        error = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and error[-1].startswith("error: ") and named in error[-1]
        assert not (tmp_path / "run").exists()


def test_refused_commands_leave_every_folder_as_it_was(ship_run, tmp_path, capsys):
    """Options a resumed ship run cannot take, a selection set out of range, a folder that is not a ship run, or
    one with nothing selected yet: exit 1 with one line, and no file written or changed."""
    from pathlib import Path

    from Training.__main__ import main

    config_before = (ship_run / "config.json").read_bytes()
    root = Path(read_json(ship_run / "config.json")["cases"]["CT"][0]["image"]).parent.parent
    study_folder = tmp_path / "study"
    study_folder.mkdir()
    (study_folder / "config.json").write_text('{"preset": {}, "split": {"CT": {"train": [], "val": []}}}')
    unselected = tmp_path / "unselected"
    unselected.mkdir()
    shutil.copyfile(ship_run / "config.json", unselected / "config.json")
    for command, named in (
            (["ship-synthesis", "--run-dir", str(ship_run), "--set", "synthesis.iterations=7"],
             "was started with synthesis.iterations=6"),
            (["ship-synthesis", "--run-dir", str(tmp_path / "new"), "--data-root", str(root),
              "--set", "data.ct_select_patients=0"], "data.ct_select_patients=0"),
            (["ship-synthesis", "--run-dir", str(tmp_path / "new"), "--data-root", str(root),
              "--set", "synthesis.select_every=0"], "select_every must be at least 1"),
            (["ship-report", str(study_folder)], "not a ship-synthesis run folder"),
            (["ship-report", str(unselected)], "no selected model yet")):
        listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        assert main(command) == 1, command
        error = capsys.readouterr().err.strip().splitlines()
        assert error[-1].startswith("error: ") and named in error[-1], error
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing
    assert (ship_run / "config.json").read_bytes() == config_before


def test_a_study_checks_its_synthesis_source_before_it_writes(ship_run, tmp_path):
    """A source that lacks an arm's model or trained on this run's held-out CTs is refused before the run's
    config changes; a source whose weights changed after the run learned from them is refused on resuming, and
    one that changes during a run stops it before anything learns from the new weights."""
    from Training.study.study import Study
    from Training.study.synthesis_source import SourceChangedError

    preset = tiny_study_preset(read_json(ship_run / "config.json"))
    preset.arms = ("real",)
    run_dir = tmp_path / "paper"
    Study(run_dir, preset, stream=io.StringIO())
    recorded = (run_dir / "config.json").read_bytes()
    with pytest.raises(FileNotFoundError, match="no selected model yet"):  # this ship run has no CycleGAN
        Study(run_dir, preset, arms=("real", "real+cyclegan"), seeds=(0, 1), synthesis_from=ship_run)
    assert (run_dir / "config.json").read_bytes() == recorded

    wider = dataclasses.replace(preset, data=dataclasses.replace(preset.data, ct_val_patients=9))
    with pytest.raises(ValueError, match="this run holds out"):
        Study(tmp_path / "wider", wider, arms=("real", "real+essnet"), synthesis_from=ship_run)
    assert not (tmp_path / "wider").exists()

    source = tmp_path / "source"
    shutil.copytree(ship_run, source)
    Study(run_dir, preset, stream=io.StringIO(), arms=("real", "real+essnet"), synthesis_from=source).run()
    config = read_json(run_dir / "config.json")
    fingerprint = config["synthesis_models"]["essnet"]
    assert config["preset"]["arms"] == ["real", "real+essnet"]
    assert (run_dir / "synthetic" / "essnet").is_dir() and fingerprint["iteration"] in (3, 6)
    Study(run_dir, preset, stream=io.StringIO())  # unchanged weights: resumes
    kept = source / "essnet" / f"best-{fingerprint['variant']}.pt"
    original = kept.read_bytes()
    other = {"live": "average", "average": "live"}[fingerprint["variant"]]
    shutil.copyfile(source / "essnet" / f"best-{other}.pt", kept)
    recorded = (run_dir / "config.json").read_bytes()
    with pytest.raises(ValueError, match="changed since this run learned"):
        Study(run_dir, preset, stream=io.StringIO())
    shutil.rmtree(run_dir / "synthetic")  # the arm that learned from the old weights still stands
    with pytest.raises(ValueError, match="changed since this run learned"):
        Study(run_dir, preset, stream=io.StringIO(), seeds=(0, 1))
    assert (run_dir / "config.json").read_bytes() == recorded

    # A source that moves on between the start of a run and its use stops the run before anything learns from it.
    kept.write_bytes(original)
    fresh = tmp_path / "fresh"
    study = Study(fresh, preset, stream=io.StringIO(), arms=("real", "real+essnet"), synthesis_from=source)
    shutil.copyfile(source / "essnet" / f"best-{other}.pt", kept)
    with pytest.raises(SourceChangedError, match="changed while this run used them"):
        study.run()
    assert not (fresh / "synthetic").exists() and not list(fresh.glob("seed*/arms/real+essnet"))


def test_the_ship_report_measures_again_when_the_run_chose_other_weights(ship_run, ship_report):
    from SlicerEssNet.weights import file_sha256
    from Training.stages.checkpoint import write_json
    from Training.study.ship_report import write_ship_report

    quality = read_json(ship_run / "quality.json")
    entry = quality["models"]["essnet"]
    assert entry["sha256"] == file_sha256(ship_run / "essnet" / f"best-{entry['variant']}.pt")
    said = []
    write_ship_report(ship_run, log=said.append, two_sample_iterations=20, shipped_before=False)
    assert said == []  # the same weights: the cache serves
    entry["sha256"] = "weights the run has since replaced"
    write_json(quality, ship_run / "quality.json")
    write_ship_report(ship_run, log=said.append, two_sample_iterations=20, shipped_before=False)
    assert any("essnet: shape consistency" in line for line in said)
    assert read_json(ship_run / "quality.json")["models"]["essnet"]["sha256"] == file_sha256(
        ship_run / "essnet" / f"best-{entry['variant']}.pt")
