"""A micro end-to-end study on phantoms: both stages, every arm, results, report, fp16 models whose cards the core
loads, the CLI applying them, shipping into a registry, and a second run that resumes instead of retraining."""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest


def _micro_preset():
    from Training.study.presets import get_preset

    preset = get_preset("demo")
    preset.data = dataclasses.replace(preset.data, phantom_ct_patients=3, phantom_mr_patients=4, ct_val_patients=1,
                                      mr_val_patients=1, low_data_patients=1, spacing_mm=8.0, crop=48)
    preset.synthesis = dataclasses.replace(preset.synthesis, ngf=4, ndf=4, seg_ngf=4, n_blocks=1, seg_n_blocks=1,
                                           crop=32, iterations=6, decay_from=3, checkpoint_every=3, pool_size=2,
                                           min_shape_consistency=0.0)  # 6-iteration models: the gate is tested apart
    preset.segmentation = dataclasses.replace(preset.segmentation, base=4, crop=48, iterations=6, decay_from=3, eval_every=3,
                                              checkpoint_every=3, monai_channels=(4, 8, 16, 32, 64),
                                              monai_num_res_units=1)
    preset.arms = ("real", "real+essnet", "real+cyclegan", "low5", "low5+essnet", "monai")
    return preset


@pytest.mark.slow
def test_micro_study_end_to_end(tmp_path, capsys):
    import io

    from safetensors import safe_open

    from SlicerEssNet.model_store import ModelStore
    from SlicerEssNet.weights import load_model
    from Training.study.demo import apply_models_with_cli
    from Training.study.report import write_report
    from Training.study.ship import ship_models
    from Training.study.study import Study

    run_dir = tmp_path / "run"
    log = io.StringIO()
    study = Study(run_dir, _micro_preset(), stream=log)
    results = study.run()
    # After each training job the study says how far it is: 6 arms and 2 synthesis models for the one seed.
    progress = [line for line in log.getvalue().splitlines() if "training jobs done" in line]
    assert len(progress) == 8 and progress[0].startswith("[study] progress: 1 of 8 training jobs done (seed 0, arm ")
    assert "left" in progress[0] and progress[-1].startswith("[study] progress: 8 of 8") and "left" not in progress[-1]

    config = json.loads((run_dir / "config.json").read_text())
    split = config["split"]
    assert not set(split["MR"]["train"]) & set(split["MR"]["val"])
    assert set(results["summary"]) == set(study.preset.arms)
    for arm, metrics in results["summary"].items():
        assert 0.0 <= metrics["pooled_dice_2d"]["mean"] <= 1.0, arm
        dice, iou = metrics["pooled_dice_2d"]["mean"], metrics["pooled_iou_2d"]["mean"]
        assert iou == pytest.approx(dice / (2 - dice), abs=1e-9)  # pooled: the paper's identity holds
    # The real-only arm's scores, recomputed apart from Training/evaluate.py: its best checkpoint through the core's
    # segment() on the validation volumes, the overlap counted here with numpy over every voxel of every volume.
    expected = _pooled_scores_of_the_best_checkpoint(study, results["per_seed"]["0"]["arms"]["real"]["folder"])
    recorded = results["per_seed"]["0"]["arms"]["real"]["scores"]
    assert (recorded["pooled_dice_2d"], recorded["pooled_iou_2d"]) == pytest.approx(expected, abs=1e-9)
    assert results["summary"]["real"]["pooled_dice_2d"]["mean"] == pytest.approx(expected[0], abs=1e-9)
    assert set(results["shape_consistency"]) == {"essnet", "cyclegan"}
    seed0 = results["per_seed"]["0"]
    assert seed0["stage1"]["cyclegan"]["segmenter_parameters"] == 0 < seed0["stage1"]["essnet"]["segmenter_parameters"]

    # Synthetic set: one NIfTI per CT patient on the CT's own grid, CT liver label beside it.
    from SlicerEssNet.io.volume_files import read_volume

    synthetic = sorted((run_dir / "seed0" / "synthetic" / "essnet").glob("*_essnet_mr.nii.gz"))
    assert len(synthetic) == 3
    ct_case = study.cases["CT"][0]
    assert read_volume(synthetic[0]).same_geometry(read_volume(ct_case.image), atol=1e-5)
    assert (run_dir / "seed0" / "contact_sheet.png").stat().st_size > 1000

    # Shipped-format models: fp16 on disk, float32 when loaded, cards carrying the training grid and specs.
    for name in ("demo-essnet-ct2mr", "demo-essnet-mr2ct", "demo-liver-unet-mr"):
        weights = run_dir / "models" / f"{name}.safetensors"
        with safe_open(str(weights), "pt") as handle:
            assert any(str(handle.get_tensor(k).dtype) == "torch.float16" for k in handle.keys())
        loaded = load_model(weights)
        assert loaded.card.grid["spacing_mm"] == 8.0 and loaded.card.grid["mode"] == "spacing"
        assert loaded.card.training["split"]["MR"] == split["MR"]
    assert load_model(run_dir / "models" / "demo-essnet-ct2mr.safetensors").card.preprocessing["kind"] == "ct_window"
    # Each card states its own network's scores: the first seed's, for the arm chosen on the mean over seeds.
    unet_card = load_model(run_dir / "models" / "demo-liver-unet-mr.safetensors").card
    arm = unet_card.metrics["arm"]
    assert arm == max(("real", "real+essnet", "real+cyclegan"), key=lambda a: results["summary"][a]["mean_dice"]["mean"])
    assert unet_card.metrics["mean_dice"] == seed0["arms"][arm]["scores"]["mean_dice"]
    assert load_model(run_dir / "models" / "demo-essnet-ct2mr.safetensors").card.metrics[
        "shape_consistency_3d_dice"] == seed0["shape_consistency"]["essnet"]["mean_dice"]
    # The shipped arm is scored again with test-time augmentation, and its card says what --tta gives.
    tta = results["test_time_augmentation"]
    assert tta["arm"] == arm and set(tta["scores"]["per_volume"]) == set(split["MR"]["val"])
    assert unet_card.metrics["mean_dice_tta"] == tta["scores"]["mean_dice"]
    assert (run_dir / "seed0" / "arms" / arm / "scores_tta.json").exists()
    # Every U-Net on the held-out CT patients, on the CT itself and through EssNet's synthetic MR; kept per arm.
    on_ct = results["on_ct"]
    assert on_ct["seed"] == 0 and set(on_ct["arms"]) == set(study.preset.arms)
    for arm, entry in on_ct["arms"].items():
        assert set(entry["direct"]["per_volume"]) == set(split["CT"]["val"]), arm
        assert set(entry["through_synthetic_mr"]["per_volume"]) == set(split["CT"]["val"]), arm
        assert (run_dir / "seed0" / "arms" / seed0["arms"][arm]["folder"] / "scores_ct.json").exists()

    # The report and its figures regenerate from the run folder alone.
    out = tmp_path / "report"
    report = write_report(run_dir, out)
    text = report.read_text()
    assert "0.9459" in text and "| real MR only |" in text
    assert "With test-time augmentation (`--tta`" in text
    assert "## On CT (a check, not a target)" in text and "| through synthetic MR, 3D Dice |" in text
    for figure in ("stage1_curves.png", "stage2_curves.png", "per_patient_dice.png", "contact_sheet_seed0.png"):
        assert (out / figure).stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["summary"] == json.loads(
        json.dumps(results["summary"]))

    # The CLI applies the trained models to a volume, keeping the input's geometry exactly.
    cli = apply_models_with_cli(study, stream=io.StringIO())
    assert cli["same_geometry"]

    # Shipping: copied beside a registry, registered as defaults, resolvable by the core's model store.
    models_dir = tmp_path / "package_models"
    models_dir.mkdir()
    (models_dir / "registry.json").write_text(json.dumps({"format": "slicer-essnet-registry/1", "models": []}))
    ship_models(run_dir, models_dir)
    store = ModelStore(cache_dir=tmp_path / "cache", registry_path=models_dir / "registry.json")
    assert str(store.default_model("segmentation")) == "demo-liver-unet-mr"
    assert load_model(store.resolve("demo-essnet-ct2mr")).card.task == "synthesis"

    # TensorBoard logs per training job: the curves results.json records, readable by TensorBoard itself.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "seed0" / "arms" / "real" / "tensorboard"))
    events.Reload()
    assert {"loss", "val_dice", "best_val_dice"} <= set(events.Tags()["scalars"])
    curve = [entry for entry in seed0["arms"]["real"]["history"] if "val_dice" in entry]
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("val_dice")] == [
        (entry["iteration"], round(entry["val_dice"], 5)) for entry in curve]
    assert events.Scalars("loss") and (run_dir / "seed0" / "stage1_essnet" / "tensorboard").is_dir()

    # Each training job's time is its loop's own clock; the checks are timed once.
    timings = json.loads((run_dir / "timings.json").read_text())
    assert timings["seed0/arm_real"] == json.loads((run_dir / "seed0" / "arms" / "real" / "done.json").read_text())[
        "seconds"] > 0
    assert {"seed0/stage1_essnet", "seed0/translate_essnet", "on_ct"} <= set(timings)

    # Running again resumes: nothing retrains, the scores are the same, and reloading adds no time. An arm first
    # scored where no EssNet was trained (a job copied in from such a run) gets its route through synthetic MR then.
    kept = run_dir / "seed0" / "arms" / "real" / "scores_ct.json"
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "through_synthetic_mr": None}))
    again = Study(run_dir, _micro_preset(), stream=log).run()
    assert json.loads((run_dir / "timings.json").read_text()) == timings
    assert json.dumps(again["summary"]) == json.dumps(results["summary"])  # NaN-safe (tiny models: empty masks)
    assert json.dumps(again["test_time_augmentation"]) == json.dumps(results["test_time_augmentation"])
    assert json.dumps(again["on_ct"]) == json.dumps(results["on_ct"])
    assert "resuming at iteration 6/6" in capsys.readouterr().err
    np.testing.assert_equal(again["split"], results["split"])


