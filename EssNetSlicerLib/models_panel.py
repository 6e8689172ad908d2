"""The models section both module GUIs share: model choosers from the core's registry and cache, Import model
file (for sites without internet), Open models folder, and Delete cached models.

Listing reads only JSON (registry and model cards), never torch, so opening a module stays instant. The model
combo boxes are filled here rather than bound by the parameter node wrapper because their items change at run
time; the chosen model's name is stored in the parameter node by the widget.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, List, Optional, Tuple

MODEL_FILE_FILTER = "Model weights (*.safetensors *.pt *.pth *.ckpt)"
TASK_OF = {"synthesize": "synthesis", "segment": "segmentation"}


class ModelChoice:
    """One model combo box for one task; ``model`` is a model name, or None for the registry's default."""

    def __init__(self, comboBox, task: str, onChanged: Optional[Callable[[Optional[str]], None]] = None,
                 inputModality: Optional[str] = None):
        self.comboBox = comboBox
        self.task = task
        self.inputModality = inputModality
        self.onChanged = onChanged
        # (label, model name or None, description, (input, output) modality or None)
        self._items: List[Tuple[str, Optional[str], str, Optional[Tuple[str, str]]]] = []
        self._index = -1
        comboBox.currentIndexChanged.connect(self._indexChanged)

    def refresh(self, store, selected: Optional[str]) -> None:
        items = []
        defaultName = None
        try:
            defaultName = store.default_model(TASK_OF[self.task]).name
        except Exception:  # noqa: BLE001 - no default registered: the list still shows what is installed
            defaultName = None
        for info in store.list():
            if info.task != TASK_OF[self.task]:
                continue
            card = store.card(info.path or info.name)
            modalities = card.modalities if card is not None else None
            if self.inputModality and modalities and modalities[0] != self.inputModality:
                continue
            notes = []
            if modalities:
                notes.append(f"{modalities[0]} \u2192 {modalities[1]}" if self.task == "synthesize"
                             else f"on {modalities[0]}")
            if info.name == defaultName:
                notes.append("default")
            if not info.installed:
                notes.append("downloaded on first use")
            label = f"{info.name} {info.version}" + (f" ({', '.join(notes)})" if notes else "")
            items.append((label, info.name, info.description or "", modalities))
        if not items:
            items.append(("No model available: import a model file", None, "", None))
        self._items = items
        names = [item[1] for item in items]
        index = names.index(selected) if selected in names else (names.index(defaultName) if defaultName in names
                                                                  else 0)
        import qt

        self.comboBox.blockSignals(True)
        try:
            self.comboBox.clear()
            for position, (label, _, description, _) in enumerate(items):
                self.comboBox.addItem(label)
                self.comboBox.setItemData(position, description, qt.Qt.ToolTipRole)
            self.comboBox.setCurrentIndex(index)
        finally:
            self.comboBox.blockSignals(False)
        self._index = index
        if self.model != selected and self.onChanged is not None:
            self.onChanged(self.model)  # the parameter node names what the combo box shows

    def _indexChanged(self, *args) -> None:
        # Read the index from the widget: in PythonQt the signal may arrive through its QString overload.
        current = self.comboBox.currentIndex
        self._index = int(current() if callable(current) else current)  # a method in PySide, a property in PythonQt
        if self.onChanged is not None:
            self.onChanged(self.model)

    @property
    def model(self) -> Optional[str]:
        if 0 <= self._index < len(self._items):
            return self._items[self._index][1]
        return None

    @property
    def names(self) -> List[Optional[str]]:
        return [item[1] for item in self._items]

    @property
    def available(self) -> bool:
        return self.model is not None

    @property
    def description(self) -> str:
        return self._items[self._index][2] if 0 <= self._index < len(self._items) else ""

    @property
    def modalities(self) -> Optional[Tuple[str, str]]:
        """(input, output) modality of the chosen model, from its card; None when unknown."""
        return self._items[self._index][3] if 0 <= self._index < len(self._items) else None


class ModelsPanel:
    """Wires the Import / Open folder / Delete buttons and keeps every ``ModelChoice`` of a module up to date."""

    def __init__(self, ui, choices: List[ModelChoice], selection: Callable[[ModelChoice], Optional[str]],
                 statusLabel=None, storeFactory=None, ensureDependencies: Optional[Callable[[], None]] = None):
        """``ensureDependencies``: called before a file picked with the Import button is checked, because checking
        that the weights fit their card needs PyTorch (a fresh Slicer may not have it yet)."""
        self.ui = ui
        self.choices = choices
        self.selection = selection
        self.statusLabel = statusLabel
        self._storeFactory = storeFactory
        self._ensureDependencies = ensureDependencies
        ui.importModelButton.clicked.connect(self.onImportModelButton)
        ui.openModelsFolderButton.clicked.connect(self.onOpenModelsFolderButton)
        ui.deleteModelsButton.clicked.connect(self.onDeleteModelsButton)

    def store(self):
        if self._storeFactory is not None:
            return self._storeFactory()
        from SlicerEssNet.model_store import ModelStore

        return ModelStore()

    def refresh(self) -> None:
        """Refill the model lists; a broken registry or cache is reported on the status line, never raised, so
        the module still opens."""
        try:
            store = self.store()
            for choice in self.choices:
                choice.refresh(store, self.selection(choice))
            self.ui.openModelsFolderButton.setToolTip(f"Open {store.cache_dir}")
        except Exception as error:  # noqa: BLE001
            logging.error("SlicerEssNet: could not list the models: %s", error)
            self._say(f"Could not list the models: {error}")

    def _say(self, text: str) -> None:
        if self.statusLabel is not None:
            self.statusLabel.setText(text)

    # --- actions (the buttons call these; scripts and tests may call them directly) ---------------------------
    def importModelFile(self, path):
        """Copy a model (weights + card beside them) into the cache after checking it; returns the cached path."""
        store = self.store()
        imported = store.import_file(path)
        self.refresh()
        # Whoever imports a model means to use it: select it wherever it fits (task and input modality).
        name = os.path.basename(str(imported))[: -len(".safetensors")]
        for choice in self.choices:
            if name in choice.names:
                choice.refresh(store, name)
        self._say(f"Imported {os.path.basename(str(imported))}.")
        return imported

    def deleteCachedModels(self) -> list:
        removed = self.store().remove_all()
        self.refresh()
        self._say(f"Deleted {len(removed)} cached file(s).")
        return removed

    # --- button slots -------------------------------------------------------------------------------------------
    def onImportModelButton(self, *args) -> None:
        import qt
        import slicer

        result = qt.QFileDialog.getOpenFileName(None, "Import model file", "", MODEL_FILE_FILTER)
        path = result[0] if isinstance(result, tuple) else result  # PySide returns (path, filter)
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Could not import the model.", waitCursor=True):
            if self._ensureDependencies is not None:
                self._ensureDependencies()
            self.importModelFile(path)

    def onOpenModelsFolderButton(self, *args) -> None:
        import qt

        folder = self.store().cache_dir
        os.makedirs(folder, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    def onDeleteModelsButton(self, *args) -> None:
        import slicer

        store = self.store()
        if not slicer.util.confirmOkCancelDisplay(
                f"Delete every downloaded or imported model in {store.cache_dir}? Models are downloaded again "
                "when next used."):
            return
        with slicer.util.tryWithErrorDisplay("Could not delete the cached models."):
            self.deleteCachedModels()
