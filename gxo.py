"""gxo: an automation kernel that runs YAML playbooks.

A playbook is a list of tasks.  Each task runs a module (``exec`` runs a
command) and may pass state to later tasks through templates, run
conditionally (``when``), over a list (``loop``, optionally in parallel), with
retries, and stream records to other tasks like a Unix pipe.  gxo schedules the
tasks as a DAG built from those references, runs independent ones
concurrently, and stops cleanly on the first failure.

    python gxo.py -playbook deploy.yml -var env=prod

or from Python:

    import gxo
    result = gxo.run_playbook("deploy.yml", vars={"env": "prod"})
    result.ok, result.tasks["build"].status, result.state["build_out"]

The sections below follow the data, and each uses only what is above it:

    helpers     format_value (how a value prints), _excerpt, _suggest, _describe
    errors      GxoError, PlaybookError, ParamError, TaskError, Cancelled, ...
    secrets     _secrets: the values gxo never prints; _HIDDEN for no_log tasks
    state       _freeze, _State: what tasks share, read-only
    YAML        _Document: YAML 1.2 values, bounded, positions found on demand
    templates   Go's text/template: lexer, nodes, parser, compiler; render, resolve
    channels    Channel, fan_out: bounded streams of records between tasks
    DAG         _link (edges), _find_cycle, the plan (-validate, -graph), _Schedule
    modules     register, Module, Params, the module finder
    loading     load_playbook, Task, Playbook: everything checked before a run
    logging     Logger, _Reporter: log lines, progress, the recap, -report
    executors   Executor, LocalExecutor: where exec calls run (Dask: gxo_modules/_dask)
    context     TaskContext: what a module sees of the run
    runner      _Runner: when -> loop -> params -> retry -> register
    engine      Engine, RunResult, run_playbook
    CLI         main
"""

__all__ = [
    "GxoError", "PlaybookError", "ParamError", "TaskError", "Cancelled",
    "RecordProcessingError", "TemplateError", "TemplateSyntaxError",
    "TemplateRenderError",
    "load_playbook", "Playbook", "Task", "Params",
    "render", "resolve", "template_variables", "compile_template", "format_value", "truthy",
    "Channel", "fan_out", "copy_record", "Module", "TaskContext", "register", "Logger",
    "DEBUG", "INFO", "WARN", "ERROR", "LEVELS",
    "Executor", "LocalExecutor", "Engine", "RunResult", "TaskResult", "run_playbook", "main",
]
__version__ = "0.2.0"

import itertools
import math
import os
import re
import sys
import threading
import time
from collections import ChainMap, deque, namedtuple
from collections.abc import Mapping
try:
    from _queue import Empty, SimpleQueue       # skips importing queue (and heapq)
except ImportError:                             # pragma: no cover (not CPython)
    from queue import Empty, SimpleQueue

if __name__ != "gxo":
    # Modules do 'import gxo': let that find this very module (run as a script,
    # with -m, or vendored as pkg.gxo), not a second copy.
    sys.modules.setdefault("gxo", sys.modules[__name__])

COMPLETED, FAILED, SKIPPED = "Completed", "Failed", "Skipped"
_DEFAULT_DELIMITERS = ("<<", ">>")


# ---------------------------------------------------------------- helpers
#
# Small functions every section below uses: names, excerpts of user values
# in messages, suggestions, durations for people.

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def _excerpt(text, limit=40):
    """Quote a user's text for a message; a long one is cut to its head and
    tail, with its length: 'aaaa…aaa' (10,000 chars)."""
    if len(text) <= limit:
        return repr(text)
    head = limit * 2 // 3
    return f"{text[:head] + '…' + text[head - limit + 1:]!r} ({len(text):,} chars)"


def _suggest(word, choices):
    """Return ' (did you mean 'x'?)' for the closest choice, or ''."""
    import difflib
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], 1, 0.6)
    return f" (did you mean {_excerpt(close[0])}?)" if close else ""


def _describe(value):
    """Name a YAML value for an error message: type and a short excerpt."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {_excerpt(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else _excerpt(text)}"


def _go_float_str(f):
    """Go's %v for a float64: the shortest digits that read back as f, in
    exponent form (at least two exponent digits) below 1e-4 and from 1e6 on."""
    if f != f:
        return "NaN"
    if f in (math.inf, -math.inf):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0 or 1e-4 <= abs(f) < 1e6:       # where repr() has no exponent either
        r = repr(f)
        return r[:-2] if r.endswith(".0") else r
    mantissa, _, exp = repr(abs(f)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    exp = int(exp or 0) + len(whole) - (len(whole + frac) - len(digits)) - 1
    digits = digits.rstrip("0")
    return (f"{'-' if f < 0 else ''}{digits[0]}{'.' if len(digits) > 1 else ''}{digits[1:]}"
            f"e{'-' if exp < 0 else '+'}{abs(exp):02d}")


def format_value(v):
    """How a value prints: Go's %v, except that lists and maps print as
    compact JSON and nil as the empty string."""
    t = type(v)
    if t is str:
        return v
    if t is int:
        return int.__repr__(v)
    if t is bool:
        return "true" if v else "false"
    if t is float:
        return _go_float_str(v)
    if v is None:
        return ""
    if isinstance(v, (Mapping, list, tuple)):
        import json
        try:
            return json.dumps(v, separators=(",", ":"), ensure_ascii=False,
                              default=lambda o: dict(o) if isinstance(o, Mapping) else str(o))
        except (TypeError, ValueError):       # keys JSON can't hold, cycles
            return str(v)
    for base in (bool, int, float, str):      # subclasses print like their base
        if isinstance(v, base):
            return format_value(base(v))
    return str(v)


def _short(item):
    """A loop item for a message: its text, quoted and cut (_excerpt)."""
    return _excerpt(item if isinstance(item, str) else format_value(item))


def _plural(n, noun):
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _seconds(value):
    """A duration for people: 850ms, 2.35s, 1m30s."""
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.2f}s"
    return f"{int(value // 60)}m{value % 60:.0f}s"


def _path_parts(path):
    """'args[1]' -> ['args', 1]; 'environment.HOME' -> ['environment', 'HOME']."""
    return [int(p[1:-1]) if p[0] == "[" else p for p in re.findall(r"\[\d+\]|[^.\[\]]+", path)]


def _item_text(item):
    """A loop item as text, cut to 40 characters (for the report)."""
    text = item if isinstance(item, str) else format_value(item)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- errors

class GxoError(Exception):
    """Base class of every error gxo raises on purpose."""


class PlaybookError(GxoError):
    """The playbook is invalid: a user mistake found before anything runs.

    The message names the file, line, column, task and field.
    """

    def __init__(self, message, *, file=None, line=None, col=None, task=None,
                 field=None):
        self.message, self.file, self.line, self.col = message, file, line, col
        self.task, self.field = task, field
        super().__init__(str(self))

    def __str__(self):
        where = ""
        if self.file:
            where = self.file
            if self.line:
                where += f":{self.line}:{self.col}"
            where += ": "
        if self.task:
            where += f"{self.task}: "
        if self.field:      # a path of the user's keys: long only when they are
            where += f"{self.field if len(self.field) <= 80 else _excerpt(self.field, 80)}: "
        return where + self.message


class ParamError(GxoError):
    """A module parameter is missing, unknown or of the wrong type."""

    def __init__(self, param, message):
        self.param, self.message = param, message
        super().__init__(f"param '{param}': {message}" if param else message)


class TaskError(GxoError):
    """A task failed; raised by modules for failures that need no traceback.

    ``summary`` is what the module can tell of the failed call (exec: stdout,
    stderr, exit_code); the engine registers it so a failure handler can read it.
    """

    def __init__(self, message, *, summary=None):
        super().__init__(message)
        self.summary = summary


class Cancelled(GxoError):
    """The task was cancelled (playbook halted, timeout, signal, producer failed)."""


class RecordProcessingError(GxoError):
    """A non-fatal error with one record; put on ``errors``, never fails a task."""

    def __init__(self, task, item, cause):
        self.task, self.item, self.cause = task, item, cause
        super().__init__(f"task={task} item={item!r} cause={cause}")


class TemplateError(GxoError):
    """A template failed; line and col (1-based) point into the template text."""

    def __init__(self, line, col, reason):
        super().__init__(f"{line}:{col}: {reason}")
        self.line, self.col, self.reason = line, col, reason


class TemplateSyntaxError(TemplateError):
    """The template text is invalid (Go's parse phase)."""


class TemplateRenderError(TemplateError):
    """Rendering failed on this data (Go's exec phase)."""


# ---------------------------------------------------------------- secrets
#
# Values that must never be printed: vars whose names look secret and values
# read with the template function 'secret'.  Every line gxo writes passes
# through _secrets.mask, so a secret stays hidden wherever it ends up: in a
# reason, a stderr tail, a loop item, a template error, the recap, a report.

_SECRET_NAME = re.compile(r"passw(?:or)?d|secret|token|api_?key|private_?key|credential", re.I)
_MASK = "********"


class _Secrets:
    """The secret values seen so far in this process, and the masking of text."""

    def __init__(self):
        self._values = set()
        self._pattern = None            # one regex of every form of every value
        self._lock = threading.Lock()

    def add_named(self, name, value):
        """Add value if name looks secret; else look into a mapping's keys."""
        if isinstance(name, str) and _SECRET_NAME.search(name):
            self.add(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                self.add_named(k, v)

    def add(self, value):
        """Mask value (every text inside it) from now on."""
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, (list, tuple)):
            for v in value:
                self.add(v)
            return
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return
        text = value if isinstance(value, str) else format_value(value)
        # Shorter values would mask ordinary text everywhere and protect nothing.
        if len(text) < 3 or text in self._values:
            return
        import json
        forms = {text, repr(text)[1:-1], json.dumps(text)[1:-1]}
        forms.update(line for line in text.splitlines() if len(line) >= 8)
        with self._lock:
            self._values |= forms
            alternatives = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, alternatives)))

    def mask(self, text):
        pattern = self._pattern
        return text if pattern is None else pattern.sub(_MASK, text)


_secrets = _Secrets()

_HIDDEN = "details hidden (no_log)"


# ---------------------------------------------------------------- state
#
# Values in state are frozen: a task cannot change what another task sees.
# Freezing happens once, when a value enters state; reads cost nothing.
# Writes are single dict assignments, atomic under the GIL, so readers never
# see a half-written value.

def _read_only(self, *args, **kwargs):
    raise TypeError("gxo state is read-only; copy the value (dict(x), list(x)) to change it")


class _FrozenDict(dict):
    """A dict from state: reads like a dict, refuses to change."""

    __slots__ = ()
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only

    def __deepcopy__(self, memo):
        import copy
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self):
        return (dict, (dict(self),))


class _FrozenList(list):
    """A list from state: reads like a list, refuses to change."""

    __slots__ = ()
    __setitem__ = __delitem__ = append = extend = insert = pop = remove = _read_only
    clear = sort = reverse = __iadd__ = __imul__ = _read_only

    def __deepcopy__(self, memo):
        import copy
        return [copy.deepcopy(v, memo) for v in self]

    def __reduce__(self):
        return (list, (list(self),))


def _freeze(value):
    """A deep read-only copy of a JSON-like value (shared if already frozen)."""
    t = type(value)
    if t is str or t is int or t is bool or t is float or value is None:
        return value
    if t is _FrozenDict or t is _FrozenList:
        return value
    if isinstance(value, dict):
        return _FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return _FrozenList(_freeze(v) for v in value)
    return value


class _State:
    """Vars, registered results and task statuses, shared by all tasks."""

    def __init__(self, vars, playbook_dir):
        self.data = dict(vars)
        self._tasks = _FrozenDict()
        self.data["_gxo"] = _FrozenDict(tasks=self._tasks, playbook_dir=playbook_dir)
        from types import MappingProxyType
        self.reader = MappingProxyType(self.data)

    def set(self, key, value):
        self.data[key] = _freeze(value)

    def set_status(self, key, status):
        dict.__setitem__(self._tasks, key, _FrozenDict(status=status))


# ---------------------------------------------------------------- YAML loading
#
# PyYAML speaks YAML 1.1 (yes/no booleans, 0777 octals, 1:30 sexagesimals).
# Playbooks are YAML 1.2: we read PyYAML's parser events, with no implicit
# typing at all, and build values ourselves with the 1.2 core schema.  PyYAML's
# composer is not used: it recurses (a deep file crashes it) and keeps a node
# per value (about 90 bytes of memory per byte of YAML).  We keep no position
# at all: an error reads the text again to point at the value it is about.

_STR, _INT, _FLOAT = "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_BOOL, _NULL = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_SCALAR_TAGS = {_INT: int, _FLOAT: float, _BOOL: bool, _NULL: type(None)}
_INT_RE = re.compile(r"[-+]?[0-9]+$|0o[0-7]+$|0x[0-9a-fA-F]+$")
_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {".inf": float("inf"), ".Inf": float("inf"), ".INF": float("inf"),
                   "+.inf": float("inf"), "+.Inf": float("inf"), "+.INF": float("inf"),
                   "-.inf": float("-inf"), "-.Inf": float("-inf"), "-.INF": float("-inf"),
                   ".nan": float("nan"), ".NaN": float("nan"), ".NAN": float("nan")}
_MAX_DEPTH = 100                # nesting of collections (code that walks values recurses)
_MAX_ALIASED = 1_000_000        # values reached through aliases ("billion laughs")
_MERGE = object()               # the pending key after a '<<' merge key
_UNPRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_WORDS = {"null": None, "Null": None, "NULL": None, "~": None, "": None,
          "true": True, "True": True, "TRUE": True,
          "false": False, "False": False, "FALSE": False}


def _plain_scalar(text):
    """Type a plain (unquoted) YAML scalar by the YAML 1.2 core schema."""
    if text in _WORDS:
        return _WORDS[text]
    if text[0] in "0123456789+-.":
        if _INT_RE.match(text):
            if text.startswith(("0o", "0x")):
                return int(text[2:], 8 if text[1] == "o" else 16)
            return int(text)
        if _FLOAT_RE.match(text):
            return float(text)
        if text in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[text]
    return text


def _pos(event):
    """The position of a YAML event: line << 32 | column, both 0-based."""
    return event.start_mark.line << 32 | event.start_mark.column


class _Document:
    """A parsed YAML file: its values, and where each of them was written."""

    def __init__(self, text, file):
        self.file, self._text = file, text
        self._marks = {}        # id(list or dict) -> its marks (see _marks_of), once asked for
        self.root = self._parse(text)

    def _parse(self, text):
        try:
            import yaml
        except ImportError:
            raise PlaybookError("gxo needs PyYAML to read playbooks: apt install python3-yaml, "
                                "dnf install python3-pyyaml, python3 -m pip install pyyaml, or "
                                "use gxo.pyz (it brings its own)", file=self.file) from None
        self._yaml, parser = yaml, None
        try:
            parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
            return self._build(parser.get_event, yaml.events)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            problem = e.problem or e.context
            # Newer libyaml stops at 1000 levels as it scans ahead: say it as we do.
            problem = (f"nested more than {_MAX_DEPTH} levels deep" if "nesting depth" in problem
                       else f"invalid YAML: {problem}")
            raise PlaybookError(problem, file=self.file, line=mark and mark.line + 1,
                                col=mark and mark.column + 1) from None
        except (yaml.reader.ReaderError, UnicodeEncodeError) as e:   # a character YAML refuses
            bad = _UNPRINTABLE.search(text)     # e's position counts bytes or characters
            pos = bad.start() if bad else 0
            raise self.error(text.count("\n", 0, pos) << 32 | pos - text.rfind("\n", 0, pos) - 1,
                             f"invalid YAML: character {ord(bad[0]):#06x} is not allowed" if bad
                             else f"invalid YAML: {e.reason}") from None
        except yaml.YAMLError as e:
            raise PlaybookError(f"invalid YAML: {' '.join(str(e).split())}", file=self.file) from None
        finally:
            if parser is not None:
                parser.dispose()

    def _build(self, next_event, ev):
        """The value of the single document in the event stream.

        Nesting is bounded by _MAX_DEPTH and the values reached through
        aliases by _MAX_ALIASED: both are one-line errors, found early.
        """
        Scalar, Alias, SeqStart, MapStart = (ev.ScalarEvent, ev.AliasEvent,
                                              ev.SequenceStartEvent, ev.MappingStartEvent)
        append, setitem = list.append, dict.__setitem__
        anchors, texts = {}, {}
        stack = []      # open collections: [value, pending key, anchor, count at start, merged keys, start]
        count = aliased = 0     # values so far, counting what aliases repeat; values aliases repeat
        next_event()                            # StreamStart
        if isinstance(next_event(), ev.StreamEndEvent):
            raise PlaybookError("the playbook is empty", file=self.file)
        while True:
            event = start = next_event()
            cls = type(event)
            if cls is Scalar:
                count += 1
                value = self._scalar(event)
                if event.anchor:
                    anchors[event.anchor] = (value, 1)
            elif cls is Alias:
                value, size = anchors.get(event.anchor, (None, 0))
                if not size:
                    raise self.error(_pos(event), f"alias {_excerpt('*' + event.anchor)} "
                                     + ("is inside its own anchor" if size is None
                                        else "has no anchor before it"))
                count += size
                aliased += size
                if aliased > _MAX_ALIASED:
                    raise self.error(_pos(event), f"aliases repeat more than {_MAX_ALIASED:,} "
                                     "values (an alias bomb?)")
            elif cls is SeqStart or cls is MapStart:
                if stack and stack[-1][1] is None and type(stack[-1][0]) is _FrozenDict:
                    raise self.error(_pos(event), "a mapping key must be a scalar")
                if len(stack) == _MAX_DEPTH:
                    raise self.error(_pos(event), f"nested more than {_MAX_DEPTH} levels deep")
                if event.tag not in (None, "!", _SEQ if cls is SeqStart else _MAP):
                    raise self.error(_pos(event), "unsupported YAML tag "
                                     + _excerpt(event.tag.replace("tag:yaml.org,2002:", "!!")))
                count += 1
                # Frozen from the start: vars and params need no frozen copy.
                value = _FrozenList() if cls is SeqStart else _FrozenDict()
                if event.anchor:
                    anchors[event.anchor] = (value, None)
                stack.append([value, None, event.anchor, count, None, event])
                continue
            else:                               # the end of a collection
                frame = stack.pop()
                value, start = frame[0], frame[5]
                if frame[2]:
                    anchors[frame[2]] = (value, count - frame[3] + 1)
            if not stack:
                break
            frame = stack[-1]
            parent = frame[0]
            if type(parent) is _FrozenList:
                append(parent, value)
            elif frame[1] is None:              # value is a key
                if isinstance(value, (dict, list)):
                    raise self.error(_pos(start), "a mapping key must be a scalar")
                if cls is Scalar and event.value == "<<" and event.implicit[0]:
                    frame[1] = _MERGE
                    continue
                # Keys are text, as written (Go's map[string]): {1: x} has the key "1".
                text = event.value if cls is Scalar else value if type(value) is str \
                    else format_value(value)
                key = frame[1] = texts.setdefault(text, text)
                if key in parent and (frame[4] is None or key not in frame[4]):
                    raise self.error(_pos(event), f"duplicate key {_excerpt(key)}")
                if frame[4]:
                    frame[4].discard(key)
            else:                               # value is the value of the pending key
                key, frame[1] = frame[1], None
                if key is _MERGE:
                    self._merge(frame, value, _pos(start))
                else:
                    setitem(parent, key, value)
        next_event()                            # DocumentEnd
        event = next_event()
        if not isinstance(event, ev.StreamEndEvent):
            raise self.error(_pos(event), "a playbook is one YAML document; found a second one")
        return value

    def _scalar(self, event):
        """The value of a scalar by its tag (YAML 1.2 core schema)."""
        tag, text = event.tag, event.value
        try:
            if tag is None or tag == "!":
                return _plain_scalar(text) if event.implicit[0] else text
            if tag == _STR:
                return text
            short = tag.replace("tag:yaml.org,2002:", "!!")
            kind = _SCALAR_TAGS.get(tag)
            if kind is None:
                raise self.error(_pos(event), f"unsupported YAML tag {_excerpt(short)}")
            value = _plain_scalar(text)
            if kind is float and type(value) is int:
                value = float(value)
            if type(value) is not kind:
                raise self.error(_pos(event), f"cannot read {_excerpt(text)} as {short}")
            return value
        except ValueError:          # an integer too long for int()
            raise self.error(_pos(event), f"the number {_excerpt(text)} is too long") from None

    def _merge(self, frame, value, pos):
        """Apply a '<<' merge key: keys already present win."""
        target = frame[0]
        merged = frame[4] = frame[4] or set()
        for source in value if isinstance(value, list) else [value]:
            if not isinstance(source, dict):
                raise self.error(pos, "'<<' merges a mapping or a list of mappings")
            for key, val in source.items():
                if key not in target:
                    dict.__setitem__(target, key, val)
                    merged.add(key)

    # Positions are not kept while loading (they would take more memory than
    # the values): an error reads the text again up to the collection it is about.

    def node(self, container, key=None):
        """The position of ``container[key]`` (or of the container), if known."""
        marks = self._marks_of(container)
        if marks is None or key is None or len(marks) == 1:
            return marks and marks[0]
        if isinstance(container, list):
            return marks[key + 1] if 0 <= key < len(marks) - 1 else marks[0]
        return next((marks[i + 2] for i in range(1, len(marks), 3) if marks[i] == str(key)),
                    marks[0])

    def key_node(self, container, key):
        """The position of the key ``key`` of a mapping (or of the container)."""
        marks = self._marks_of(container)
        if marks is not None and len(marks) > 1 and isinstance(container, dict):
            return next((marks[i + 1] for i in range(1, len(marks), 3) if marks[i] == str(key)),
                        marks[0])
        return marks and marks[0]

    def _marks_of(self, container):
        """[the container's position, then per item: its position (a list) or its
        key, the key's position and the value's position (a mapping)], or None
        for a value not from this document."""
        if id(container) not in self._marks:
            path = self._path(container)
            self._marks[id(container)] = None if path is None else self._replay(path)
        return self._marks[id(container)]

    def _path(self, target):
        """The keys from the root to the collection ``target``, first in document order."""
        todo, seen = [(self.root, ())], set()
        while todo:
            value, path = todo.pop()
            if value is target:
                return path
            if isinstance(value, (dict, list)) and id(value) not in seen:
                seen.add(id(value))
                items = value.items() if isinstance(value, dict) else enumerate(value)
                todo += reversed([(v, path + (k,)) for k, v in items])
        return None

    def _replay(self, path):
        """The marks of the collection at ``path``, read from the text again;
        just its position when the path leaves the text (an alias, a merge)."""
        ev = self._yaml.events
        parser = getattr(self._yaml, "CSafeLoader", self._yaml.SafeLoader)(self._text)
        next_event = parser.get_event

        def skip(event):            # past the value that starts with event
            depth = isinstance(event, ev.CollectionStartEvent)
            while depth:
                event = next_event()
                depth += (isinstance(event, ev.CollectionStartEvent)
                          - isinstance(event, ev.CollectionEndEvent))

        def items(start):           # (key event or None, value event) of each item, the values unread
            while True:
                event = next_event()
                if isinstance(event, ev.CollectionEndEvent):
                    return
                if isinstance(start, ev.MappingStartEvent):
                    skip(event)
                    key, event = event, next_event()
                    yield key, event
                else:
                    yield None, event

        try:
            next_event(), next_event()
            event = next_event()            # the root
            for step in path:
                if not isinstance(event, ev.CollectionStartEvent):
                    break
                for i, (key, value) in enumerate(items(event)):
                    if (getattr(key, "value", None) if key else i) == step:
                        event = value
                        break
                    skip(value)
                else:
                    break
            else:
                if isinstance(event, ev.CollectionStartEvent):
                    marks = [_pos(event)]
                    for key, value in items(event):
                        marks += (key.value if isinstance(key, ev.ScalarEvent) else None,
                                  _pos(key), _pos(value)) if key else (_pos(value),)
                        skip(value)
                    return marks
            return [_pos(event)]
        finally:
            parser.dispose()

    def error(self, pos, message, **where):
        """A PlaybookError pointing at ``pos`` (a position from node/key_node)."""
        line = col = None
        if pos is not None:
            line, col = (pos >> 32) + 1, (pos & 0xFFFFFFFF) + 1
        return PlaybookError(message, file=self.file, line=line, col=col, **where)