def _pooled_scores_of_the_best_checkpoint(study, folder: str) -> tuple:
    """(pooled Dice, pooled IoU) of an arm's best.pt on the study's validation volumes, with the core's segment()."""
    from SlicerEssNet.networks import build_network
    from SlicerEssNet.pipeline import segment
    from SlicerEssNet.weights import LoadedModel
    from Training.stages.checkpoint import load_checkpoint

    card = study.scoring_card(0)
    network = build_network(card.architecture)
    network.load_state_dict(load_checkpoint(study.run_dir / "seed0" / "arms" / folder / "best.pt")["network"])
    loaded = LoadedModel(card, network.eval(), None)
    overlap = predicted = reference = 0
    for case in study.mr_val_cases:
        image, liver = study.val_volumes[case.patient]
        labels = segment(image, loaded, device="cpu", precision="fp32").array == 1
        truth = np.asarray(liver.array) == 1
        overlap += int(np.count_nonzero(labels & truth))
        predicted += int(np.count_nonzero(labels))
        reference += int(np.count_nonzero(truth))
    assert reference > 0
    return 2 * overlap / (predicted + reference), overlap / (predicted + reference - overlap)


def test_the_scores_of_a_model_whose_masks_are_known(tmp_path):
    """score_segmentation, which every arm is judged by, on a 'network' that marks the bright voxels: what it must
    report is known from the masks alone. Patient 1: a bright 16 x 16 block (and a bright 3 x 3 island the
    largest-component step must drop) against a liver shifted by 4 rows and 2 columns: Dice 2 * 672 / 2048.
    Patient 2: the same block against half of it. Pooled over both is not the mean of the two."""
    from types import SimpleNamespace

    import torch

    from SlicerEssNet.volume import Volume
    from SlicerEssNet.weights import LoadedModel, create_untrained_model, load_model
    from Training.study.evaluate import mean_volume_dice, score_segmentation

    class MarkBright(torch.nn.Module):
        def forward(self, x):  # class 1 wherever the normalised intensity is above 0
            return torch.cat([-x, x], dim=1)

    card = load_model(create_untrained_model("segmentation", tmp_path / "tiny")).card.replace(
        grid={"mode": "spacing", "spacing_mm": 1.5, "multiple_of": 16})  # the volumes' own pixels: no resampling
    loaded = LoadedModel(card, MarkBright(), None)
    spacing = (1.5, 1.5, 4.0)
    image = np.full((4, 32, 32), 100, np.int16)
    image[:, 4:20, 4:20] = 900
    image[1:3, 26:29, 26:29] = 900  # an island, apart from the block
    block = np.zeros(image.shape, bool)
    block[:, 4:20, 4:20] = True
    shifted, half = np.zeros_like(block), np.zeros_like(block)
    shifted[:, 8:24, 6:22] = True
    half[:, 4:12, 4:20] = True
    volumes = {name: (Volume(image, spacing), Volume(truth.astype(np.uint8), spacing))
               for name, truth in (("p1", shifted), ("p2", half))}
    cases = [SimpleNamespace(patient=name) for name in volumes]

    scores = score_segmentation(loaded, cases, volumes)
    dice = {"p1": 2 * 672 / (1024 + 1024), "p2": 2 * 512 / (1024 + 512)}
    for name, truth in (("p1", shifted), ("p2", half)):
        assert scores["per_volume"][name]["dice"] == pytest.approx(dice[name], abs=1e-12)
        assert scores["per_volume"][name]["dice"] == pytest.approx(
            2 * np.count_nonzero(block & truth) / (block.sum() + truth.sum()), abs=1e-12)
        assert scores["per_volume"][name]["pred_ml"] == pytest.approx(1024 * 1.5 * 1.5 * 4.0 / 1000.0, rel=1e-12)
    overlap, predicted, reference = 672 + 512, 2048, 1024 + 512
    assert scores["pooled_dice_2d"] == pytest.approx(2 * overlap / (predicted + reference), abs=1e-12)
    assert scores["pooled_iou_2d"] == pytest.approx(overlap / (predicted + reference - overlap), abs=1e-12)
    assert scores["mean_dice"] == pytest.approx((dice["p1"] + dice["p2"]) / 2, abs=1e-12)
    assert abs(scores["pooled_dice_2d"] - scores["mean_dice"]) > 1e-4  # pooling is not averaging
    assert mean_volume_dice(loaded, cases, volumes) == pytest.approx(scores["mean_dice"], abs=1e-12)


