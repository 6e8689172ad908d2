"""A small ``slicer.parameterNodeWrapper``: typed fields stored in a real ``vtkMRMLScriptedModuleNode``.

Follows Slicer's ``Base/Python/slicer/parameterNodeWrapper/wrapper.py`` for what the modules use: fields from the
class annotations (``Annotated`` extras allowed), defaults written into the node on construction, plain values as
node parameters and MRML nodes as node references (so they survive scene save/load), the ``Choice`` validator,
``connectGui`` binding widgets by their ``SlicerParameterName`` dynamic property (``QCheckBox`` <-> bool,
``QComboBox`` <-> ``Choice`` str, ``qMRMLNodeComboBox`` <-> node) and ``disconnectGui``.
"""
from __future__ import annotations

import typing

SlicerParameterNamePropertyName = "SlicerParameterName"


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"Value '{value}' is not one of the choices {self.choices}")


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value):
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value {value} is not within [{self.minimum}, {self.maximum}]")


def _split(annotation):
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, extras
    return annotation, []


def _is_node_type(base) -> bool:
    return isinstance(base, type) and hasattr(base, "GetClassName") and hasattr(base, "GetID")


class _Field:
    def __init__(self, name, annotation, default):
        self.name = name
        self.base, self.validators = _split(annotation)
        self.is_node = _is_node_type(self.base)
        if default is _MISSING:
            default = None if self.is_node else self.base()
        self.default = default

    def validate(self, value):
        if self.is_node:
            if value is not None and not value.IsA(self.base.__name__):
                raise ValueError(f"{self.name}: a {value.GetClassName()} is not a {self.base.__name__}")
            return
        for validator in self.validators:
            validator.validate(value)

    def write(self, node, value):
        self.validate(value)
        if self.is_node:
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
        elif self.base is bool:
            node.SetParameter(self.name, "True" if value else "False")
        else:
            node.SetParameter(self.name, str(self.base(value)))

    def read(self, node):
        if self.is_node:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        return text == "True" if self.base is bool else self.base(text)

    def is_in(self, node) -> bool:
        # An unset node reference and a reference to "None" are the same thing.
        return self.is_node or node.HasParameter(self.name)


_MISSING = object()


# --- GUI connectors --------------------------------------------------------------------------------------------
class _Connector:
    def __init__(self, widget, field):
        self.widget, self.field = widget, field

    @staticmethod
    def create(widget, field):
        from PySide6 import QtWidgets

        from .mrml_widgets import qMRMLNodeComboBox

        if field.is_node and isinstance(widget, qMRMLNodeComboBox):
            return _NodeComboConnector(widget, field)
        if field.base is bool and type(widget) is QtWidgets.QCheckBox:
            return _CheckBoxConnector(widget, field)
        if type(widget) is QtWidgets.QComboBox and field.base in (str, int, float, bool):
            choice = next((v for v in field.validators if isinstance(v, Choice)), None)
            if choice is None:
                raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
            return _ComboConnector(widget, field, choice.choices)
        raise RuntimeError(f"Unable to create GUI connector from datatype '{field.base}' to widget type '{type(widget)}'")


class _CheckBoxConnector(_Connector):
    def connect(self, callback):
        self.widget.toggled.connect(callback)
        self.callback = callback

    def disconnect(self):
        self.widget.toggled.disconnect(self.callback)

    def read(self):
        return self.widget.isChecked()

    def write(self, value):
        self.widget.setChecked(bool(value))


class _ComboConnector(_Connector):
    def __init__(self, widget, field, choices):
        super().__init__(widget, field)
        self.choices = choices
        widget.clear()
        for choice in choices:
            widget.addItem(str(choice))

    def connect(self, callback):
        self.widget.currentIndexChanged.connect(callback)
        self.callback = callback

    def disconnect(self):
        self.widget.currentIndexChanged.disconnect(self.callback)

    def read(self):
        return self.choices[self.widget.currentIndex()]

    def write(self, value):
        self.widget.setCurrentIndex(self.choices.index(value))


class _NodeComboConnector(_Connector):
    def connect(self, callback):
        self.widget.currentNodeChanged.connect(callback)
        self.callback = callback

    def disconnect(self):
        self.widget.currentNodeChanged.disconnect(self.callback)

    def read(self):
        return self.widget.currentNode()

    def write(self, value):
        self.widget.setCurrentNode(value)


# --- the decorator ---------------------------------------------------------------------------------------------
def parameterNodeWrapper(classtype=None):
    def wrap(cls):
        return _process(cls)

    return wrap if classtype is None else wrap(classtype)


def _process(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {name: _Field(name, annotation, getattr(cls, name, _MISSING)) for name, annotation in hints.items()}
    cls.allParameters = fields

    for name, field in fields.items():
        setattr(cls, name, property(lambda self, f=field: f.read(self.parameterNode),
                                    lambda self, value, f=field: self.setValue(f.name, value)))

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        self._guis = {}
        self._next_tag = 0
        self._updating_gui = False
        for field in fields.values():
            if not field.is_in(parameterNode):
                field.write(parameterNode, field.default)

    def getValue(self, name):
        return fields[name].read(self.parameterNode)

    def setValue(self, name, value):
        fields[name].write(self.parameterNode, value)

    def default(self, name):
        return fields[name].default

    def connectGui(self, gui):
        from PySide6 import QtWidgets

        widgets = gui.findChildren(QtWidgets.QWidget) if isinstance(gui, QtWidgets.QWidget) else gui.__dict__.values()
        mapping = {}
        for widget in widgets:
            name = widget.property(SlicerParameterNamePropertyName)
            if name:
                if name not in fields:
                    raise ValueError(f"Cannot find a param with the given name: {name}")
                mapping[name] = _Connector.create(widget, fields[name])
        tag = self._next_tag
        self._next_tag += 1
        self._guis[tag] = mapping
        for name, connector in mapping.items():
            connector.write(self.getValue(name))
            connector.connect(lambda *args, n=name, c=connector: self._gui_changed(n, c))
        self._observer = self.parameterNode.AddObserver("ModifiedEvent", lambda *args: self._update_gui())
        return tag

    def _gui_changed(self, name, connector):
        if not self._updating_gui:
            self.setValue(name, connector.read())

    def _update_gui(self):
        if self._updating_gui:
            return
        self._updating_gui = True
        try:
            for mapping in self._guis.values():
                for name, connector in mapping.items():
                    connector.write(self.getValue(name))
        finally:
            self._updating_gui = False

    def disconnectGui(self, tag):
        for connector in self._guis.pop(tag, {}).values():
            connector.disconnect()

    members = dict(
        __init__=__init__, getValue=getValue, setValue=setValue, default=default, connectGui=connectGui,
        disconnectGui=disconnectGui, _gui_changed=_gui_changed, _update_gui=_update_gui,
        StartModify=lambda self: self.parameterNode.StartModify(),
        EndModify=lambda self, was_modified: self.parameterNode.EndModify(was_modified),
        AddObserver=lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority),
        RemoveObserver=lambda self, tag: self.parameterNode.RemoveObserver(tag),
        Modified=lambda self: self.parameterNode.Modified(),
    )
    for name, member in members.items():
        setattr(cls, name, member)
    cls._is_parameter_node_wrapper = True
    return cls


def isParameterNodeWrapper(obj) -> bool:
    return getattr(obj, "_is_parameter_node_wrapper", False)