# ---------------------------------------------------------------- templates

# gxo's template language: a subset of Go's text/template, in pure Python.
#
# A template goes through three steps, after Go's text/template/parse package:
# the lexer (_TplLexer) cuts the text into tokens, the parser (_TplParser) turns
# the tokens into a tree of nodes, and the compiler (_TplCompiler) turns the tree
# into nested Python closures once, so rendering is plain function calls.
# Semantics follow Go with missingkey=error; the two deliberate deviations are
# that lists and maps print as compact JSON and nil prints as the empty string.


def _tpl_where(text, pos):
    """(line, col) of an offset in text, both 1-based."""
    return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)


# -- templates: lexer

_TPL_SPACE = " \t\r\n"
_TPL_KEYWORDS = frozenset(("block", "break", "continue", "define", "else", "end",
                           "if", "nil", "range", "template", "with"))
_TPL_WORD = re.compile(r"\w*")


# A token: typ is text, ldelim, rdelim, space, field, var, ident, dot, bool,
# number, char, string, raw, pipe, lparen, rparen, assign, declare, chr
# (another printable character), a keyword (if, end, ...) or eof; value is its
# source text and pos its offset in the template.
_TplToken = namedtuple("_TplToken", "typ value pos")


def _tpl_is_space(c):
    """Whether c (one character or '') is a space as Go's lexer sees it."""
    return c != "" and c in _TPL_SPACE


class _TplLexer:
    """Go's lexer as a state machine: each state method consumes some input,
    appends tokens (_TplToken) and returns the next state (None after the end).
    """

    def __init__(self, text, left, right):
        self.text, self.left, self.right = text, left, right
        self.pos = self.start = self.action = 0
        self.parens = []                # offsets of open '('
        self.tokens = []

    def run(self):
        state = self.lex_text
        while state:
            state = state()
        return self.tokens

    def emit(self, typ):
        # tuple.__new__ skips _TplToken's __new__, a Python call per token.
        token = (typ, self.text[self.start:self.pos], self.start)
        self.tokens.append(tuple.__new__(_TplToken, token))
        self.start = self.pos

    def error(self, reason, pos=None):
        pos = self.start if pos is None else pos
        raise TemplateSyntaxError(*_tpl_where(self.text, pos), reason)

    def left_trim_at(self, i):
        """A '-' then a space at i: the left delimiter trims the text before it."""
        return self.text.startswith("-", i) and _tpl_is_space(self.text[i + 1:i + 2])

    def at_right_delim(self):
        """(delimiter here?, with a trim marker ' -' before it?)"""
        t, p = self.text, self.pos
        if _tpl_is_space(t[p:p + 1]) and t.startswith("-", p + 1) \
                and t.startswith(self.right, p + 2):
            return True, True
        return t.startswith(self.right, p), False

    def at_terminator(self):
        """Whether the next character may end a word (Go's atTerminator)."""
        c = self.text[self.pos:self.pos + 1]
        return not c or c in _TPL_SPACE or c in ".,|:()" or c == self.right[0]

    def skip_space(self):
        while _tpl_is_space(self.text[self.pos:self.pos + 1]):
            self.pos += 1

    def lex_text(self):
        text = self.text
        i = text.find(self.left, self.pos)
        if i < 0:
            self.pos = len(text)
            if self.pos > self.start:
                self.emit("text")
            self.emit("eof")
            return None
        end = i
        if self.left_trim_at(i + len(self.left)):
            end = self.start + len(text[self.start:i].rstrip(_TPL_SPACE))
        if end > self.start:
            self.pos = end
            self.emit("text")
        self.start = self.pos = self.action = i
        return self.lex_left_delim

    def lex_left_delim(self):
        self.pos += len(self.left)
        after = 2 if self.left_trim_at(self.pos) else 0
        if self.text.startswith("/*", self.pos + after):
            self.pos += after
            return self.lex_comment
        self.emit("ldelim")
        self.start = self.pos = self.pos + after
        self.parens = []
        return self.lex_inside

    def lex_comment(self):
        i = self.text.find("*/", self.pos + 2)
        if i < 0:
            self.error("unclosed comment (missing '*/')", self.action)
        self.pos = i + 2
        delim, trim = self.at_right_delim()
        if not delim:
            self.error(f"comment must end with '*/{self.right}'", i)
        self.pos += len(self.right) + (2 if trim else 0)
        if trim:
            self.skip_space()
        self.start = self.pos
        return self.lex_text

    def lex_inside(self):
        if self.at_right_delim()[0]:
            if self.parens:
                self.error("unclosed '('", self.parens[-1])
            return self.lex_right_delim
        t, p = self.text, self.pos
        if p >= len(t):
            self.error(f"unclosed action (missing '{self.right}')", self.action)
        c = t[p]
        self.pos = p + 1
        if c in _TPL_SPACE:
            return self.lex_space
        if c == ":":
            if not t.startswith("=", self.pos):
                self.error("expected ':='")
            self.pos += 1
            self.emit("declare")
        elif c in "=|()":
            self.emit({"=": "assign", "|": "pipe", "(": "lparen", ")": "rparen"}[c])
            if c == "(":
                self.parens.append(p)
            elif c == ")":
                if not self.parens:
                    self.error("unexpected ')'", p)
                self.parens.pop()
        elif c in "\"`'":
            return self.lex_quote
        elif c == "$":
            return self.lex_variable
        elif c == "." and not "0" <= t[p + 1:p + 2] <= "9":
            return self.lex_field
        elif c in "+-.0123456789":
            return self.lex_number
        elif c.isalpha() or c == "_" or c.isdecimal():
            return self.lex_identifier
        elif c < "\x7f" and c.isprintable():
            self.emit("chr")
        else:
            self.error(f"unexpected character {c!r} in action", p)
        return self.lex_inside

    def lex_space(self):
        self.pos -= 1
        first = self.pos
        self.skip_space()
        # ' -' before the right delimiter is a trim marker: leave its space to it.
        if self.text.startswith("-", self.pos) and self.text.startswith(self.right, self.pos + 1):
            self.pos -= 1
            if self.pos == first:
                return self.lex_right_delim
        self.emit("space")
        return self.lex_inside

    def lex_right_delim(self):
        trim = not self.text.startswith(self.right, self.pos)
        self.start = self.pos = self.pos + (2 if trim else 0)
        self.pos += len(self.right)
        self.emit("rdelim")
        if trim:
            self.skip_space()
            self.start = self.pos
        return self.lex_text

    def lex_quote(self):
        t, quote = self.text, self.text[self.start]
        name = {'"': "string", "`": "raw", "'": "char"}[quote]
        if quote == "`":
            end = t.find("`", self.pos)
            if end < 0:
                self.error("unterminated raw string (missing '`')")
            self.pos = end + 1
        else:
            while True:
                c = t[self.pos:self.pos + 1]
                escaped = c == "\\"
                self.pos += 1 + escaped
                if escaped:
                    c = t[self.pos - 1:self.pos]
                if c in ("", "\n"):
                    what = "string" if quote == '"' else "character constant"
                    self.error(f"unterminated {what} (missing {quote})")
                if c == quote and not escaped:
                    break
        self.emit(name)
        return self.lex_inside

    def lex_variable(self):
        return self.lex_word("var")

    def lex_field(self):
        if not self.at_terminator():
            return self.lex_word("field")
        self.emit("dot")
        return self.lex_inside

    def lex_identifier(self):
        return self.lex_word("ident")

    def lex_word(self, typ):
        """A name after '$' or '.', or an identifier (a keyword, true/false, a function)."""
        self.pos = _TPL_WORD.match(self.text, self.pos).end()
        if not self.at_terminator():
            self.error(f"unexpected character {self.text[self.pos]!r} after "
                       f"'{self.text[self.start:self.pos]}'", self.pos)
        word = self.text[self.start:self.pos]
        if typ == "ident" and word in _TPL_KEYWORDS:
            typ = word
        elif typ == "ident" and word in ("true", "false"):
            typ = "bool"
        self.emit(typ)
        return self.lex_inside

    def lex_number(self):
        """Go's scanNumber: sign, base prefix, digits, fraction, exponent."""
        t, p = self.text, self.start
        digits = "0123456789_"
        p += t[p] in "+-"
        if t.startswith("0", p):
            p += 1
            base = t[p:p + 1].lower()
            if base and base in "xob":
                p += 1
                digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[base]
        p = self._run(p, digits)
        if t.startswith(".", p):
            p = self._run(p + 1, digits)
        exp = "eE" if len(digits) == 11 else "pP" if len(digits) == 23 else ""
        if exp and t[p:p + 1] and t[p] in exp:
            p += 1 + (t[p + 1:p + 2] in ("+", "-"))
            p = self._run(p, "0123456789_")
        self.pos = p
        if t[p:p + 1].isalnum() or t.startswith("_", p):
            self.error(f"bad number syntax: '{t[self.start:p + 1]}'")
        self.emit("number")
        return self.lex_inside

    def _run(self, p, chars):
        t = self.text
        while p < len(t) and t[p] in chars:
            p += 1
        return p


_TPL_ESCAPE = re.compile(
    r"\\(?:x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))", re.S)
_TPL_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                "v": "\v", "\\": "\\"}


def _tpl_unquote(src):
    """The text of a Go string, raw string or character literal (quotes included).

    \\x and octal escapes are bytes, as in Go: bytes >= 0x80 are decoded as
    UTF-8 together with their neighbours. Raises ValueError with a reason.
    """
    quote = src[0]
    if quote == "`":
        return src[1:-1].replace("\r", "")      # Go drops CRs from raw strings
    parts, i, has_bytes = [], 1, False
    for m in _TPL_ESCAPE.finditer(src, 1, len(src) - 1):
        parts.append(src[i:m.start()])
        i = m.end()
        hexa, octal, u4, u8, char = m.groups()
        if hexa or octal:
            b = int(hexa, 16) if hexa else int(octal, 8)
            if b > 255:
                raise ValueError(f"octal escape '{m.group()}' is above \\377")
            has_bytes |= b >= 0x80
            parts.append(chr(b if b < 0x80 else 0xDC00 + b))   # a surrogate escape
        elif u4 or u8:
            c = int(u4 or u8, 16)
            if 0xD800 <= c < 0xE000 or c > 0x10FFFF:
                raise ValueError(f"escape '{m.group()}' is not a valid character")
            parts.append(chr(c))
        elif char in _TPL_ESCAPES or char == quote:
            parts.append(_TPL_ESCAPES.get(char, char))
        else:
            raise ValueError(f"unknown escape '\\{char}' (write '\\\\' for a backslash)")
    parts.append(src[i:-1])
    text = "".join(parts)
    if has_bytes and quote == '"':
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def _tpl_number(src):
    """The value of a Go number or character literal.

    As in Go's exec, a literal with a fraction or exponent is a float and any
    other is an int ('a' is 97, 017 is octal). Raises ValueError.
    """
    if src[0] == "'":
        char = _tpl_unquote(src)
        if len(char) != 1:
            raise ValueError(f"a character constant holds one character: {src}")
        code = ord(char)
        return code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else code
    body = src.lstrip("+-").lower()
    hexa = body.startswith("0x")
    if ("p" in body) if hexa else ("." in body or "e" in body):
        f = float.fromhex(src.replace("_", "")) if hexa else float(src)
        if math.isinf(f):
            raise ValueError(f"float overflow: {src}")      # Go: out of range
        return f
    if len(body) > 1 and body[0] == "0" and body[1] not in "obx":
        n = int(src[:len(src) - len(body)] + "0o" + body[1:], 0)
    else:
        n = int(src, 0)
    # Go parses an int beyond uint64 (or below int64) as an error, and
    # rejects one beyond int64 when it runs (see _TplCompiler.arg).
    if not -1 << 63 <= n < 1 << 64 or (n >= 1 << 63 and src[0] in "+-"):
        raise ValueError(f"integer overflow: {src}")
    return n


# -- templates: nodes

class _TplNode:
    """A parse tree node; pos is its offset in the template text."""

    __slots__ = ("pos",)

    def __init__(self, pos, *values):
        self.pos = pos
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)


class _TextNode(_TplNode):
    __slots__ = ("text",)


class _ActionNode(_TplNode):
    """<< pipeline >>: prints the value unless the pipeline declares variables."""
    __slots__ = ("pipe",)


class _IfNode(_TplNode):
    """if or with (kind): a condition, a body and an optional else body."""
    __slots__ = ("kind", "pipe", "body", "else_body")


class _RangeNode(_TplNode):
    __slots__ = ("pipe", "body", "else_body")


class _LoopControlNode(_TplNode):
    __slots__ = ("word",)                        # break or continue


class _PipeNode(_TplNode):
    """Commands joined by '|'; decls are the variables it declares or assigns."""
    __slots__ = ("decls", "cmds")


class _CommandNode(_TplNode):
    __slots__ = ("args",)


class _FieldNode(_TplNode):
    __slots__ = ("names",)                       # .a.b -> ("a", "b")


class _VariableNode(_TplNode):
    """$x.a.b; slot is the variable's index in the render-time variable list.
    As a declaration, names is () or, for '$x = ...' with no $x declared, None."""
    __slots__ = ("name", "slot", "names")


class _ChainNode(_TplNode):
    __slots__ = ("node", "names")                # (pipeline).a.b


class _IdentifierNode(_TplNode):
    __slots__ = ("name",)                        # a function name


class _DotNode(_TplNode):
    __slots__ = ()


class _LiteralNode(_TplNode):
    """A string, number, bool or nil constant; src is its text."""
    __slots__ = ("value", "src")


class _ElseNode(_TplNode):
    """<<else>>: like _EndNode, a marker ending a body that only the parser sees.
    chained is the if or with token of '<<else if ...>>', else None."""
    __slots__ = ("chained",)
    word = "else"


class _EndNode(_TplNode):
    __slots__ = ()
    word = "end"


def _tpl_src(node):
    """How an operand reads in a message."""
    if isinstance(node, _FieldNode):
        return "." + ".".join(node.names)
    if isinstance(node, _VariableNode):
        return ".".join((node.name,) + node.names)
    if isinstance(node, _LiteralNode):
        return node.src
    return "." if isinstance(node, _DotNode) else "(...)"


# -- templates: parser

_TPL_TERMS = frozenset(("bool", "char", "dot", "field", "ident", "number", "nil", "raw",
                        "string", "var", "lparen"))


class _TplParser:
    """Go's parser: small recursive functions from tokens to a list of nodes.

    It also does Go's parse-time checks (unknown functions, undefined
    variables, break outside range) and gives each variable declaration its
    own slot in the list of variables a render uses. The comment above each
    parsing method is its grammar rule, as in Go's parse.go.
    """

    def __init__(self, text, left, right):
        self.text, self.left, self.right = text, left, right
        self.tokens = _TplLexer(text, left, right).run()
        self.i = 0
        self.vars = [("$", 0)]          # visible variables, innermost last
        self.slots = 1
        self.pending = ()               # names being declared by the current pipeline
        self.range_depth = 0

    # The parser never reads past eof: the lexer ends every action with rdelim.
    def next(self):
        self.i += 1
        return self.tokens[self.i - 1]

    def peek(self):
        return self.tokens[self.i]

    def next_nonspace(self):
        tok = self.next()
        while tok.typ == "space":
            tok = self.next()
        return tok

    def peek_nonspace(self):
        tok = self.next_nonspace()
        self.i -= 1
        return tok

    def error(self, pos, reason):
        raise TemplateSyntaxError(*_tpl_where(self.text, pos), reason)

    def unexpected(self, tok, context):
        what = {"eof": "end of template", "rdelim": f"'{self.right}'",
                "ldelim": f"'{self.left}'", "text": "text"}.get(tok.typ, f"'{tok.value}'")
        self.error(tok.pos, f"unexpected {what} in {context}")

    def tag(self, word):
        return f"'{self.left}{word}{self.right}'"

    # template: text_or_action* eof, with no else or end outside a control
    def parse(self):
        nodes = []
        while self.peek().typ != "eof":
            node = self.text_or_action()
            if isinstance(node, (_ElseNode, _EndNode)):
                self.error(node.pos, f"unexpected {self.tag(node.word)}")
            nodes.append(node)
        return nodes

    # item_list: text_or_action* up to <<else>> or <<end>>, which is returned apart
    def item_list(self, control):
        nodes = []
        while self.peek().typ != "eof":
            node = self.text_or_action()
            if isinstance(node, (_ElseNode, _EndNode)):
                return nodes, node
            nodes.append(node)
        self.error(control.pos, f"'{control.typ}' has no matching {self.tag('end')}")

    # text_or_action: text | '<<' action
    def text_or_action(self):
        tok = self.next()
        if tok.typ == "text":
            return _TextNode(tok.pos, tok.value)
        return self.action()            # the lexer emits only text, actions and eof here

    # action: control | 'else' ('if' | 'with')? | 'end' | 'break' | 'continue' | pipeline
    def action(self):
        tok = self.next_nonspace()
        typ, pos = tok.typ, tok.pos
        if typ in ("if", "with", "range"):
            return self.control(tok)
        if typ == "else":
            if self.peek_nonspace().typ in ("if", "with"):
                return _ElseNode(pos, self.next_nonspace())
            self.expect_end_of_action("else")
            return _ElseNode(pos, None)
        if typ == "end":
            self.expect_end_of_action("end")
            return _EndNode(pos)
        if typ in ("break", "continue"):
            self.expect_end_of_action(typ)
            if not self.range_depth:
                self.error(pos, f"{self.tag(typ)} is only allowed inside range")
            return _LoopControlNode(pos, typ)
        if typ in ("define", "template", "block"):
            self.error(pos, f"'{typ}' is not supported: gxo templates have no named templates")
        self.i -= 1
        return _ActionNode(pos, self.pipeline("action", "rdelim"))

    def expect_end_of_action(self, word):
        tok = self.next_nonspace()
        if tok.typ != "rdelim":
            self.unexpected(tok, self.tag(word))

    # control: ('if' | 'with' | 'range') pipeline item_list ('else' (control | item_list))? 'end'
    def control(self, tok):
        """if, with or range up to its end; 'else if' and 'else with' chain."""
        kind = tok.typ
        mark = len(self.vars)
        pipe = self.pipeline(kind, "rdelim")
        self.range_depth += kind == "range"
        body, stop = self.item_list(tok)
        self.range_depth -= kind == "range"
        else_body = None
        if isinstance(stop, _ElseNode):
            chained = stop.chained
            if chained is not None:
                if chained.typ != kind:
                    self.error(chained.pos, f"'else {chained.typ}' needs an '{chained.typ}' "
                                            f"before it, not '{kind}'")
                else_body = [self.control(chained)]   # it consumes the shared end
            else:
                else_body, stop = self.item_list(tok)
                if not isinstance(stop, _EndNode):
                    self.error(stop.pos, f"unexpected second {self.tag('else')} in '{kind}'")
        del self.vars[mark:]
        if kind == "range":
            return _RangeNode(tok.pos, pipe, body, else_body)
        return _IfNode(tok.pos, kind, pipe, body, else_body)

    # pipeline: declarations? command ('|' command)* end, where end is '>>' or ')'
    # declarations: $x ':=' | $x '=' | $k ',' $v ':='  (the last only in range)
    def pipeline(self, context, end):
        pos = self.peek_nonspace().pos
        decls, assign = [], False
        while True:
            save = self.i
            var = self.next_nonspace()
            after = self.next_nonspace() if var.typ == "var" else None
            if after and after.typ in ("assign", "declare"):
                decls.append(var)
                assign = after.typ == "assign"
            elif after and after.value == "," and after.typ == "chr":
                decls.append(var)
                if context != "range" or len(decls) > 1:
                    self.error(after.pos, f"too many variables declared in '{context}'")
                if self.peek_nonspace().typ != "var":
                    self.error(after.pos, "range can only declare variables")
                continue
            else:
                self.i = save
            break
        outer, self.pending = self.pending, {d.value for d in decls}
        cmds = []
        while True:
            tok = self.next_nonspace()
            if tok.typ == end:
                break
            if tok.typ not in _TPL_TERMS:
                self.unexpected(tok, "parentheses" if end == "rparen" else context)
            self.i -= 1
            cmds.append(self.command())
        self.pending = outer
        if not cmds:
            what = {"action": "empty action", "parentheses": "empty parentheses"}
            self.error(pos, what.get(context, f"missing value after '{context}'"))
        for cmd in cmds[1:]:
            first = cmd.args[0]
            if isinstance(first, (_LiteralNode, _DotNode)):
                self.error(first.pos, f"can't pipe into '{_tpl_src(first)}': only a "
                                      "function call or field can follow '|'")
        return _PipeNode(pos, [self.declare(d, assign) for d in decls], cmds)

    def declare(self, tok, assign):
        if assign:
            slot = self.lookup(tok.value)
            if slot is not None:
                return _VariableNode(tok.pos, tok.value, slot, ())
        self.vars.append((tok.value, self.slots))
        self.slots += 1
        # Go parses '$x = 1' for an undeclared $x and fails when it runs.
        return _VariableNode(tok.pos, tok.value, self.slots - 1, None if assign else ())

    def lookup(self, name):
        for var, slot in reversed(self.vars):
            if var == name:
                return slot
        return None

    # command: operand (space operand)*, up to '|' (taken) or '>>' or ')' (left)
    def command(self):
        pos = self.peek_nonspace().pos
        args = []
        while True:
            self.peek_nonspace()
            node = self.operand()
            if node is not None:
                args.append(node)
            tok = self.next()
            if tok.typ == "space":
                continue
            if tok.typ in ("rdelim", "rparen"):
                self.i -= 1
            elif tok.typ != "pipe":
                self.unexpected(tok, "operand")
            return _CommandNode(pos, args)

    # operand: term .Field*
    def operand(self):
        """A term and the fields chained onto it: .a.b, $x.a, (pipeline).a."""
        node = self.term()
        if node is None or self.peek().typ != "field":
            return node
        names = []
        while self.peek().typ == "field":
            names.append(self.next().value[1:])
        if isinstance(node, (_FieldNode, _VariableNode)):
            node.names += tuple(names)
        elif isinstance(node, (_LiteralNode, _DotNode)):
            self.error(node.pos, f"unexpected '.{names[0]}' after '{_tpl_src(node)}'")
        else:
            node = _ChainNode(node.pos, node, tuple(names))
        return node

    # term: literal | function | '.' | .Field | $x | '(' pipeline ')'
    def term(self):
        typ, src, pos = tok = self.next_nonspace()
        if typ == "ident":
            # A forward reference: the function table is defined with the functions,
            # below; Go's parser checks names against its funcs map the same way.
            if src not in _TPL_FUNCS:
                self.error(pos, f"unknown function '{src}'{_suggest(src, _TPL_FUNCS)}")
            return _IdentifierNode(pos, src)
        if typ == "dot":
            return _DotNode(pos)
        if typ == "field":
            return _FieldNode(pos, (src[1:],))
        if typ == "var":
            return self.use_var(tok)
        if typ == "lparen":
            return self.pipeline("parentheses", "rparen")
        try:
            if typ in ("string", "raw"):
                return _LiteralNode(pos, _tpl_unquote(src), src)
            if typ in ("number", "char"):
                return _LiteralNode(pos, _tpl_number(src), src)
        except (ValueError, OverflowError) as e:
            reason = (f"bad number syntax: '{src}'" if typ == "number"
                      and not str(e).startswith("integer overflow") else str(e))
            self.error(pos, reason)
        if typ in ("bool", "nil"):
            return _LiteralNode(pos, {"true": True, "false": False}.get(src), src)
        self.i -= 1
        return None

    def use_var(self, tok):
        name = tok.value
        slot = self.lookup(name)
        if slot is None:
            if name not in self.pending:
                visible = {v for v, _ in self.vars if v != "$"}
                self.error(tok.pos, f"undefined variable '{name}'{_suggest(name, visible)}")
            # '$x := $x' with no earlier $x: Go accepts it and fails when it runs.
            slot = self.slots
            self.slots += 1
        return _VariableNode(tok.pos, name, slot, ())