def test_no_seg_flag_trains_only_the_ablation_and_drops_the_essnet_arms(tmp_path):
    from Training.__main__ import main
    from Training.study.study import Study

    preset = _micro_preset()
    preset.synthesis = dataclasses.replace(preset.synthesis, seg_weight=0.0)  # what --no-seg sets
    study = Study(tmp_path / "run", preset)
    assert study.synthesis_models() == (("cyclegan", False),)
    assert study.arms() == ("real", "real+cyclegan", "low5", "monai")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["preset"]["synthesis"]["seg_weight"] == 0.0
    with pytest.raises(SystemExit):
        main(["run", "--preset", "nonexistent"])


def test_command_line_options_change_a_copy_of_the_preset():
    from Training.__main__ import build_parser, preset_for
    from Training.study.presets import get_preset

    arguments = build_parser().parse_args(["run", "--preset", "cpu", "--identity", "0.5", "--no-seg", "--seeds", "3", "4"])
    preset = preset_for(arguments)
    assert preset.synthesis.lambda_identity == 0.5 and preset.synthesis.seg_weight == 0.0
    assert preset.seeds == (3, 4)
    assert get_preset("cpu").synthesis.lambda_identity == 0.0  # the named preset itself is untouched
    assert preset_for(build_parser().parse_args(["run", "--preset", "cpu"])).synthesis == get_preset("cpu").synthesis
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--identity", "-1"])


