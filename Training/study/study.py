"""The whole study, stage by stage, resumable at every step:

1. patients found and split (patient-level, seeded; recorded in ``config.json``);
2. the real-only U-Net (stage 2), picked on the validation MR patients and scored there;
3. stage 1: EssNet and the plain-CycleGAN ablation, same code and schedule; every CT patient translated to
   synthetic MR (NIfTI per patient + contact sheet); shape consistency: the real-only U-Net reads each model's
   synthetic MR of the held-out CT patients, against the CT liver label. A model that lost the anatomy is
   trained again from another seed (the gate, ``SynthesisOptions.min_shape_consistency``);
4. the other stage 2 arms: with synthetic MR (real + EssNet, real + CycleGAN, low-data + EssNet), with restyled
   CT, on real MR alone (the low-data U-Net, the MONAI peer);
5. ``results.json``, the models (fp16 safetensors + cards) and the report.

Each step leaves a marker or a checkpoint in the run folder; running the same command again continues. With
``workers`` > 1 the training jobs run side by side in worker processes (``job_pool.py``), each queued as soon as
what it learns from exists, and the steps above reload them in this order.
"""
from __future__ import annotations

import dataclasses
import platform
import sys
import time
import types
from functools import cached_property
from pathlib import Path

from ..data.cohorts import load_case, make_split, phantom_cases, real_cases, select
from ..data.slices import build_slice_set, intensity_spec
from ..stages.checkpoint import read_json, write_json
from ..stages.distributed import DistributedContext, unwrap
from ..stages.loop import job_done
from ..stages.train_segmentation import train_segmentation
from ..stages.train_synthesis import train_synthesis
from .cards import segmentation_card, synthesis_card
from .evaluate import as_loaded_model, mean_sd, mean_volume_dice, score_segmentation
from .job_pool import Job, JobPool
from .on_ct import score_on_ct
from .other_mr import other_mr_case, score_other_mr
from .presets import ARM_RECIPES, RESTYLED_CT, choose_shipped_arm, preset_from_dict
from .report import write_report
from .study_progress import StudyProgress
from .synthesis_source import SourceChangedError, check_source, source_generators
from .translate import contact_sheet, sheet_rows, translate_cases

SUMMARY_METRICS = ("pooled_dice_2d", "pooled_iou_2d", "mean_dice", "mean_ravd", "mean_assd", "mean_mssd",
                   "mean_hd95")
IN_MEMORY = ("networks", "generators", "synthetic_val")  # a seed's results kept out of results.json
WORKER_TARGET = "Training.study.study:train_in_worker"  # found by name in each worker (job_pool.start_worker)