# -- templates: values and functions

class _TplFuncError(Exception):
    """A function rejected its arguments; the caller adds the position."""


def _tpl_kind(v):
    """A value's type as a message says it: 'a string', 'an int', 'a list', ..."""
    if v is None:
        return "nil"
    for types, name in ((bool, "a bool"), (int, "an int"), (float, "a float"),
                        (str, "a string"), (Mapping, "a map"), ((list, tuple), "a list")):
        if isinstance(v, types):
            return name
    return f"a {type(v).__name__}"


def _tpl_go_type(v):
    """Go's name for a value's type, used in printf's notes like %!d(string=x)."""
    for types, name in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string"),
                        (Mapping, "map[string]interface {}"), ((list, tuple), "[]interface {}")):
        if isinstance(v, types):
            return name
    return type(v).__name__


def _tpl_bytes(s):
    """A string's UTF-8 bytes: Go's len, index and slice count bytes."""
    return s.encode("utf-8", "surrogatepass")


def _tpl_len(v):
    if isinstance(v, str):
        return len(v) if v.isascii() else len(_tpl_bytes(v))
    if isinstance(v, (list, tuple, Mapping)):
        return len(v)
    raise _TplFuncError(f"can't take the length of {_tpl_kind(v)}")


def _tpl_int_arg(i, what):
    """An index or slice bound: an int, not a bool or anything else."""
    if isinstance(i, int) and not isinstance(i, bool):
        return i
    raise _TplFuncError(f"can't {what} with {_tpl_kind(i)} (indexes are ints)")


def _tpl_index(item, *keys):
    """index x 1 2 is x[1][2]; a missing map key gives nil as in Go."""
    for key in keys:
        if isinstance(item, Mapping):
            # Go's maps have one key type; ours are string-keyed unless YAML said otherwise.
            if type(key) is not str and all(type(k) is str for k in item):
                raise _TplFuncError(f"can't use {_tpl_kind(key)} as a key of a map of strings")
            try:
                item = item[key] if key in item else None
            except TypeError:
                raise _TplFuncError(f"can't use {_tpl_kind(key)} as a map key") from None
        elif isinstance(item, (list, tuple, str)):
            i = _tpl_int_arg(key, f"index {_tpl_kind(item)}")
            seq = item if not isinstance(item, str) or item.isascii() else _tpl_bytes(item)
            if not 0 <= i < len(seq):
                raise _TplFuncError(f"index {i} out of range for {_tpl_kind(item)} "
                                    f"of length {len(seq)}")
            item = ord(seq[i]) if seq is item and isinstance(item, str) else seq[i]
        else:
            raise _TplFuncError(f"can't index {_tpl_kind(item)}")
    return item


def _tpl_slice(item, *bounds):
    """slice x 1 3 is x[1:3]; with three bounds the third only caps the second."""
    if not isinstance(item, (list, tuple, str)):
        raise _TplFuncError(f"can't slice {_tpl_kind(item)}")
    if len(bounds) > 3 or (len(bounds) == 3 and isinstance(item, str)):
        raise _TplFuncError(f"too many bounds ({len(bounds)}) for slicing {_tpl_kind(item)}")
    seq = item if not isinstance(item, str) or item.isascii() else _tpl_bytes(item)
    idx = [0, len(seq), len(seq)]
    for n, bound in enumerate(bounds):
        idx[n] = _tpl_int_arg(bound, f"slice {_tpl_kind(item)}")
        if not 0 <= idx[n] <= len(seq):
            raise _TplFuncError(f"slice bound {idx[n]} out of range for "
                                f"{_tpl_kind(item)} of length {len(seq)}")
    for low, high in ((idx[0], idx[1]), (idx[1], idx[2])):
        if low > high:
            raise _TplFuncError(f"slice bounds out of order: {low} > {high}")
    part = seq[idx[0]:idx[1]]
    return part.decode("utf-8", "replace") if isinstance(part, bytes) else part


def _tpl_basic(v):
    """The type comparisons go by (bool, int, float or str), None for others."""
    t = type(v)
    if t is str or t is int or t is float or t is bool:
        return t
    for base in (bool, int, float, str):
        if isinstance(v, base):
            return base
    return None


def _tpl_eq(a, *others):
    """eq a b c: a == b or a == c. Values of different types don't compare,
    except that nil equals only nil (Go's rules)."""
    if not others:
        raise _TplFuncError("needs at least two values to compare")
    ka = _tpl_basic(a)
    if ka is None and a is not None:
        raise _TplFuncError(f"can't compare {_tpl_kind(a)}")
    for b in others:
        kb = _tpl_basic(b)
        if ka is not kb:
            if a is not None and b is not None:
                raise _TplFuncError(f"can't compare {_tpl_kind(a)} with {_tpl_kind(b)}")
        elif a == b:
            return True
    return False


def _tpl_lt(a, b):
    ka, kb = _tpl_basic(a), _tpl_basic(b)
    for k, v in ((ka, a), (kb, b)):
        if k is None or k is bool:
            raise _TplFuncError(f"can't order {_tpl_kind(v)}: "
                                "only numbers and strings have an order")
    if ka is not kb:
        raise _TplFuncError(f"can't compare {_tpl_kind(a)} with {_tpl_kind(b)}")
    return a < b


def _tpl_str_arg(v, what):
    """A string argument (printf's format, env's name), as Go's types demand."""
    if isinstance(v, str):
        return v
    raise _TplFuncError(f"the {what} must be a string, not {_tpl_kind(v)}")


def _tpl_print(*args):
    """Go's Sprint: a space between operands when neither is a string."""
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(format_value(a))
    return "".join(out)


def _tpl_args_text(args):
    """What html, js and urlquery escape: one string as is, else print's text."""
    return args[0] if len(args) == 1 and isinstance(args[0], str) else _tpl_print(*args)


_TPL_HTML = str.maketrans({"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;",
                           "<": "&lt;", ">": "&gt;"})
_TPL_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E",
           "&": "\\u0026", "=": "\\u003D"}
_TPL_JS_SPECIAL = re.compile("[\\\\'\"<>&=\x00-\x1f]|[^\x00-\x7f]")
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _tpl_js(*args):
    """Go's js: quotes, backslash, <>&= and control characters escaped."""
    def escape(m):
        c = m.group()
        if c in _TPL_JS:
            return _TPL_JS[c]
        if c < " ":
            return f"\\u00{ord(c):02X}"
        return c if c.isprintable() else f"\\u{ord(c):04X}"
    return _TPL_JS_SPECIAL.sub(escape, _tpl_args_text(args))


def _tpl_urlquery(*args):
    from urllib.parse import quote_plus
    return quote_plus(_tpl_args_text(args), safe="")


def _tpl_text(*args):
    """The arguments of a function that takes text (Go's string parameters)."""
    return tuple(_tpl_str_arg(a, "argument") for a in args)


def _tpl_text_test(test):
    """contains, hasPrefix, hasSuffix: in Sprig's order the text tested comes last."""
    return lambda part, s: test(*_tpl_text(s, part))


def _tpl_replace(old, new, s):
    old, new, s = _tpl_text(old, new, s)
    return s.replace(old, new)


def _tpl_upper(s):
    """Go's strings.ToUpper maps each character on its own: 'ß' stays 'ß'."""
    s, = _tpl_text(s)
    if s.isascii():
        return s.upper()
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in s)


def _tpl_lower(s):
    s, = _tpl_text(s)
    return s.lower() if s.isascii() else "".join(c.lower()[0] for c in s)


def _tpl_split_list(sep, s):
    sep, s = _tpl_text(sep, s)
    return s.split(sep) if sep else list(s)


def _tpl_join(sep, v):
    """Sprig's join: each element as it prints, nils left out; a non-list is one element."""
    sep, = _tpl_text(sep)
    items = v if isinstance(v, (list, tuple)) else () if v is None else (v,)
    return sep.join(format_value(x) for x in items if x is not None)


def _tpl_int64(v):
    """Sprig's toInt64: an int, a float (truncated), a bool, nil (0) or the text of an int.
    Sprig reads anything else as 0; we refuse it, as a mistake."""
    if isinstance(v, (int, type(None))):
        return int(v or 0)
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"[-+]?[0-9][0-9a-zA-Z_]*(?:\.0+)?", v):
        try:
            n = _tpl_number(re.sub(r"\.0+$", "", v))
        except ValueError:
            n = None
        if type(n) is int:
            return n
    raise _TplFuncError(f"expected a number, got {_describe(v)}")


def _tpl_wrap64(n):
    """n as Go's int64 arithmetic leaves it (wrapping around on overflow)."""
    return (n + (1 << 63)) % (1 << 64) - (1 << 63)


def _tpl_add(*args):
    return _tpl_wrap64(sum(map(_tpl_int64, args)))


_GO_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                    "\u2029": "\\u2029"}
_GO_JSON_SPECIAL = re.compile("[<>&\u2028\u2029]")


def _go_json(v):
    """Go's json.Marshal: compact, map keys sorted, <>& escaped, 3.0 as 3."""
    import json
    if isinstance(v, str):
        return _GO_JSON_SPECIAL.sub(lambda m: _GO_JSON_ESCAPES[m.group()],
                                    json.dumps(v, ensure_ascii=False))
    if v is None or isinstance(v, bool):
        return "null" if v is None else "true" if v else "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise _TplFuncError(f"can't encode {format_value(v)} as JSON")
        r, a = repr(v), abs(v)
        if a and (a < 1e-6 or a >= 1e21):      # exponent form, without Python's padding zero
            return re.sub(r"e-0(?=\d$)", "e-", r)
        if "e" in r:
            from decimal import Decimal
            r = format(Decimal(r), "f")
        return r[:-2] if r.endswith(".0") else r
    if isinstance(v, Mapping):
        keys = sorted((format_value(k), k) for k in v)
        return "{" + ",".join(f"{_go_json(text)}:{_go_json(v[k])}" for text, k in keys) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(_go_json, v)) + "]"
    raise _TplFuncError(f"can't encode {_tpl_kind(v)} as JSON")


def _tpl_from_json(s):
    """JSON text as a value. Unlike Sprig, whole numbers stay ints (not float64,
    which prints 1234567 as 1.234567e+06) and bad JSON is an error, not nil."""
    import json

    def no_constant(name):
        raise ValueError(f"{name} is not JSON")
    s, = _tpl_text(s)
    try:
        return json.loads(s, parse_constant=no_constant)
    except ValueError as e:
        raise _TplFuncError(f"invalid JSON: {e}") from None


_TPL_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(\.(?:\*|\d*))?(.?)", re.S)


_TPL_QUOTE_ESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                  "\t": "\\t", "\v": "\\v", "\\": "\\\\"}


def _go_quote(s, quote, ascii_only=False):
    """Go's strconv.Quote (or QuoteRune with quote "'")."""
    out = [quote]
    for c in s:
        if c == quote:
            out.append("\\" + c)
        elif c in _TPL_QUOTE_ESC:
            out.append(_TPL_QUOTE_ESC[c])
        elif c.isprintable() and (c < "\x7f" or not ascii_only):
            out.append(c)
        else:
            code = ord(c)
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"
                       if code < 0x10000 else f"\\U{code:08x}")
    out.append(quote)
    return "".join(out)


def _go_format(v, verb, flags="", width=None, prec=None):
    """One value formatted by one printf verb."""
    minus, plus, sharp, space = ("-" in flags, "+" in flags, "#" in flags, " " in flags)
    zero = "0" in flags and not minus
    sign, prefix = "", ""
    if v is None and verb in "vs":
        body = ""
    elif isinstance(v, bool) and verb in "vt":
        body = "true" if v else "false"
    elif isinstance(v, int) and not isinstance(v, bool) and verb in "vdboOxXcqU":
        if verb in "cqU":
            char = chr(v) if 0 <= v <= 0x10FFFF and not 0xD800 <= v < 0xE000 else "\ufffd"
            body = (char if verb == "c" else _go_quote(char, "'", plus) if verb == "q"
                    else f"U+{v:04X}" + (f" '{char}'" if sharp else ""))
        else:
            sign = "-" if v < 0 else "+" if plus else " " if space else ""
            body = format(abs(v), {"v": "d", "O": "o"}.get(verb, verb))
            if prec is not None:
                zero, body = False, body.zfill(prec) if prec or v else ""
            prefix = ("0o" if verb == "O" else "0" if verb == "o" and sharp and body[:1] != "0"
                      else "0" + verb if verb in "xXb" and sharp else "")
    elif isinstance(v, float) and verb in "vgGeEfF":
        sign = "-" if math.copysign(1, v) < 0 else "+" if plus else " " if space else ""
        a = abs(v)
        if a != a or a == math.inf:
            zero, body = False, "NaN" if a != a else "Inf"
            sign = "" if a != a and not plus else sign or "+"
        elif verb in "vgG" and prec is None:
            body = _go_float_str(a)
        else:
            spec = verb.lower() if verb in "vgG" else "f" if verb == "F" else verb
            body = format(a, f".{6 if prec is None else prec}{spec}")
        if verb in "GE":
            body = body.upper()
    elif isinstance(v, str) and verb in "vsqxX":
        if prec is not None and verb in "vsq":
            v = v[:prec]
        body = (_go_quote(v, '"', plus) if verb == "q" else
                _tpl_bytes(v).hex() if verb in "xX" else v)
        if verb == "X":
            body = body.upper()
    elif isinstance(v, (list, tuple, Mapping)) and verb in "vs":
        body = format_value(v)
    elif verb == "T":
        body = "<nil>" if v is None else _tpl_go_type(v)
    else:
        shown = "<nil>" if v is None else f"{_tpl_go_type(v)}={_go_format(v, 'v')}"
        return f"%!{verb}({shown})"
    pad = (width or 0) - len(sign) - len(prefix) - len(body)
    if pad <= 0:
        return sign + prefix + body
    if minus:
        return sign + prefix + body + " " * pad
    if zero:
        return sign + prefix + "0" * pad + body
    return " " * pad + sign + prefix + body