def test_set_changes_any_option_with_its_own_type_and_arms_choose_the_arms():
    from Training.__main__ import build_parser, preset_for
    from Training.study.presets import get_preset

    arguments = build_parser().parse_args([
        "run", "--preset", "cpu", "--set", "data.organ_gamma=0.3", "--set", "segmentation.iterations=3000",
        "--set", "segmentation.autocast_bf16=false", "--set", "segmentation.monai_channels=8,16,32",
        "--arms", "real", "monai"])
    preset = preset_for(arguments)
    assert preset.data.organ_gamma == 0.3 and preset.segmentation.iterations == 3000
    assert preset.segmentation.autocast_bf16 is False and preset.segmentation.monai_channels == (8, 16, 32)
    assert preset.arms == ("real", "monai")
    assert get_preset("cpu").data.organ_gamma == 0.8 and get_preset("cpu").segmentation.iterations == 3500
    for wrong in ("organ_gamma=0.8", "model.base=8", "data.organ_gama=0.8", "segmentation.iterations=many",
                  "segmentation.autocast_bf16=maybe", "segmentation.optimizer=adamw", "data.source=disk"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "--set", wrong])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--arms", "real", "nonexistent"])


def test_the_report_judges_the_time_target_on_a_whole_cpu_seed_only():
    from Training.study.presets import get_preset
    from Training.study.report import _time_target_lines

    preset = get_preset("cpu").to_dict()
    timings = {"seed0/arm_real": 1800.0, "seed0/stage1_essnet": 1200.0, "seed0/arm_real+ct": 600.0,
               "seed1/arm_real": 900.0, "on_ct": 120.0}  # another seed and the checks are not seed 0's time

    def verdict(ok):
        return "met" if ok else "not met"

    line = " ".join(_time_target_lines(preset, [0], timings, verdict))
    assert "**met** (seed 0: 60 min, of which 10 for the arm beyond the paper (real+ct)" in line
    timings["seed0/translate_essnet"] = 60.0
    assert "**not met** (seed 0: 61 min" in " ".join(_time_target_lines(preset, [0], timings, verdict))
    # Jobs side by side (--workers): the seed's own clock decides, the checks after it added (60 s + 120 s).
    clock = {"seed0": {"seconds": 3300.0, "workers": 2, "resumed": False}}
    timings["seed0/tta_real+ct"] = 60.0
    line = " ".join(_time_target_lines(preset, [0], timings, verdict, clock))
    assert "**met** (seed 0: 58 min on the clock, 2 worker processes, the checks after the seed included; its " \
           "jobs' own clocks add up to 62 min" in line
    clock["seed0"]["seconds"] = 3500.0
    assert "**not met** (seed 0: 61 min on the clock" in " ".join(_time_target_lines(preset, [0], timings, verdict,
                                                                                     clock))
    clock["seed0"]["resumed"] = True  # the clock missed the earlier sessions: judged on the jobs' times
    assert "(seed 0: 62 min, of which 10" in " ".join(_time_target_lines(preset, [0], timings, verdict, clock))
    preset["arms"] = ["real", "real+ct", "monai"]  # some arms only: a seed of it is not the whole study
    assert _time_target_lines(preset, [0], timings, verdict) == []


