"""The model card: the JSON beside every ``<name>.safetensors`` that says what the weights are and how to feed them.

It names the architecture and its hyper-parameters, the input modality and its intensity normalisation, the
output's intensity scale or labels, the slice grid, how it was trained, its metrics, licence and the SHA256 of
the weights. A card is validated as a whole when it is built, so every consumer can trust every field.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from .atomic import atomic_path
from .errors import ArchitectureMismatchError, ModelNotFoundError, WeightsError
from .preprocessing import check_spec

FORMAT = "slicer-essnet-model-card/1"
TASKS = ("synthesis", "segmentation")
# which networks can serve which task (a discriminator is a training-time part, never a deployable model)
TASK_NETWORKS = {"synthesis": ("resnet_generator",), "segmentation": ("unet", "resnet_segmenter")}
FIELD_ORDER = ("format", "name", "version", "task", "description", "architecture", "input", "output", "labels",
               "grid", "training", "metrics", "licence", "sha256")
REQUIRED = ("format", "name", "version", "task", "architecture", "input", "output", "grid")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # the name becomes a file name in the cache
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ModelCard:
    """One model's description; see ``docs/ARCHITECTURE.md`` for the JSON. Invalid cards raise ``WeightsError``."""

    name: str
    version: str
    task: str
    architecture: dict
    input: dict
    output: dict
    grid: dict
    description: str = ""
    labels: Optional[Dict[str, str]] = None
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    licence: str = ""
    sha256: str = ""
    format: str = FORMAT

    def __post_init__(self):
        if isinstance(self.labels, dict):
            self.labels = {str(key): value for key, value in self.labels.items()}
        self.validate()

    @property
    def modalities(self) -> tuple:
        """(input, output) modality, upper case: ("CT", "MR") for CT -> MR synthesis, ("MR", "MR") for a
        segmentation model on MR (its labels lie on the input)."""
        return str(self.input_modality).upper(), str(self.output_modality).upper()

    # --- JSON ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        if not isinstance(data, dict):
            raise WeightsError(f"a model card must be a JSON object, not {type(data).__name__}: fix the card")
        for key in data:
            if key not in FIELD_ORDER:
                close = difflib.get_close_matches(key, FIELD_ORDER, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise WeightsError(f"model card has an unknown field {key!r}{hint}: remove or rename it")
        for key in REQUIRED:
            if key not in data:
                raise WeightsError(f"model card is missing {key!r}: add it (see docs/ARCHITECTURE.md)")
        if data["format"] != FORMAT:
            raise WeightsError(
                f"unknown model card format {data['format']!r}: this SlicerEssNet reads {FORMAT}; update "
                f"SlicerEssNet or re-save the model")
        return cls(**copy.deepcopy(data))

    def to_dict(self) -> dict:
        return {key: copy.deepcopy(getattr(self, key)) for key in FIELD_ORDER}

    @classmethod
    def load(cls, path) -> "ModelCard":
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"model card {path} not found: give the .json written beside the weights")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise WeightsError(f"cannot read model card {path} ({error}): check the file") from None
        except json.JSONDecodeError as error:
            raise WeightsError(
                f"model card {path} is not valid JSON (line {error.lineno}: {error.msg}): fix or replace it"
            ) from None
        try:
            return cls.from_dict(data)
        except WeightsError as error:
            raise type(error)(f"model card {path}: {error}") from None

    def save(self, path) -> Path:
        """Write the card as JSON, atomically."""
        self.validate()
        path = Path(path)
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def replace(self, **changes) -> "ModelCard":
        """A validated copy with some fields changed."""
        return dataclasses.replace(copy.deepcopy(self), **changes)

    # --- what consumers read ------------------------------------------------------------------------
    @property
    def input_modality(self) -> str:
        return self.input["modality"]

    @property
    def output_modality(self) -> str:
        return self.output.get("modality", "label" if self.task == "segmentation" else "")

    @property
    def preprocessing(self) -> dict:
        return copy.deepcopy(self.input["preprocessing"])

    @property
    def postprocessing(self) -> Optional[dict]:
        """The output intensity spec of a synthesis model; None for segmentation (labels are argmax)."""
        spec = self.output.get("postprocessing")
        return copy.deepcopy(spec) if spec is not None else None

    @property
    def grid_spec(self) -> dict:
        """All four ``geometry.GridSpec`` arguments, defaults filled in: ``GridSpec(**card.grid_spec)``."""
        from .geometry import GridSpec

        return dataclasses.asdict(GridSpec.from_dict(self.grid))

    @property
    def num_outputs(self) -> int:
        """Channels the network returns: 1 for an image or a single sigmoid foreground, else one logit per class."""
        import inspect

        from .networks import network_class

        parameters = inspect.signature(network_class(self.architecture["name"]).__init__).parameters
        key = "out_channels" if "out_channels" in parameters else "num_classes"
        return self.architecture.get(key, parameters[key].default)

    @property
    def label_names(self) -> Dict[int, str]:
        """``{label value: name}`` (empty for synthesis)."""
        return {int(key): value for key, value in (self.labels or {}).items()}

    @property
    def required_multiple(self) -> int:
        from .networks import required_multiple

        return required_multiple(self.architecture)

    # --- validation ---------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``WeightsError`` (one line) at the first field that is wrong or inconsistent with another."""
        if self.format != FORMAT:
            raise WeightsError(f"unknown model card format {self.format!r}: this SlicerEssNet reads {FORMAT}")
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise WeightsError(
                f"model name {self.name!r} is not usable as a file name: use letters, digits, '.', '_' and '-'")
        if not isinstance(self.version, str) or not self.version.strip():
            raise WeightsError(f"model version must be a non-empty string like \"1.0.0\", not {self.version!r}")
        if self.task not in TASKS:
            raise WeightsError(f"model task {self.task!r} is not one of {', '.join(TASKS)}: fix the card's task")
        for key in ("description", "licence", "sha256"):
            if not isinstance(getattr(self, key), str):
                raise WeightsError(f"model card {key!r} must be a string: fix the card")
        for key in ("training", "metrics"):
            if not isinstance(getattr(self, key), dict):
                raise WeightsError(f"model card {key!r} must be an object: fix the card")
        if self.sha256 and not SHA256_PATTERN.match(self.sha256):
            raise WeightsError(
                f"model card sha256 {self.sha256!r} is not 64 lower-case hex digits: re-save the model")
        self._validate_architecture()
        self._validate_input()
        self._validate_output()
        self._validate_grid()

    def _validate_architecture(self) -> None:
        from .networks import architecture_arguments

        arguments = architecture_arguments(self.architecture)
        name = self.architecture["name"]
        if name not in TASK_NETWORKS[self.task]:
            raise ArchitectureMismatchError(
                f"a {self.task} model cannot be a {name}: use {' or '.join(TASK_NETWORKS[self.task])}")
        if arguments.get("in_channels", 1) != 1:
            raise ArchitectureMismatchError(
                f"{name} in_channels is {arguments['in_channels']}, but models see one-channel slices: set it to 1")
        if self.task == "synthesis" and arguments.get("out_channels", 1) != 1:
            raise ArchitectureMismatchError(
                f"a synthesis model must output one channel, not {arguments['out_channels']}: set out_channels to 1")
        if self.task == "synthesis" and arguments.get("final", "tanh") != "tanh":
            raise ArchitectureMismatchError(
                "a synthesis generator must end in tanh (its output scale maps [-1, 1]): remove 'final'")

    def _validate_input(self) -> None:
        if not isinstance(self.input, dict) or not isinstance(self.input.get("modality"), str) \
                or not self.input["modality"]:
            raise WeightsError("model card input needs a 'modality' such as \"CT\" or \"MR\": fix the card")
        spec = check_spec(self.input.get("preprocessing"))
        if spec["kind"] == "linear":
            raise WeightsError("input preprocessing 'linear' is an output scale: use ct_window or mr_percentile")
        if spec["kind"] == "ct_window" and self.input["modality"].upper() != "CT":
            raise WeightsError(
                f"input preprocessing ct_window is a CT (HU) window but the input modality is "
                f"{self.input['modality']!r}: use mr_percentile or set the modality to CT")

    def _validate_output(self) -> None:
        if not isinstance(self.output, dict):
            raise WeightsError("model card output must be an object: fix the card")
        if self.task == "synthesis":
            if not isinstance(self.output.get("modality"), str) or not self.output["modality"]:
                raise WeightsError("a synthesis model's output needs a 'modality' such as \"MR\": fix the card")
            spec = check_spec(self.output.get("postprocessing"))
            if spec["kind"] != "linear":
                raise WeightsError(
                    f"output postprocessing must be 'linear' (the synthetic image's intensity scale), not "
                    f"{spec['kind']!r}: fix the card")
            if self.labels is not None:
                raise WeightsError("a synthesis model has no labels: set 'labels' to null")
            return
        if self.output.get("postprocessing") is not None:
            raise WeightsError("a segmentation model's output has no postprocessing (labels are argmax): remove it")
        if not isinstance(self.labels, dict) or not self.labels:
            raise WeightsError(
                "a segmentation model needs 'labels' like {\"0\": \"background\", \"1\": \"liver\"}: add them")
        for key, value in self.labels.items():
            if not key.isdigit() or int(key) > 255 or not isinstance(value, str) or not value:
                raise WeightsError(
                    f"label {key!r}: {value!r} is not a label value 0-255 with a name: fix the card's labels")
        values = sorted(int(key) for key in self.labels)
        if values != list(range(len(values))):
            raise WeightsError(f"label values {values} must run 0, 1, 2, ... with 0 the background: fix the labels")
        outputs = self.num_outputs
        if outputs != len(values) and not (outputs == 1 and len(values) == 2):
            raise ArchitectureMismatchError(
                f"the network outputs {outputs} channels but the card names {len(values)} labels: make them agree "
                f"(one channel per label, or 1 channel for background + one label)")

    def _validate_grid(self) -> None:
        if not isinstance(self.grid, dict):
            raise WeightsError("model card grid must be an object: fix the card")
        mode = self.grid_spec["mode"]  # geometry's GridSpec checks the keys, the mode and the value ranges
        if mode == "spacing" and "spacing_mm" not in self.grid:
            raise WeightsError("grid mode 'spacing' needs 'spacing_mm' (the model's pixel size): add it")
        if mode == "fit" and "size" not in self.grid:
            raise WeightsError("grid mode 'fit' needs 'size' (the model's square input): add it")

    def check_grid_fits_network(self) -> None:
        """The slices the grid makes must suit the network's strides (checked on saving and loading weights, so
        a card on a stand-in network, as in tests, may use any grid)."""
        grid, needed = self.grid_spec, self.required_multiple
        padded_to = grid["size"] if grid["mode"] == "fit" else grid["multiple_of"]
        if padded_to % needed:
            key = "size" if grid["mode"] == "fit" else "multiple_of"
            raise ArchitectureMismatchError(
                f"grid {key} {padded_to} cannot feed a {self.architecture['name']}, which needs H and W divisible "
                f"by {needed}: make {key} a multiple of {needed}")