def _go_printf(fmt, args):
    """Go's fmt.Sprintf, with its notes for mistakes: %!d(string=x) for a
    verb that does not fit, %!s(MISSING), %!(EXTRA type=value)."""
    _tpl_str_arg(fmt, "format")
    out, n, i = [], 0, 0
    for m in _TPL_VERB.finditer(fmt):
        out.append(fmt[i:m.start()])
        i = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        stars = []
        for part in (width, prec and prec[1:]):
            if part == "*":                  # width or precision from the arguments
                arg = args[n] if n < len(args) else None
                n += 1
                stars.append(arg if type(arg) is int else "bad")
            else:
                stars.append(int(part) if part else None)
        width, prec = stars[0], (stars[1] if prec else None)
        if "bad" in (width, prec):
            out.append("%!(BADWIDTH)" if width == "bad" else "%!(BADPREC)")
            width = prec = None
        if width is not None and width < 0:
            flags, width = flags + "-", -width
        if prec is not None and prec < 0:
            prec = None
        if not verb:
            out.append("%!(NOVERB)")
        elif n >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_go_format(args[n], verb, flags, width, prec))
            n += 1
    out.append(fmt[i:])
    if n < len(args):
        extra = ", ".join("<nil>" if a is None else f"{_tpl_go_type(a)}={_go_format(a, 'v')}"
                          for a in args[n:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _tpl_secret(name):
    """An environment variable's value, masked in everything gxo prints."""
    value = os.environ.get(name)
    if value is None:
        raise _TplFuncError(f"secret: environment variable {name} is not set")
    _secrets.add(value)
    return value


# name -> (function, least and most argument counts). and/or are compiled
# apart because they stop at the first deciding argument.
_TPL_FUNCS = {
    "and": (None, 1, None),
    "or": (None, 1, None),
    "not": (lambda v: not v, 1, 1),
    "len": (_tpl_len, 1, 1),
    "index": (_tpl_index, 1, None),
    "slice": (_tpl_slice, 1, None),
    "print": (_tpl_print, 0, None),
    "printf": (lambda fmt, *args: _go_printf(fmt, args), 1, None),
    "println": (lambda *args: " ".join(map(format_value, args)) + "\n", 0, None),
    "eq": (_tpl_eq, 1, None),
    "ne": (lambda a, b: not _tpl_eq(a, b), 2, 2),
    "lt": (_tpl_lt, 2, 2),
    "le": (lambda a, b: _tpl_lt(a, b) or _tpl_eq(a, b), 2, 2),
    "gt": (lambda a, b: not (_tpl_lt(a, b) or _tpl_eq(a, b)), 2, 2),
    "ge": (lambda a, b: not _tpl_lt(a, b), 2, 2),
    "env": (lambda name: os.environ.get(_tpl_str_arg(name, "name"), ""), 1, 1),
    "secret": (lambda name: _tpl_secret(_tpl_str_arg(name, "name")), 1, 1),
    "html": (lambda *args: _tpl_args_text(args).translate(_TPL_HTML), 0, None),
    "js": (_tpl_js, 0, None),
    "urlquery": (_tpl_urlquery, 0, None),
    # Sprig's, with its argument order: the value a pipeline feeds in comes last.
    "default": (lambda d, *given: given[0] if given and given[0] else d, 1, None),
    "splitList": (_tpl_split_list, 2, 2),
    "join": (_tpl_join, 2, 2),
    "trim": (lambda s: _tpl_text(s)[0].strip(_GO_SPACE), 1, 1),
    "lower": (_tpl_lower, 1, 1),
    "upper": (_tpl_upper, 1, 1),
    "replace": (_tpl_replace, 3, 3),
    "contains": (_tpl_text_test(str.__contains__), 2, 2),
    "hasPrefix": (_tpl_text_test(str.startswith), 2, 2),
    "hasSuffix": (_tpl_text_test(str.endswith), 2, 2),
    "toJson": (_go_json, 1, 1),
    "fromJson": (_tpl_from_json, 1, 1),
    "add": (_tpl_add, 0, None),
    "sub": (lambda a, b: _tpl_wrap64(_tpl_int64(a) - _tpl_int64(b)), 2, 2),
}
_TPL_NIL_ARGS = frozenset(("print", "printf", "println", "html", "js", "urlquery", "default",
                           "join", "toJson", "add", "sub"))    # Go's interface{} parameters


# -- templates: printf


# -- templates: compiler

_TPL_UNSET = object()                   # a variable slot not yet set in this render


class _TplBreak(Exception):
    """<<break>> unwinding to its range."""


class _TplContinue(Exception):
    """<<continue>> unwinding to its range."""


def _tpl_field(v, name, where):
    """v.name: v[name] for a map, else the render error Go gives."""
    if isinstance(v, Mapping):
        try:
            return v[name]
        except KeyError:
            reason = f"map has no key '{name}'{_suggest(name, v)}"
            raise TemplateRenderError(*where, reason) from None
    raise TemplateRenderError(*where, f"can't evaluate field '{name}' in {_tpl_kind(v)}")


def _tpl_sorted_keys(m):
    """A map's keys in Go's range order: sorted, mixed types grouped by type."""
    try:
        return sorted(m)
    except TypeError:
        return sorted(m, key=lambda k: (type(k).__name__, str(k)))


def _tpl_has_loop_control(nodes):
    """Whether break or continue occur in nodes outside nested ranges."""
    for n in nodes or ():
        if isinstance(n, _LoopControlNode) or isinstance(n, _IfNode) and (
                _tpl_has_loop_control(n.body) or _tpl_has_loop_control(n.else_body)):
            return True
    return False


class _TplCompiler:
    """Turns parse nodes into closures, once per template.

    An expression becomes f(dot, vs) -> value, where vs is the render's list
    of variable slots (vs[0] is $); a command fed by '|' takes the piped value
    as a third argument; a statement becomes f(dot, vs, out), appending text
    to the list out. Mistakes Go finds only while running (argument counts,
    nil arguments) become closures that raise when they run.
    """

    def __init__(self, text):
        from bisect import bisect_right
        self.bisect = bisect_right
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def where(self, pos):
        """(line, col) of an offset, without rescanning the text for each node."""
        line = self.bisect(self.line_starts, pos)
        return line, pos - self.line_starts[line - 1] + 1

    def fail(self, pos, reason):
        err = (*self.where(pos), reason)

        def fail(*_):
            raise TemplateRenderError(*err)
        return fail

    # statements

    def block(self, nodes):
        # Text stays a str, appended without a call: most of a template is text.
        if len(nodes or ()) == 1:
            return self.stmt(nodes[0])
        fs = tuple(n.text if isinstance(n, _TextNode) else self.stmt(n) for n in nodes or ())

        def block(dot, vs, out):
            for f in fs:
                if f.__class__ is str:
                    out.append(f)
                else:
                    f(dot, vs, out)
        return block

    def stmt(self, node):
        if isinstance(node, _TextNode):
            text = node.text
            return lambda dot, vs, out: out.append(text)
        if isinstance(node, _ActionNode):
            pipe = self.pipe(node.pipe)
            if node.pipe.decls:
                return lambda dot, vs, out: pipe(dot, vs)
            arg = node.pipe.cmds[0].args[0]
            if len(node.pipe.cmds[0].args) == len(node.pipe.cmds) == 1 \
                    and isinstance(arg, _FieldNode) and len(arg.names) == 1:
                return self.field_action(arg.names[0], self.where(arg.pos))

            def action(dot, vs, out):
                v = pipe(dot, vs)
                out.append(v if type(v) is str else format_value(v))
            return action
        if isinstance(node, _IfNode):
            return self.if_or_with(node)
        if isinstance(node, _RangeNode):
            return self.range(node)
        signal = _TplBreak if node.word == "break" else _TplContinue

        def loop_control(dot, vs, out):
            raise signal
        return loop_control

    def field_action(self, name, where):
        """<< .name >>, the most common action, in one call (the same as fields())."""
        def field_action(dot, vs, out):
            if type(dot) is dict:
                try:
                    v = dot[name]
                except KeyError:
                    v = _tpl_field(dot, name, where)
            else:
                v = _tpl_field(dot, name, where)
            out.append(v if type(v) is str else format_value(v))
        return field_action

    def if_or_with(self, node):
        cond, body = self.pipe(node.pipe), self.block(node.body)
        other = self.block(node.else_body) if node.else_body else None
        if node.kind == "with":
            def with_(dot, vs, out):
                v = cond(dot, vs)
                if v:
                    body(v, vs, out)
                elif other:
                    other(dot, vs, out)
            return with_

        def if_(dot, vs, out):
            if cond(dot, vs):
                body(dot, vs, out)
            elif other:
                other(dot, vs, out)
        return if_

    def range(self, node):
        items, body = self.pipe(node.pipe, declare=False), self.block(node.body)
        other = self.block(node.else_body) if node.else_body else None
        slots = [d.slot for d in node.pipe.decls]
        key_slot = slots[0] if len(slots) == 2 else None
        elem_slot = slots[-1] if slots else None
        plain = not slots and not _tpl_has_loop_control(node.body)
        where = self.where(node.pipe.pos)

        def range_(dot, vs, out):
            v = items(dot, vs)
            if type(v) is list or type(v) is tuple:
                pairs = None
            elif isinstance(v, Mapping):
                pairs = [(k, v[k]) for k in _tpl_sorted_keys(v)]
            elif isinstance(v, (list, tuple)) or v is None:
                pairs, v = None, v or ()
            else:
                raise TemplateRenderError(*where, f"can't range over {_tpl_kind(v)} "
                                                  f"({format_value(v)[:40]})")
            if not v:
                if other:
                    other(dot, vs, out)
            elif plain and pairs is None:
                for e in v:
                    body(e, vs, out)
            else:
                for k, e in pairs or enumerate(v):
                    if elem_slot is not None:
                        vs[elem_slot] = e
                    if key_slot is not None:
                        vs[key_slot] = k
                    try:
                        body(e, vs, out)
                    except _TplContinue:
                        pass
                    except _TplBreak:
                        break
        return range_

    # expressions

    def pipe(self, node, declare=True):
        cmds = [self.command(c, piped=i > 0) for i, c in enumerate(node.cmds)]
        first, rest = cmds[0], tuple(cmds[1:])
        if rest:
            def run(dot, vs):
                v = first(dot, vs)
                for cmd in rest:
                    v = cmd(dot, vs, v)
                return v
        else:
            run = first                 # one command: nothing to pipe through
        if not (declare and node.decls):
            return run
        var = node.decls[0]
        if var.names is None:           # '$x = ...' without a '$x := ...' before
            fail = self.fail(var.pos, f"variable '{var.name}' is assigned before it is "
                                      f"declared (declare it with '{var.name} := ...')")
            return lambda dot, vs: fail(run(dot, vs))
        slot = var.slot

        def declare(dot, vs):
            v = vs[slot] = run(dot, vs)
            return v
        return declare

    def command(self, cmd, piped):
        first, args = cmd.args[0], cmd.args[1:]
        if isinstance(first, _IdentifierNode):
            return self.call(first, args, piped)
        if args or piped:
            return self.fail(first.pos, f"'{_tpl_src(first)}' is not a function, so it "
                                        "can't take arguments")
        if isinstance(first, _LiteralNode) and first.src == "nil":
            return self.fail(first.pos, "nil is not a command")
        return self.arg(first)

    def arg(self, node):
        """An operand's value."""
        if isinstance(node, _FieldNode):
            return self.fields(None, node.names, node.pos)
        if isinstance(node, _VariableNode):
            return self.fields(self.variable(node), node.names, node.pos)
        if isinstance(node, _ChainNode):
            if isinstance(node.node, _LiteralNode):      # (nil).a
                return self.fail(node.pos, f"can't evaluate a field of '{node.node.src}'")
            return self.fields(self.arg(node.node), node.names, node.pos)
        if isinstance(node, _PipeNode):
            return self.pipe(node)
        if isinstance(node, _IdentifierNode):
            return self.call(node, (), False)
        if isinstance(node, _DotNode):
            return lambda dot, vs: dot
        if node.src == "nil":
            return self.fail(node.pos, "nil can only be printed (by print, printf or println)")
        value = node.value
        if type(value) is int and value >= 1 << 63:
            return self.fail(node.pos, f"{node.src} overflows int")
        return lambda dot, vs: value

    def variable(self, node):
        slot, err = node.slot, (*self.where(node.pos), f"variable '{node.name}' is not set here")

        def variable(dot, vs):
            v = vs[slot]
            if v is _TPL_UNSET:
                raise TemplateRenderError(*err)
            return v
        return variable

    def fields(self, base, names, pos):
        """base's value (dot's if base is None) followed by the field lookups names."""
        if not names:
            return base
        where = self.where(pos)
        if base is None and len(names) == 1:
            name = names[0]

            def field(dot, vs):
                if type(dot) is dict:
                    try:
                        return dot[name]
                    except KeyError:
                        pass
                return _tpl_field(dot, name, where)
            return field

        def chain(dot, vs):
            v = dot if base is None else base(dot, vs)
            for name in names:
                if type(v) is dict and name in v:
                    v = v[name]
                else:
                    v = _tpl_field(v, name, where)
            return v
        return chain

    def call(self, ident, args, piped):
        name = ident.name
        fn, least, most = _TPL_FUNCS[name]
        count = len(args) + piped
        if count < least or most is not None and count > most:
            want = f"at least {least}" if most is None else least
            return self.fail(ident.pos, f"wrong number of arguments for '{name}': "
                                        f"want {want}, got {count}")
        vals = []
        for i, a in enumerate(args):
            string_param = i == 0 and name in ("printf", "env", "secret")
            if isinstance(a, _LiteralNode) and (
                    a.src == "nil" or string_param and not isinstance(a.value, str)):
                if a.src == "nil" and name in _TPL_NIL_ARGS and not string_param:
                    vals.append(lambda dot, vs: None)
                    continue
                what = "its first argument" if string_param else "an argument"
                return self.fail(a.pos, f"'{name}' can't take {a.src} as {what}")
            vals.append(self.arg(a))
        vals = tuple(vals)
        where = self.where(ident.pos)
        if fn is None:                  # and, or: the first deciding value, else the last
            stop = name == "or"

            def and_or(dot, vs, *piped):
                v = None
                for f in vals:
                    v = f(dot, vs)
                    if bool(v) is stop:
                        return v
                return piped[0] if piped else v
            return and_or

        def call(dot, vs, *piped):
            a = [f(dot, vs) for f in vals]
            try:
                return fn(*a, *piped)
            except Exception as e:
                reason = str(e) if isinstance(e, _TplFuncError) else f"{type(e).__name__}: {e}"
                raise TemplateRenderError(*where, f"{name}: {reason}") from None
        return call


# -- templates: API

def _tpl_root_paths(nodes):
    """The field paths a template reads from the data root (see template_variables),
    as tuples of keys: index ._gxo.tasks "a.b" gives ('_gxo', 'tasks', 'a.b').

    Walks the tree tracking what dot and each variable slot stand for: a path
    from the root, or None once they are rebound to something else (a range
    element, a function's result).
    """
    found, slots = set(), {0: ()}

    def value(node, dot):
        if isinstance(node, _PipeNode):
            return pipe(node, dot)
        if isinstance(node, _DotNode):
            return dot
        base = (dot if isinstance(node, _FieldNode) else
                slots.get(node.slot) if isinstance(node, _VariableNode) else
                value(node.node, dot) if isinstance(node, _ChainNode) else None)
        if base is None:                # a literal, a function's result, a range element
            return None
        path = base + node.names
        if node.names:
            found.add(path)
        return path

    def command(cmd, dot):
        first, args = cmd.args[0], cmd.args[1:]
        vals = [value(a, dot) for a in args]
        if not isinstance(first, _IdentifierNode):
            return value(first, dot)
        if first.name == "index" and vals and vals[0] is not None and len(args) > 1 and all(
                isinstance(a, _LiteralNode) and isinstance(a.value, str) for a in args[1:]):
            path = vals[0] + tuple(a.value for a in args[1:])
            found.add(path)
            return path
        return None

    def pipe(node, dot):
        v = None
        for cmd in node.cmds:
            v = command(cmd, dot)
        for var in node.decls:
            slots[var.slot] = v
        return v

    def walk(nodes, dot):
        for n in nodes or ():
            if isinstance(n, _ActionNode):
                pipe(n.pipe, dot)
            elif isinstance(n, _IfNode):
                v = pipe(n.pipe, dot)
                walk(n.body, v if n.kind == "with" else dot)
                walk(n.else_body, dot)
            elif isinstance(n, _RangeNode):
                pipe(n.pipe, dot)
                slots.update((var.slot, None) for var in n.pipe.decls)
                walk(n.body, None)
                walk(n.else_body, dot)

    walk(nodes, ())
    return frozenset(p for p in found if p)


def _tpl_unexpected(e):
    """A render error for an exception the functions did not expect (deep
    recursion, odd data), so that only template errors leave render()."""
    if isinstance(e, RecursionError):
        return TemplateRenderError(1, 1, "data or template nested too deeply")
    return TemplateRenderError(1, 1, f"{type(e).__name__}: {e}")


class _TplTemplate:
    """A parsed template: render(data) -> str, resolve(data) -> value, and
    variables, the root paths it reads ('a.b'; paths has them as tuples)."""

    __slots__ = ("text", "variables", "paths", "_run", "_value", "_unset")

    def __init__(self, text, left, right):
        parser = _TplParser(text, left, right)
        nodes = parser.parse()
        compiler = _TplCompiler(text)
        self.text = text
        self.paths = _tpl_root_paths(nodes)
        self.variables = frozenset(".".join(p) for p in self.paths)
        self._run = compiler.block(nodes)
        self._unset = [_TPL_UNSET] * (parser.slots - 1)
        # A template that is one action (blanks around it aside) resolves to the value.
        actions = [n for n in nodes if not (isinstance(n, _TextNode) and not n.text.strip())]
        single = len(actions) == 1 and isinstance(actions[0], _ActionNode) \
            and not actions[0].pipe.decls
        self._value = compiler.pipe(actions[0].pipe) if single else None

    def render(self, data):
        out = []
        try:
            self._run(data, [data, *self._unset], out)
        except TemplateError:
            raise
        except Exception as e:
            raise _tpl_unexpected(e) from e
        return "".join(out)

    def resolve(self, data):
        if self._value is None:
            return self.render(data)
        try:
            return self._value(data, [data, *self._unset])
        except TemplateError:
            raise
        except Exception as e:
            raise _tpl_unexpected(e) from e

    def __repr__(self):
        return f"<template {self.text[:40]!r}>"


_tpl_cache = {}
_TPL_CACHE_SIZE = 4096


def compile_template(text, delimiters=("<<", ">>")):
    """The parsed template for text (cached); raises TemplateSyntaxError."""
    try:
        return _tpl_cache[text, delimiters]
    except (KeyError, TypeError):       # not cached yet, or delimiters in a list
        pass
    if not isinstance(text, str):
        raise TemplateSyntaxError(1, 1, f"a template must be a string, not {_tpl_kind(text)}")
    try:
        left, right = delimiters
        valid = isinstance(left, str) and isinstance(right, str) and left and right
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise TemplateSyntaxError(1, 1, f"delimiters must be two non-empty strings, "
                                        f"not {delimiters!r}")
    key = (text, (left, right))
    template = _tpl_cache.get(key)
    if template is None:
        try:
            template = _TplTemplate(text, left, right)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateSyntaxError(1, 1, "template nested too deeply") from None
        except Exception as e:          # a bug here must still read as a template error
            raise TemplateSyntaxError(1, 1, f"{type(e).__name__}: {e}") from e
        if len(_tpl_cache) >= _TPL_CACHE_SIZE:
            _tpl_cache.clear()
        _tpl_cache[key] = template
    return template


def _tpl_plain(text, delimiters):
    """Whether text is a string without the left delimiter (nothing to parse)."""
    try:
        return type(text) is str and delimiters[0] not in text
    except (TypeError, IndexError, KeyError):
        return False


def render(text, data, delimiters=("<<", ">>")):
    """text rendered with data; raises TemplateError."""
    if _tpl_plain(text, delimiters):
        return text
    return compile_template(text, delimiters).render(data)


def resolve(text, data, delimiters=("<<", ">>")):
    """The value of a template that is a single action (surrounding blanks
    aside), such as '<< .hosts >>': a list stays a list. Any other template
    renders to a string; text without the left delimiter comes back as is."""
    if _tpl_plain(text, delimiters):
        return text
    return compile_template(text, delimiters).resolve(data)


def template_variables(text, delimiters=("<<", ">>")):
    """The field paths text reads from the data root: '.a.b' gives 'a.b',
    '$.a' gives 'a'; inside with the dot is the with's value, inside range an
    element (not a root read)."""
    return set(compile_template(text, delimiters).variables)


# -- templates: YAML values with templates inside

class _Compiled:
    """A YAML value whose strings are templates, parsed once.

    Calling it with the data renders every template in the value (a string
    that is a single action keeps its native type); untemplated parts are
    shared, not copied.
    """

    __slots__ = ("value", "_render", "variables")

    def __init__(self, value, render, variables):
        self.value, self._render, self.variables = value, render, variables

    def __call__(self, data):
        return self.value if self._render is None else self._render(data)


def _compile_value(value, delimiters, raw_keys=()):
    """Compile the templates inside a YAML value (see _Compiled).

    ``raw_keys`` are top-level keys left as they are (modules render them).
    """
    left = delimiters[0]
    variables = set()

    def build(v, skip=()):
        if isinstance(v, str):
            if left not in v:
                return None
            template = compile_template(v, delimiters)
            variables.update(template.variables)
            return template.resolve
        if isinstance(v, (dict, list)):
            pairs = v.items() if isinstance(v, dict) else enumerate(v)
            parts = [(k, f) for k, x in pairs if k not in skip for f in [build(x)] if f is not None]
            if not parts:
                return None
            copy = dict if isinstance(v, dict) else list

            def render_container(data):
                out = copy(v)
                for k, f in parts:
                    out[k] = f(data)
                return out
            return render_container
        return None

    render = build(value, raw_keys)
    del build       # it refers to itself: a cycle, and playbooks load with the collector off
    return _Compiled(_freeze(value), render, frozenset(variables))


def truthy(value):
    """Whether a rendered 'when' allows the task to run.

    False for false, no, off, 0, a number equal to 0, empty text, null and an
    empty list or mapping; true otherwise.
    """
    if value is None or value is False or value is True:
        return bool(value)
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, (list, tuple, dict)):
        return len(value) > 0
    text = str(value).strip().lower()
    if text in ("", "false", "no", "off", "0"):
        return False
    try:
        return float(text) != 0
    except ValueError:
        return True


# ---------------------------------------------------------------- channels
#
# A channel carries records from one producer to one consumer.  The fast path
# is a lock-free deque append/popleft (each is atomic under the GIL); the lock
# is taken only to sleep on a full or empty channel and to wake a sleeper, so
# a record costs about as much as a plain loop step.

_chan_exhaust = deque(maxlen=0).extend          # runs an iterator to its end, in C


class Channel:
    """A bounded FIFO of records with end of stream and cancellation.

    ``put`` blocks while the channel is full; iterating yields records until
    the producer closes it.  ``detach`` (the consumer stopped reading) makes
    later puts drop their record and count it in ``undelivered``, and calls
    ``on_detach`` if the producer set it (exec stops its command then, as a
    pipe would); ``abort`` wakes both sides and makes them raise Cancelled.
    """

    on_detach = None

    # The fast paths take no lock: put appends to a deque and the reader pops
    # it in runs, each run a C loop over popleft (deque operations are atomic
    # under the GIL).  The lock is taken only to sleep, to wake a sleeper, and
    # by close, detach and abort.
    #
    # A sleeper blocks on a held lock of its own, its gate, until a waker
    # releases it: far cheaper than a Condition.  A side about to sleep first
    # raises its flag (the reader sets _reader_asleep, a writer adds its gate
    # to _writer_gates) holding the lock, and only then takes its last look
    # at the deque; the other side looks at the flag after each append (a
    # writer) or before each run (the reader; a writer going to sleep ends the
    # reader's run).  So either the sleeper sees the new record or free slot,
    # or the waker sees the flag: no wake-up is lost.  Whoever lowers a flag,
    # under the lock, releases its gate, so a gate is released once per sleep.

    def __init__(self, capacity=100):
        self.capacity = max(1, int(capacity))
        self._items = deque()
        self._room = self.capacity      # put's fast path: 0 once detached or aborted
        self._lock = threading.Lock()
        self._reader_gate = threading.Lock()
        self._reader_gate.acquire()
        self._reader_asleep = False
        self._writer_gates = []
        self._run = ()                  # what the reader's current run counts down
        self._taken = False             # the reader has taken a record
        self._closed = self._detached = False
        self._abort = self._detach_reason = None
        self._dropped = 0

    @property
    def used(self):
        """True once a record was put (a task that streamed must not be retried)."""
        # A record ever put is still queued, was taken, or was dropped.
        return self._taken or bool(self._items) or bool(self._dropped)

    @property
    def queued(self):
        """How many records the reader can take now without waiting (to batch writes)."""
        return len(self._items)

    def put(self, record):
        """Send one record; blocks while the channel is full."""
        items = self._items
        if len(items) < self._room:
            items.append(record)
            if self._reader_asleep:
                self._wake_reader()
        else:
            self._put_slow(record)

    def _wake_reader(self):
        with self._lock:
            if self._reader_asleep:
                self._reader_asleep = False
                self._reader_gate.release()

    def _put_slow(self, record):
        items, gate = self._items, None
        while True:
            with self._lock:
                if self._abort is not None:
                    raise Cancelled(self._abort)
                if self._detached:
                    self._dropped += 1
                    return
                if self._closed:
                    raise ValueError("put on a closed channel")
                if gate is None:
                    gate = threading.Lock()
                    gate.acquire()
                self._writer_gates.append(gate)         # the flag, then the last look
                if len(items) < self.capacity:
                    self._writer_gates.remove(gate)
                    items.append(record)
                    break
                # The reader does not look at the flags within a run: end its
                # run, so that its next pop comes back here and wakes us.
                _chan_exhaust(self._run)
            gate.acquire()
            if len(items) < self._room:                 # woken: most likely for room
                items.append(record)
                break
        if self._reader_asleep:
            self._wake_reader()

    def __iter__(self):
        return itertools.chain.from_iterable(self._runs())

    def _runs(self):
        # Each run pops the records queued when it starts; the Python code
        # here runs once per run, not once per record.
        items = self._items
        take = items.popleft
        while True:
            # End any other iterator's run (a misuse, but harmless then): only
            # one run is live, and no run pops more than the deque holds.
            _chan_exhaust(self._run)
            n = len(items)
            self._run = run = itertools.repeat((), n)     # published before the look at the flags
            if not n:
                if not self._wait():
                    return
                continue
            self._taken = True
            if self._writer_gates:
                record = take()                         # a free slot: wake the writers now
                self._wake_writers()
                yield (record,)
            else:
                yield itertools.starmap(take, run)

    def _wait(self):
        """Sleep until the channel may hold a record (True) or has ended (False)."""
        with self._lock:
            self._release_writers()                     # empty: there is room
            if self._abort is not None:
                raise Cancelled(self._abort)
            self._reader_asleep = True                  # the flag, then the last look
            if self._items:
                self._reader_asleep = False             # one reader: it lowers its own flag
                return True
            if self._detached or self._closed:
                self._reader_asleep = False
                if self._detached:
                    raise Cancelled(self._detach_reason or "stopped reading")
                return False
        self._reader_gate.acquire()
        return True

    def _wake_writers(self):
        with self._lock:
            self._release_writers()

    def _release_writers(self):
        # Holding the lock.  Off the list, a gate cannot be released again.
        gates, self._writer_gates = self._writer_gates, []
        for gate in gates:
            gate.release()

    def _release_all(self):
        # Holding the lock.
        if self._reader_asleep:
            self._reader_asleep = False
            self._reader_gate.release()
        self._release_writers()

    def close(self):
        """End of stream: the consumer reads what is left, then stops."""
        with self._lock:
            self._closed = True
            self._release_all()

    def detach(self, reason=None):
        """The consumer is gone: drop and count what is and will be put."""
        with self._lock:
            self._detached = True
            self._detach_reason = reason
            self._room = 0
            self._release_all()
        if self.on_detach is not None:
            self.on_detach()

    @property
    def detached(self):
        """True once the consumer stopped reading."""
        return self._detached

    def abort(self, reason):
        """Wake both sides; each raises Cancelled(reason) from now on."""
        with self._lock:
            if self._abort is None:
                self._abort = str(reason)
            self._room = 0
            self._release_all()

    @property
    def undelivered(self):
        """Records put but never read because the consumer stopped reading."""
        return self._dropped + (len(self._items) if self._detached else 0)


def copy_record(value):
    """A private, mutable deep copy of a JSON-like value (a record, or a value
    from state or params, which are read-only); much cheaper than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy_record(v) for v in value]
    return value


class _CopyingChannel(Channel):
    """A fan-out consumer's channel: it gets a deep copy of each record (a
    subclass, so that Channel.put needs no branch)."""

    def put(self, record):
        Channel.put(self, copy_record(record))


def fan_out(outputs):
    """A function that puts a record on every channel of ``outputs``, in order.

    The engine gives every consumer but the last a _CopyingChannel, so each
    gets a copy made before the record reaches the last one, which may change
    it.  One output: its own put, nothing in between.
    """
    if len(outputs) == 1:
        return outputs[0].put
    puts = [o.put for o in outputs]

    def put(record):
        for p in puts:
            p(record)
    return put


class _ErrorSink:
    """The ``errors`` channel of a task: logs and counts record errors."""

    def __init__(self, task, log, hide=False):
        self.task, self.log, self.count, self._hide = task, log, 0, hide
        self._lock = threading.Lock()

    def put(self, error):
        if not isinstance(error, RecordProcessingError):
            error = RecordProcessingError(self.task, None, error)
        with self._lock:
            self.count += 1
        what = _HIDDEN if self._hide else f"item={error.item!r} cause={error.cause}"
        self.log.error(f"[RECORD_ERROR] task={error.task} {what}")


# ---------------------------------------------------------------- DAG
#
# The loader records what each task references (Task.reads); _link turns that
# into edges.  Tasks joined by streams form a pipeline, started as one unit;
# edges between pipelines come from register keys, _gxo.tasks.NAME and
# depends_on (Task.needs).  _Schedule walks the DAG as a run goes.

def _link(tasks):
    """Make each task's ``needs`` and ``edges`` from its ``reads``; return the
    consumers of each task (the tasks streaming from it, in file order)."""
    consumers = {t.index: [] for t in tasks}
    for t in tasks:
        for kind, i in t.reads:
            t.edges.setdefault(i, set()).add(kind)
            if kind == "stream":
                consumers[i].append(t.index)    # it runs beside its producer: no wait
            else:
                t.needs.add(i)
        if t.always:                    # it runs however they end: the plan shows it
            for kinds in t.edges.values():
                kinds.add("always")
    return consumers


def _pipelines(tasks, consumers):
    """Group tasks joined by stream edges: each group starts together."""
    group = {t.index: t.index for t in tasks}

    def find(i):
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for producer, cons in consumers.items():
        for c in cons:
            group[find(c)] = find(producer)
    members = {}
    for t in tasks:
        members.setdefault(find(t.index), []).append(t.index)
    return [m for m in members.values()]


def _cycle_text(edges, tasks):
    """'a -> b -> a' for a list of (waiting task, awaited task) edges."""
    parts, prev = [tasks[edges[0][0]].key], edges[0][0]
    for src, dst in edges:
        if src != prev:
            parts[-1] += f" (streams with {tasks[src].key})"
        parts.append(tasks[dst].key)
        prev = dst
    return " -> ".join(parts)


def _find_cycle(tasks, groups):
    """Return (message, task index) for a cycle among pipelines, or None."""
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    for t in tasks:
        for dep in sorted(t.needs):
            if group_of[dep] == group_of[t.index]:
                what = ("its own result" if dep == t.index else
                        f"{tasks[dep].key}, which streams with it (stream_input)")
                return (f"cycle: {t.key} -> {tasks[dep].key}: it waits for {what}; a task "
                        "cannot wait for a task it runs beside, or for itself", t.index)
    # Iterative DFS over groups; an edge g -> h (src, dst) means src waits for dst.
    waits = [[] for _ in groups]
    for t in tasks:
        for dep in sorted(t.needs):
            waits[group_of[t.index]].append((group_of[dep], t.index, dep))
    state = [0] * len(groups)           # 0 new, 1 on the stack, 2 done
    for start in range(len(groups)):
        if state[start]:
            continue
        state[start] = 1
        stack = [(start, iter(waits[start]), None)]
        while stack:
            for h, src, dst in stack[-1][1]:
                if state[h] == 1:
                    at = next(i for i, frame in enumerate(stack) if frame[0] == h)
                    edges = [frame[2] for frame in stack[at + 1:]] + [(src, dst)]
                    return "cycle: " + _cycle_text(edges, tasks), edges[0][0]
                if state[h] == 0:
                    state[h] = 1
                    stack.append((h, iter(waits[h]), (src, dst)))
                    break
            else:
                state[stack.pop()[0]] = 2
    return None


# -- the plan: -validate and -graph show the DAG without running it

_EDGE_KINDS = ("data", "status", "depends_on", "stream", "always")
_EDGE_MEANING = {
    "data": "data .KEY: reads the register key KEY of that task",
    "status": "status: reads _gxo.tasks.NAME.status of that task",
    "depends_on": "depends_on: names that task in depends_on",
    "stream": "stream: reads that task's records, running beside it (stream_input)",
    "always": "always: a failure handler, it runs once they end, whatever their outcome",
}


def _edges(playbook):
    """(awaited, waiting, kinds) for every edge, by waiting task then awaited task."""
    return [(i, t.index, [k for k in _EDGE_KINDS if k in t.edges[i]])
            for t in playbook.tasks for i in sorted(t.edges)]


def _waves(playbook):
    """Pipelines by depth in the DAG: wave 0 waits for nothing, wave n for wave n-1."""
    tasks = playbook.tasks
    groups = sorted(sorted(g) for g in playbook.pipelines)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    dependents = [[] for _ in groups]
    pending = [0] * len(groups)
    for g, members in enumerate(groups):
        for h in {group_of[d] for i in members for d in tasks[i].needs} - {g}:
            dependents[h].append(g)
            pending[g] += 1
    level = [0] * len(groups)
    order = [g for g in range(len(groups)) if not pending[g]]
    for g in order:                     # Kahn's algorithm: the DAG has no cycle by now
        for h in dependents[g]:
            level[h] = max(level[h], level[g] + 1)
            pending[h] -= 1
            if not pending[h]:
                order.append(h)
    waves = [[] for _ in range(max(level) + 1)]
    for g, members in enumerate(groups):
        waves[level[g]].append(members)
    return waves


def _columns(rows):
    """Lines of a text table: every column but the last padded to its width."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    return ["  ".join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]).rstrip()
            for row in rows]