def test_the_report_names_the_options_that_regenerate_a_changed_run():
    from Training.__main__ import build_parser, preset_for
    from Training.study.report import _changed_options

    arguments = build_parser().parse_args(["run", "--preset", "cpu", "--arms", "real", "monai", "--set",
                                           "data.organ_gamma=0.5", "--set", "segmentation.autocast_bf16=false"])
    text = _changed_options(preset_for(arguments).to_dict())
    assert text == " --arms real monai --set data.organ_gamma=0.5 --set segmentation.autocast_bf16=false"
    assert build_parser().parse_args(["run", *text.split()])  # the options parse back
    assert _changed_options(preset_for(build_parser().parse_args(["run", "--preset", "cpu"])).to_dict()) == ""
    recorded = preset_for(build_parser().parse_args(["run", "--preset", "cpu"])).to_dict()
    del recorded["data"]["organ_gamma"]  # a run recorded before the option existed ran without it
    assert _changed_options(recorded) == " --set data.organ_gamma=0.0"


def test_importing_the_training_command_leaves_torch_unloaded():
    # The OpenMP wait policy only counts if it is set before torch loads (SlicerEssNet.runtime.import_torch).
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys; import Training.__main__; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False"


def _micro_study_of_arms(tmp_path, arms):
    """``(preset, study, results)`` of a micro study of ``arms`` alone, none of which needs a synthesis model."""
    from Training.study.study import Study

    preset = _micro_preset()
    preset.arms = arms
    study = Study(tmp_path / "run", preset, stream=io.StringIO())
    assert study.synthesis_models() == () and study.arms() == arms
    return preset, study, study.run()


