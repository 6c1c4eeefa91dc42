"""The checks of a run file (:mod:`vitcls_utils.running.run_file`), its text and its values.

The text is YAML read strictly, as a file a person writes by hand: UTF-8 only, a size limit,
duplicate keys refused with their lines (YAML would keep the last silently), and the expanded
size bounded, so that aliases nested into an "alias bomb" are refused instead of hanging
whatever walks the data. The values: known keys (an unknown one gets the nearest known name),
each of its type, and notebook parameters that some notebook declares, of the type of their
default there. Each problem is one line, and every problem is returned, not the first.
"""
from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import yaml

from ..base import paths

#: a run file lists variants and settings: a megabyte is far more than one needs
MAX_BYTES = 1 << 20
#: values after expanding aliases (a run file of a thousand variants has some ten thousand)
MAX_VALUES = 100_000
TYPE_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false",
              dict: "a mapping", list: "a list"}


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, noting every duplicate key of a mapping with its line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: List[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        first: Dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    self.duplicates.append(f"line {line}: duplicate key {key!r} (first on "
                                           f"line {first[key]}): YAML would keep only the last;"
                                           " merge them into one")
                else:
                    first[key] = line
            except TypeError:  # an unhashable key: the constructor below says so
                pass
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Tuple[Any, List[str]]:
    """The data of a YAML file and the problems that stop it from being used (the data is
    None when it could not be read at all)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        return None, [f"is {size / 2**20:.1f} MiB; a run file is at most "
                      f"{MAX_BYTES // 2**20} MiB (it names variants and settings, not data)"]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, [f"is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
                      f"{error.start}): save it as UTF-8"]
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        return None, ["is not valid YAML: " + " ".join(str(error).split())]
    except RecursionError:
        return None, ["nests its values too deeply to be a run file"]
    finally:
        loader.dispose()
    problems = list(loader.duplicates)
    if expanded_size(data, MAX_VALUES) > MAX_VALUES:
        problems.append(f"expands to more than {MAX_VALUES} values (aliases of aliases?): "
                        "write the values out, or use fewer aliases")
        data = None
    return data, problems


def expanded_size(data: Any, limit: int) -> int:
    """How many values ``data`` holds with every alias expanded, counted up to ``limit + 1``
    (so that counting an alias bomb stops at once)."""
    count, stack = 0, [data]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def checked(where: str, mapping: Mapping, types: Mapping[str, object]) -> Tuple[dict, List[str]]:
    """The entries of ``mapping`` with a known key and a value of its type (None: unset, left
    out), and a problem for each of the others, ``where`` before it."""
    kept, problems = {}, []
    for key, value in mapping.items():
        if key not in types:
            problems.append(f"{where}unknown key {key!r}{nearest(key, types)}")
        elif value is not None and not fits(value, types[key]):
            problems.append(f"{where}{key} must be {type_name(types[key])}, not {value!r:.60}")
        elif value is not None:
            kept[key] = value
    return kept, problems


def fits(value: object, kind) -> bool:
    """``isinstance``, except that true/false is no number and a whole number is a number."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds) or (isinstance(value, int) and float in kinds)


def type_name(kind) -> str:
    """A type (or a tuple of them) in words: "a whole number", "text or a list"."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(TYPE_NAMES.get(k, k.__name__) for k in kinds)


def nearest(key: object, known) -> str:
    """" (did you mean 'x'?)" with the known name nearest to ``key``, else the known names."""
    near = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {near[0]!r}?)" if near else f" (keys: {', '.join(known)})"


@lru_cache(maxsize=1)
def notebook_defaults() -> Dict[str, Tuple[object, ...]]:
    """Each notebook parameter's default values, over the notebooks that declare it."""
    from .colab import default_parameters

    found: Dict[str, Tuple[object, ...]] = {}
    for notebook in sorted((paths.ROOT / "notebooks").glob("*.ipynb")):
        for name, value in default_parameters(notebook).items():
            found[name] = found.get(name, ()) + (value,)
    return found


def parameter_problems(parameters: Mapping[str, object]) -> List[str]:
    """A run file's notebook parameters that no notebook declares, or whose value has
    another type than the default the notebooks give it (null, unset, always fits)."""
    declared, problems = notebook_defaults(), []
    for name, value in parameters.items():
        typed = [d for d in declared.get(name, ()) if d is not None and d is not ...]
        kinds = tuple(sorted({type(d) for d in typed}, key=lambda kind: kind.__name__))
        if name not in declared:
            problems.append(f"parameters: no notebook has a parameter {name!r}"
                            f"{nearest(name, sorted(declared))}")
        elif value is not None and kinds and not fits(value, kinds):
            problems.append(f"parameters: {name} must be {type_name(kinds)} (the notebooks' "
                            f"default is {typed[0]!r}), not {value!r:.60}")
    return problems