def _plan(playbook):
    """The text -validate prints: each task, what it waits for and why, and the waves."""
    tasks = playbook.tasks
    waits, used = {t.index: [] for t in tasks}, set()
    for i, j, kinds in _edges(playbook):
        used.update(kinds)
        why = ", ".join(f"data .{tasks[i].register}" if k == "data" else k for k in kinds)
        waits[j].append(f"{tasks[i].key} ({why})")
    waves = _waves(playbook)
    lines = [f"playbook '{playbook.name}' is valid: {_plural(len(tasks), 'task')} in "
             f"{_plural(len(waves), 'wave')}; nothing was run", ""]
    lines += _columns([("task", "type", "waits for (why)")] + [
        (t.key, t.type, ", ".join(waits[t.index]) or "-") for t in tasks])
    lines.append("")
    lines += _columns([("wave", "tasks that can run at the same time")] + [
        (str(n), ", ".join(tasks[m[0]].key if len(m) == 1 else
                           "[" + ", ".join(tasks[i].key for i in m) + "]" for m in wave))
        for n, wave in enumerate(waves, 1)])
    lines.append("")
    lines += [_EDGE_MEANING[k] for k in _EDGE_KINDS if k in used]
    if any(len(g) > 1 for g in playbook.pipelines):
        lines.append("[a, b]: a stream pipeline, its tasks start together")
    lines.append("a wave's tasks start once what they wait for in earlier waves has ended")
    return "\n".join(lines) + "\n"


def _mermaid_text(text):
    """A Mermaid label in double quotes: entity codes for what would end or mark it up."""
    text = text.replace("\n", " ").replace("#", "#35;")
    for c, code in (('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("&", "#amp;"), ("`", "#96;")):
        text = text.replace(c, code)
    return f'"{text}"'


def _dot_text(text):
    """A DOT double-quoted string (Graphviz reads &name; in it as an HTML entity)."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")
    return '"' + text.replace("\n", "\\n") + '"'


# Mermaid arrow and DOT style of an edge, by its first kind (always only adds colour).
_MERMAID_ARROWS = {"stream": "==>", "data": "-->", "status": "-.->", "depends_on": "-.->"}
_DOT_STYLES = {"stream": "bold", "data": "solid", "status": "dashed", "depends_on": "dotted"}


def _graph(playbook, form):
    """The DAG as a Mermaid flowchart or a Graphviz digraph, edges labelled by kind.

    Nodes are t1..tN in file order; a stream pipeline is drawn as one box.
    """
    tasks, edges = playbook.tasks, _edges(playbook)
    pipelines = [g for g in sorted(sorted(g) for g in playbook.pipelines) if len(g) > 1]
    in_pipeline = {i for g in pipelines for i in g}
    alone = [t.index for t in tasks if t.index not in in_pipeline]
    always = [n for n, (_, _, kinds) in enumerate(edges) if "always" in kinds]
    if form == "mermaid":
        def node(i):
            return f"t{i + 1}[{_mermaid_text(f'{tasks[i].key} ({tasks[i].type})')}]"
        lines = ["flowchart TD", f"  %% gxo playbook {_mermaid_text(playbook.name)}"]
        lines += ["  " + node(i) for i in alone]
        for n, g in enumerate(pipelines, 1):
            lines += [f'  subgraph p{n} ["pipeline"]'] + ["    " + node(i) for i in g] + ["  end"]
        lines += [f"  t{i + 1} {_MERMAID_ARROWS[kinds[0]]}|{', '.join(kinds)}| t{j + 1}"
                  for i, j, kinds in edges]
        if always:
            lines.append(f"  linkStyle {','.join(map(str, always))} stroke:#d33,color:#d33")
        return "\n".join(lines) + "\n"

    def node(i):
        label = _dot_text(f"{tasks[i].key}\n{tasks[i].type}")
        return f"t{i + 1} [label={label}];"
    lines = [f"digraph {_dot_text(playbook.name)} {{", "  node [shape=box];"]
    lines += ["  " + node(i) for i in alone]
    for n, g in enumerate(pipelines, 1):
        lines += [f"  subgraph cluster_p{n} {{", '    label="pipeline"; style=dashed;']
        lines += ["    " + node(i) for i in g] + ["  }"]
    for n, (i, j, kinds) in enumerate(edges):
        colour = ', color="#dd3333", fontcolor="#dd3333"' if n in always else ""
        lines.append(f"  t{i + 1} -> t{j + 1} [label={_dot_text(', '.join(kinds))}, "
                     f"style={_DOT_STYLES[kinds[0]]}{colour}];")
    return "\n".join(lines + ["}"]) + "\n"


# -- the schedule: the DAG as a run walks it, after graphlib.TopologicalSorter

class _Schedule:
    """Which pipelines may start, as the tasks of a run end.

    get_ready() hands out the pipelines whose needs have all ended, done(i)
    counts a task that ran down for the pipelines waiting for it, skip(i)
    takes out a task that will never start.  A task that failed or was
    skipped skips what streams from it and what needs it, but failure
    handlers (always: true); done and skip return what they skipped, with
    why, in order, for the engine to record.
    """

    def __init__(self, playbook):
        self.tasks = tasks = playbook.tasks
        self.consumers = playbook.consumers     # task -> the tasks streaming from it
        self.groups = groups = [sorted(g) for g in playbook.pipelines]
        self.group_of = {i: g for g, members in enumerate(groups) for i in members}
        self._waiting = [0] * len(groups)       # a pipeline's needs not ended yet
        self._dependents = {t.index: [] for t in tasks}     # task -> the pipelines needing it
        for g, members in enumerate(groups):
            needs = {d for i in members for d in tasks[i].needs} - set(members)
            self._waiting[g] = len(needs)
            for d in needs:
                self._dependents[d].append(g)
        self._started = [False] * len(groups)   # or all of it skipped
        self._left = [len(members) for members in groups]  # members not skipped
        self._skipped = [False] * len(tasks)
        self._ready = deque(sorted((g for g in range(len(groups)) if not self._waiting[g]),
                                   key=lambda g: groups[g][0]))

    def get_ready(self, room):
        """Mark started and return the pipelines ready to start (each a list of its
        members, but the skipped), while ``room``, how many more tasks may start, lasts."""
        ready = []
        while self._ready and room > 0:
            g = self._ready.popleft()
            if self._started[g]:                # all of it skipped meanwhile (a halt)
                continue
            self._started[g] = True
            members = [i for i in self.groups[g] if not self._skipped[i]]
            ready.append(members)
            room -= len(members)
        return ready

    def done(self, i, failed=False):
        """Task i ran and ended; return [(task, why)] it skips (what needs it, if it failed)."""
        if not self._dependents[i]:
            return []                           # nothing waits for most tasks: be quick
        skipped = []
        reason = f"dependency '{self.tasks[i].key}' failed" if failed else None
        for m, why in self._release(i, reason):
            self._skip(m, why, skipped)
        return skipped

    def skip(self, i, reason):
        """Skip task i, which never started; return [(task, why)] skipped, i first."""
        skipped = []
        self._skip(i, reason, skipped)
        return skipped

    def unstarted(self):
        """Yield the tasks neither started nor skipped (as they are when each is reached)."""
        for g, members in enumerate(self.groups):
            if not self._started[g]:
                for i in members:
                    if not self._skipped[i]:
                        yield i

    def _skip(self, i, reason, skipped):
        todo = [(i, reason)]                    # a loop, not recursion: chains can be long
        while todo:
            i, reason = todo.pop()
            if self._skipped[i]:
                continue
            self._skipped[i] = True
            skipped.append((i, reason))
            g = self.group_of[i]
            self._left[g] -= 1
            if not self._left[g]:
                self._started[g] = True         # nothing of its pipeline is left to start
            if not reason.startswith("dependency"):
                reason = f"dependency '{self.tasks[i].key}' was skipped ({reason})"
            todo += [(c, reason) for c in self.consumers[i]]
            todo += self._release(i, reason)

    def _release(self, i, reason):
        """Count task i down for the pipelines that need it.

        Returns the tasks to skip, with why: those that need i and are no
        failure handlers, if i failed or was skipped (``reason``); in a
        pipeline only that member and what streams from it are skipped.
        """
        skips = []
        for g in self._dependents[i]:
            if self._started[g]:
                continue
            if reason is not None:
                skips += [(m, reason) for m in self.groups[g]
                          if i in self.tasks[m].needs and not self.tasks[m].always]
            self._waiting[g] -= 1
            if not self._waiting[g]:
                self._ready.append(g)           # get_ready passes it by if all of it is skipped
        return skips


# ---------------------------------------------------------------- modules

_MODULES = {}                   # module type name -> factory
# The built-in modules' package sits next to this file: vendored as pkg.gxo, it is
# pkg.gxo_modules, so two copies of gxo in one process keep their own modules.
_PACKAGE = (__spec__.parent + "." if __spec__ and __spec__.parent else "") + "gxo_modules"
_USER_FILES = set()             # module files from modules folders imported so far


def _builtin_clash(name, where):
    return GxoError(f"module type '{name}' is built in ({where}): a module cannot replace it; "
                    "pick another name")


def register(name, factory=None):
    """Register a module factory (usually a Module subclass) under a type name.

    Use as ``register("name", Factory)`` or as a class decorator
    ``@register("name")``.  A name can be registered once; a module file
    that registers a built-in type's name is an error (GxoError).
    """
    def add(factory):
        old = _MODULES.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (
                factory.__module__, factory.__qualname__):
            where = getattr(sys.modules.get(old.__module__), "__file__", None) or old.__module__
            if old.__module__.rpartition(".")[0].rpartition(".")[2] == "gxo_modules":
                raise _builtin_clash(name, where)
            raise GxoError(f"module type '{name}' is already registered by {where}")
        _MODULES[name] = factory
        return factory
    return add if factory is None else add(factory)


class Module:
    """Base class of gxo modules.

    ``parse_params`` reads the params with a Params helper and returns what
    ``perform`` receives; gxo calls it before anything runs (on the raw
    params, to catch mistakes early) and again on the rendered params.
    ``raw_params`` names params that gxo must not render (the module renders
    them itself, for instance once per record).  ``supports_dry_run`` says
    that ``perform`` honours ``ctx.dry_run`` (changes nothing then); in a
    dry run gxo calls no other module, it logs what would run.  A
    ``perform`` that returns has completed; once ``ctx.cancelled`` it should
    stop and raise (``ctx.check()``).
    """

    raw_params = ()
    supports_dry_run = False

    def parse_params(self, params):
        return params.all()

    def perform(self, ctx, params, state, input, outputs, errors):
        """Do the work; return a summary (JSON-like) or raise to fail the task.

        ``state`` is a read-only mapping; ``input`` is None or an iterable of
        records ending at end of stream; ``outputs`` is a list of channels,
        one per consumer: put each record on every one, in list order (each
        but the last copies it), and do not change a record once put;
        ``errors`` takes RecordProcessingError for records that could not be
        processed.
        """
        raise NotImplementedError


def _as_kernel(load, *args):
    """Call load(*args) with 'import gxo' meaning this module, even if another copy is loaded."""
    saved = sys.modules.get("gxo")
    sys.modules["gxo"] = sys.modules[__name__]
    try:
        return load(*args)
    finally:
        if saved is not None:
            sys.modules["gxo"] = saved


class _ModuleFinder:
    """Finds module types: registered ones, then in NAME.py, then in any module file.

    Module files are the built-in package (next to this file, a folder or
    inside a zip, else an installed one) and the .py files of the modules
    folders (-modules-dir, then $GXO_MODULES_PATH).  A file may register any
    types under any names; a type that NAME.py does not register is looked
    for by importing every file, once.
    """

    def __init__(self, dirs=()):
        env = os.environ.get("GXO_MODULES_PATH", "")
        self.dirs = ([(os.fspath(d), "-modules-dir") for d in dirs]
                     + [(d, "GXO_MODULES_PATH") for d in env.split(os.pathsep) if d])
        for d, source in self.dirs:
            if not os.path.isdir(d):
                raise PlaybookError(f"{source} {d}: no such folder")
        self.found = {}             # type name -> factory, for this playbook's many tasks

    def find(self, name):
        if name in self.found:
            return self.found[name]
        if _IDENT_RE.match(name):
            if name not in _MODULES:
                self._builtin(name)
            for d, _ in self.dirs:      # even for a known type: a user file may clash with it
                self._user_file(os.path.join(d, name + ".py"))
        if name not in _MODULES:
            self._all_files()
        if name not in _MODULES:
            known = sorted(_MODULES)
            raise PlaybookError(f"unknown module type '{name}'" + _suggest(name, known)
                                + f"; known types: {', '.join(known)}")
        factory = self.found[name] = _MODULES[name]
        return factory

    def _package(self):
        pkg = sys.modules.get(_PACKAGE)
        if pkg is not None:
            return pkg
        import importlib.machinery
        import importlib.util
        here = os.path.dirname(os.path.abspath(__file__))
        spec = importlib.machinery.PathFinder.find_spec(_PACKAGE, [here])
        if spec is None:
            try:
                return _as_kernel(importlib.import_module, "gxo_modules")
            except ImportError:
                raise PlaybookError("cannot find the gxo_modules package: keep the gxo_modules/ "
                                    f"folder next to gxo.py (looked in {here}) or install gxo "
                                    "with pip") from None
        if not hasattr(spec.loader, "exec_module"):     # zipimport before 3.10; the zip
            return _as_kernel(importlib.import_module, _PACKAGE)    # is on sys.path then
        pkg = sys.modules[_PACKAGE] = importlib.util.module_from_spec(spec)
        try:
            _as_kernel(spec.loader.exec_module, pkg)
        except BaseException:
            del sys.modules[_PACKAGE]
            raise
        return pkg

    def _builtin(self, name):
        import importlib
        module = f"{self._package().__name__}.{name}"
        try:
            _as_kernel(importlib.import_module, module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise

    def _all_builtins(self):
        import importlib
        import pkgutil
        pkg = self._package()
        for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            if not info.name.rpartition(".")[2].startswith("_"):
                _as_kernel(importlib.import_module, info.name)

    def _all_files(self):
        self._all_builtins()
        for d, source in self.dirs:
            try:
                files = sorted(os.listdir(d))
            except OSError as e:
                raise PlaybookError(f"{source} {d}: cannot read the folder: {e.strerror}") from None
            for f in files:
                if f.endswith(".py") and not f.startswith(("_", ".")):
                    self._user_file(os.path.join(d, f))

    def _user_file(self, path):
        """Import a module file of a modules folder, once."""
        path = os.path.abspath(path)
        if path in _USER_FILES or not os.path.isfile(path):
            return
        import importlib.util
        stem = os.path.basename(path)[:-3]
        name = f"gxo_user_modules.{stem}"
        for n in itertools.count(2):
            if name not in sys.modules:
                break
            name = f"gxo_user_modules.{stem}_{n}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        before = set(_MODULES)
        try:
            _as_kernel(spec.loader.exec_module, module)
            # A built-in type already imported refused the name in register();
            # one not imported yet is found by its file name.
            for new in sorted(set(_MODULES) - before):
                builtin = _IDENT_RE.match(new) and importlib.util.find_spec(
                    f"{self._package().__name__}.{new}")
                if builtin:
                    raise _builtin_clash(new, builtin.origin)
        except Exception as e:
            for new in set(_MODULES) - before:
                del _MODULES[new]
            del sys.modules[name]
            why = str(e) if isinstance(e, GxoError) else f"{type(e).__name__}: {e}"
            raise PlaybookError(f"cannot load module file {path}: {why}") from None
        _USER_FILES.add(path)


_MISSING = object()


class Params:
    """Typed access to a task's params, for Module.parse_params.

    Each getter checks one param and raises ParamError naming it;
    ``finish`` rejects the params no getter asked for.  Before the run the
    params are raw: a value that is still a template passes any check.
    ``raw`` are the params as written, to tell what a template made (a
    rendered list is text to a text param) from what was written as is.
    """

    def __init__(self, params, static=False, delimiters=_DEFAULT_DELIMITERS, raw=None):
        self._params, self._static, self._left = params, static, delimiters[0]
        self._raw = params if static else raw
        self._seen = []

    def _get(self, name, required, text=False):
        self._seen.append(name)
        value = self._params.get(name)
        if value is None and not (text and self._rendered(name)):
            if required:
                typo = _suggest(name, [k for k in self._params if k != name])
                raise ParamError(name, "is required" + typo.replace("did you mean", "is", 1)
                                 .replace("?)", " a typo of it?)"))
            return _MISSING
        return value

    def unrendered(self, value):
        """True for a template left for later (params are checked before rendering too)."""
        return self._static and isinstance(value, str) and self._left in value

    def _rendered(self, path):
        """Whether the value at path ('args[0]') came out of a template."""
        raw = self._raw
        # A plain name (most of them, and every param not given) needs no parsing.
        for key in _path_parts(path) if "." in path or "[" in path else (path,):
            try:
                raw = raw[key]
            except (KeyError, IndexError, TypeError):
                return False
            if isinstance(raw, str):
                return self._left in raw
        return False

    def text(self, path, value):
        """The text of the value at path ('args[0]', 'environment.HOME'): what a
        template prints for it (true, 1e+06, JSON, empty for null), the same
        whether a template made it or it was written as a number or a bool.
        A list, mapping or null written as is is refused: it is a mistake."""
        if type(value) is str:
            return value
        if (value is None or isinstance(value, (list, tuple, Mapping))) \
                and not self._rendered(path):
            raise ParamError(path, f"expected a string, got {_describe(value)}")
        return format_value(value)

    def str(self, name, default=None, required=False, choices=None):
        """Text (see ``text``): a rendered or written number, bool, list or
        map is the text a template prints for it; a rendered null is ''."""
        value = self._get(name, required, text=True)
        if value is _MISSING or self.unrendered(value):
            return default if value is _MISSING else value
        value = self.text(name, value)
        if choices and value not in choices:
            raise ParamError(name, f"expected one of {', '.join(choices)}, got {_excerpt(value)}"
                             + _suggest(value, choices))
        return value

    def int(self, name, default=None, required=False, min=None):
        """An integer (or text of one, as rendered templates give)."""
        value = self._get(name, required)
        if value is _MISSING or self.unrendered(value):
            return default if value is _MISSING else value
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ParamError(name, f"expected an integer, got {_describe(value)}")
        if min is not None and value < min:
            raise ParamError(name, f"must be at least {min}, got {value}")
        return value

    def bool(self, name, default=False):
        """true or false (or their text)."""
        value = self._get(name, False)
        if value is _MISSING or self.unrendered(value):
            return default if value is _MISSING else value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise ParamError(name, f"expected true or false, got {_describe(value)}")
        return value

    def list_of_str(self, name, default=(), required=False):
        """A list of texts (each item as ``text`` reads it)."""
        value = self._get(name, required)
        if value is _MISSING or self.unrendered(value):
            return list(default) if value is _MISSING else value
        if not isinstance(value, (list, tuple)):
            hint = " (write a YAML list: [a, b])" if isinstance(value, str) else ""
            raise ParamError(name, f"expected a list of strings, got {_describe(value)}{hint}")
        return [v if self.unrendered(v) else self.text(f"{name}[{i}]", v)
                for i, v in enumerate(value)]

    def list(self, name, default=None, required=False):
        """A list of anything."""
        value = self._get(name, required)
        if value is _MISSING or self.unrendered(value):
            return default if value is _MISSING else value
        if not isinstance(value, (list, tuple)):
            raise ParamError(name, f"expected a list, got {_describe(value)}")
        return value

    def map(self, name, default=None, required=False):
        """A mapping."""
        value = self._get(name, required)
        if value is _MISSING or self.unrendered(value):
            return default if value is _MISSING else value
        if not isinstance(value, dict):
            raise ParamError(name, f"expected a mapping, got {_describe(value)}")
        return value

    def any(self, name, default=None, required=False):
        """Any value."""
        value = self._get(name, required)
        return default if value is _MISSING else value

    def all(self):
        """Every param as given (for modules that take anything)."""
        self._seen.extend(self._params)
        return dict(self._params)

    def finish(self):
        """Reject params that no getter asked for."""
        for name in self._params:
            if name not in self._seen:
                raise ParamError(name, "unknown param" + _suggest(name, self._seen)
                                 + (f"; expected one of: {', '.join(self._seen)}" if self._seen
                                    else "; this module takes no params"))


# ---------------------------------------------------------------- playbook loading and validation

_DURATION_RE = re.compile(r"(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}
_MAX_DURATION = 8760 * 3600.0      # a year: more is a mistake (and overflows waits)
_MAX_NAME = 128                     # names head every log line of their task
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _parse_duration(text):
    """Seconds in a Go duration string ('1.5s', '300ms', '1m30s'), at most a year."""
    text = text.strip()
    if text in ("0", "+0", "-0"):
        return 0.0
    body = text[1:] if text[:1] in "+-" else text
    parts = _DURATION_RE.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"invalid duration {_excerpt(text)} (use Go's form, like 300ms, 1.5s, 1m30s)")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds > _MAX_DURATION:
        raise ValueError(f"duration {_excerpt(text)} is too long: at most 8760h (a year)")
    return -seconds if text.startswith("-") else seconds


class Task:
    """One task of a playbook, validated and ready to run."""

    __slots__ = ("index", "name", "key", "label", "type", "params", "register",
                 "stream_input", "ignore_errors", "when", "loop", "loop_var",
                 "index_var", "parallel", "attempts", "delay", "retry_on_error",
                 "depends_on", "timeout", "always", "module", "compiled_params",
                 "compiled_when", "compiled_loop", "reads", "needs", "edges", "no_log", "executor")

    def __init__(self, index):
        self.index = index
        self.name = self.register = self.stream_input = None
        self.when = self.loop = self.timeout = self.module = self.executor = None
        self.params = {}
        self.ignore_errors = self.always = self.no_log = False
        self.loop_var, self.index_var, self.parallel = "item", None, 1
        self.attempts, self.delay, self.retry_on_error = 1, 1.0, True
        self.depends_on = []
        self.compiled_params = self.compiled_when = self.compiled_loop = None
        self.reads = set()          # (kind, index) of each task it references (_EDGE_KINDS)
        self.needs = set()          # indexes of tasks it must wait for (made by _link)
        self.edges = {}             # index -> the kinds of its edge to that task (by _link)

    def __repr__(self):
        return f"<Task {self.label}>"


class Playbook:
    """A loaded, validated playbook: its tasks (with their edges) and vars.

    ``consumers`` maps a task index to the indexes of the tasks streaming
    from it; ``pipelines`` lists the groups of tasks joined by streams.
    """

    def __init__(self, name, file, tasks, vars, delimiters, dir):
        self.name, self.file, self.tasks, self.dir = name, file, tasks, dir
        self.vars, self.delimiters = vars, delimiters
        self.warnings = []          # load-time notes ('file:line:col: ...'), logged by Engine.run
        self.consumers = _link(tasks)
        self.pipelines = _pipelines(tasks, self.consumers)


_TOP_KEYS = ("name", "templating", "vars", "tasks")
_TASK_KEYS = ("name", "type", "params", "register", "stream_input", "ignore_errors",
              "when", "loop", "loop_control", "retry", "depends_on", "timeout", "always",
              "no_log", "executor")
_LOOP_KEYS = ("parallel", "loop_var", "index_var")
_RETRY_KEYS = ("attempts", "delay", "on_error")
_OTHER_SYNTAX = re.compile(r"\{\{-?\s*[.$A-Za-z_][^{}]*\}\}")     # {{ .x }}, {{ x }}


def _read_text(path, cannot, not_utf8):
    """A UTF-8 file's text; else a PlaybookError that names it and says why."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise PlaybookError(f"{cannot}: {e.strerror}", file=path) from None
    except UnicodeDecodeError:
        raise PlaybookError(not_utf8, file=path) from None


def _strings(value, path, container, key):
    """Yield (path, container, key, text) for every string inside a YAML value."""
    if isinstance(value, str):
        yield path, container, key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}", value, k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]", value, i)