def test_a_run_of_real_only_arms_trains_no_synthesis_model(tmp_path):
    from Training.study.report import write_report
    from Training.study.study import Study

    preset, study, results = _micro_study_of_arms(tmp_path, ("real", "monai"))
    run_dir = study.run_dir
    assert set(results["summary"]) == {"real", "monai"} and results["shape_consistency"] == {}
    assert not list((run_dir / "seed0").glob("stage1_*")) and not (run_dir / "seed0" / "synthetic").exists()
    assert sorted(p.name for p in (run_dir / "models").glob("*.safetensors")) == ["demo-liver-unet-mr.safetensors"]
    text = write_report(run_dir).read_text()
    assert "stage1_curves.png" not in text and "stage2_curves.png" in text
    assert not (run_dir / "stage1_curves.png").exists()
    # With real+essnet among the arms, EssNet (and only EssNet) is trained.
    preset.arms = ("real", "real+essnet")
    assert Study(tmp_path / "other", preset, stream=io.StringIO()).synthesis_models() == (("essnet", True),)


def test_the_ct_arm_learns_from_restyled_ct_slices_and_trains_no_synthesis_model(tmp_path, monkeypatch):
    import Training.stages.train_segmentation as loop
    from Training.study.report import write_report

    restyled = []
    original = loop.random_appearance
    monkeypatch.setattr(loop, "random_appearance", lambda images, *a, **k: restyled.append(len(images)) or
                        original(images, *a, **k))
    preset, study, results = _micro_study_of_arms(tmp_path, ("real", "real+ct"))
    run_dir = study.run_dir
    assert set(results["summary"]) == {"real", "real+ct"} and not list((run_dir / "seed0").glob("stage1_*"))
    assert results["per_seed"]["0"]["synthetic_slices"] == {"ct": len(study.ct_train)}
    ct_slices = round(preset.segmentation.batch_size * preset.segmentation.ct_fraction)  # ct_fraction, not
    assert ct_slices != round(preset.segmentation.batch_size * preset.segmentation.synthetic_fraction)  # EssNet's
    assert restyled == [ct_slices] * preset.segmentation.iterations  # the CT slices of each batch, no real one
    assert "real MR + CT with random appearance" in write_report(run_dir).read_text()


def test_more_seeds_can_be_added_to_an_existing_run(tmp_path):
    from Training.study.study import Study

    first = Study(tmp_path / "run", _micro_preset())
    assert first.preset.seeds == (0,)
    again = Study(tmp_path / "run", _micro_preset(), seeds=(0, 1, 2))
    assert again.preset.seeds == (0, 1, 2) and again.split == first.split
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["preset"]["seeds"] == [0, 1, 2]


