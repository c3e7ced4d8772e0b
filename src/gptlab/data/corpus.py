"""A ~1.2 MB English demo corpus that ships with Python itself, so the demo trains with no download.

It holds two kinds of documents, in this order:

1. the ~80 help topics of ``pydoc_data.topics`` (the language reference pages behind
   ``help("for")``, ``help("SPECIALMETHODS")``, ...; ~465k characters), sorted by topic;
2. the docstrings of the well-known, side-effect-free standard-library modules in ``MODULES`` and of
   their public classes, methods and functions (~760k characters), each headed by its qualified
   name, e.g. ``json.dumps``, in sorted order.

Docstrings shorter than ``MIN_DOC_CHARS`` are skipped and repeated texts are kept once, so the
corpus is the same on every run of the same Python version (it changes with the version).

One document in ``VALIDATION_SHARE`` is held out (``is_held_out``: a hash of its first paragraph,
a module document's title). Pre-training validates on those documents and the demo tasks
(``gptlab.data.demo_tasks``) take their validation examples from them, so a demo model is never
pre-trained on the text it is evaluated on.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import warnings
from collections.abc import Iterator
from types import ModuleType

from pydoc_data.topics import topics

# Pure modules that are safe to import anywhere: no GUI (tkinter, turtle, idlelib), no easter eggs
# that print or open a browser (this, antigravity), nothing that starts threads or touches the
# network on import. Not `sys`: its hooks are swapped at run time (pytest, IPython), so its
# documents would depend on who imported us.
MODULES = (
    "abc argparse ast asyncio.base_events asyncio.events asyncio.locks asyncio.queues "
    "asyncio.streams asyncio.tasks base64 bdb builtins bz2 cProfile calendar cmd code codecs codeop "
    "collections collections.abc colorsys compileall configparser contextlib copy csv ctypes "
    "dataclasses datetime decimal difflib dis doctest email email.headerregistry email.message "
    "email.parser email.policy email.utils enum filecmp fileinput fnmatch fractions ftplib "
    "functools gc getopt gettext glob graphlib gzip hashlib heapq hmac html html.parser http "
    "http.client http.cookiejar http.server importlib inspect io ipaddress itertools json keyword "
    "linecache locale logging logging.handlers lzma mailbox marshal math mimetypes mmap "
    "modulefinder numbers operator optparse pathlib pdb pickle pickletools pkgutil platform "
    "plistlib poplib pprint profile pstats py_compile pyclbr pydoc queue quopri random re runpy "
    "sched secrets selectors shelve shutil smtplib socket socketserver sqlite3 statistics string "
    "struct subprocess symtable tabnanny tarfile tempfile textwrap threading time timeit "
    "tokenize trace traceback tracemalloc types typing unicodedata unittest unittest.mock "
    "urllib.parse urllib.request uuid warnings wave weakref xml.dom xml.dom.minidom "
    "xml.etree.ElementTree xml.sax xml.sax.handler xmlrpc.client xmlrpc.server zipapp zipfile "
    "zipimport zlib"
).split()
MIN_DOC_CHARS = 120
VALIDATION_SHARE = 5


def demo_corpus_documents() -> list[str]:
    """The help topics, then the standard-library docstrings, as plain-text documents (see module doc)."""
    documents: list[str] = []
    seen: set[str] = set()

    def add(title: str | None, doc: str | None) -> None:
        if not isinstance(doc, str):
            return
        text = _plain(inspect.cleandoc(doc))
        if len(text) < MIN_DOC_CHARS or text in seen:
            return
        seen.add(text)
        documents.append(f"{title}\n\n{text}" if title else text)

    for topic in sorted(topics):
        add(None, topics[topic])
    with warnings.catch_warnings():
        # Reading some attributes (typing.io, deprecated aliases) warns; the text is still wanted.
        warnings.simplefilter("ignore")
        for name in sorted(MODULES):
            try:
                module = importlib.import_module(name)
            except ImportError:  # optional C extensions (e.g. _sqlite3) may be missing from a build
                continue
            for title, doc in _module_docstrings(module):
                add(title, doc)
    return documents


def is_held_out(document: str) -> bool:
    """Whether ``document`` is in the validation split: one in ``VALIDATION_SHARE`` by a hash of its
    first paragraph, not by position, so a corpus change moves only the documents it touches."""
    head = document.split("\n\n", 1)[0]
    return int(hashlib.sha256(head.encode()).hexdigest(), 16) % VALIDATION_SHARE == 0


def demo_corpus_splits() -> dict[str, list[str]]:
    """The corpus as ``train`` and ``validation`` documents (``is_held_out``), each in corpus order."""
    splits: dict[str, list[str]] = {"train": [], "validation": []}
    for document in demo_corpus_documents():
        splits["validation" if is_held_out(document) else "train"].append(document)
    return splits


def _plain(text: str) -> str:
    """Prose layout: no indentation or runs of spaces (reST code blocks and tables are full of
    them, and a small model trained on them mostly learns to emit whitespace)."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _module_docstrings(module: ModuleType) -> Iterator[tuple[str, str | None]]:
    """(qualified name, docstring) of a module and of the public objects it defines, sorted by name."""
    yield module.__name__, module.__doc__
    for name, obj in sorted(vars(module).items()):
        # Objects re-exported from elsewhere are documented where they are defined.
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj.__doc__
            for attr, member in sorted(vars(obj).items()):
                # Methods of C classes have no __module__; one from elsewhere was patched in by a
                # library (e.g. Logger.warning_once), which would make the corpus depend on imports.
                if (
                    not attr.startswith("_")
                    and inspect.isroutine(member)
                    and getattr(member, "__module__", None) in (None, module.__name__)
                ):
                    yield f"{module.__name__}.{name}.{attr}", getattr(member, "__doc__", None)
        elif inspect.isroutine(obj):
            yield f"{module.__name__}.{name}", obj.__doc__