def _yaml_value(text, name):
    """A -var's text read as YAML, or None if it is not valid YAML."""
    try:
        return _Document(text, f"-var {name}").root
    except PlaybookError:
        return None


def _var_file(path):
    """Read a -var-file: a YAML mapping of variable names to typed values (None if empty)."""
    path = os.fspath(path)
    text = _read_text(path, "-var-file: cannot read it", "-var-file: not UTF-8 text")
    try:
        doc = _Document(text, path)
    except PlaybookError as e:
        if e.line is None and e.message.endswith("is empty"):
            return None             # nothing but comments: no values
        raise
    if not isinstance(doc.root, dict):
        raise doc.error(doc.node(doc.root), "-var-file: expected a mapping of variable names "
                        f"to values, got {_describe(doc.root)}")
    return doc


def _walk(container, keys):
    """The deepest (container, key) along ``keys`` that exists in the value."""
    found = (container, None)
    for k in keys:
        try:
            value = container[k]
        except (KeyError, IndexError, TypeError):
            break
        found, container = (container, k), value
    return found


class _Loader:
    """Checks a parsed playbook document and builds the Playbook."""

    def __init__(self, doc, cli_vars, modules_dirs, var_files=()):
        self.doc, self.cli_vars = doc, cli_vars
        for name, value in cli_vars.items():
            _secrets.add_named(name, value)
        self.playbook_dir = (os.path.dirname(os.path.abspath(doc.file)) if doc.file != "<playbook>"
                             else os.getcwd())
        self.registry = _ModuleFinder(modules_dirs)
        self.var_files = [d for d in map(_var_file, var_files) if d is not None]
        self.delimiters = _DEFAULT_DELIMITERS   # the playbook's own, once 'templating' is read
        self.task_keys = {}         # task name -> Task, filled by link
        self.registers = {}         # register key -> Task, filled by link
        self.read = set()           # root names that templates read
        self.warnings = []
        self.templates = {}         # task index -> [(field, path, container, key, template)]

    def fail(self, container, key, message, task=None, field=None, at_key=False):
        node = (self.doc.key_node(container, key) if at_key
                else self.doc.node(container, key))
        return self.doc.error(node, message, task=task and task.label, field=field)

    def check_keys(self, mapping, allowed, task=None, field=None):
        for key in mapping:
            if key not in allowed:
                what = f"unknown key {_excerpt(key)}" + _suggest(key, allowed)
                raise self.fail(mapping, key, what + f"; expected one of: {', '.join(allowed)}",
                                task, field and f"{field}.{key}" or None, at_key=True)

    def expect(self, container, key, kinds, what, task=None, field=None):
        value = container[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.fail(container, key, f"expected {what}, got {_describe(value)}",
                            task, field or key)
        return value

    def check_name(self, container, key, task=None):
        """A name heads its task's log lines: one line, not too long."""
        name = container[key]
        if len(name) > _MAX_NAME or _CONTROL_RE.search(name):
            raise self.fail(container, key, f"a name is one line of at most {_MAX_NAME} "
                            f"characters, got {_describe(name)}", task, key)

    def playbook(self):
        root = self.doc.root
        if not isinstance(root, dict):
            raise self.doc.error(self.doc.node(root), "a playbook is a mapping with 'name' and 'tasks'")
        self.check_keys(root, _TOP_KEYS)
        for key in ("name", "tasks"):
            if key not in root:
                raise self.doc.error(self.doc.node(root), f"missing required key '{key}'")
        name = self.expect(root, "name", str, "a string")
        self.check_name(root, "name")
        self.delimiters = self.templating(root.get("templating"), root)
        raw_tasks = self.expect(root, "tasks", list, "a list of tasks")
        if not raw_tasks:
            raise self.fail(root, "tasks", "a playbook needs at least one task", field="tasks")
        raw_vars = root.get("vars") or {}
        if "vars" in root:
            self.expect(root, "vars", (dict, type(None)), "a mapping of variables")
        for key, value in raw_vars.items():     # before any error could echo them
            _secrets.add_named(key, value)
        tasks = [self.task(i, raw, raw_tasks) for i, raw in enumerate(raw_tasks)]
        self.link(tasks)
        vars = self.render_vars(raw_vars)
        for key, value in vars.items():
            _secrets.add_named(key, value)
        defined = set(vars) | {"_gxo"}
        for t in tasks:
            self.check_templates(t, defined)
        self.check_override_names(raw_vars)
        playbook = Playbook(name, self.doc.file, tasks, vars, self.delimiters, self.playbook_dir)
        playbook.warnings.extend(str(w) for w in sorted(self.warnings, key=lambda w: w.line or 0))
        cycle = _find_cycle(tasks, playbook.pipelines)
        if cycle:
            message, i = cycle
            raise self.fail(raw_tasks, i, message, tasks[i])
        return playbook

    def templating(self, conf, root):
        if conf is None:
            return _DEFAULT_DELIMITERS
        self.expect(root, "templating", dict, "a mapping", field="templating")
        self.check_keys(conf, ("engine", "delimiters"), field="templating")
        if conf.get("engine", "go") != "go":
            raise self.fail(conf, "engine", "only the 'go' template engine is supported",
                            field="templating.engine")
        delims = conf.get("delimiters", list(_DEFAULT_DELIMITERS))
        if (not isinstance(delims, list) or len(delims) != 2
                or not all(isinstance(d, str) and d.strip() for d in delims)):
            raise self.fail(conf, "delimiters", 'expected two strings, like ["{{", "}}"]',
                            field="templating.delimiters")
        return tuple(delims)

    # -- one task

    def task(self, index, raw, raw_tasks):
        t = Task(index)
        t.label = f"task #{index + 1}"
        if not isinstance(raw, dict):
            raise self.fail(raw_tasks, index, f"a task is a mapping with 'type' and 'params', "
                            f"got {_describe(raw)}", t)
        if isinstance(raw.get("name"), str):
            t.name = raw["name"]
            t.label = f"task {_excerpt(t.name)} (#{index + 1})"
        self.check_keys(raw, _TASK_KEYS, t)
        if "name" in raw:
            if not raw["name"] or not isinstance(raw["name"], str):
                raise self.fail(raw, "name", "expected a non-empty string", t, "name")
            self.check_name(raw, "name", t)
        t.key = t.name if t.name is not None else f"#{index + 1}"
        if "type" not in raw:
            raise self.fail(raw_tasks, index, "missing required key 'type' (the module to run, "
                            "e.g. exec)", t)
        t.type = self.expect(raw, "type", str, "a module name", t)
        try:
            t.module = self.registry.find(t.type)
        except PlaybookError as e:
            raise self.fail(raw, "type", e.message, t, "type") from None
        if raw.get("params") is not None:
            t.params = self.expect(raw, "params", dict, "a mapping of module params", t)
        for key in ("register", "stream_input"):
            if raw.get(key) is not None:
                setattr(t, key, self.expect(raw, key, str, "a string", t))
        if t.register is not None and not _IDENT_RE.match(t.register):
            raise self.fail(raw, "register", f"{_excerpt(t.register)} is not a usable variable name "
                            "(letters, digits and _, not starting with a digit)", t, "register")
        if t.register == "_gxo":
            raise self.fail(raw, "register", "'_gxo' is reserved for gxo's own state", t, "register")
        if t.register is not None and t.name is None:
            raise self.fail(raw, "register", "a task with 'register' needs a 'name'", t, "register")
        for key in ("ignore_errors", "always", "no_log"):
            if key in raw:
                setattr(t, key, self.expect(raw, key, bool, "true or false", t))
        if raw.get("when") is not None:
            t.when = self.expect(raw, "when", (str, bool, int, float), "a condition", t)
        if raw.get("loop") is not None:
            t.loop = self.expect(raw, "loop", (list, dict, str),
                                 "a list, a mapping or a template resolving to a list", t)
        if raw.get("depends_on") is not None:
            deps = raw["depends_on"]
            deps = [deps] if isinstance(deps, str) else deps
            if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
                raise self.fail(raw, "depends_on", "expected a task name or a list of task names, "
                                f"got {_describe(raw['depends_on'])}", t, "depends_on")
            t.depends_on = deps
        if raw.get("timeout") is not None:
            t.timeout = self.duration(raw, "timeout", t, "timeout")
            if t.timeout <= 0:
                raise self.fail(raw, "timeout", "must be positive", t, "timeout")
        if raw.get("executor") is not None:
            if raw["executor"] != "local":
                raise self.fail(raw, "executor", "a task can only pin itself to this machine: "
                                f"expected 'local', got {_describe(raw['executor'])} (-executor "
                                "chooses where the other exec tasks run)", t, "executor")
            t.executor = "local"
        if raw.get("loop_control") is not None:
            self.loop_control(t, self.expect(raw, "loop_control", dict, "a mapping", t))
        if raw.get("retry") is not None:
            self.retry(t, self.expect(raw, "retry", dict, "a mapping", t))
        self.compile(t, raw)
        return t

    def duration(self, mapping, key, t, field):
        value = mapping[key]
        if isinstance(value, str):
            try:
                return _parse_duration(value)
            except ValueError as e:
                raise self.fail(mapping, key, str(e), t, field) from None
        hint = f" (did you mean {_excerpt(f'{value}s')}?)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise self.fail(mapping, key, f"expected a duration like '30s', got {_describe(value)}{hint}",
                        t, field)

    def loop_control(self, t, conf):
        self.check_keys(conf, _LOOP_KEYS, t, "loop_control")
        if "parallel" in conf:
            t.parallel = self.expect(conf, "parallel", int, "a positive integer", t,
                                     "loop_control.parallel")
            if t.parallel < 1:
                raise self.fail(conf, "parallel", "must be at least 1", t, "loop_control.parallel")
        for key in ("loop_var", "index_var"):
            if key in conf:
                name = self.expect(conf, key, str, "a variable name", t, f"loop_control.{key}")
                if not _IDENT_RE.match(name) or name == "_gxo":
                    raise self.fail(conf, key, f"{_excerpt(name)} is not a usable variable name", t,
                                    f"loop_control.{key}")
                setattr(t, key, name)

    def retry(self, t, conf):
        self.check_keys(conf, _RETRY_KEYS, t, "retry")
        if "attempts" in conf:
            t.attempts = self.expect(conf, "attempts", int, "a positive integer", t, "retry.attempts")
            if t.attempts < 1:
                raise self.fail(conf, "attempts", "must be at least 1", t, "retry.attempts")
        if "delay" in conf:
            t.delay = self.duration(conf, "delay", t, "retry.delay")
            if t.delay < 0:
                raise self.fail(conf, "delay", "must not be negative", t, "retry.delay")
        if "on_error" in conf:
            t.retry_on_error = self.expect(conf, "on_error", bool, "true or false", t, "retry.on_error")

    def compile(self, t, raw):
        """Parse every template of the task and check its params statically."""
        d = self.delimiters
        found = self.templates[t.index] = []      # for check_templates, once every var is known
        for field in ("when", "loop", "params"):
            for path, container, key, text in _strings(raw.get(field), field, raw, field):
                self.other_syntax(container, key, text, t, path)
                if d[0] in text:
                    try:
                        found.append((field, path, container, key, compile_template(text, d)))
                    except TemplateError as e:
                        raise self.fail(container, key, f"template error at {e}", t, path) from None
        t.compiled_params = _compile_value(t.params, d, getattr(t.module, "raw_params", ()))
        t.compiled_when = _compile_value(t.when, d) if t.when is not None else None
        t.compiled_loop = _compile_value(t.loop, d) if t.loop is not None else None
        module = t.module()
        if hasattr(module, "parse_params"):
            p = Params(t.params, static=True, delimiters=d)
            try:
                module.parse_params(p)
                p.finish()
            except ParamError as e:
                container, key = _walk(raw, ["params"] + _path_parts(e.param or ""))
                raise self.fail(container, key, e.message, t,
                                f"params.{e.param}" if e.param else "params") from None

    def other_syntax(self, container, key, text, t, field):
        """Warn of text like {{ .x }} under other delimiters: likely a template
        that will not render (but it may be meant for helm, so not an error)."""
        m = "{{" in text and self.delimiters[0] != "{{" and _OTHER_SYNTAX.search(text)
        if m:
            left, right = self.delimiters
            self.warnings.append(self.fail(
                container, key, f"'{m.group()}' is passed on as text, not rendered: templates "
                f"here are {left} .x {right}; for {{{{ }}}} templates set templating: "
                f'{{delimiters: ["{{{{", "}}}}"]}}', t, field))

    # -- the playbook as a whole

    def link(self, tasks):
        """Check names and references between tasks; record the stream and depends_on ones."""
        keys, registers = self.task_keys, self.registers
        for t in tasks:
            raw = self.doc.root["tasks"][t.index]
            if t.name is not None:
                if t.name in keys:
                    raise self.fail(raw, "name", f"duplicate task name {_excerpt(t.name)} (also "
                                    f"{keys[t.name].label})", t, "name")
                keys[t.name] = t
            if t.register is not None:
                if t.register in registers:
                    raise self.fail(raw, "register", f"register key {_excerpt(t.register)} is already "
                                    f"used by {registers[t.register].label}", t, "register")
                registers[t.register] = t
        for t in tasks:
            raw = self.doc.root["tasks"][t.index]
            if t.stream_input is not None:
                producer = self.named(keys, raw, "stream_input", t.stream_input, t)
                if producer is t:
                    raise self.fail(raw, "stream_input", "a task cannot stream from itself", t,
                                    "stream_input")
                if t.loop is not None:
                    raise self.fail(raw, "loop", "a task with stream_input cannot loop: the "
                                    "iterations would split one stream between them", t, "loop")
                t.reads.add(("stream", producer.index))
            for i, dep in enumerate(t.depends_on):
                container = raw["depends_on"] if isinstance(raw["depends_on"], list) else raw
                key = i if container is not raw else "depends_on"
                producer = self.named(keys, container, key, dep, t, "depends_on")
                t.reads.add(("depends_on", producer.index))
        clash = set(registers) & set(self.doc.root.get("vars") or {}).union(
            self.cli_vars, *(d.root for d in self.var_files))
        if clash:
            name = sorted(clash)[0]
            t = registers[name]
            raise self.fail(self.doc.root["tasks"][t.index], "register", f"register key {_excerpt(name)} "
                            "is also a playbook variable; pick another name", t, "register")

    def named(self, keys, container, key, name, t, field=None):
        if name not in keys:
            raise self.fail(container, key, f"no task named {_excerpt(name)}" + _suggest(name, keys),
                            t, field or key)
        return keys[name]

    def render_vars(self, raw_vars):
        """Render playbook vars in order; -var-file and -var values override and come first."""
        data = {}
        for doc in self.var_files:
            for name, value in doc.root.items():
                if not isinstance(name, str) or not _IDENT_RE.match(name) or name == "_gxo":
                    raise doc.error(doc.key_node(doc.root, name),
                                    f"-var-file: {_excerpt(str(name))} is not a usable variable name")
                data[name] = value
        for name, value in self.cli_vars.items():
            if not isinstance(name, str) or not _IDENT_RE.match(name) or name == "_gxo":
                raise PlaybookError(f"-var {_excerpt(str(name))}: not a usable variable name",
                                   file=self.doc.file)
            data[name] = self.typed_var(name, value, raw_vars) if isinstance(value, str) else value
        known = set(data)
        data["_gxo"] = {"playbook_dir": self.playbook_dir}
        for name, value in raw_vars.items():
            if not isinstance(name, str) or not _IDENT_RE.match(name) or name == "_gxo":
                raise self.fail(raw_vars, name, f"{_excerpt(name)} is not a usable variable name",
                                field=f"vars.{name}", at_key=True)
            if name in known:
                continue
            for path, container, key, text in _strings(value, f"vars.{name}", raw_vars, name):
                self.other_syntax(container, key, text, None, path)
            try:
                compiled = _compile_value(value, self.delimiters)
                for path in compiled.variables:
                    root = path.split(".", 1)[0]
                    self.read.add(root)
                    if root == "_gxo" and path != "_gxo.playbook_dir":
                        raise self.fail(raw_vars, name, f"vars can read only _gxo.playbook_dir, "
                                        f"not {_excerpt(path)}: vars are rendered before any task runs",
                                        field=f"vars.{name}")
                    if root not in known and root != "_gxo":
                        later = " (it is defined later: vars are rendered in order)" if root in raw_vars else ""
                        reg = " (registered by a task: vars are rendered before any task runs)" \
                            if root in self.registers else ""
                        raise self.fail(raw_vars, name, f"uses undefined variable {_excerpt(root)}"
                                        + (later or reg or _suggest(root, known)),
                                        field=f"vars.{name}")
                data[name] = compiled(data)
            except TemplateError as e:
                raise self.fail(raw_vars, name, f"template error at {e}", field=f"vars.{name}") from None
            known.add(name)
        del data["_gxo"]
        return {k: _freeze(v) for k, v in data.items()}

    def typed_var(self, name, text, raw_vars):
        """A -var's text as a value of the declared var's type (text if undeclared)."""
        declared = raw_vars.get(name)
        if name not in raw_vars or declared is None or isinstance(declared, str):
            # Undeclared: a YAML list or mapping if it reads as one (-var 'hosts=[a, b]').
            if name in raw_vars or not text.startswith(("[", "{")):
                return text
            value = _yaml_value(text, name)
            return value if isinstance(value, (list, dict)) else text
        kind = list if isinstance(declared, list) else dict if isinstance(declared, dict) \
            else type(declared)
        if kind in (list, dict):
            value = _yaml_value(text, name)
        else:
            value = _plain_scalar(text.strip()) if text.strip() else None
            if kind is float and type(value) is int:
                value = float(value)
        if not (isinstance(value, kind) if kind in (list, dict) else type(value) is kind):
            what = {bool: "true or false", int: "an integer", float: "a number",
                    list: "a YAML list, like [a, b]", dict: "a YAML mapping, like {k: v}"}[kind]
            raise self.fail(raw_vars, name, f"-var {name}: expected {what} (the type of the "
                            f"declared value), got {_describe(text)}", field=f"vars.{name}")
        return value

    def check_override_names(self, raw_vars):
        """A -var or -var-file key names a declared var or one that a template reads."""
        known = self.read | set(raw_vars)
        for doc in self.var_files:
            for name in doc.root:
                if name not in known:
                    raise doc.error(doc.key_node(doc.root, name), f"-var-file: the playbook has no "
                                    f"variable '{name}' (in vars or read by a template)"
                                    + _suggest(name, known))
        for name in self.cli_vars:
            if name not in known:
                raise PlaybookError(f"-var {name}: the playbook has no variable '{name}' (in vars "
                                    "or read by a template)" + _suggest(name, known),
                                    file=self.doc.file)

    def check_templates(self, t, defined):
        """Every variable a template reads must exist; record the register keys it reads."""
        item_vars = set()
        if t.loop is not None:
            item_vars = {t.loop_var} | ({t.index_var} if t.index_var else set())
        raw_keys = getattr(t.module, "raw_params", ())
        for field, path, container, key, template in self.templates.pop(t.index):
            scope = item_vars if field == "params" else ()
            # A raw param is rendered by its module with a record on top of
            # state: a name that is not in state may be a record's field.
            per_record = field == "params" and _path_parts(path)[1] in raw_keys
            for parts in sorted(template.paths):
                self.read.add(parts[0])
                if parts[0] == "_gxo":
                    self.check_status_path(t, parts, container, key, path)
                    continue
                if (parts[0] not in defined and parts[0] not in self.registers
                        and parts[0] not in scope and not per_record):
                    names = defined | set(self.registers) | set(scope)
                    raise self.fail(container, key, f"undefined variable {_excerpt(parts[0])}"
                                    + self.hint(t, parts[0], names, item_vars), t, path)
                producer = self.registers.get(parts[0])
                if producer is not None and parts[0] not in defined:
                    t.reads.add(("data", producer.index))

    def hint(self, t, name, names, item_vars):
        hint = _suggest(name, names)
        if not hint and name in item_vars:
            hint = f" ({_excerpt(name)} is the loop variable: it exists only in params)"
        elif not hint and name == "item" and t.loop is None:
            hint = " ('item' exists only in a task with 'loop')"
        return hint

    def check_status_path(self, t, parts, container, key, field):
        if len(parts) == 1:
            return
        if parts[1] == "playbook_dir" and len(parts) == 2:
            return
        if parts[1] != "tasks":
            raise self.fail(container, key, f"{_excerpt('_gxo.' + '.'.join(parts[1:]))} does not exist; "
                            "there are _gxo.tasks.NAME.status and _gxo.playbook_dir", t, field)
        if len(parts) > 2:
            name = parts[2]
            if name not in self.task_keys:
                raise self.fail(container, key, f"_gxo.tasks: no task named {_excerpt(name)}"
                                + _suggest(name, self.task_keys), t, field)
            if len(parts) > 3 and parts[3] != "status":
                raise self.fail(container, key, f"_gxo.tasks.{name} has only 'status', not "
                                f"{_excerpt(parts[3])}", t, field)
            t.reads.add(("status", self.task_keys[name].index))


def load_playbook(source, vars=None, *, modules_dirs=(), var_files=()):
    """Load and validate a playbook from a path or from YAML text.

    ``source`` is a path if it is an os.PathLike, or a str with no newline
    that does not start with '{'; any other str is the YAML text itself
    ("{name: x, tasks: [...]}" or several lines).  ``vars`` are the -var
    overrides (a string is typed like the var it sets), over the values of
    ``var_files`` (-var-file: YAML mappings, later ones win).  Raises
    PlaybookError, naming the file, line, task and field, if anything is
    wrong; nothing has run by then.
    """
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                           and not source.lstrip().startswith("{")):
        file, text = os.fspath(source), None
    else:
        file, text = "<playbook>", source
    import gc
    collecting = gc.isenabled()
    gc.disable()        # loading makes many objects and no garbage: collections are waste
    try:
        if text is None:
            text = _read_text(file, "cannot read the playbook", "the playbook is not UTF-8 text")
        return _Loader(_Document(text, file), dict(vars or {}), modules_dirs,
                       var_files).playbook()
    except MemoryError:
        pass            # reported below, once what was built is freed
    finally:
        if collecting:
            gc.enable()
    raise PlaybookError("out of memory while loading the playbook", file=file)


# ---------------------------------------------------------------- logging

DEBUG, INFO, WARN, ERROR = 10, 20, 30, 40
LEVELS = {"DEBUG": DEBUG, "INFO": INFO, "WARN": WARN, "ERROR": ERROR}   # the one level table
_LEVEL_NAMES = {n: name for name, n in LEVELS.items()}
# ANSI colours of the level names and status words (INFO stays plain).
_COLORS = {"DEBUG": "2", "WARN": "33", "ERROR": "1;31",
           COMPLETED: "32", FAILED: "31", SKIPPED: "36"}


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):      # no such method, or closed
        return False


def _color_wanted(stream):
    """Colour the log? NO_COLOR, then FORCE_COLOR, then TERM=dumb, then a TTY decides.

    The order CPython 3.13 uses for its own colour; any non-empty value counts.
    """
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return os.environ.get("TERM") != "dumb" and _isatty(stream)