class Study:
    def __init__(self, run_dir, preset, context: DistributedContext = None, stream=None, device="cpu",
                 seeds=None, workers: int = 1, worker: bool = False, arms=None, synthesis_from=None):
        """``workers`` > 1: the training jobs of each seed run side by side in that many processes
        (``job_pool.py``); ``worker``: this process is one of them and only trains the jobs it is given.
        ``arms``: the arms to run instead of the preset's (on an existing run folder: from now on; finished arms
        reload).
        ``synthesis_from``: a ship-synthesis run folder whose selected generators replace stage 1, or the shipped
        models' folder, so the stage-2 arms learn from the long-trained models (recorded: a resumed run keeps it)."""
        self.run_dir = Path(run_dir)
        self.context = context or DistributedContext()
        self.stream = stream or sys.stderr
        self.device = device
        if workers > 1 and self.context.enabled:
            raise ValueError("--workers > 1 cannot be combined with torchrun: use one or the other")
        self.workers, self.pool = max(1, int(workers)), None
        source = str(Path(synthesis_from).resolve()) if synthesis_from else None
        config = read_json(self.run_dir / "config.json")
        # Everything is checked before anything is written: a refused command leaves the run folder as it was.
        if config is not None:
            # A resumed run keeps what it was started with, whatever today's defaults are.
            self.preset = preset_from_dict(config["preset"])
            self.split = config["split"]
            self.cases = self._cases_from(config["cases"])
            recorded = config.get("synthesis_from")
            if source and source != recorded:
                if recorded:
                    raise ValueError(f"{self.run_dir} takes its synthesis models from {recorded}: use "
                                     f"another --run-dir for {synthesis_from}")
                # A run of real-only arms so far: the arms that learn from synthetic MR take these models.
                trained = sorted(str(path.relative_to(self.run_dir)) for path in self.run_dir.glob("seed*/*")
                                 if path.name.startswith("stage1_") or path.name == "synthetic")
                if trained:
                    raise ValueError(f"{self.run_dir} trained its own synthesis models ({', '.join(trained[:3])}): "
                                     f"use another --run-dir for --synthesis-from {synthesis_from}")
            self.synthesis_from = source or recorded
            facts = {} if worker else self._source_facts(tuple(arms) if arms else self.preset.arms)
            models = self._checked_fingerprints(facts, config.get("synthesis_models", {}))
            if not worker:
                self.log(f"resuming run {self.run_dir} (preset {self.preset.name})")
            if seeds and tuple(seeds) != self.preset.seeds:
                # More seeds on a finished run: the recorded options and split stay, finished seeds reload.
                self.preset.seeds = tuple(seeds)
                self._record(config, "seeds", list(seeds), f"seeds are now {list(seeds)}")
            if arms and tuple(arms) != self.preset.arms:
                self.preset.arms = tuple(arms)
                self._record(config, "arms", list(arms), f"arms are now {list(arms)}")
            if self.synthesis_from != recorded:
                self._record(config, "synthesis_from", self.synthesis_from,
                             f"stage 1 from now on: the selected models of {self.synthesis_from}")
            if models and models != config.get("synthesis_models"):
                self._record(config, "synthesis_models", models, "synthesis models recorded: "
                             + ", ".join(f"{tag} {_weights_text(fingerprint)}" for tag, fingerprint in models.items()))
        else:
            self.preset = dataclasses.replace(preset, arms=tuple(arms)) if arms else preset
            self.synthesis_from = source
            # A missing model: one line before phantoms or any folder are made.
            facts = {} if worker else self._source_facts(self.preset.arms)
            self.cases = self._find_cases()
            data = self.preset.data
            self.split = make_split(self.cases, data.ct_val_patients, data.mr_val_patients, data.low_data_patients,
                                    seed=0)
            models = self._checked_fingerprints(facts, {})
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.context.is_main:
                write_json({"preset": self.preset.to_dict(), "split": self.split,
                            "cases": {m: [c.to_dict() for c in cs] for m, cs in self.cases.items()},
                            "command": sys.argv, "python": platform.python_version(), "torch": _torch_version(),
                            "world_size": self.context.world_size, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "synthesis_from": self.synthesis_from, "synthesis_models": models},
                           self.run_dir / "config.json")
            self.context.barrier()
        self.source_fingerprints = models  # of the --synthesis-from weights this run learns from
        self.timings = read_json(self.run_dir / "timings.json") or {}
        self.wall_clock = read_json(self.run_dir / "wall_clock.json") or {}
        self.progress = StudyProgress([], self.log)

    def _learned_from(self, arms) -> list:
        """The synthesis models (``essnet``, ``cyclegan``) these arms learn from; no EssNet with ``--no-seg``."""
        available = ("essnet", "cyclegan") if self.preset.synthesis.seg_weight > 0 else ("cyclegan",)
        wanted = {ARM_RECIPES[arm][1] for arm in arms}
        return [tag for tag in available if tag in wanted]  # EssNet first: the model a run exports

    def _source_facts(self, arms) -> dict:
        """``check_source`` of the ``--synthesis-from`` models ``arms`` learn from (none without a source)."""
        return check_source(self.synthesis_from, self._learned_from(arms)) if self.synthesis_from else {}

    def _checked_fingerprints(self, source_facts: dict, recorded: dict) -> dict:
        """Checked before anything is written: no source model trained on this run's held-out CT patients, and
        none changed since this run learned from it. Returns ``tag -> fingerprint`` of the weights, for
        ``config.json``."""
        source, held_out, models = self.synthesis_from, set(self.split["CT"]["val"]), dict(recorded)
        for tag, facts in source_facts.items():
            seen = held_out & set(facts["trained_on"])
            if seen:
                raise ValueError(f"the {tag} models of {source} trained on CT patients this run holds out "
                                 f"({', '.join(sorted(seen))}): their shape consistency would be flattered; use "
                                 "models with the same held-out CT patients")
            before, now = recorded.get(tag), facts["fingerprint"]
            used = [path for path in self.run_dir.glob("seed*/arms/*")
                    if path.name in ARM_RECIPES and ARM_RECIPES[path.name][1] == tag]
            if before and before != now and ((self.run_dir / "synthetic" / tag).exists() or used):
                raise SourceChangedError(f"the {tag} models of {source} changed since this run learned from them "
                                 f"({_weights_text(before)}; now {_weights_text(now)}): use another --run-dir")
            if not facts["finished"]:
                self.log(f"note: {source}/{tag} is still training; its best model so far is used "
                         f"({_weights_text(now)})")
            models[tag] = now
        return models

    # --- plumbing ----------------------------------------------------------------------------------------
    def _record(self, config: dict, key: str, value, message: str) -> None:
        """Change what a resumed run recorded (a preset option, or where its synthesis models come from) and say so."""
        if key in ("synthesis_from", "synthesis_models"):
            config[key] = value
        else:
            config["preset"][key] = value
        if self.context.is_main:
            write_json(config, self.run_dir / "config.json")
        self.log(message)

    def log(self, message: str) -> None:
        if self.context.is_main:
            print(f"[study] {message}", file=self.stream, flush=True)

    def _find_cases(self) -> dict:
        data = self.preset.data
        if data.source == "phantoms":
            return phantom_cases(self.run_dir / "phantoms", data.phantom_ct_patients, data.phantom_mr_patients)
        cases = real_cases(data.data_root or None)
        if not cases["CT"] or not cases["MR"]:
            from SlicerEssNet.errors import InputImageError

            raise InputImageError(f"no real CT/MR found under {data.data_root or '../shared/data'}: put the data "
                                  f"there or use --preset demo (phantoms)")
        return cases

    @staticmethod
    def _cases_from(recorded: dict) -> dict:
        from ..data.cohorts import Case

        return {modality: [Case(**{**c, "other_organs": tuple(c.get("other_organs", ()))}) for c in cases]
                for modality, cases in recorded.items()}

    def _timed(self, key: str, function, *args, training_job=None, **kwargs):
        """Call, and record in ``timings.json`` what the job cost the first time it completed. A job recorded
        before is only being reloaded (a resumed run): its time stays as it was. A training job (its folder
        given as ``training_job``) records its loop's clock (``done.json``), which adds up the sessions a kill
        interrupted."""
        started = time.perf_counter()
        result = function(*args, **kwargs)
        if key in self.timings:
            return result
        done = job_done(training_job) if training_job is not None else None
        clock = done.get("seconds") if done else None
        self.timings[key] = round(float(clock) if clock is not None else time.perf_counter() - started, 1)
        if self.context.is_main:
            write_json(self.timings, self.run_dir / "timings.json")
        return result

    def cases_of(self, modality: str, part: str) -> list:
        patients = self.split["MR_low_data"] if part == "low" else self.split[modality][part]
        return select(self.cases[modality], patients)

    # --- the data, read when first needed (a worker process reads only what its job trains on) -------------
    @property
    def grid(self) -> dict:
        data = self.preset.data
        return {"mode": "spacing", "spacing_mm": data.spacing_mm, "size": data.crop, "multiple_of": data.multiple_of}

    @cached_property
    def ct_train(self):
        return build_slice_set(self.cases_of("CT", "train"), self.grid)

    @cached_property
    def mr_train(self):
        organs = self.preset.segmentation.organ_weight > 0  # the other organs' labels, for the auxiliary organ head
        return build_slice_set(self.cases_of("MR", "train"), self.grid, organs=organs)

    @cached_property
    def mr_low(self):
        return build_slice_set(self.cases_of("MR", "low"), self.grid, organs=self.preset.segmentation.organ_weight > 0)

    @cached_property
    def mr_val_cases(self) -> list:
        return self.cases_of("MR", "val")

    @cached_property
    def ct_val_cases(self) -> list:
        return self.cases_of("CT", "val")

    @cached_property
    def val_volumes(self) -> dict:
        return {case.patient: load_case(case) for case in self.mr_val_cases}

    # --- the study -----------------------------------------------------------------------------------------
    def run(self) -> dict:
        preset = self.preset
        self.log(f"preset {preset.name}: CT train {len(self.split['CT']['train'])} / val {len(self.split['CT']['val'])}"
                 f" patients, MR train {len(self.split['MR']['train'])} / val {len(self.split['MR']['val'])},"
                 f" low-data {len(self.split['MR_low_data'])}; seeds {list(preset.seeds)}")
        self.log("reading CT and MR training slices onto the model grid")
        self.log(f"slices: CT train {len(self.ct_train)}, MR train {len(self.mr_train)}, MR low-data {len(self.mr_low)}")
        self.progress = StudyProgress([f"seed{seed}/{job}" for seed in preset.seeds for job in self.planned_jobs()],
                                      self.log, workers=self.workers)
        per_seed = {}
        with JobPool(self.run_dir, self.workers, self.device, self.log, self.progress.finished,
                     target=WORKER_TARGET) as pool:
            self.pool = pool if self.workers > 1 else None
            for seed in preset.seeds:
                per_seed[str(seed)] = self.run_seed(seed)
        self.pool = None
        results = self.summarise(per_seed)
        results["test_time_augmentation"] = self.score_with_tta(per_seed, results["summary"])
        results["other_mr"] = self.check_other_mr(per_seed)
        results["on_ct"] = self.check_on_ct(per_seed)
        if self.context.is_main:
            write_json(results, self.run_dir / "results.json")
            self.export_models(results)
            write_report(self.run_dir)
            self.log(f"results: {self.run_dir / 'results.json'}; report: {self.run_dir / 'REPORT.md'}")
        self.context.barrier()
        return results

    def run_seed(self, seed: int) -> dict:
        # Finished jobs reload from their checkpoints in seconds, so a finished seed simply runs through again.
        seed_dir = self.run_dir / f"seed{seed}"
        started, finished_before, resumed = time.perf_counter(), (seed_dir / "results.json").exists(), seed_dir.exists()
        results = {"stage1": {}, "arms": {}, "shape_consistency": {}}
        networks = {}
        if self.pool:
            self.pool.submit(self.independent_jobs(seed))
        # The real-only U-Net comes first: it judges each synthesis model (the gate). Models taken from a ship
        # run pass no gate, so the arms learning from them start beside it, and it judges them once done.
        judge_first = not self.synthesis_from
        judge = self.real_arm(seed, results, networks) if judge_first else None
        synthetic_train, synthetic_val, generators, suffixes = {}, {}, {}, {}
        for tag, essnet in self.synthesis_models():
            chosen = self.stage1(seed_dir, seed, tag, essnet, judge)
            generators[tag], suffixes[tag] = chosen["sides"], chosen["suffix"]
            synthetic_train[tag], synthetic_val[tag] = chosen["synthetic_train"], chosen["synthetic_val"]
            results["stage1"][tag] = chosen["record"]
            if chosen["shape_consistency"] is not None:
                results["shape_consistency"][tag] = chosen["shape_consistency"]
        if self.context.is_main and synthetic_val:
            titles = {tag: {"essnet": "EssNet MR", "cyclegan": "CycleGAN MR"}[tag] for tag in synthetic_val}
            contact_sheet(sheet_rows(self.ct_val_cases, {titles[tag]: cases for tag, cases in synthetic_val.items()}),
                          seed_dir / "contact_sheet.png",
                          f"held-out CT patients: {' / '.join(['CT', *titles.values()])}\n"
                          "orange: the CT's liver label")
        sources = dict(synthetic_train)
        if any(ARM_RECIPES[arm][1] == RESTYLED_CT for arm in self.arms()):
            sources[RESTYLED_CT], suffixes[RESTYLED_CT] = (), ""
        later = [arm for arm in self.arms() if arm != "real"]
        if self.pool:  # ahead of those still queued, so the shorter MONAI peer is left for last
            self.pool.submit([self.arm_job(seed, arm, arm + suffixes[ARM_RECIPES[arm][1]],
                                           synthetic_train[ARM_RECIPES[arm][1]])
                              for arm in later if ARM_RECIPES[arm][1] in synthetic_train], first=True)
            seeds = list(self.preset.seeds)
            later_seeds = seeds[seeds.index(seed) + 1:]
            if later_seeds:  # behind this seed's last jobs: no worker waits idle for the seed to end
                self.pool.submit(self.independent_jobs(later_seeds[0]))
        if not judge_first:
            judge = self.real_arm(seed, results, networks)
            for tag, cases in synthetic_val.items():
                results["shape_consistency"][tag] = self.judge_synthesis(seed, tag, judge, cases)
                results["stage1"][tag]["shape_consistency_3d_dice"] = results["shape_consistency"][tag]["mean_dice"]
        synthetic_sets = self.synthetic_sets(sources)
        results["synthetic_slices"] = {tag: len(s) for tag, s in synthetic_sets.items()}

        for arm in later:
            source = ARM_RECIPES[arm][1]
            # An arm trained on a retried model's synthetic MR has its own folder: nothing stale is reused.
            results["arms"][arm], networks[arm] = self.run_arm(
                seed, arm, synthetic_sets, folder=arm + suffixes[source] if source else arm)
        results["arms"] = {arm: results["arms"][arm] for arm in self.arms()}
        results["networks"] = networks  # in memory only (IN_MEMORY: exported or scored, never written to JSON)
        results["generators"] = generators
        results["synthetic_val"] = synthetic_val
        if self.context.is_main:
            write_json({k: v for k, v in results.items() if k not in IN_MEMORY},
                       seed_dir / "results.json")
            if not finished_before:  # the clock of the session that finished the seed, not of a reload
                self.wall_clock[f"seed{seed}"] = {"seconds": round(time.perf_counter() - started, 1),
                                                  "workers": self.workers, "resumed": resumed,
                                                  # its first jobs ran beside the seed before's last ones
                                                  "began_early": self.pool is not None and seed != self.preset.seeds[0]}
                write_json(self.wall_clock, self.run_dir / "wall_clock.json")
        return results

    def real_arm(self, seed: int, results: dict, networks: dict):
        """Train (or reload) the seed's real-only U-Net into ``results`` and ``networks``; it is the judge of the
        seed's synthesis models (None when the run trains no real-only arm)."""
        if "real" not in self.arms():
            return None
        results["arms"]["real"], networks["real"] = self.run_arm(seed, "real", {})
        return as_loaded_model(networks["real"], self.scoring_card(seed))

    def judge_synthesis(self, seed: int, tag: str, judge, synthetic_val: list):
        """Shape consistency: ``judge`` reads the synthetic MR of the held-out CT patients against their CT liver
        labels (None without a judge)."""
        consistency = None
        if judge is not None and self.context.is_main:
            consistency = score_segmentation(judge, synthetic_val, allow_modality_mismatch=True)
            self.log(f"seed {seed}: shape consistency {tag}: 3D Dice {consistency['mean_dice']:.4f}")
        return self.context.broadcast_object(consistency)

    def stage1(self, seed_dir, seed: int, tag: str, essnet: bool, judge) -> dict:
        """One synthesis model behind the gate: an attempt whose synthetic MR scores under
        ``min_shape_consistency`` lost the anatomy and is trained again from seed ``seed + 1000 * attempt`` (in
        its own folders, so every attempt resumes), up to ``max_attempts``. The best attempt is kept; every
        attempt is recorded."""
        if self.synthesis_from:
            return self.stage1_from_ship_run(seed, tag)
        options = self.preset.synthesis
        attempts, best, best_score = [], None, -1.0
        for attempt in range(max(1, options.max_attempts)):
            candidate = self.stage1_attempt(seed_dir, seed, tag, essnet, judge, attempt)
            score = candidate["record"]["shape_consistency_3d_dice"]
            passed = score is None or options.min_shape_consistency <= 0 or score >= options.min_shape_consistency
            attempts.append({"attempt": attempt, "seed": candidate["record"]["seed"],
                             "shape_consistency_3d_dice": score, "passed": passed})
            if score is not None:
                self.log(f"seed {seed}: shape consistency {tag}{candidate['suffix']}: 3D Dice {score:.4f}"
                         + ("" if passed else f" < {options.min_shape_consistency:g}: the translation lost the "
                                              f"anatomy"))
            if (score or 0.0) > best_score:
                best, best_score = candidate, score or 0.0
            if passed:
                break
        best["record"]["attempts"] = attempts
        best["record"]["passed_gate"] = any(a["passed"] for a in attempts)
        if not best["record"]["passed_gate"]:
            self.log(f"seed {seed}: no {tag} attempt reached shape consistency {options.min_shape_consistency:g}; "
                     f"keeping the best (attempt {best['record']['attempt'] + 1}), flagged in the report")
        return best

    def stage1_attempt(self, seed_dir, seed: int, tag: str, essnet: bool, judge, attempt: int) -> dict:
        """Train one synthesis model, translate every CT patient with it and let ``judge`` (the real-only U-Net)
        read its synthetic MR of the held-out CT patients against their CT liver labels (shape consistency)."""
        suffix = attempt_suffix(attempt)
        job = self.stage1_job(seed, tag, essnet, attempt)
        if self.pool:  # trained by a worker (the gate's retries go first: everything after waits on them)
            self.pool.run(job)
        job_dir = self.run_dir / job.folder
        model = self._timed(job.key, self.train_stage1, job, training_job=job_dir)
        sides = unwrap(model.generators)
        ct_to_mr = as_loaded_model(sides.ct_to_mr, synthesis_card(self.preset, f"{tag}-ct2mr", "CT->MR",
                                                                  self.training_record(seed)))
        folder = seed_dir / "synthetic" / f"{tag}{suffix}"
        synthetic_train = synthetic_val = consistency = None
        if self.context.is_main:
            self.log(f"seed {seed}: translating every CT patient with {tag}{suffix}")
            synthetic_train = self._timed(f"seed{seed}/translate_{tag}{suffix}", translate_cases, ct_to_mr,
                                          self.cases_of("CT", "train"), folder, tag)
            synthetic_val = translate_cases(ct_to_mr, self.ct_val_cases, folder, tag)
            if judge is not None:
                consistency = score_segmentation(judge, synthetic_val, allow_modality_mismatch=True)
        consistency = self.context.broadcast_object(consistency)
        self.progress.finished(job.progress_key,
                               sum(self.timings.get(f"seed{seed}/{step}_{tag}{suffix}", 0.0)
                                   for step in ("stage1", "translate")))
        return {"sides": sides, "suffix": suffix, "shape_consistency": consistency,
                "synthetic_train": self.context.broadcast_object(synthetic_train),
                "synthetic_val": self.context.broadcast_object(synthetic_val),
                "record": {"history": model.history, "attempt": attempt, "seed": job.stage1_seed,
                           "shape_consistency_3d_dice": consistency["mean_dice"] if consistency else None,
                           "segmenter_parameters": _count(sides.segmenter) if sides.segmenter else 0,
                           "generator_parameters": _count(sides.ct_to_mr)}}

    def stage1_from_ship_run(self, seed: int, tag: str) -> dict:
        """Stage 1 taken from ``--synthesis-from`` (``synthesis_source.py``): a ship run's selected generator pair
        of ``tag``, or the shipped models, on its own grid, translates every CT patient (in memory, the same for
        every seed). The seed's real-only U-Net judges it later (``judge_synthesis``)."""
        source = Path(self.synthesis_from)
        recorded = self.source_fingerprints.get(tag)
        now = check_source(source, [tag])[tag]["fingerprint"]
        if recorded and now != recorded:  # a source still training moved on since this run began with it
            raise SourceChangedError(f"the {tag} models of {source} changed while this run used them "
                                     f"({_weights_text(recorded)}; now {_weights_text(now)}): use another --run-dir")
        chosen, loaded, mr_to_ct = source_generators(source, tag)
        folder = self.run_dir / "synthetic" / tag  # one translation serves every seed
        synthetic_train = synthetic_val = None
        if self.context.is_main:
            self.log(f"seed {seed}: stage 1 from {source}: {tag}, {chosen['variant']} weights of iteration "
                     f"{chosen['iteration']}; translating every CT patient")
            synthetic_train = translate_cases(loaded, self.cases_of("CT", "train"), folder, tag)
            synthetic_val = translate_cases(loaded, self.ct_val_cases, folder, tag)
        sides = types.SimpleNamespace(ct_to_mr=loaded.network, mr_to_ct=mr_to_ct, segmenter=None)
        return {"sides": sides, "suffix": "", "shape_consistency": None,
                "synthetic_train": self.context.broadcast_object(synthetic_train),
                "synthetic_val": self.context.broadcast_object(synthetic_val),
                "record": {"history": [], "attempt": 0, "source": str(source), **chosen, "passed_gate": True,
                           "attempts": [], "shape_consistency_3d_dice": None, "segmenter_parameters": 0,
                           "generator_parameters": _count(loaded.network)}}

    def train_stage1(self, job: Job):
        """Train (or reload) one synthesis model: here, or in a worker process (``train_job``)."""
        if job_done(self.run_dir / job.folder) is None:
            self.log(f"seed {job.seed}: stage 1, {job.tag} ({'with' if job.essnet else 'without'} the segmentation "
                     "branch)" + (f", attempt {job.attempt + 1} (seed {job.stage1_seed})" if job.attempt else ""))
        return train_synthesis(self.run_dir / job.folder, self.ct_train, self.mr_train, self.preset, job.stage1_seed,
                               self.context, job.essnet, self.device)

    def run_arm(self, seed: int, arm: str, synthetic_sets: dict, folder: str = None):
        job = self.arm_job(seed, arm, folder)
        if self.pool:
            self.pool.run(job)
        job_dir = self.run_dir / job.folder
        network, history, best = self._timed(job.key, self.train_arm, job, synthetic_sets, training_job=job_dir)
        scores = self.arm_scores(job, network)
        self.log(f"seed {seed}: arm {arm}: 3D Dice {scores['mean_dice']:.4f}, pooled 2D Dice "
                 f"{scores['pooled_dice_2d']:.4f} (best at iteration {best['iteration']})")
        self.progress.finished(job.progress_key, self.timings.get(job.key, 0.0))
        return {"scores": scores, "history": history, "best": best, "parameters": _count(network),
                "folder": job_dir.name}, network

    def train_arm(self, job: Job, synthetic_sets: dict):
        """Train (or reload) one stage-2 arm, best checkpoint picked on the validation patients: here, or in a
        worker process (``train_job``). Returns ``(network, history, best)``."""
        part, synthetic, kind = ARM_RECIPES[job.arm]
        real_set = self.mr_train if part == "train" else self.mr_low
        card = self.scoring_card(job.seed)
        validate = lambda network: mean_volume_dice(as_loaded_model(network, card), self.mr_val_cases,  # noqa: E731
                                                    self.val_volumes)
        extra = ""
        if synthetic:
            what = "CT slices given random appearances" if synthetic == RESTYLED_CT else f"synthetic ({synthetic})"
            extra = f" + {len(synthetic_sets[synthetic])} {what}"
        if job_done(self.run_dir / job.folder) is None:
            self.log(f"seed {job.seed}: stage 2, arm {job.arm} ({len(real_set)} real slices{extra}, {kind})")
        return train_segmentation(self.run_dir / job.folder, real_set, synthetic_sets.get(synthetic), self.preset,
                                  job.seed, self.context, kind, validate, self.device,
                                  restyle_synthetic=synthetic == RESTYLED_CT)

    def arm_scores(self, job: Job, network) -> dict:
        """The arm's scores on the validation patients (``scores.json``, written once)."""
        path = self.run_dir / job.folder / "scores.json"
        scores = read_json(path)
        if scores is None and self.context.is_main:
            scores = score_segmentation(as_loaded_model(network, self.scoring_card(job.seed)), self.mr_val_cases,
                                        self.val_volumes)
            write_json(scores, path)
        return self.context.broadcast_object(scores)

    # --- jobs: what a worker process needs to train one of them --------------------------------------------
    def arm_job(self, seed: int, arm: str, folder: str = None, synthetic_cases=()) -> Job:
        """``folder``: the arm, with a retried synthesis model's suffix; ``synthetic_cases``: the synthetic MR
        it learns from (a worker reads them from disk)."""
        folder = folder or arm
        return Job(key=f"seed{seed}/arm_{folder}", folder=str(self.arm_dir(seed, folder).relative_to(self.run_dir)),
                   seed=seed, arm=arm, synthetic_cases=tuple(synthetic_cases))

    def independent_jobs(self, seed: int) -> list:
        """The jobs of a seed that need no synthetic MR, those the stage-1 gate waits on first (the real-only
        U-Net, the synthesis models)."""
        independent = [arm for arm in self.arms() if ARM_RECIPES[arm][1] in (None, RESTYLED_CT)]
        return ([self.arm_job(seed, arm) for arm in independent if arm == "real"]
                + [self.stage1_job(seed, tag, essnet, 0) for tag, essnet in self.synthesis_models()
                   if not self.synthesis_from]
                + [self.arm_job(seed, arm) for arm in independent if arm != "real"])

    def stage1_job(self, seed: int, tag: str, essnet: bool, attempt: int) -> Job:
        suffix = attempt_suffix(attempt)
        return Job(key=f"seed{seed}/stage1_{tag}{suffix}", folder=f"seed{seed}/stage1_{tag}{suffix}", seed=seed,
                   tag=tag, essnet=essnet, attempt=attempt, stage1_seed=seed + 1000 * attempt)

    def train_job(self, job: Job) -> None:
        """What a worker process does: train one job into its folder (``job_pool.py``). The study process then
        reloads it like any finished job."""
        if job.tag:
            self.train_stage1(job)
            return
        synthetic = ARM_RECIPES[job.arm][1]
        network, _, _ = self.train_arm(job, self.synthetic_sets({synthetic: job.synthetic_cases} if synthetic else {}))
        self.arm_scores(job, network)

    def synthetic_sets(self, cases_by_source: dict) -> dict:
        """Slice sets of each source's synthetic MR cases; the restyled-CT source is the CT training slices."""
        return {source: self.ct_train if source == RESTYLED_CT else build_slice_set(list(cases), self.grid)
                for source, cases in cases_by_source.items()}

    def synthesis_models(self) -> tuple:
        """(tag, with segmentation branch) of the stage-1 models some arm learns from: both, only the ablation
        when run with ``--no-seg``, none when every arm trains on real MR alone (``--arms real monai``)."""
        return tuple((tag, tag == "essnet") for tag in self._learned_from(self.preset.arms))

    def arms(self) -> tuple:
        available = {tag for tag, _ in self.synthesis_models()}
        return tuple(arm for arm in self.preset.arms if ARM_RECIPES[arm][1] in available | {None, RESTYLED_CT})

    def planned_jobs(self) -> list:
        """The training jobs of one seed (a synthesis model that fails the gate adds its retries)."""
        return [f"arm_{arm}" for arm in self.arms()] + [f"stage1_{tag}" for tag, _ in self.synthesis_models()
                                                        if not self.synthesis_from]

    def scoring_card(self, seed: int, modality: str = "MR"):
        """The card a stage-2 network is scored under (grid, preprocessing): the shipped U-Net's, as users run it;
        ``"CT"``: the one it is read on CT with (``liver-unet-ct``)."""
        name = "liver-unet-ct" if modality == "CT" else "liver-unet-mr"
        return segmentation_card(self.preset, name, self.training_record(seed), modality=modality)

    def arm_dir(self, seed: int, folder: str) -> Path:
        """The job folder of a stage-2 arm (``folder``: the arm, with a retried synthesis model's suffix)."""
        return self.run_dir / f"seed{seed}" / "arms" / folder

    def training_record(self, seed: int) -> dict:
        return {"preset": self.preset.name, "seed": seed,
                "data": sorted({c.source for cs in self.cases.values() for c in cs}),
                "split": {"CT": self.split["CT"], "MR": self.split["MR"], "MR_low_data": self.split["MR_low_data"]}}

    # --- results -------------------------------------------------------------------------------------------
    def summarise(self, per_seed: dict) -> dict:
        clean = {seed: {k: v for k, v in r.items() if k not in IN_MEMORY}
                 for seed, r in per_seed.items()}
        summary = {}
        for arm in self.arms():
            summary[arm] = {metric: mean_sd([r["arms"][arm]["scores"][metric] for r in clean.values()])
                            for metric in SUMMARY_METRICS}
        shape = {}
        for tag in ("essnet", "cyclegan"):
            runs = [r["shape_consistency"][tag] for r in clean.values() if tag in r["shape_consistency"]]
            if runs:
                shape[tag] = {metric: mean_sd([r[metric] for r in runs]) for metric in SUMMARY_METRICS}
        self._last = per_seed
        from ..data.label_quality import label_survey

        return {"preset": self.preset.to_dict(), "split": self.split, "seeds": list(self.preset.seeds),
                "label_quality": label_survey(self.cases["MR"], self.cases["CT"]),
                "summary": summary, "shipped_arm": self.shipped_arm(summary), "shape_consistency": shape,
                "per_seed": clean, "timings": self.timings, "wall_clock": self.wall_clock,
                "synthesis_from": self.synthesis_from,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def shipped_arm(self, summary: dict):
        """The arm whose U-Net is shipped (``presets.choose_shipped_arm`` with the preset's ``ship_arm``)."""
        return choose_shipped_arm(self.preset.ship_arm, summary)

    def score_with_tta(self, per_seed: dict, summary: dict) -> dict:
        """The shipped U-Net (first seed) scored again with test-time augmentation: what ``--tta`` (the
        module's checkbox) gives a user on the validation patients. One arm only: five network passes per slice."""
        arm = self.shipped_arm(summary)
        if arm is None:
            return {}
        seed = self.preset.seeds[0]
        first = per_seed[str(seed)]
        path = self.arm_dir(seed, first["arms"][arm]["folder"]) / "scores_tta.json"
        scores = read_json(path)
        if scores is None and self.context.is_main:
            scores = self._timed(f"seed{seed}/tta_{arm}", score_segmentation,
                                 as_loaded_model(first["networks"][arm], self.scoring_card(seed)),
                                 self.mr_val_cases, self.val_volumes, test_time_augmentation=True)
            write_json(scores, path)
        return {"arm": arm, "seed": seed, "scores": self.context.broadcast_object(scores)}

    def check_other_mr(self, per_seed: dict) -> dict:
        """Every U-Net on an MR of another contrast (``other_mr``), where the shared data has it: a robustness
        check, reported apart from the validation scores."""
        case = other_mr_case(self.preset.data.data_root or None) if self.preset.data.source == "real" else None
        if case is None or not self.context.is_main:
            return {}
        networks = {seed: result["networks"] for seed, result in per_seed.items()}
        return self._timed("other_mr", score_other_mr, case, networks, self.scoring_card,
                           sheet=self.run_dir / "other_mr.png")

    def check_on_ct(self, per_seed: dict) -> dict:
        """The first seed's U-Nets on the held-out CT patients, directly and through EssNet's synthetic MR
        (``Training/on_ct.py``): where the method's CT route stands against reading the CT itself."""
        if not self.context.is_main or not self.ct_val_cases:
            return {}
        seed = self.preset.seeds[0]
        first = per_seed[str(seed)]
        folders = {arm: self.arm_dir(seed, entry["folder"]) for arm, entry in first["arms"].items()}
        scores = self._timed("on_ct", score_on_ct, first["networks"], folders, self.ct_val_cases,
                             first["synthetic_val"].get("essnet"), self.scoring_card(seed),
                             self.scoring_card(seed, "CT"))
        return {"seed": seed, "arms": scores}

    def export_models(self, results: dict) -> None:
        """fp16 safetensors + cards of the first seed's EssNet generators and shipped U-Net in ``models/``."""
        first = self._last[str(self.preset.seeds[0])]
        folder = self.run_dir / "models"
        folder.mkdir(exist_ok=True)
        training = self.training_record(self.preset.seeds[0])
        prefix = "" if self.preset.name == "cpu" else f"{self.preset.name}-"
        if self.synthesis_models() and not self.synthesis_from:  # a ship run's generators are exported by it
            self.export_generators(first, folder, prefix, training)
        self.export_segmenter(results, first, folder, prefix, training)
        self.log(f"models written to {folder}")

    def export_generators(self, first: dict, folder: Path, prefix: str, training: dict) -> None:
        import torch
        from SlicerEssNet.weights import save_model

        seed = training["seed"]
        tag = self.synthesis_models()[0][0]  # EssNet; the ablation's generators when run with --no-seg
        sides = first["generators"][tag]
        stage1 = first["stage1"][tag]
        # A generator retried by the stage-1 gate was trained from its attempt's own seed.
        generator_training = dict(training, seed=stage1.get("seed", seed), stage1_attempt=stage1.get("attempt", 0) + 1)
        for name, direction in ((f"{tag}-ct2mr", "CT->MR"), (f"{tag}-mr2ct", "MR->CT")):
            card = synthesis_card(
                self.preset, prefix + name, direction, generator_training,
                description=f"{'EssNet' if tag == 'essnet' else 'CycleGAN (ablation)'} generator {direction} ({self.preset.name} preset), trained on unpaired "
                            f"BTCV/CHAOS CT and CHAOS T2-SPIR MR slices" if self.preset.data.source == "real" else
                            f"EssNet generator {direction} trained on procedural phantoms (demo preset)",
                metrics=({"shape_consistency_3d_dice": first["shape_consistency"].get(tag, {}).get("mean_dice")}
                         if direction == "CT->MR" else {}))
            network = sides.ct_to_mr if direction == "CT->MR" else sides.mr_to_ct
            save_model(network, card, folder / card.name, dtype=torch.float16)

    def export_segmenter(self, results: dict, first: dict, folder: Path, prefix: str, training: dict) -> None:
        import torch
        from SlicerEssNet.weights import save_model

        seed = training["seed"]
        # The shipped U-Net: the first seed's network of the shipped arm. Its card states that network's scores.
        arm = self.shipped_arm(results["summary"])
        if arm is None:  # only low-data or peer arms were run: nothing a user should get as the default
            return
        scores = first["arms"][arm]["scores"]
        metrics = {"arm": arm, "seed": seed, "validation_patients": self.split["MR"]["val"],
                   **{k: scores[k] for k in SUMMARY_METRICS if k in scores},
                   "arm_mean_dice_over_seeds": results["summary"][arm]["mean_dice"]["mean"],
                   "arm_seeds": results["summary"][arm]["mean_dice"]["n"]}  # 1: the mean is this seed's own
        tta = results.get("test_time_augmentation", {})
        if tta.get("arm") == arm:  # what the same network scores with --tta
            metrics["mean_dice_tta"] = tta["scores"]["mean_dice"]
        other = results.get("other_mr", {}).get(arm, {}).get("per_seed", {}).get(str(seed))
        if other:  # the check beyond the validation patients (Training/other_mr.py)
            metrics["other_mr_dice"] = other["dice"]
        why = ("the preset's shipped arm" if arm == self.preset.ship_arm else
               "best mean 3D Dice of the full-data arms on the validation patients")
        trained_on = ("T2 MR and CT slices given random appearances" if ARM_RECIPES[arm][1] == RESTYLED_CT
                      else "T2 MR")
        card = segmentation_card(
            self.preset, prefix + "liver-unet-mr", dict(training, arm=arm),
            description=f"Liver U-Net for MR, trained on {trained_on} ({self.preset.name} preset), arm '{arm}' "
                        f"({why}); classic U-Net, CE + Dice"
                        + (", deep supervision in training (its heads not shipped)"
                           if self.preset.segmentation.deep_supervision else ""), metrics=metrics)
        save_model(first["networks"][arm], card, folder / card.name, dtype=torch.float16)
        on_ct = results.get("on_ct", {}).get("arms", {}).get(arm)
        if ARM_RECIPES[arm][1] == RESTYLED_CT and on_ct:
            # A U-Net that learned from CT slices reads a CT itself, under the window those slices had (on_ct.py).
            direct, window = on_ct["direct"], intensity_spec("CT")
            ct_card = segmentation_card(
                self.preset, prefix + "liver-unet-ct", dict(training, arm=arm), modality="CT",
                description=f"The {prefix}liver-unet-mr network read on CT: the same weights under the CT window "
                            f"({window['low']}..{window['high']} HU) its CT training slices had ({self.preset.name} "
                            f"preset, arm '{arm}'); "
                            "scored on the CT patients held out of training",
                metrics={"arm": arm, "seed": seed, "ct_patients": self.split["CT"]["val"],
                         **{k: direct[k] for k in SUMMARY_METRICS if k in direct}})
            save_model(first["networks"][arm], ct_card, folder / ct_card.name, dtype=torch.float16)


def train_in_worker(run_dir: str, job: Job, device: str) -> None:
    """What a worker process of the job pool runs (``WORKER_TARGET``): train one job into its folder."""
    Study(run_dir, None, device=device, worker=True).train_job(job)


def attempt_suffix(attempt: int) -> str:
    """Folder suffix of a stage-1 attempt: the first keeps the plain names (runs from before the gate resume)."""
    return "" if attempt == 0 else f"_attempt{attempt + 1}"


def _count(network) -> int:
    return int(sum(p.numel() for p in network.parameters()))


def _weights_text(fingerprint: dict) -> str:
    """Which weights a fingerprint names, for one line of the log."""
    if "iteration" in fingerprint:
        return f"{fingerprint['variant']} weights of iteration {fingerprint['iteration']}"
    return f"the shipped files (sha256 {fingerprint['sha256'][0][:12]}...)"


def _torch_version() -> str:
    import torch

    return torch.__version__