@pytest.mark.slow
def test_stage1_gate_retrains_a_failed_synthesis_model_from_another_seed(tmp_path):
    """An attempt under the gate is trained again from seed + 1000 in its own folders; the best attempt is kept,
    its synthetic MR trains the mixed arms, and the report names every attempt."""
    from Training.study.report import write_report
    from Training.study.study import Study

    preset = _micro_preset()
    preset.seeds = (0,)
    preset.arms = ("real", "real+essnet")
    preset.synthesis = dataclasses.replace(preset.synthesis, seg_weight=1.0, min_shape_consistency=1.01,
                                           max_attempts=2)  # no translation reaches 1.01: every attempt fails
    run_dir = tmp_path / "run"
    log = io.StringIO()
    results = Study(run_dir, preset, stream=log).run()
    # The retry is a training job the plan did not have: real, essnet, its retry, real+essnet.
    assert "progress: 3 of 4 training jobs done (seed 0, stage 1, essnet, attempt 2: " in log.getvalue()

    stage = results["per_seed"]["0"]["stage1"]["essnet"]
    assert [a["seed"] for a in stage["attempts"]] == [0, 1000]
    assert [a["passed"] for a in stage["attempts"]] == [False, False] and stage["passed_gate"] is False
    scores = [a["shape_consistency_3d_dice"] for a in stage["attempts"]]
    kept = int(np.argmax(scores))
    assert stage["attempt"] == kept and stage["seed"] == 1000 * kept
    assert results["per_seed"]["0"]["shape_consistency"]["essnet"]["mean_dice"] == scores[kept]
    assert (run_dir / "seed0" / "stage1_essnet" / "done.json").exists()
    assert (run_dir / "seed0" / "stage1_essnet_attempt2" / "done.json").exists()
    assert sorted((run_dir / "seed0" / "synthetic" / "essnet_attempt2").glob("*_essnet_mr.nii.gz"))
    folder = results["per_seed"]["0"]["arms"]["real+essnet"]["folder"]
    assert folder == ("real+essnet" if kept == 0 else "real+essnet_attempt2")
    assert (run_dir / "seed0" / "arms" / folder / "scores.json").exists()
    text = write_report(run_dir).read_text()
    assert "seed 0, essnet: 2 attempts" in text and "no attempt passed" in text
    assert "Retried by the gate: seed 0 essnet" in text  # no arm learns from the CycleGAN: not trained


def test_the_paper_preset_builds_the_papers_networks_on_a_grid_they_fit():
    """The GPU recipe nobody can run here is at least the paper's: full-width networks (the reference parameter
    counts of the brief: ResNet-9 generator 11,365,633, PatchGAN 2,762,689, U-Net 31,036,481 plus one more
    output channel of 64 weights + 1 bias for the two-class head) on 256 px slices of 1.25 mm."""
    from SlicerEssNet.networks import build_network
    from Training.study.cards import segmentation_card, synthesis_card
    from Training.stages.essnet import discriminator_architecture, generator_architecture
    from Training.study.presets import get_preset
    from Training.stages.segmentation_models import unet_architecture

    preset = get_preset("paper")

    def count(architecture):
        return sum(p.numel() for p in build_network(architecture).parameters())

    assert count(generator_architecture(preset.synthesis)) == 11_365_633
    assert count(discriminator_architecture(preset.synthesis)) == 2_762_689
    assert count(unet_architecture(preset.segmentation)) == 31_036_481 + 65
    assert preset.data.crop == 256 and preset.data.spacing_mm == 1.25 and preset.seeds == (0, 1, 2)
    for card in (synthesis_card(preset, "g", "CT->MR", {}), segmentation_card(preset, "u", {})):
        card.validate()
        card.check_grid_fits_network()


def test_the_preset_names_the_shipped_arm_else_the_best_full_data_arm_ships():
    from types import SimpleNamespace

    from Training.study.presets import get_preset
    from Training.study.study import Study

    def dice(value):
        return {"mean_dice": {"mean": value}}

    summary = {"real": dice(0.907), "real+ct": dice(0.906), "low5": dice(0.95), "monai": dice(0.96)}
    cpu = get_preset("cpu")
    assert cpu.ship_arm == "real+ct" and "real+ct" in cpu.arms
    assert Study.shipped_arm(SimpleNamespace(preset=cpu), summary) == "real+ct"
    best = get_preset("paper")
    assert best.ship_arm == ""
    assert Study.shipped_arm(SimpleNamespace(preset=best), summary) == "real"  # low-data and peer arms never ship
    assert Study.shipped_arm(SimpleNamespace(preset=cpu), {"real": dice(0.9)}) == "real"  # named arm not run
    assert Study.shipped_arm(SimpleNamespace(preset=cpu), {"monai": dice(0.9)}) is None