class Logger:
    """Leveled log lines on a text stream (stderr by default), from any thread.

    ``format`` is ``text`` (a time, the level and the message) or ``json`` (one
    object per line: time, level, task, event, status, duration, message and
    any other fields given).  ``color`` paints level names and status words
    (text only).  On a TTY, ``progress`` shows a line that the next line
    written replaces.

    ``log(..., hold=True)`` keeps a line back until the next ``flush`` or
    unheld line (order is kept): the engine holds the line that ends a task
    and writes it with the next task's start, or when a worker goes idle, so
    a busy run makes one write per task, not two.  If the stream breaks (the
    reader of ``gxo ... 2>&1 | head`` is gone), logging stops and the run goes on.
    """

    def __init__(self, level="INFO", stream=None, *, format="text", color=False):
        name = str(level).upper()
        try:
            self.level = LEVELS["WARN" if name == "WARNING" else name]
        except KeyError:
            raise ValueError(f"unknown log level '{level}'; use DEBUG, INFO, WARN or ERROR") from None
        if format not in ("text", "json"):
            raise ValueError(f"unknown log format '{format}'; use text or json")
        self.stream, self.format = stream, format
        self.color = color and format == "text"
        self.tty = format == "text" and _isatty(stream or sys.stderr)
        self._lock = threading.Lock()
        self._held = []
        self._second, self._stamp = None, ""
        self._progress = False          # a progress line is on the screen
        self._broken = False            # the stream was closed under us
        if format == "json":
            import json
            self._dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode

    def log(self, level, message, hold=False, *, task=None, event="log", **fields):
        """Write one line; ``task``, ``event`` and ``fields`` are for the json format."""
        if level < self.level:
            return
        now = time.time()
        second = int(now)
        if second != self._second:      # strftime once a second, not once a line
            self._second, self._stamp = second, time.strftime(
                "%Y-%m-%dT%H:%M:%S" if self.format == "json" else "%H:%M:%S",
                (time.gmtime if self.format == "json" else time.localtime)(now))
        if self.format == "json":
            line = self._dumps({
                "time": f"{self._stamp}.{int(now % 1 * 1000):03d}Z", "level": _LEVEL_NAMES[level],
                "task": task, "event": event, "status": fields.pop("status", None),
                "duration": fields.pop("duration", None), "message": message, **fields}) + "\n"
        else:
            name = _LEVEL_NAMES[level]
            if self.color and level != INFO:
                name = self.paint(name) + " " * (5 - len(name))
            line = (f"{self._stamp}.{int(now % 1 * 1000):03d} {name:<5} "
                    + (f"[{task}] {message}\n" if task is not None else f"{message}\n"))
        line = _secrets.mask(line)
        with self._lock:
            if hold:
                self._held.append(line)
                return
            if self._held:
                line = "".join(self._held) + line
                self._held.clear()
            self._write(line)

    def flush(self):
        """Write the lines held back."""
        with self._lock:
            if self._held:
                self._write("".join(self._held))
                self._held.clear()

    def progress(self, text):
        """Show ``text`` on one updating line (a TTY at INFO only), cut to the screen's width."""
        if not self.tty or self.level > INFO:
            return
        out = self.stream or sys.stderr
        try:
            width = os.get_terminal_size(out.fileno()).columns or 80     # 0: size unknown
        except (AttributeError, ValueError, OSError):
            width = 80
        if len(text) >= width:
            text = text[:max(width - 4, 0)] + "..."
        with self._lock:
            held = "".join(self._held)
            self._held.clear()
            self._write(held + f"\r\x1b[K{text}", flush=True)
            self._progress = not self._broken

    def _write(self, text, flush=False):
        """Write (lock held), first erasing the progress line if one is shown.

        A stream closed under us (``gxo ... 2>&1 | head``) stops the logging,
        never the run.
        """
        if self._broken:
            return
        if self._progress and text:
            text, self._progress = "\r\x1b[K" + text, False
        stream = self.stream or sys.stderr
        try:
            stream.write(text)
            if flush:
                stream.flush()
        except (OSError, ValueError):
            self._broken = True

    def paint(self, word):
        """The word in its colour, if this log is coloured."""
        code = _COLORS.get(word) if self.color else None
        return f"\x1b[{code}m{word}\x1b[0m" if code else word

    def debug(self, message):
        self.log(DEBUG, message)

    def info(self, message):
        self.log(INFO, message)

    def warn(self, message):
        self.log(WARN, message)

    def error(self, message):
        self.log(ERROR, message)


class _TaskLog(Logger):
    """A logger for one task: its lines name the task.

    A ``no_log`` task's lines say only that they were hidden: modules and the
    runner write params, output and reasons into them.
    """

    def __init__(self, logger, name, hide=False):
        self.level, self._logger, self._task = logger.level, logger, name
        self._hide = hide

    def log(self, level, message):
        if level >= self.level:
            self._logger.log(level, _HIDDEN if self._hide else message, task=self._task)


def _utc(t):
    """An ISO 8601 UTC time with milliseconds: 2025-01-31T09:30:00.125Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


_REPORT_SCHEMA = "gxo-report/1"          # -report's "schema": docs/report.md


def _report_text(fields, tasks):
    """The report in pieces: ``fields``, then each (task, its items or None) of ``tasks``.

    One task, and one loop item, a line: the C encoder writes a big loop's
    report fast, and it still reads well.
    """
    import json
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    yield dumps({"schema": _REPORT_SCHEMA, "gxo": __version__, **fields})[:-1] + ',\n "tasks": ['
    for n, (task, items) in enumerate(tasks):
        yield ("," if n else "") + "\n  " + dumps(task)[:-1] + ', "items": '
        if items is None:
            yield "null}"
        else:
            yield "[" + ",".join("\n   " + dumps(item) for item in items) + "]}"
    yield "]}\n"


def _write_report(path, log, fields, tasks=()):
    """Write a -report file (``-``: stdout); a new file replaces the old one only when complete."""
    # Replace only a regular file: write through a symlink (/dev/stdout), a FIFO or a device.
    atomic = path != "-" and (not os.path.lexists(path)
                              or (os.path.isfile(path) and not os.path.islink(path)))
    tmp = f"{path}.tmp" if atomic else path
    try:
        if path == "-":
            sys.stdout.writelines(map(_secrets.mask, _report_text(fields, tasks)))
            sys.stdout.flush()
            return
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(map(_secrets.mask, _report_text(fields, tasks)))
        if atomic:
            os.replace(tmp, path)
    except OSError as e:
        log.error(f"cannot write the report {path}: {e.strerror or e}")
        if atomic and os.path.exists(tmp):
            os.remove(tmp)


def _progress(done, failed, total):
    return f"{done}/{total} items" + (f", {failed} failed" if failed else "")


class _Reporter:
    """What a run tells its operator, told by the engine step by step (doit's
    reporter is the model): the task start and end lines, loop progress, the
    recap, and the JSON report of ``-report FILE`` (docs/report.md).

    Loop progress (n/N, failures so far) shows once a loop has run a second:
    on a TTY as one updating line, at most once a second; otherwise (a file,
    a pipe, the json format) as a log line per loop at most every 5 seconds.
    """

    SCHEMA = _REPORT_SCHEMA
    EVERY_TTY, EVERY_PLAIN = 1.0, 5.0       # seconds between progress updates

    def __init__(self, log, playbook, dry_run=False, report=None):
        self.log, self.playbook, self.dry_run, self.report = log, playbook, dry_run, report
        self.start = time.time()
        self._lock = threading.Lock()       # guards _loops and _drawn
        self._loops = {}                    # a running loop's task key -> [done, failed, total, shown]
        self._drawn = 0.0                   # when the TTY progress line was last drawn
        self._items = {}                    # task index -> (items, outcomes), for the report

    def run_started(self):
        pb = self.playbook
        self.start = time.time()
        self.log.log(INFO, f"playbook '{pb.name}': {len(pb.tasks)} tasks"
                     + (" (dry run)" if self.dry_run else ""), event="run_started")

    def task_started(self, t):
        # Held: the engine writes it, with the end lines held, when the task runs.
        self.log.log(INFO, "started", hold=True, task=t.key, event="task_started")

    def loop_started(self, t, items):
        with self._lock:
            self._loops[t.key] = [0, 0, len(items), time.monotonic()]
        if self.report is not None:
            self._items[t.index] = (items, [None] * len(items))

    def item_ended(self, t, i, status, reason, attempts):
        """Count a loop item (and keep its outcome for the report); show progress when due."""
        if self.report is not None:
            self._items[t.index][1][i] = (status, reason, attempts)
        now, live = time.monotonic(), self.log.tty
        with self._lock:
            p = self._loops[t.key]
            p[0] += 1
            p[1] += status == FAILED
            if p[0] == p[2] or now - p[3] < (self.EVERY_TTY if live else self.EVERY_PLAIN):
                return
            if live:
                if now - self._drawn < self.EVERY_TTY:
                    return
                self._drawn = now
                text = "progress: " + "; ".join(f"[{k}] {_progress(*q[:3])}"
                                                for k, q in self._loops.items())
            p[3] = now
            done, failed, total = p[:3]
        if live:
            self.log.progress(text)
        else:
            self.log.log(INFO, _progress(done, failed, total), task=t.key, event="progress",
                         done=done, total=total, failed=failed)

    def task_ended(self, t, result):
        if t.key in self._loops:
            with self._lock:
                del self._loops[t.key]
        text = self.log.paint(result.status)
        if result.status != SKIPPED or result.duration:
            text += f" in {_seconds(result.duration)}"
        if result.reason:
            text += f": {result.reason}"
        if result.record_errors:
            text += f" ({_plural(result.record_errors, 'record error')})"
        level = ERROR if result.status == FAILED else INFO
        if result.status == FAILED and t.ignore_errors:
            text += " (ignored)"
            level = WARN
        self.log.log(level, text, hold=level == INFO, task=t.key, event="task_ended",
                     status=result.status, duration=round(result.duration, 3))

    def run_ended(self, result, halted):
        """The recap, and the report if asked for."""
        counts = result.counts()
        total = (", ".join(f"{n} {s}" for s, n in counts.items())
                 + f" in {_seconds(result.duration)}" + (f" ({halted})" if halted else ""))
        if self.log.format == "json":
            self.log.log(INFO, total, event="recap", duration=round(result.duration, 3),
                         counts=counts, exit_code=result.exit_code, halted=halted)
        else:
            width = max(len(r.name) for r in result.tasks.values())
            lines = [f"recap of '{self.playbook.name}':"]
            for r in result.tasks.values():
                pad = " " * (9 - len(r.status))
                line = (f"  {r.name:<{width}}  {self.log.paint(r.status)}{pad}"
                        f"  {_seconds(r.duration) if r.duration else '-':>7}")
                if r.attempts > 1:
                    line += f"  {r.attempts} attempts"
                if r.record_errors:
                    line += f"  {_plural(r.record_errors, 'record error')}"
                if r.reason:
                    line += f"  {r.reason}"
                lines.append(line)
            self.log.info("\n".join(lines + ["  " + total]))
        if self.report is not None:
            self._write(result, halted)

    def _write(self, result, halted):
        """Write the report (docs/report.md describes it)."""
        def items(index):
            for i, (item, outcome) in enumerate(zip(*self._items[index])):
                status, reason, attempts = outcome or (SKIPPED, "not started", 0)
                yield {"index": i, "item": _item_text(item), "status": status, "reason": reason,
                       "attempts": attempts}

        tasks = (({"name": r.name, "type": t.type, "status": r.status, "reason": r.reason,
                   "ignore_errors": t.ignore_errors, "duration": round(r.duration, 3),
                   "attempts": r.attempts, "record_errors": r.record_errors},
                  items(t.index) if t.index in self._items else None)
                 for t in self.playbook.tasks for r in (result.tasks[t.key],))
        _write_report(self.report, self.log, {
            "playbook": {"name": self.playbook.name, "file": self.playbook.file},
            "start": _utc(self.start), "duration": round(result.duration, 3),
            "exit_code": result.exit_code, "dry_run": self.dry_run, "halted": halted,
            "error": None, "counts": result.counts()}, tasks)


# ---------------------------------------------------------------- executors

class Executor:
    """Where exec calls run: this machine, or a cluster (``-executor``).

    ``submit(spec)`` starts one call and returns a handle:
    ``handle.result(timeout=None)`` waits for the call's result (TimeoutError
    after ``timeout`` seconds) and ``handle.cancel(grace)`` stops it: TERM
    its process group now, KILL it after ``grace`` seconds.  ``close()`` ends
    the executor; the engine opens one per run.  ``remote`` says whether
    calls leave this machine.  gxo_modules/_process.py describes specs and
    results.
    """

    remote = False

    def submit(self, spec):
        raise NotImplementedError

    def close(self):
        pass


class LocalExecutor(Executor):
    """Runs each call as a child process of gxo; the one thread that waits for its
    result serves its pipes (no thread of its own)."""

    def submit(self, spec):
        import importlib
        return importlib.import_module(_PACKAGE + "._process").Call(spec)


_LOCAL = LocalExecutor()
_EXECUTORS = "local, dask://HOST:PORT or dask://local?workers=N"


def _executor_target(value):
    """Check what -executor, GXO_EXECUTOR or Engine(executor=) asks for.

    Returns "local", a scheduler address "tcp://HOST:PORT", ("local",
    workers, threads) for a LocalCluster of gxo's own, or ``value`` itself if
    it is an Executor or a distributed.Client.  Raises ValueError.
    """
    if isinstance(value, Executor) or type(value).__module__.partition(".")[0] == "distributed":
        return value
    if value == "local":
        return value
    if isinstance(value, str) and value.startswith("dask://"):
        where, _, query = value[len("dask://"):].partition("?")
        if where == "local":
            sizes = {"workers": 2, "threads": 4}
            for item in filter(None, query.split("&")):
                key, _, n = item.partition("=")
                if key not in sizes or not n.isdigit() or int(n) < 1:
                    raise ValueError(f"dask://local takes workers=N and threads=N (N >= 1), "
                                     f"got {_describe(item)}")
                sizes[key] = int(n)
            return ("local", sizes["workers"], sizes["threads"])
        host, _, port = where.rpartition(":")
        if host and port.isdigit() and not query:
            return "tcp://" + where
    raise ValueError(f"expected {_EXECUTORS}, got {_describe(value)}")


def _open_executor(target, log):
    """Open the executor ``target`` names; returns it and whether the run must close it."""
    if isinstance(target, Executor):
        return target, False
    if target == "local":
        return _LOCAL, False
    try:
        import importlib
        _dask = _as_kernel(importlib.import_module, _PACKAGE + "._dask")
    except ImportError as e:
        raise GxoError(f"the dask executor needs Dask: pip install 'gxo[dask]' "
                       f"(or 'distributed'); {e}") from None
    return _dask.DaskExecutor(target, log), True


# ---------------------------------------------------------------- task context

class TaskContext:
    """What a module sees of the run while it performs one task.

    ``name``, ``dry_run``, ``log``, ``delimiters``, ``deadline``
    (time.monotonic() value or None), ``render`` and cancellation: ``cancelled``, ``wait(seconds)`` (wakes at once on
    cancel), ``on_cancel(fn)`` (fn(hard) is called when the task is cancelled,
    and again with hard=True if gxo must stop right away).  ``executor``: where
    exec calls run (the run's Executor; the local one for a task pinned with
    ``executor: local``).
    """

    executor = _LOCAL

    def __init__(self, name, log, dry_run=False, state=None, delimiters=_DEFAULT_DELIMITERS):
        self.name, self.log, self.dry_run = name, log, dry_run
        self.deadline = None
        self.reason = None
        self._state, self.delimiters = state, delimiters
        # A held lock is the cheapest event: cancel releases it, and each waiter
        # that gets it releases it again for the next one.
        self._gate = threading.Lock()
        self._gate.acquire()
        self._lock = threading.Lock()
        self._callbacks = []

    @property
    def cancelled(self):
        return self.reason is not None

    def wait(self, seconds):
        """Sleep up to ``seconds``; True if the task was cancelled meanwhile."""
        if self.reason is not None:
            return True
        if self._gate.acquire(timeout=max(0.0, seconds)):
            self._gate.release()
            return True
        return False

    def check(self):
        """Raise Cancelled if the task was cancelled."""
        if self.reason is not None:
            raise Cancelled(self.reason)

    def on_cancel(self, fn):
        """Call fn(hard) on cancellation (now, if already cancelled); returns an undo."""
        with self._lock:
            if self.reason is None:
                self._callbacks.append(fn)
                return lambda: self._callbacks.remove(fn) if fn in self._callbacks else None
        fn(False)
        return lambda: None

    def cancel(self, reason="cancelled", hard=False):
        """Cancel the task: wake its waits and run its on_cancel callbacks."""
        with self._lock:
            first = self.reason is None
            if first:
                self.reason = str(reason)
                self._gate.release()
            callbacks = list(self._callbacks)
        if first or hard:
            for fn in callbacks:
                try:
                    fn(hard)
                except Exception as e:      # one bad callback must not stop the others
                    self.log.debug(f"cancel callback failed: {e!r}")

    def render(self, text, scope=None):
        """Render a template with state (and ``scope`` on top) as its data."""
        data = self._state if scope is None else ChainMap(scope, self._state)
        return resolve(text, data, self.delimiters)


# ---------------------------------------------------------------- task runner

class TaskResult:
    """How one task ended: status, reason, duration (seconds), attempts."""

    __slots__ = ("name", "status", "reason", "duration", "attempts", "record_errors",
                 "summary")

    def __init__(self, name):
        self.name, self.status, self.reason = name, None, ""
        self.duration, self.attempts, self.record_errors = 0.0, 0, 0
        self.summary = None

    @property
    def ok(self):
        return self.status != FAILED

    def __repr__(self):
        return f"<TaskResult {self.name} {self.status} {self.reason!r}>"


def _reason(error, ctx):
    """One line saying why a module call failed."""
    if ctx.cancelled:
        return ctx.reason
    if isinstance(error, TemplateError):
        return f"template error at {error}"
    if isinstance(error, GxoError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return f"{type(error).__name__}: {error}"


class _Runner:
    """Runs one task: when -> loop -> (params, module call under retry) -> register."""

    def __init__(self, engine, task, ctx, result, input, outputs, errors):
        self.engine, self.t, self.ctx, self.result = engine, task, ctx, result
        self.input, self.outputs, self.errors = input, outputs, errors

    def run(self):
        """Return (status, reason, summary); a failure's summary is what its module gave."""
        t, ctx, data = self.t, self.ctx, self.engine.state.data
        if ctx.cancelled:                   # a halt, or its producer failed, before it ran
            return FAILED, ctx.reason, None
        if t.compiled_when is not None:
            try:
                go = truthy(t.compiled_when(data))
            except TemplateError as e:
                reason = self.why(e)
                ctx.log.warn(f"'when' could not be evaluated, skipping: {reason}")
                return SKIPPED, f"'when' failed: {reason}", None
            if not go:
                return SKIPPED, "'when' is false", None
        if t.compiled_loop is None:
            # A module that returns has completed, even if a halt arrives in the
            # same instant: a cancelled module raises (ctx.check()).
            try:
                return COMPLETED, "", self.call(data)
            except Exception as e:
                self.log_error(e)
                return FAILED, self.why(e), e.summary if isinstance(e, TaskError) else None
        try:
            items = self.items(data)
        except (TaskError, TemplateError) as e:
            return FAILED, self.why(e), None
        return self.loop(items, data)

    def items(self, data):
        items = self.t.compiled_loop(data)
        if isinstance(items, dict):
            return [{"key": k, "value": v} for k, v in items.items()]
        if isinstance(items, (list, tuple)):
            return list(items)
        raise TaskError(f"loop must be a list or a mapping, got {_describe(items)}")

    def loop(self, items, data):
        t, ctx = self.t, self.ctx
        # Per-item summaries only if registered: a loop of 10M items keeps nothing.
        summaries = [None] * len(items) if t.register is not None else None
        failures, shown, lock = [0], [], threading.Lock()   # count; the first three
        reporter = self.engine.reporter
        reporter.loop_started(t, items)

        def one(i):
            scope = {t.loop_var: items[i]}
            if t.index_var:
                scope[t.index_var] = i
            tries = [0]
            try:
                summary = self.call(ChainMap(scope, data), tries, i, items[i])
            except Exception as e:
                label = f"item {i} {_short(items[i])}"
                self.log_error(e, label + ": ")
                reason = self.why(e)
                with lock:
                    failures[0] += 1
                    shown.append((i, f"{label}: {reason}"))
                    if len(shown) > 3:
                        shown.sort()
                        shown.pop()
                if not ctx.cancelled:
                    ctx.log.warn(f"{label} failed: {reason}")
                summary = e.summary if isinstance(e, TaskError) else None
                reporter.item_ended(t, i, FAILED, reason, tries[0])
            else:
                reporter.item_ended(t, i, COMPLETED, "", tries[0])
            if summaries is not None:
                summaries[i] = summary

        if t.parallel > 1 and len(items) > 1:
            ran_all = self.engine.workers.map(one, len(items), self.engine.lanes(t), ctx)
        else:
            ran_all = True
            for i in range(len(items)):
                if ctx.cancelled:
                    ran_all = False
                    break
                one(i)
        if not ran_all or (failures[0] and ctx.cancelled):
            return FAILED, ctx.reason, summaries
        if failures[0]:
            more = f"; and {failures[0] - 3} more" if failures[0] > 3 else ""
            return (FAILED, f"{failures[0]} of {len(items)} items failed: "
                    + "; ".join(text for _, text in sorted(shown)) + more, summaries)
        return COMPLETED, "", summaries

    def call(self, scope, tries=None, index=None, item=None):
        """Render params and run the module, retrying as the task says.

        ``tries``, a one-item list, counts the attempts (a loop reports them
        per item); ``index`` and ``item`` name a loop's item in messages.
        """
        t, ctx = self.t, self.ctx
        params = rendered = t.compiled_params(scope)
        module = t.module()
        parse = getattr(module, "parse_params", None)
        if parse is not None:
            reader = Params(params, delimiters=self.engine.playbook.delimiters, raw=t.params)
            params = parse(reader)
            reader.finish()
        if ctx.dry_run and not getattr(module, "supports_dry_run", False):
            return self.dry_run(rendered)
        state, slots = self.engine.state.reader, self.engine.slots_for(t)
        attempt = 0
        while True:
            attempt += 1
            if tries is not None:
                tries[0] = attempt
            if attempt > self.result.attempts:
                self.result.attempts = attempt
            try:
                if slots is None:
                    return module.perform(ctx, params, state, self.input, self.outputs, self.errors)
                with slots:
                    return module.perform(ctx, params, state, self.input, self.outputs, self.errors)
            except Exception as e:
                if (isinstance(e, Cancelled) or ctx.cancelled or attempt >= t.attempts
                        or not t.retry_on_error):
                    raise
                what = "" if index is None else f"item {index} {_short(item)}: "
                if (self.input is not None and self.input.used) or any(o.used for o in self.outputs):
                    ctx.log.warn(f"{what}not retrying: records were already streamed")
                    raise
                ctx.log.warn(f"{what}attempt {attempt} of {t.attempts} failed: {self.why(e)}; "
                             f"retrying in {_seconds(t.delay)}")
                if ctx.wait(t.delay):
                    raise Cancelled(ctx.reason) from None

    def dry_run(self, params):
        """Stand in for a module that has not said it can dry-run: say what it would do."""
        text = format_value(params)
        if len(text) > 500:
            text = f"{text[:500]}... ({len(text)} characters)"
        self.ctx.log.info(f"[Dry Run] Would run module '{self.t.type}' with params {text}")
        if self.input is not None:
            for _ in self.input:        # drain, so the producer is not reported short
                pass
        return {"dry_run": True}

    def why(self, error):
        """Why a call failed, naming the task whose register a template missed."""
        reason = _reason(error, self.ctx)
        if isinstance(error, TemplateError) and not self.ctx.cancelled:
            missing = self.engine.unregistered(self.t)
            if missing:
                return f"{missing} ({reason})"
        return reason

    def log_error(self, error, prefix=""):
        if isinstance(error, (GxoError, OSError)) or self.ctx.cancelled:
            return
        import traceback
        self.ctx.log.debug(prefix + "".join(traceback.format_exception(
            type(error), error, error.__traceback__)).rstrip())


class _Workers:
    """A pool of reusable daemon threads; grows when every thread is busy."""

    def __init__(self):
        self._jobs = SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn, *args):
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put((fn, args))
                return
        threading.Thread(target=self._work, args=(fn, args), daemon=True,
                         name="gxo-worker").start()

    def _work(self, fn, args):
        while True:
            fn(*args)
            # Let go of the job before waiting for the next: an idle thread must not
            # keep the last task's context, records or engine alive meanwhile.
            del fn, args
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            if job is None:
                return
            fn, args = job

    def map(self, fn, count, parallel, ctx):
        """Call fn(i) for i in range(count), ``parallel`` at a time, until ctx is
        cancelled; return (when all calls ended) whether every i was called."""
        lock, next_index, done = threading.Lock(), [0], SimpleQueue()

        def lane():
            try:
                while not ctx.cancelled:
                    with lock:
                        i = next_index[0]
                        next_index[0] += 1
                    if i >= count:
                        return
                    fn(i)
            finally:
                done.put(None)

        lanes = min(parallel, count)
        for _ in range(lanes - 1):
            self.submit(lane)
        lane()
        for _ in range(lanes):
            done.get()
        return next_index[0] >= count

    def shutdown(self):
        with self._lock:
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._jobs.put(None)


# ---------------------------------------------------------------- engine

class RunResult:
    """The outcome of a run: per-task results, final state and exit code."""

    def __init__(self, playbook, tasks, state, duration, exit_code):
        self.playbook, self.tasks, self.state = playbook, tasks, state
        self.duration, self.exit_code = duration, exit_code

    @property
    def ok(self):
        return self.exit_code == 0

    def counts(self):
        counts = {COMPLETED: 0, FAILED: 0, SKIPPED: 0}
        for r in self.tasks.values():
            counts[r.status] += 1
        return counts

    def __repr__(self):
        return f"<RunResult {self.playbook.name} exit={self.exit_code} {self.counts()}>"


_SIGNAL_LATENCY = 0.2           # seconds: how late a signal may be handled, at most


def _default_concurrency():
    # Tasks mostly wait (on a command, a sleep, the network) and a waiting thread
    # costs little: 4 per CPU keeps the CPUs busy, and at least 8 lets a small
    # machine or container overlap its waits too.
    return max(8, 4 * (os.cpu_count() or 1))


_FDS_PER_CALL = 8       # what an exec call holds as it starts: 4 pipes (stdin, stdout, stderr, Popen's)


def _open_file_limit():
    """(module calls the open-file limit allows at once, the limit), or None if unlimited."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):     # pragma: no cover (not POSIX)
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        used = len(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))
    except OSError:                                 # pragma: no cover
        used = 32
    return max(1, (soft - used - 16) // _FDS_PER_CALL), soft


def _stop_streams(ctx, name, input, outputs):
    """The cancel callback of a streaming task: wake whatever waits on its channels."""
    def stop(hard):
        for channel in outputs:
            channel.abort(f"stream producer {name} failed")
        if input is not None:
            input.detach(ctx.reason)
    return stop


class Engine:
    """Runs a loaded playbook: schedules its tasks as a DAG, returns a RunResult.

    There is no scheduler thread: the worker that finishes a task does the
    bookkeeping and carries on with a task that became ready, so a chain of
    tasks runs on one thread without hand-offs.  ``cancel`` and
    ``interrupt`` may be called from any thread or a signal handler: running
    tasks are cancelled (their processes killed), tasks not started skipped,
    but failure handlers (``always: true``) still run; a second stop
    request cancels those too.  ``executor`` says where exec calls run:
    "local", "dask://HOST:PORT", "dask://local?workers=N", a
    distributed.Client or an Executor (default: $GXO_EXECUTOR, else local).
    """

    def __init__(self, playbook, *, dry_run=False, concurrency=None, channel_buffer_size=100,
                 logger=None, report=None, executor=None):
        where = executor if executor is not None else os.environ.get("GXO_EXECUTOR") or "local"
        try:
            self.executor_target = _executor_target(where)
        except ValueError as e:
            raise ValueError(f"{'GXO_EXECUTOR' if executor is None else 'executor'}: {e}") from None
        self.executor = _LOCAL
        self.playbook, self.dry_run = playbook, dry_run
        self.concurrency = concurrency or _default_concurrency()
        self.buffer = channel_buffer_size
        self.log = logger or Logger()
        self.reporter = _Reporter(self.log, playbook, dry_run, report)
        self.workers = _Workers()
        self._events = SimpleQueue()        # ("done",) or ("stop", reason, exit code)
        # The run's state is made in one place, _prepare.  _lock guards its
        # scheduling part: _schedule, running, channels, halted, exit_code,
        # killed, and the results of the tasks not running (a running task's
        # result is written by its own worker, in _execute).  _take_ready,
        # _start_group, _finish, _stop, _halt, _skip, _record_skips and
        # _cancel_running run with it held: _serve, _work and _end take it.
        self._lock = threading.Lock()
        self.state = None

    def cancel(self, reason="cancelled", exit_code=1):
        """Stop the run (safe from any thread and from signal handlers)."""
        self._events.put(("stop", reason, exit_code))

    def interrupt(self, signum):
        """React to SIGINT/SIGTERM: stop, and kill at once on the second signal."""
        import signal
        name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
        self._events.put(("stop", f"interrupted by {name}", 128 + signum))

    def _next_event(self):
        """The next event, waking now and then: a signal that the kernel gave to
        another thread runs its Python handler only once this thread wakes."""
        while True:
            try:
                return self._events.get(timeout=_SIGNAL_LATENCY)
            except Empty:
                pass

    def run(self):
        """Run the playbook on its executor, opened for this run and closed after it.

        Raises GxoError (before any task runs) if the executor cannot be opened.
        """
        owned = self._open()
        try:
            self._prepare()
            start = time.monotonic()
            self._begin()
            self._serve()
            return self._end(start)
        finally:
            if owned:
                self.executor.close()
                self.log.flush()

    # -- the steps of a run

    def _open(self):
        """Open the run's executor; return whether the run owns it (and closes it)."""
        target = self.executor_target
        if self.dry_run and target != "local":
            self.log.info("dry run: the executor is not contacted")
            target = "local"
        self.executor, owned = _open_executor(target, self.log)
        return owned

    def _prepare(self):
        """Make the run's state: what templates read, the results, the schedule."""
        pb = self.playbook
        self.state = _State(pb.vars, pb.dir)
        self.results = [TaskResult(t.key) for t in pb.tasks]
        self.running = {}                   # task index -> its TaskContext
        self.channels = {}                  # task index -> (its consumers, their channels)
        self._schedule = _Schedule(pb)
        self.registered_by = {t.register: t for t in pb.tasks if t.register is not None}
        self.halted, self.exit_code, self.killed = None, 0, False

    def _begin(self):
        """Say that the run starts, where streams run and the load-time warnings; cap
        the calls at once."""
        pb = self.playbook
        if self.executor.remote:
            streamed = [t.key for t in pb.tasks if t.type == "exec" and t.executor is None
                        and (t.stream_input is not None or pb.consumers[t.index])]
            if streamed:
                self.log.info(f"streams stay on this machine: {', '.join(streamed)} "
                              f"run{'s' if len(streamed) == 1 else ''} locally")
        self.reporter.run_started()
        for warning in pb.warnings:
            self.log.warn(warning)
        self._limit_calls()

    def _limit_calls(self):
        """Cap the module calls at once by the open-file limit, if the playbook could pass it."""
        self.slots = self.cap = None
        limit = None if self.dry_run else _open_file_limit()
        if limit is None:
            return
        cap, soft = limit
        widest = sorted((t.parallel for t in self.playbook.tasks), reverse=True)
        if sum(widest[:self.concurrency]) > cap:
            self.slots, self.cap = threading.Semaphore(cap), cap
            self.concurrency = min(self.concurrency, cap)
            self.log.warn(f"at most {cap} module calls run at once: the open-file limit "
                          f"(ulimit -n {soft}) allows no more")

    def _serve(self):
        """Start what is ready, then serve stop requests until the last task has ended.

        Workers start what becomes ready as tasks end (_work): this thread only waits.
        """
        with self._lock:
            jobs = self._take_ready()
        busy, stops = bool(jobs), 0
        while busy:                         # wait for the last task, or a stop request
            for job in jobs:
                self.workers.submit(self._work, job)
            self.log.flush()
            event = self._next_event()
            if event[0] == "done":
                break
            stops += 1
            with self._lock:
                self._stop(event[1], event[2], again=stops > 1)
                jobs = self._take_ready()   # failure handlers that wait for nothing now
                busy = bool(jobs or self.running)

    def _end(self, start):
        """Skip what never started; return the RunResult, reported."""
        with self._lock:
            for i in self._schedule.unstarted():
                self._skip(i, "playbook halted" if self.halted else "never became ready")
        self.workers.shutdown()
        pb = self.playbook
        result = RunResult(pb, {t.key: r for t, r in zip(pb.tasks, self.results)},
                           dict(self.state.data), time.monotonic() - start, self.exit_code)
        self.reporter.run_ended(result, self.halted)
        self.log.flush()
        return result

    # -- scheduling (with self._lock held, but _work and _execute)

    def _stop(self, reason, exit_code, again):
        """A stop request: halt, but failure handlers; a second one cancels those too, at once."""
        if again:
            self.log.warn(f"stopping at once: {reason}")
            self.killed = True
            self._cancel_running(f"cancelled: {self.halted}", hard=True)
            return
        handlers = any(t.always and r.status is None
                       for t, r in zip(self.playbook.tasks, self.results))
        self.log.warn(f"stopping: {reason}" + (" (failure handlers still run: stop again "
                                               "to cancel them)" if handlers else ""))
        if self.halted is None:
            self._halt(reason, exit_code, f"cancelled: {reason}")

    def _take_ready(self):
        """Start what is ready, within the concurrency limit; return the jobs."""
        jobs, room = [], 0 if self.killed else self.concurrency - len(self.running)
        for members in self._schedule.get_ready(room):
            jobs += self._start_group(members)
        return jobs

    def _start_group(self, members):
        """Set up a task, or every member of a stream pipeline at once (but the skipped)."""
        pb, results = self.playbook, self.results
        outputs, inputs = {}, {}
        for i in members:
            # A skipped consumer gets no channel.  Fan-out: every consumer but the
            # last gets a copy, made before the original is handed to the last one
            # (modules put in list order).
            consumers = [c for c in pb.consumers[i] if results[c].status is None]
            outputs[i] = (consumers, [])
            for k, c in enumerate(consumers):
                kind = _CopyingChannel if k < len(consumers) - 1 else Channel
                inputs[c] = kind(self.buffer)
                outputs[i][1].append(inputs[c])
        jobs = []
        for i in members:
            t = pb.tasks[i]
            ctx = TaskContext(t.key, _TaskLog(self.log, t.key, t.no_log), self.dry_run,
                              self.state.reader, pb.delimiters)
            if t.executor is None:
                ctx.executor = self.executor
            input, (consumers, outs) = inputs.get(i), outputs[i]
            self.running[i] = ctx
            self.channels[i] = (consumers, outs)
            # Held, and written when it runs: logged under the lock, a start line
            # can never follow "halting the playbook".
            self.reporter.task_started(t)
            if input is not None or outs:
                ctx.on_cancel(_stop_streams(ctx, t.key, input, outs))
            jobs.append((t, ctx, input, outs))
        return jobs

    def _work(self, job):
        """A worker's loop: run a task, do its bookkeeping, go on with what is ready."""
        while job is not None:
            self._execute(*job)
            with self._lock:
                jobs = self._finish(job[0])
                done = not self.running
            job = jobs.pop(0) if jobs else None
            for other in jobs:
                self.workers.submit(self._work, other)
            if job is None:
                self.log.flush()            # going idle: write the end lines held
            if done:
                self._events.put(("done",))

    def _execute(self, t, ctx, input, outputs):
        """Run one task on this thread; its result goes to self.results."""
        result = self.results[t.index]
        self.log.flush()                    # its start line, and the end lines held
        begin = time.monotonic()
        timer = None
        if t.timeout:
            ctx.deadline = begin + t.timeout
            timer = threading.Timer(t.timeout, ctx.cancel, (f"timed out after {_seconds(t.timeout)}",))
            timer.daemon = True
            timer.start()
        errors = _ErrorSink(t.key, self.log, t.no_log)
        try:
            result.status, result.reason, summary = _Runner(
                self, t, ctx, result, input, outputs, errors).run()
            # A failed task registers what its module gave of the failure, if anything.
            result.summary = summary
            if t.register is not None and (result.status == COMPLETED or summary is not None):
                self.state.set(t.register, summary)
        except BaseException as e:          # a bug in gxo: report it, never hang the run
            import traceback
            result.status, result.reason = FAILED, f"internal error: {e!r}"
            ctx.log.error(traceback.format_exc().rstrip())
        finally:
            if timer is not None:
                timer.cancel()
            if input is not None:
                input.detach()
            if t.no_log and result.status == FAILED and not ctx.cancelled:
                result.reason = _HIDDEN
            result.record_errors = errors.count
            result.duration = time.monotonic() - begin

    def _finish(self, t):
        """Bookkeeping when a task ends: status, streams, halting, what it releases."""
        result = self.results[t.index]
        del self.running[t.index]
        self.state.set_status(t.key, result.status)
        consumers, outputs = self.channels.pop(t.index)
        for channel, c in zip(outputs, consumers):
            if result.status == FAILED:
                channel.abort(f"stream producer {t.key} failed")
                if c in self.running:
                    self.running[c].cancel(f"stream producer {t.key} failed")
            else:
                channel.close()
                if channel.undelivered:
                    self.log.log(WARN, f"{channel.undelivered} records not delivered to "
                                 f"{self.playbook.tasks[c].key} (it stopped reading)", task=t.key)
        self.reporter.task_ended(t, result)
        if result.status == FAILED and not t.ignore_errors and self.halted is None:
            self.log.error(f"halting the playbook: {t.label} failed")
            self._halt(f"task '{t.key}' failed", 1,
                       f"cancelled: playbook halted because {t.key} failed")
        skipped = self._schedule.done(t.index, result.status == FAILED)
        if skipped:
            self._record_skips(skipped)
        return self._take_ready()

    def _halt(self, reason, exit_code, cancel_reason):
        """Stop the run: cancel what runs and skip what has not started, but failure handlers."""
        self.halted, self.exit_code = reason, exit_code
        self._cancel_running(cancel_reason)
        tasks = self.playbook.tasks
        for i in self._schedule.unstarted():
            if not tasks[i].always:
                self._skip(i, "playbook halted")

    def _skip(self, i, reason):
        """Skip a task that never started, what streams from it, and what waits for it."""
        self._record_skips(self._schedule.skip(i, reason))

    def _record_skips(self, skipped):
        """Record and report the tasks the schedule skipped, with why."""
        tasks = self.playbook.tasks
        for i, reason in skipped:
            result = self.results[i]
            result.status, result.reason = SKIPPED, reason
            self.state.set_status(result.name, SKIPPED)
            self.reporter.task_ended(tasks[i], result)

    def _cancel_running(self, reason, hard=False):
        """Cancel the running tasks; failure handlers only if ``hard``."""
        tasks = self.playbook.tasks
        for i, ctx in list(self.running.items()):
            if hard or not tasks[i].always:
                ctx.cancel(reason, hard)

    # -- what a task's runner asks (no lock: it reads what is set before the task starts)

    def slots_for(self, t):
        """What a call of task t holds while it runs, if calls are capped.  Never for
        a pipeline: its members wait for each other, so holding slots could deadlock."""
        schedule = self._schedule
        if self.slots is None or len(schedule.groups[schedule.group_of[t.index]]) > 1:
            return None
        return self.slots

    def lanes(self, t):
        """How many items of task t's loop run at once."""
        return t.parallel if self.cap is None else min(t.parallel, self.cap)

    def unregistered(self, t):
        """Why a register key that task t reads is unset (its task registered nothing), or ''."""
        delimiters, data = self.playbook.delimiters, self.state.data
        for _, _, _, text in _strings([t.when, t.loop, t.params], "", None, None):
            if delimiters[0] not in text:
                continue
            for path in sorted(compile_template(text, delimiters).variables):
                key = path.split(".", 1)[0]
                producer = self.registered_by.get(key)
                if producer is not None and key not in data:
                    r = self.results[producer.index]
                    what = "was skipped" if r.status == SKIPPED else "failed"
                    return (f"cannot read '{key}': task '{r.name}' {what} ({r.reason}), "
                            "so it registered nothing")
        return ""


def run_playbook(source, vars=None, *, dry_run=False, concurrency=None,
                 channel_buffer_size=100, log_level="INFO", log_stream=None,
                 modules_dirs=(), var_files=(), log_format="text", report=None,
                 executor=None):
    """Load a playbook (path or YAML text), run it and return its RunResult.

    ``log_format`` is ``text`` or ``json``; ``report`` a path to write the
    JSON report to (docs/report.md); ``executor`` as for Engine.  Raises
    PlaybookError if the playbook is invalid, GxoError if the executor
    cannot be opened: nothing has run then.
    """
    logger = Logger(log_level, log_stream, format=log_format)
    playbook = load_playbook(source, vars, modules_dirs=modules_dirs, var_files=var_files)
    engine = Engine(playbook, dry_run=dry_run, concurrency=concurrency,
                    channel_buffer_size=channel_buffer_size, logger=logger, report=report,
                    executor=executor)
    return engine.run()


# ---------------------------------------------------------------- CLI

_USAGE = """\
usage: gxo -playbook FILE [flags]

  -playbook FILE             the playbook to run (required)
  -var key=value             set a variable (repeatable; overrides the playbook's vars and
                             every -var-file); typed like the var in the playbook's vars:
                             -var replicas=3, -var 'hosts=[a, b]', -var 'msg=[WIP] x'
  -var-file FILE             set variables from a YAML mapping (repeatable, later files win)
  -dry-run                   log what would run, change nothing
  -validate                  check the playbook and print the plan (what waits for what,
                             and why); run nothing
  -graph mermaid|dot         check the playbook and print its DAG for Mermaid or Graphviz
  -log-level LEVEL           DEBUG, INFO, WARN or ERROR (default INFO)
  -log-format FORMAT         text or json: one JSON object per line (default text)
  -report FILE               write a JSON report of the run to FILE, - for stdout (docs/report.md)
  -concurrency N             most tasks running at once (default {concurrency})
  -channel-buffer-size N     records buffered per stream (default 100)
  -modules-dir DIR           also load modules from DIR (repeatable; also $GXO_MODULES_PATH)
  -executor WHERE            where exec tasks run: local (default), dask://HOST:PORT (a Dask
                             scheduler) or dask://local?workers=N (also $GXO_EXECUTOR)
  -version                   print the version
  -h, -help                  print this help

exit codes: 0 success, 1 a task failed, 2 invalid usage or playbook,
            130 interrupted (SIGINT), 143 terminated (SIGTERM)
"""

_FLAGS = {"playbook": "str", "var": "list", "dry-run": "bool", "log-level": "str",
          "log-format": "str", "report": "str", "concurrency": "int",
          "channel-buffer-size": "int", "modules-dir": "list",
          "var-file": "list", "validate": "bool", "graph": "str", "executor": "str",
          "version": "bool", "h": "bool", "help": "bool"}
_GRAPH_FORMS = ("mermaid", "dot")


class _UsageError(Exception):
    pass


def _parse_args(argv):
    """Parse Go-style flags: -flag value, -flag=value, --flag; bools take no value."""
    opts = {"var": [], "var-file": [], "modules-dir": []}
    args = list(argv)
    positional = []
    while args:
        arg = args.pop(0)
        if arg == "--":
            positional += args
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        kind = _FLAGS.get(name)
        if kind is None:
            raise _UsageError(f"unknown flag {_excerpt('-' + name)}" + _suggest(name, _FLAGS).replace("'", "'-", 1))
        if kind == "bool":
            if eq and value.lower() not in ("true", "false", "1", "0"):
                raise _UsageError(f"-{name} takes no value (or =true/=false), got {_excerpt(value)}")
            opts[name] = not eq or value.lower() in ("true", "1")
            continue
        if not eq:
            if not args:
                raise _UsageError(f"flag -{name} needs a value")
            value = args.pop(0)
        if kind == "int":
            try:
                value = int(value)
                if value < 1:
                    raise ValueError
            except ValueError:
                raise _UsageError(f"-{name} needs a positive integer, got {_excerpt(str(value))}") from None
        if name == "executor":
            try:
                _executor_target(value)
            except ValueError as e:
                raise _UsageError(f"-executor: {e}") from None
        if kind == "list":
            opts[name].append(value)
        else:
            opts[name] = value
    if positional:
        if "playbook" in opts or len(positional) > 1:
            raise _UsageError(f"unexpected argument {_excerpt(positional[-1])}")
        opts["playbook"] = positional[0]
    variables = {}
    for item in opts["var"]:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _UsageError(f"-var needs key=value, got {_excerpt(item)}")
        variables[key] = value              # text: the loader types it by the declared var
    opts["var"] = variables
    if "graph" in opts and opts["graph"] not in _GRAPH_FORMS:
        raise _UsageError(f"-graph takes mermaid or dot, got {opts['graph']!r}"
                          + _suggest(opts["graph"], _GRAPH_FORMS))
    if "graph" in opts and opts.get("validate"):
        raise _UsageError("-validate and -graph are two different outputs: give one of them")
    return opts


def _main(argv):
    try:
        opts = _parse_args(sys.argv[1:] if argv is None else argv)
        if opts.get("h") or opts.get("help"):
            sys.stdout.write(_USAGE.format(concurrency=_default_concurrency()))
            return 0
        if opts.get("version"):
            print(f"gxo {__version__}")
            return 0
        if "playbook" not in opts:
            raise _UsageError("missing -playbook FILE")
        logger = Logger(opts.get("log-level", "INFO"), format=opts.get("log-format", "text"),
                        color=_color_wanted(sys.stderr))
        report = opts.get("report")
        if report is not None:
            if not os.path.isdir(os.path.dirname(os.path.abspath(report))):
                raise _UsageError(f"-report {report}: no such directory")
            if os.path.realpath(report) == os.path.realpath(opts["playbook"]):
                raise _UsageError(f"-report {report} would overwrite the playbook")
    except (_UsageError, ValueError) as e:
        sys.stderr.write(f"gxo: {e}\n\n" + _USAGE.format(concurrency=_default_concurrency()))
        return 2
    start = time.time()
    try:
        playbook = load_playbook(opts["playbook"], opts["var"], modules_dirs=opts["modules-dir"],
                                 var_files=opts["var-file"])
    except PlaybookError as e:
        if logger.format == "json":
            logger.log(ERROR, str(e), event="playbook_error")
        else:
            sys.stderr.write(f"gxo: {_secrets.mask(str(e))}\n")
        if report is not None:      # the report says what happened, never what a past run did
            _write_report(report, logger, {
                "playbook": {"name": None, "file": opts["playbook"]}, "start": _utc(start),
                "duration": round(time.time() - start, 3), "exit_code": 2,
                "dry_run": opts.get("dry-run", False), "halted": None, "error": str(e),
                "counts": {}})
        return 2
    except KeyboardInterrupt:
        return 130
    if opts.get("validate") or "graph" in opts:
        text = _plan(playbook) if opts.get("validate") else _graph(playbook, opts["graph"])
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:     # `gxo -validate ... | head`: the reader had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    import gc
    gc.freeze()         # the playbook lives as long as the process: never scan it again
    try:
        engine = Engine(playbook, dry_run=opts.get("dry-run", False),
                        concurrency=opts.get("concurrency"),
                        channel_buffer_size=opts.get("channel-buffer-size", 100), logger=logger,
                        report=report, executor=opts.get("executor"))
    except ValueError as e:                 # a bad $GXO_EXECUTOR
        sys.stderr.write(f"gxo: {e}\n")
        return 2
    import signal
    handlers = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handlers[signum] = signal.signal(signum, lambda n, _: engine.interrupt(n))
    try:
        return engine.run().exit_code
    except GxoError as e:                   # the executor could not be opened: nothing ran
        sys.stderr.write(f"gxo: {e}\n")
        return 2
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def main(argv=None):
    """The gxo command; returns the exit code."""
    try:
        return _main(argv)
    except MemoryError:     # wherever it happens: one line, never a traceback
        sys.stderr.write("gxo: out of memory\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
